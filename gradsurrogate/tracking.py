"""Optional W&B logging that never fails a run (shared by the xor, restore and diffnet CLIs).

Mode: an explicit ``mode`` (``--wandb``) wins, also over ``WANDB_MODE`` inside W&B. ``None``
means ``WANDB_MODE`` if set (``disabled``, ``offline``, ``online`` or W&B's aliases ``dryrun`` and
``run``; anything else is a ``ValueError``), else ``online`` when an API key is configured
(``WANDB_API_KEY`` or an ``api.wandb.ai`` entry in ``~/.netrc``), else ``offline``.

Online init gives up after ``GRADSURROGATE_WANDB_TIMEOUT`` seconds (default 14) and the run is
logged offline instead (files under ``WANDB_DIR``, ``wandb sync`` later), with ONE warning; the
failure is remembered for the process, so later online Trackers go offline directly and quietly.
A set but unwritable ``WANDB_DIR`` disables logging, warned once per folder (W&B itself would
silently write elsewhere). Any other W&B error is a warning and switches logging off for that
run. ``Tracker.mode`` is the mode actually in use. Non-finite floats are passed through (W&B
stores them as NaN/Infinity).
"""

from __future__ import annotations

import contextlib
import math
import netrc
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .registry import check_choice

__all__ = ["TIMEOUT_ENV", "WANDB_MODES", "Tracker", "default_wandb_mode", "wandb_timeout"]

WANDB_MODES: tuple[str, ...] = ("disabled", "offline", "online")
_MODE_ALIASES: dict[str, str] = {"dryrun": "offline", "run": "online"}
TIMEOUT_ENV = "GRADSURROGATE_WANDB_TIMEOUT"
DEFAULT_TIMEOUT_S = 14.0  # + ~0.5 s of service start-up: the fallback lands within 15 s
FINISH_TIMEOUT_FACTOR = 4.0  # an online run's finish() gives up uploading after 4x the timeout

# process-wide state: online init already failed once (go offline directly from now on), and the
# unwritable WANDB_DIR folders already warned about
_online_failed: bool = False
_warned_dirs: set[str] = set()


def _api_key_configured() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        path = os.environ.get("NETRC", os.path.expanduser("~/.netrc"))
        return bool(os.path.exists(path) and netrc.netrc(path).authenticators("api.wandb.ai"))
    except (OSError, netrc.NetrcParseError):
        return False


def default_wandb_mode() -> str:
    """Mode for ``mode=None``: ``WANDB_MODE`` if set, else online with an API key, else offline."""
    raw = os.environ.get("WANDB_MODE", "").strip()
    if raw:
        mode = _MODE_ALIASES.get(raw.lower(), raw.lower())
        return check_choice(mode, [*WANDB_MODES, *_MODE_ALIASES], "W&B mode in WANDB_MODE")
    return "online" if _api_key_configured() else "offline"


def wandb_timeout() -> float:
    """Seconds an online init may take: ``GRADSURROGATE_WANDB_TIMEOUT`` if set, else 14."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{TIMEOUT_ENV}={raw!r} is not a positive number of seconds")
    return value


def _unwritable_wandb_dir() -> str | None:
    """``WANDB_DIR`` if it is set but not writable; else None, with the folder created (as W&B
    would a moment later, warning that no git root exists there)."""
    raw = os.environ.get("WANDB_DIR", "")
    if not raw:
        return None
    path = Path(raw).expanduser().absolute()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return str(path)
    probe = path / "wandb" if (path / "wandb").exists() else path
    return None if probe.is_dir() and os.access(probe, os.W_OK | os.X_OK) else str(path)


@contextlib.contextmanager
def _wandb_environ(mode: str) -> Iterator[None]:
    """``WANDB_MODE`` and ``WANDB_ERROR_REPORTING`` as a Tracker needs them during ``wandb.init``.

    ``WANDB_MODE=mode``: W&B validates the variable when it first reads its environment, so a bad
    value would otherwise break even an explicit mode. ``WANDB_ERROR_REPORTING=false``: W&B's own
    usage analytics (not run data) stay off; wandb 0.31 reads it when it creates its recorders, in
    ``wandb.init``, and with them on a failed online init, or any offline run with an API key
    set, leaves an exporter that probes the unreachable server at interpreter exit (10-20 s).
    """
    patch = {"WANDB_MODE": mode, "WANDB_ERROR_REPORTING": "false"}
    old = {key: os.environ.get(key) for key in patch}
    os.environ.update(patch)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


class Tracker:
    """One W&B run (or nothing): ``log``, ``table``, ``summary``, ``finish`` never raise.

    ``mode`` is the mode in use after any fallback ("online", "offline" or "disabled") and
    ``run`` the W&B run (``None`` when disabled). See the module docstring for the rules.
    """

    def __init__(self, mode: str | None, project: str, config: dict[str, Any],
                 name: str | None = None, group: str | None = None, job_type: str | None = None):
        global _online_failed
        requested = default_wandb_mode() if mode is None else check_choice(mode, WANDB_MODES,
                                                                           "W&B mode")
        self.mode: str = "disabled"
        self.run: Any = None
        self._wandb: Any = None
        if requested == "disabled":
            return
        bad_dir = _unwritable_wandb_dir()
        if bad_dir is not None:
            if bad_dir not in _warned_dirs:
                _warned_dirs.add(bad_dir)
                warnings.warn(f"WANDB_DIR {bad_dir} is not writable; continuing without W&B "
                              "logging", stacklevel=2)
            return
        timeout = wandb_timeout() if requested == "online" and not _online_failed else 0.0
        try:
            import wandb

            self._wandb = wandb
        except Exception as err:
            self._fail("import", err)
            return
        kwargs: dict[str, Any] = {"project": project, "config": config, "name": name,
                                  "group": group, "job_type": job_type}
        if requested == "online" and not _online_failed:
            try:
                self._start("online", timeout, kwargs)
                return
            except Exception as err:
                _online_failed = True
                head = f"W&B online init failed within {timeout:g}s ({_short(err)})"
            try:
                self._start("offline", 0.0, kwargs)
                where = Path(self.run.dir).parent if self.run is not None else None
            except Exception as err:
                self.run, self.mode, where = None, "disabled", None
                head = f"{head}; offline fallback failed too ({_short(err)})"
            tail = ("continuing without W&B logging" if where is None else
                    f"logging this run offline to {where} instead (upload later with `wandb "
                    "sync`)")
            warnings.warn(f"{head}; {tail}; later W&B runs in this process skip the server",
                          stacklevel=2)
            return
        try:
            self._start("offline" if requested == "online" else requested, 0.0, kwargs)
        except Exception as err:
            self._fail("init", err)

    def _start(self, mode: str, timeout: float, kwargs: dict[str, Any]) -> None:
        """``wandb.init`` in ``mode`` (also passed through settings, so it beats ``WANDB_MODE``)."""
        wandb = self._wandb
        settings: dict[str, Any] = {"mode": mode, "silent": True}  # caller reports the location
        if mode == "online":
            settings.update(init_timeout=timeout, finish_timeout=FINISH_TIMEOUT_FACTOR * timeout)
        # W&B snapshots its environment at the first init of a process, so pass WANDB_DIR as read
        # now (the folder checked above)
        root = os.environ.get("WANDB_DIR") or None
        with _wandb_environ(mode):
            run = wandb.init(mode=mode, dir=root, reinit="finish_previous",
                             settings=wandb.Settings(**settings), **kwargs)
        if run is None or run.disabled:  # e.g. W&B gave up on a login prompt
            self.run, self.mode = None, "disabled"
            return
        self.run, self.mode = run, "offline" if run.offline else "online"

    def _fail(self, what: str, err: BaseException) -> None:
        warnings.warn(f"W&B {what} failed ({type(err).__name__}: {err}); continuing without "
                      "W&B logging", stacklevel=3)
        self.run, self.mode = None, "disabled"

    def log(self, data: dict[str, Any], step: int | None = None) -> None:
        if self.run is None:
            return
        try:
            self.run.log(data, step=step)
        except Exception as err:
            self._fail("log", err)

    def table(self, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        if self.run is None:
            return
        try:
            self.run.log({key: self._wandb.Table(columns=columns, data=rows)})
        except Exception as err:
            self._fail("table", err)

    def summary(self, data: dict[str, Any]) -> None:
        if self.run is None:
            return
        try:
            self.run.summary.update(data)
        except Exception as err:
            self._fail("summary", err)

    def finish(self) -> None:
        if self.run is None:
            return
        try:
            self.run.finish()
        except Exception as err:
            self._fail("finish", err)
        self.run = None
