"""Results files of a run directory: ``results.jsonl`` (one record per run) and ``curves.jsonl``.

Each line is written by one ``os.write`` of the complete line to a file opened with
``O_APPEND``, then fsynced, so a killed process leaves either the whole line or nothing (a torn
final line, should the OS ever leave one, is skipped on reading); see :mod:`gradsurrogate.io`.
The curves line of a run is written before its record, so every finished record has its curves.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..io import append_jsonl_many, read_jsonl

__all__ = [
    "CURVES",
    "RESULTS",
    "finished_ids",
    "read_curves",
    "read_jsonl",
    "read_results",
    "write_run",
]

RESULTS, CURVES = "results.jsonl", "curves.jsonl"


def write_run(out_dir: str | Path, pairs: Iterable[tuple[dict[str, Any], dict[str, Any]]]) -> None:
    """Append the curves, then the records, of finished runs ``(record, curves)``."""
    pairs = list(pairs)
    append_jsonl_many(Path(out_dir) / CURVES, [c for _, c in pairs])
    append_jsonl_many(Path(out_dir) / RESULTS, [r for r, _ in pairs])


def read_results(out_dir: str | Path) -> list[dict[str, Any]]:
    """Records of ``out_dir/results.jsonl``, the last one per ``run_id``."""
    latest: dict[str, dict[str, Any]] = {}
    for rec in read_jsonl(Path(out_dir) / RESULTS):
        latest[rec.get("run_id", str(len(latest)))] = rec
    return list(latest.values())


def read_curves(out_dir: str | Path, run_ids: Iterable[str] | None = None
                ) -> dict[str, dict[str, Any]]:
    """Curves of ``out_dir/curves.jsonl`` by ``run_id`` (only ``run_ids`` when given)."""
    wanted = None if run_ids is None else set(run_ids)
    out = {}
    for rec in read_jsonl(Path(out_dir) / CURVES):
        if wanted is None or rec.get("run_id") in wanted:
            out[rec["run_id"]] = rec
    return out


def finished_ids(out_dir: str | Path) -> set[str]:
    """``run_id``s that already have a record (resume skips them)."""
    return {r["run_id"] for r in read_jsonl(Path(out_dir) / RESULTS) if "run_id" in r}
