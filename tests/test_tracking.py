"""The shared W&B tracker: mode resolution, bounded online init, unwritable WANDB_DIR, never
failing a run. Real (offline) W&B runs are written under a tmp WANDB_DIR."""

from __future__ import annotations

import os
import re
import socket
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from gradsurrogate import tracking
from gradsurrogate.tracking import TIMEOUT_ENV, Tracker, default_wandb_mode

FAKE_KEY = "0123456789abcdef" * 2 + "01234567"  # 40 characters, like a real API key


def _teardown_wandb() -> None:
    if "wandb" in sys.modules:  # W&B snapshots os.environ at its first init in a process
        sys.modules["wandb"].teardown()


@pytest.fixture(autouse=True)
def _isolated_wandb(monkeypatch, tmp_path) -> Iterator[None]:
    """Fresh process-wide state and a W&B environment confined to tmp_path."""
    monkeypatch.setattr(tracking, "_online_failed", False)
    monkeypatch.setattr(tracking, "_warned_dirs", set())
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL", TIMEOUT_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc-missing"))
    for var, sub in (("WANDB_DIR", "wb"), ("WANDB_CONFIG_DIR", "wbconfig"),
                     ("WANDB_CACHE_DIR", "wbcache"), ("WANDB_DATA_DIR", "wbdata")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_SILENT", "true")
    _teardown_wandb()
    yield
    _teardown_wandb()


def _offline_runs(tmp_path: Path) -> list[Path]:
    """The offline run files under tmp WANDB_DIR (W&B's service flushes them when torn down)."""
    _teardown_wandb()
    return sorted((tmp_path / "wb" / "wandb").glob("offline-run-*/*.wandb"))


def _tracker_warnings(record: list[warnings.WarningMessage]) -> list[str]:
    """Warnings attributed to this file, i.e. the Tracker's own (stacklevel points at callers)."""
    return [str(w.message) for w in record if w.filename == __file__]


@pytest.fixture
def silent_server() -> Iterator[tuple[str, list[socket.socket]]]:
    """A local W&B "server" that accepts TCP connections and never answers."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    conns: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conns.append(srv.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{srv.getsockname()[1]}", conns
    srv.close()
    for c in conns:
        c.close()


def test_default_mode_follows_the_api_key(monkeypatch, tmp_path) -> None:
    assert default_wandb_mode() == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert default_wandb_mode() == "online"
    (tmp_path / "netrc").write_text("machine api.wandb.ai login user password secret\n")
    monkeypatch.delenv("WANDB_API_KEY")
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert default_wandb_mode() == "online"


def test_wandb_mode_env_is_honoured_when_mode_is_none(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)  # would mean online without WANDB_MODE
    for raw, mode in (("offline", "offline"), ("dryrun", "offline"), ("run", "online"),
                      ("disabled", "disabled"), ("online", "online")):
        monkeypatch.setenv("WANDB_MODE", raw)
        assert default_wandb_mode() == mode
    monkeypatch.setenv("WANDB_MODE", "offline")
    t = Tracker(None, "p", {"a": 1})
    t.log({"env_offline_metric": 1.0}, step=0)
    t.finish()
    assert t.mode == "offline"
    (run,) = _offline_runs(tmp_path)
    assert b"env_offline_metric" in run.read_bytes()


def test_explicit_mode_beats_wandb_mode(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    t = Tracker("disabled", "p", {})
    t.log({"x": 1.0})
    t.finish()
    assert t.mode == "disabled" and t.run is None and not (tmp_path / "wb").exists()
    monkeypatch.setenv("WANDB_MODE", "disabled")  # W&B itself must not let this win either
    t = Tracker("offline", "p", {})
    t.log({"explicit_offline_metric": 1.0}, step=0)
    t.finish()
    assert t.mode == "offline"
    (run,) = _offline_runs(tmp_path)
    assert b"explicit_offline_metric" in run.read_bytes()


def test_bad_wandb_mode_or_timeout_env_raises_naming_it(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("WANDB_MODE", "cloud")
    expected = "unknown W&B mode in WANDB_MODE 'cloud'; accepted: disabled, offline, online"
    with pytest.raises(ValueError, match=re.escape(expected)):
        default_wandb_mode()
    with pytest.raises(ValueError, match=re.escape(expected)):
        Tracker(None, "p", {})
    with warnings.catch_warnings(record=True) as rec:  # an explicit mode still wins, in W&B too
        warnings.simplefilter("always")
        t = Tracker("offline", "p", {})
        t.finish()
    assert t.mode == "offline" and _tracker_warnings(rec) == [] and _offline_runs(tmp_path)
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv(TIMEOUT_ENV, "soon")
    with pytest.raises(ValueError, match=f"{TIMEOUT_ENV}='soon' is not a positive number"):
        Tracker("online", "p", {})


def test_disabled_tracker_is_a_no_op_and_bad_modes_raise() -> None:
    t = Tracker("disabled", "p", {"a": 1})
    t.log({"x": 1.0}, step=0)
    t.table("k", ["c"], [[1]])
    t.summary({"y": 2})
    t.finish()
    assert t.run is None and t.mode == "disabled"
    with pytest.raises(ValueError, match="unknown W&B mode 'cloud'; accepted: disabled"):
        Tracker("cloud", "p", {})


def test_failures_become_warnings() -> None:
    t = Tracker("disabled", "p", {})

    class Broken:
        def log(self, *args, **kwargs):
            raise RuntimeError("network down")

    t.run = Broken()
    with pytest.warns(UserWarning, match="W&B log failed .*network down"):
        t.log({"x": 1.0})
    assert t.run is None and t.mode == "disabled"


def test_unreachable_server_falls_back_to_offline_once(monkeypatch, tmp_path,
                                                       silent_server) -> None:
    url, conns = silent_server
    monkeypatch.setenv("WANDB_BASE_URL", url)
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv(TIMEOUT_ENV, "2")  # the bounded init timeout is what keeps this short
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        t = Tracker("online", "p", {"a": 1}, name="first")
        t.log({"fallback_metric": 0.5}, step=0)
        t.table("rows", ["c"], [[1.0]])
        t.summary({"fallback_summary": 1.0})
        t.finish()
    (msg,) = _tracker_warnings(rec)
    assert "W&B online init failed within 2s" in msg and "logging this run offline to" in msg
    assert str(tmp_path / "wb") in msg and conns  # the server was really tried
    assert t.mode == "offline" and tracking._online_failed
    (run,) = _offline_runs(tmp_path)
    data = run.read_bytes()
    assert b"fallback_metric" in data and b"fallback_summary" in data  # data kept offline

    started: list[str] = []  # the modes wandb.init is asked for: the server is not tried again
    start = Tracker._start
    monkeypatch.setattr(Tracker, "_start", lambda self, mode, *a: (started.append(mode),
                                                                   start(self, mode, *a))[1])
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        t2 = Tracker("online", "p", {"a": 2}, name="second")
        t2.log({"second_metric": 1.0}, step=0)
        t2.finish()
    assert _tracker_warnings(rec) == [] and t2.mode == "offline" and started == ["offline"]
    assert len(_offline_runs(tmp_path)) == 2


def test_unwritable_wandb_dir_disables_with_one_warning(monkeypatch, tmp_path) -> None:
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):  # root ignores permissions: a path under a file then
            (tmp_path / "afile").write_text("")
            folder = tmp_path / "afile" / "sub"
        monkeypatch.setenv("WANDB_DIR", str(folder))
        wandb = pytest.importorskip("wandb")
        monkeypatch.setattr(wandb, "init", lambda *a, **k: pytest.fail("W&B wrote elsewhere"))
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            trackers = [Tracker("offline", "p", {}), Tracker(None, "p", {})]
            for t in trackers:
                t.log({"x": float("nan")}, step=0)
                t.summary({"y": 1.0})
                t.finish()
        assert _tracker_warnings(rec) == [f"WANDB_DIR {folder} is not writable; continuing "
                                          "without W&B logging"]
        assert all(t.mode == "disabled" and t.run is None for t in trackers)
    finally:
        (tmp_path / "readonly").chmod(0o700)


def test_non_finite_floats_are_logged_without_breaking(tmp_path) -> None:
    nan, inf = float("nan"), float("inf")
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        t = Tracker("offline", "p", {"lr": nan})
        t.log({"loss": nan, "grad": inf, "low": -inf, "nested": {"v": nan}}, step=0)
        t.log({"loss": 1.0}, step=1)
        t.table("rows", ["a", "b"], [[nan, inf], [1.0, -inf]])
        t.summary({"best": nan, "worst": inf})
        assert t.run is not None and t.mode == "offline"
        t.finish()
    assert _tracker_warnings(rec) == []
    (run,) = _offline_runs(tmp_path)
    data = run.read_bytes()
    assert b"NaN" in data and b"Infinity" in data


def test_grid_with_unreachable_server_finishes_and_falls_back_once(monkeypatch, tmp_path,
                                                                   silent_server) -> None:
    """xor-grid opens one W&B run per chunk: with a silent server only the first one waits
    (bounded by the timeout), every chunk's data is kept, and there is one warning."""
    from gradsurrogate.io import read_jsonl
    from gradsurrogate.xor.cli import grid_main

    url, conns = silent_server
    monkeypatch.setenv("WANDB_BASE_URL", url)
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv(TIMEOUT_ENV, "2")
    out = tmp_path / "grid"
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        assert grid_main(["--out", str(out), "--wandb=online", "--steps=4", "--width=4",
                          "--n-train=16", "--n-test=16", "--eval-every=2", "--diag-every=0",
                          "--targets=grad_weight", "--modes=sign", "--depths=1,2",
                          "--seeds=0", "--no-report"]) == 0
    fallbacks = [w for w in rec if "W&B online init failed" in str(w.message)]
    assert len(fallbacks) == 1 and conns
    assert len(read_jsonl(out / "results.jsonl")) == 4  # 2 depths x (exact + sign): 2 chunks
    assert len(_offline_runs(tmp_path)) == 2  # both chunks logged offline
