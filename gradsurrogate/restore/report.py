"""Markdown report of a restore results folder: one row per stored run.

Columns: the run id, the config settings that vary between the runs (for a single run: those
that differ from the defaults), the status, the final cosine / relative error / sign agreement
with the true Jacobian, the held-out relative residual (probes only), the directional
evaluations spent and their multiple of the limit (``dim_in``), the probe mode, the
least-squares baseline on the same probes and, for diverged runs, the step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..io import write_text_atomic
from ..runs import RESULTS, RunStore
from .config import RestoreConfig
from .run import PART, record_config, stored_records

__all__ = ["REPORT", "report_table", "write_report"]

REPORT = "report.md"
_METRICS = ("status", "final_cosine", "final_rel_error", "final_sign_agreement",
            "final_heldout_rel", "jvp_evals", "x_limit", "probes", "ls_cosine", "ls_rel_error",
            "diverged_step")


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}" if 1e-3 <= abs(value) < 1e4 or value == 0 else f"{value:.2e}"
    return str(value)


def _columns(configs: list[RestoreConfig]) -> list[str]:
    names = [f.name for f in dataclasses.fields(RestoreConfig)]
    if len(configs) > 1:
        varying = [n for n in names if len({repr(getattr(c, n)) for c in configs}) > 1]
        if varying:
            return varying
    default = RestoreConfig()
    return [n for n in names if any(getattr(c, n) != getattr(default, n) for c in configs)]


def report_table(records: Iterable[dict[str, Any]]) -> str:
    """A Markdown table of ``records`` (results records; ones without a valid config are
    left out)."""
    rows = [(rec, cfg) for rec in records if (cfg := record_config(rec)) is not None]
    if not rows:
        return "(no runs)"
    columns = _columns([cfg for _, cfg in rows])
    head = ["run_id", *columns, *_METRICS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rec, cfg in rows:
        cells = [rec["run_id"], *(getattr(cfg, n) for n in columns),
                 *(rec.get(m) for m in _METRICS)]
        lines.append("| " + " | ".join(_cell(v) for v in cells) + " |")
    return "\n".join(lines)


def write_report(out: str | Path | RunStore) -> str:
    """Write ``OUT/report.md`` (atomically) from ``OUT/results.jsonl``; returns its text.
    ``out``: a locked :class:`RunStore`, or a folder (locked for the call:
    :class:`~gradsurrogate.runs.StoreBusyError` while another process writes it)."""
    if isinstance(out, RunStore) and out.locked:
        return _write_report(out)
    with RunStore(out.out if isinstance(out, RunStore) else out, part=PART) as store:
        return _write_report(store)


def _write_report(store: RunStore) -> str:
    records = list(stored_records(store).values())
    diverged = sum(bool(r.get("diverged")) for r in records)
    text = (f"# Jacobian restoration: {len(records)} run(s) in {store.out / RESULTS}"
            f"{f', {diverged} diverged' if diverged else ''}\n\n{report_table(records)}\n")
    write_text_atomic(store.out / REPORT, text)
    return text
