"""Results files of an XOR run folder, through :class:`gradsurrogate.runs.RunStore`:
``results.jsonl`` (one record per run) and ``curves.jsonl`` (its curves).

The curves line of a run is written before its record, so every finished record has its
curves. Stored records are keyed by the run id recomputed from their stored ``config``, so
folders written under an older id scheme (or before a config field existed) still resume.
"""

from __future__ import annotations

import functools
import os
import platform
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..runs import RESULTS, RunStore, StoreWarning
from .config import XorConfig

__all__ = ["CURVES", "RESULTS", "environment", "finished_ids", "read_curves", "read_results",
           "write_run"]

CURVES = "curves.jsonl"


def _rekey(record: dict[str, Any]) -> str | None:
    """The current run id of a stored record (``None``, with a warning, if its config is no
    longer valid)."""
    try:
        return XorConfig.from_dict(record["config"]).run_id
    except (KeyError, TypeError, ValueError) as err:
        warnings.warn(f"skipped stored run {record.get('run_id')!r}: its config is not a valid "
                      f"XorConfig ({err})", StoreWarning, stacklevel=3)
        return None


def write_run(store: RunStore, pairs: Iterable[tuple[dict[str, Any], dict[str, Any]]]) -> None:
    """Append the curves, then the records, of finished runs ``(record, curves)``."""
    pairs = list(pairs)
    store.append([c for _, c in pairs], CURVES)
    store.append([r for r, _ in pairs], RESULTS)


def read_results(out_dir: str | Path) -> list[dict[str, Any]]:
    """Records of ``out_dir/results.jsonl``, the last one per run."""
    return list(RunStore(out_dir).records(RESULTS, _rekey).values())


def read_curves(out_dir: str | Path, run_ids: Iterable[str] | None = None,
                records: Iterable[dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Curves of ``out_dir/curves.jsonl`` by ``run_id`` (only ``run_ids`` when given).
    ``records``: the folder's :func:`read_results`, if the caller has them already."""
    wanted = None if run_ids is None else set(run_ids)
    records = read_results(out_dir) if records is None else records
    renamed = {r["stored_run_id"]: r["run_id"] for r in records if "stored_run_id" in r}
    out = {}
    for key, curves in RunStore(out_dir).records(CURVES).items():
        key = renamed.get(key, key)
        if wanted is None or key in wanted:
            out[key] = {**curves, "run_id": key}
    return out


def finished_ids(out_dir: str | Path) -> set[str]:
    """Run ids that already have a record (resume skips them)."""
    return RunStore(out_dir).finished(RESULTS, _rekey)


@functools.lru_cache(maxsize=1)
def _cpu_name() -> str:
    """The CPU model (``platform.processor()`` is empty on Linux: read /proc/cpuinfo)."""
    name = platform.processor()
    if name and name != platform.machine():
        return name
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return name or platform.machine()


def environment() -> dict[str, Any]:
    """The machine and versions a run (or a report) was made with: ``processor`` (CPU model),
    ``machine``, ``cpu_count``, ``system``, ``python``, ``torch`` and ``gradsurrogate``
    versions. A record can carry it under ``"env"`` so its report names where it ran."""
    import torch

    from .. import __version__

    return {"processor": _cpu_name(), "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "system": platform.system(),
            "python": platform.python_version(), "torch": torch.__version__,
            "gradsurrogate": __version__}
