"""The shared W&B tracker: mode validation, default mode, never failing a run."""

from __future__ import annotations

import pytest

from gradsurrogate.tracking import WANDB_MODES, Tracker, default_wandb_mode


def test_default_mode_follows_the_api_key(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("NETRC", str(tmp_path / "missing-netrc"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert default_wandb_mode() == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert default_wandb_mode() == "online"
    (tmp_path / "netrc").write_text("machine api.wandb.ai login user password secret\n")
    monkeypatch.delenv("WANDB_API_KEY")
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert default_wandb_mode() == "online"


def test_disabled_tracker_is_a_no_op_and_bad_modes_raise() -> None:
    t = Tracker("disabled", "p", {"a": 1})
    t.log({"x": 1.0}, step=0)
    t.table("k", ["c"], [[1]])
    t.summary({"y": 2})
    t.finish()
    assert t.run is None and WANDB_MODES == ("disabled", "offline", "online")
    with pytest.raises(ValueError, match="unknown W&B mode 'cloud'; accepted: disabled"):
        Tracker("cloud", "p", {})


def test_failures_become_warnings(monkeypatch) -> None:
    t = Tracker("disabled", "p", {})

    class Broken:
        def log(self, *args, **kwargs):
            raise RuntimeError("network down")

    t.run = Broken()
    with pytest.warns(UserWarning, match="W&B log failed .*network down"):
        t.log({"x": 1.0})
    assert t.run is None
