"""Markdown report of a restore results folder: one row per stored run.

Columns: the run id, the config settings that vary between the runs (for a single run: those
that differ from the defaults), the status, the final cosine / relative error / sign agreement
with the true Jacobian, the held-out relative residual (probes only), the directional
evaluations spent and their multiple of the limit (``dim_in``), the probe mode, the
least-squares baseline on the same probes and, for diverged runs, the step.

``loss_up_sign_up`` flags the reference's observation "the loss goes up while the sign of
every component of the Jacobian improves" (:func:`loss_sign_flag`, read from each run's
per-evaluation history ``OUT/history/RUN_ID.json``): the training loss, the held-out residual
or the relative error to the true Jacobian (scale drift under a scale-free loss such as
``cosine``) rises, for 3 evaluations running, 10 % above its lowest value so far while the sign
agreement gains at least 0.01 over that point (both as medians of the last 5 evaluations).
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..io import write_text_atomic
from ..runs import RESULTS, RunStore
from .config import RestoreConfig
from .run import HISTORY, PART, record_config, stored_records

__all__ = ["REPORT", "loss_sign_flag", "report_table", "write_report"]

#: the series :func:`loss_sign_flag` checks, in order: the training loss, the held-out relative
#: residual (probes only) and the relative error to the true Jacobian (scale drift)
FLAG_SERIES = ("loss", "heldout_rel", "rel_error")

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


def _finite(entry: dict[str, Any], key: str) -> float | None:
    v = entry.get(key)
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _smoothed(history: list[dict[str, Any]], series: str, window: int
              ) -> list[tuple[Any, float, float]]:
    """(epoch, trailing median of ``series``, trailing median of the sign agreement) over the
    last ``window`` evaluations where both are finite."""
    pts = [(e.get("epoch"), v, s) for e in history
           if (v := _finite(e, series)) is not None and (s := _finite(e, "sign_agreement"))
           is not None]
    return [(ep, statistics.median(p[1] for p in pts[max(0, k + 1 - window):k + 1]),
             statistics.median(p[2] for p in pts[max(0, k + 1 - window):k + 1]))
            for k, (ep, _, _) in enumerate(pts)]


def loss_sign_flag(history: list[dict[str, Any]], rise: float = 0.1, sign_gain: float = 0.01,
                   window: int = 5, sustain: int = 3) -> dict[str, Any] | None:
    """The first stretch of ``history`` (per-evaluation records with ``epoch``,
    ``sign_agreement`` and some of :data:`FLAG_SERIES`) in which a series rises while the sign
    agreement improves; ``None`` if there is none.

    Both are trailing medians over ``window`` evaluations (a one-evaluation blip of a noisy
    minibatch loss is not a rise). At evaluation ``j`` the condition holds when the series is
    ≥ ``(1 + rise)`` × its lowest value so far (at epoch ``a``) and the sign agreement is ≥ its
    value at ``a`` plus ``sign_gain``; a flag needs ``sustain`` consecutive evaluations (a
    series whose lowest value is ≤ 0, e.g. a signed loss, cannot rise relatively: not flagged).
    Returns ``{"series", "from_epoch", "to_epoch", "value_from", "value_to", "sign_from",
    "sign_to"}`` (smoothed values; the stretch ends at the last consecutive evaluation that
    keeps the condition).
    """
    for series in FLAG_SERIES:
        best: tuple[float, float, Any] | None = None  # value, sign, epoch at the lowest value
        hit: dict[str, Any] | None = None
        run = 0
        for epoch, value, sign in _smoothed(history, series, window):
            if (best is not None and best[0] > 0 and value >= (1 + rise) * best[0]
                    and sign >= best[1] + sign_gain):
                run += 1
                hit = {"series": series, "from_epoch": best[2], "to_epoch": epoch,
                       "value_from": best[0], "value_to": value, "sign_from": best[1],
                       "sign_to": sign}
                continue
            if run >= sustain:
                return hit
            run, hit = 0, None
            if best is None or value < best[0]:
                best = (value, sign, epoch)
        if run >= sustain:
            return hit
    return None


def _flag_cell(flag: dict[str, Any] | None) -> str:
    if flag is None:
        return "–"
    return (f"{flag['series']} {_cell(flag['value_from'])}→{_cell(flag['value_to'])}, sign "
            f"{flag['sign_from']:.3f}→{flag['sign_to']:.3f} (epochs {flag['from_epoch']}–"
            f"{flag['to_epoch']})")


def _columns(configs: list[RestoreConfig]) -> list[str]:
    names = [f.name for f in dataclasses.fields(RestoreConfig)]
    if len(configs) > 1:
        varying = [n for n in names if len({repr(getattr(c, n)) for c in configs}) > 1]
        if varying:
            return varying
    default = RestoreConfig()
    return [n for n in names if any(getattr(c, n) != getattr(default, n) for c in configs)]


def report_table(records: Iterable[dict[str, Any]],
                 flags: dict[str, dict[str, Any] | None] | None = None) -> str:
    """A Markdown table of ``records`` (results records; ones without a valid config are
    left out); with ``flags`` (run id -> :func:`loss_sign_flag`) a ``loss_up_sign_up``
    column."""
    rows = [(rec, cfg) for rec in records if (cfg := record_config(rec)) is not None]
    if not rows:
        return "(no runs)"
    columns = _columns([cfg for _, cfg in rows])
    head = ["run_id", *columns, *_METRICS, *(["loss_up_sign_up"] if flags is not None else [])]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rec, cfg in rows:
        cells = [_cell(v) for v in (rec["run_id"], *(getattr(cfg, n) for n in columns),
                                    *(rec.get(m) for m in _METRICS))]
        if flags is not None:
            cells.append(_flag_cell(flags.get(rec["run_id"])))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_flags(store: RunStore, records: Iterable[dict[str, Any]]
              ) -> dict[str, dict[str, Any] | None]:
    """:func:`loss_sign_flag` of every record: the flag it stores, or, for records written
    before runs stored it, recomputed from its stored history (``None`` when it has none)."""
    out: dict[str, dict[str, Any] | None] = {}
    for rec in records:
        if "loss_up_sign_up" in rec:
            out[rec["run_id"]] = rec["loss_up_sign_up"]
            continue
        path = store.out / HISTORY / f"{rec['run_id']}.json"
        try:
            history = json.loads(path.read_text())
        except (OSError, ValueError):
            history = None
        out[rec["run_id"]] = loss_sign_flag(history) if isinstance(history, list) else None
    return out


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
    flags = run_flags(store, records)
    flagged = [rid for rid, f in flags.items() if f is not None]
    note = (f"\n{len(flagged)} run(s) flagged loss_up_sign_up: a loss (or the relative error: "
            "scale drift) rose while the sign agreement improved ("
            f"{', '.join(flagged)}).\n" if flagged else "")
    text = (f"# Jacobian restoration: {len(records)} run(s) in {store.out / RESULTS}"
            f"{f', {diverged} diverged' if diverged else ''}\n\n"
            f"{report_table(records, flags)}\n{note}")
    write_text_atomic(store.out / REPORT, text)
    return text
