"""Optional W&B logging that never fails a run (shared by the xor and restore CLIs).

``mode``: ``"disabled"`` (nothing), ``"offline"`` (files under ``WANDB_DIR``, sync later) or
``"online"``; ``None`` means offline unless an API key is configured (``WANDB_API_KEY`` or a
``api.wandb.ai`` entry in ``~/.netrc``). Any W&B error is reported as a warning and logging is
switched off for that run.
"""

from __future__ import annotations

import netrc
import os
import warnings
from typing import Any

__all__ = ["WANDB_MODES", "Tracker", "default_wandb_mode"]

WANDB_MODES: tuple[str, ...] = ("disabled", "offline", "online")


def default_wandb_mode() -> str:
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        path = os.environ.get("NETRC", os.path.expanduser("~/.netrc"))
        if os.path.exists(path) and netrc.netrc(path).authenticators("api.wandb.ai"):
            return "online"
    except (OSError, netrc.NetrcParseError):
        pass
    return "offline"


class Tracker:
    """One W&B run (or nothing): ``log``, ``table``, ``summary``, ``finish`` never raise."""

    def __init__(self, mode: str | None, project: str, config: dict[str, Any],
                 name: str | None = None, group: str | None = None, job_type: str | None = None):
        mode = default_wandb_mode() if mode is None else mode
        if mode not in WANDB_MODES:
            raise ValueError(f"unknown W&B mode {mode!r}; accepted: {', '.join(WANDB_MODES)}")
        self.mode, self.run = mode, None
        if mode == "disabled":
            return
        try:
            import wandb

            self._wandb = wandb
            # quiet console: the run's location is reported by the caller, not by W&B banners
            self.run = wandb.init(mode=mode, project=project, config=config, name=name,
                                  group=group, job_type=job_type, reinit="finish_previous",
                                  settings=wandb.Settings(silent=True))
        except Exception as err:
            self._fail("init", err)

    def _fail(self, what: str, err: BaseException) -> None:
        warnings.warn(f"W&B {what} failed ({type(err).__name__}: {err}); continuing without "
                      "W&B logging", stacklevel=3)
        self.run = None

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
