"""The headline question of the destroy-Jacobian benchmark, answered per task from its records.

Which of the reference's observations hold — sign of ∇θ trains, sign of ∇x does not, random
flips up to p = 0.45 still learn, depth makes training unstable — and how the feedback family
(FA, uSF, frSF, brSF, DFA, learned feedback) ranks. Every verdict is computed from the cells'
95% confidence intervals (:mod:`gradsurrogate.stats`) by the criteria below; the Markdown and
the figure state them.

Criteria, per task and depth, with ``C`` the chance accuracy and ``E`` the exact baseline's mean:

* a cell **learns** when its CI lies above ``T = C + 0.5 (E − C)`` (it keeps at least half the
  exact baseline's gain over chance), **fails** when its CI lies below ``T``, and is
  **inconclusive** when its CI contains ``T``; a cell that learns is **as exact** unless its CI
  lies entirely below the exact baseline's CI (**learns, below exact**);
* sign of ∇θ trains: holds if ``grad_weight sign`` is as exact; partly if it learns below exact;
* sign of ∇x does not train: holds if ``grad_input sign`` fails; partly if it learns below exact;
* flips up to 0.45 still learn (∇x; ∇θ): holds if every ``flip:p`` cell with p ≤ 0.45 learns;
* depth makes training unstable: at each deeper depth, holds if the exact baseline there is
  flagged unstable, has a diverged run, or its CI lies below the shallowest depth's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..io import save_figure

__all__ = ["FEEDBACK", "LEARN_FRACTION", "TASK_CHANCE", "chance_of", "classify",
           "headline_lines", "key_cells", "key_table_lines", "label", "observations",
           "plot_summary", "ranking"]

#: fraction of the exact baseline's gain over chance a cell must keep to "learn"
LEARN_FRACTION = 0.5
#: chance accuracy of the known tasks (records may state ``chance_acc`` themselves)
TASK_CHANCE: dict[str, float] = {"xor": 0.5, "mnist1d-mlp": 0.1, "mnist1d-cnn": 0.1,
                                 "digits-mlp": 0.1}
#: backward modes of the feedback family (ranked against each other and exact)
FEEDBACK = ("random", "fa", "usf", "frsf", "brsf", "dfa", "learned")
FLIP_MAX = 0.45


def chance_of(task: str, records: Sequence[dict[str, Any]]) -> float | None:
    """Chance accuracy: a record's ``chance_acc``, else 1 / its config's ``n_classes``, else
    :data:`TASK_CHANCE` (None when unknown)."""
    for r in records:
        if r.get("chance_acc") is not None:
            return float(r["chance_acc"])
        n = r.get("config", {}).get("n_classes")
        if n:
            return 1.0 / float(n)
    return TASK_CHANCE.get(task)


def _interval(row: dict[str, Any] | None) -> tuple[float, float] | None:
    if row is None or row["n"] < 2 or not math.isfinite(row["acc_hw"]):
        return None
    return row["acc_low"], row["acc_high"]


def classify(row: dict[str, Any] | None, exact: dict[str, Any] | None,
             chance: float | None) -> str:
    """``as exact`` / ``learns, below exact`` / ``fails`` / ``inconclusive`` / ``no data``
    (see the module docstring; needs ≥ 2 seeds, the exact baseline and the chance level)."""
    ci = _interval(row)
    if row is None or exact is None or chance is None or not math.isfinite(exact["acc_mean"]):
        return "no data"
    if ci is None:
        return "too few seeds"
    threshold = chance + LEARN_FRACTION * (exact["acc_mean"] - chance)
    if ci[1] < threshold:
        return "fails"
    if ci[0] <= threshold:
        return "inconclusive"
    exact_ci = _interval(exact) or (exact["acc_mean"], exact["acc_mean"])
    return "learns, below exact" if ci[1] < exact_ci[0] else "as exact"


def _find(rows: Sequence[dict[str, Any]], target: str, mode: str, p: float | None = None
          ) -> dict[str, Any] | None:
    hit = [r for r in rows if r["target"] == target and r["mode"] == mode and r["p"] == p]
    return hit[0] if hit else None


def _cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return "–"
    hw = "–" if not math.isfinite(row["acc_hw"]) else f"{row['acc_hw']:.3f}"
    return f"{row['acc_mean']:.3f} ± {hw}" + ("†" if row["unstable"] else "")


_VERDICT = {  # observation -> classification -> verdict
    "trains": {"as exact": "holds", "learns, below exact": "partly", "fails": "does not hold"},
    "fails": {"fails": "holds", "learns, below exact": "partly", "as exact": "does not hold"},
}


def observations(rows: Sequence[dict[str, Any]], chance: float | None
                 ) -> list[tuple[str, dict[int, str]]]:
    """(observation, {depth: "verdict (evidence)"}) for the rows of one task."""
    depths = sorted({r["config"].get("depth", 0) for r in rows})
    by_depth = {d: [r for r in rows if r["config"].get("depth", 0) == d] for d in depths}
    exact = {d: _find(by_depth[d], "exact", "exact") for d in depths}
    out: list[tuple[str, dict[int, str]]] = []
    for name, target, kind in (("sign of ∇θ trains", "grad_weight", "trains"),
                               ("sign of ∇x does not train", "grad_input", "fails")):
        cells = {}
        for d in depths:
            row = _find(by_depth[d], target, "sign")
            c = classify(row, exact[d], chance)
            if c in _VERDICT[kind]:
                cells[d] = f"{_VERDICT[kind][c]} ({c}; {_cell(row)})"
            else:  # inconclusive, too few seeds, no data
                cells[d] = c if row is None else f"{c} ({_cell(row)})"
        out.append((name, cells))
    for name, target in (("flips up to p = 0.45 still learn (∇x)", "grad_input"),
                         ("flips up to p = 0.45 still learn (∇θ)", "grad_weight")):
        cells = {}
        for d in depths:
            flips = sorted((r for r in by_depth[d] if r["target"] == target
                            and r["mode"] == "flip" and r["p"] is not None
                            and r["p"] <= FLIP_MAX + 1e-12), key=lambda r: r["p"])
            classes = [(r, classify(r, exact[d], chance)) for r in flips]
            failed = [r for r, c in classes if c == "fails"]
            unsure = [r for r, c in classes if c not in ("as exact", "learns, below exact")]
            if not flips:
                cells[d] = "not measured"
            elif failed:
                cells[d] = f"does not hold (fails at p = {failed[0]['p']:g}: {_cell(failed[0])})"
            elif unsure:
                cells[d] = f"inconclusive (p = {unsure[0]['p']:g}: {_cell(unsure[0])})"
            else:
                top = flips[-1]
                cells[d] = f"holds (learns up to p = {top['p']:g}: {_cell(top)})"
        out.append((name, cells))
    cells = {}
    base = depths[0] if depths else None
    for d in depths:
        e, e0 = exact[d], exact[base] if base is not None else None
        if len(depths) == 1:
            cells[d] = "not measured (one depth)"
            continue
        if d == base or e is None or e0 is None:
            cells[d] = "reference depth" if d == base and e is not None else "not measured"
            continue
        below = (_interval(e) is not None and _interval(e0) is not None
                 and e["acc_high"] < e0["acc_low"])
        signs = [s for s, on in (("unstable", e["unstable"]), (f"{e['diverged']} diverged",
                 e["diverged"]), ("CI below shallowest", below)) if on]
        cells[d] = (f"holds ({', '.join(signs)}; {_cell(e)})" if signs
                    else f"does not hold ({_cell(e)} vs {_cell(e0)} at depth {base})")
    out.append(("depth makes training unstable (exact)", cells))
    out.append(("unstable cells (any spec)", {
        d: f"{sum(r['unstable'] for r in by_depth[d])} of {len(by_depth[d])}" for d in depths}))
    return out


def _method(row: dict[str, Any]) -> str | None:
    """The feedback-family name of a row (None for other rows; ``exact`` for the baseline)."""
    if row["target"] == "exact":
        return "exact"
    name = row["mode"].split(":")[0]
    if name in FEEDBACK:
        return row["mode"] if row["p"] is None else f"{row['mode']}:{row['p']:g}"
    head = str(row["config"].get("spec", "")).lower().partition(":")[0].strip()
    return head if head in FEEDBACK else None  # whole-network specs such as ``dfa[:...]``


def ranking(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Exact and the feedback-family rows of one task and depth, best mean first, each with
    ``rank`` = 1 + the number of methods whose CI lies entirely above its own (methods whose
    intervals overlap are tied) and ``ties`` (the methods whose intervals overlap its own)."""
    methods = [(m, r) for r in rows if (m := _method(r)) is not None]
    if len(methods) < 2:
        return []
    out = []
    for m, r in methods:
        ci = _interval(r) or (r["acc_mean"], r["acc_mean"])
        better = 0
        ties = []
        for m2, r2 in methods:
            if r2 is r:
                continue
            ci2 = _interval(r2) or (r2["acc_mean"], r2["acc_mean"])
            if ci2[0] > ci[1]:
                better += 1
            elif ci2[0] <= ci[1] and ci[0] <= ci2[1]:
                ties.append(m2)
        out.append({"method": m, "row": r, "rank": 1 + better, "ties": ties})
    out.sort(key=lambda x: (x["rank"], -x["row"]["acc_mean"]))
    return out


def headline_lines(task: str, rows: Sequence[dict[str, Any]], chance: float | None
                   ) -> list[str]:
    """Markdown: the observations table and the feedback ranking of one task."""
    depths = sorted({r["config"].get("depth", 0) for r in rows})
    lines = [f"### {task}: the reference's observations", "",
             f"Criteria: chance C = {'unknown' if chance is None else f'{chance:g}'}; a cell "
             f"learns when its 95% CI lies above C + {LEARN_FRACTION:g}·(exact − C), fails when "
             "it lies below, is inconclusive when it contains that threshold, and is as exact "
             "unless its CI lies below the exact baseline's. † = unstable.", ""]
    head = ["observation", *[f"depth {d}" for d in depths]]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, cells in observations(rows, chance):
        lines.append("| " + " | ".join([name, *[cells.get(d, "–") for d in depths]]) + " |")
    lines.append("")
    for d in depths:
        ranked = ranking([r for r in rows if r["config"].get("depth", 0) == d])
        if not ranked:
            continue
        lines += [f"Feedback family at depth {d} (rank = 1 + methods with a CI entirely above; "
                  "overlapping intervals tie):", "",
                  "| depth | rank | method | test acc (mean ± 95% CI) | n | tied with |",
                  "|---|---|---|---|---|---|"]
        for x in ranked:
            lines.append(f"| {d} | {x['rank']} | {x['method']} | {_cell(x['row'])} | "
                         f"{x['row']['n']} | {', '.join(x['ties']) or '–'} |")
        lines.append("")
    return lines


SUMMARY_CELLS = [("exact", "exact", None), ("grad_weight", "sign", None),
                 ("grad_input", "sign", None), ("grad_weight", "flip", 0.45),
                 ("grad_input", "flip", 0.45), ("all", "flip", 0.45)]


def key_cells(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Labels of the headline cells present in ``rows`` (:data:`SUMMARY_CELLS`), then the
    feedback family in :data:`FEEDBACK` order."""
    labels = [("exact" if target == "exact" else f"{target} {mode}" +
               ("" if p is None else f":{p:g}"))
              for target, mode, p in SUMMARY_CELLS if _find(rows, target, mode, p) is not None]
    return labels + sorted({m for r in rows if (m := _method(r)) not in (None, "exact")},
                           key=lambda m: (FEEDBACK.index(m.split(":")[0]), m))


def _by_label(rows: Sequence[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((r for r in rows if label(r) == name or _method(r) == name), None)


def key_table_lines(task: str, rows: Sequence[dict[str, Any]]) -> list[str]:
    """The task's key table (one row per depth, the headline cells as columns; mean ± 95% CI,
    † unstable): the table to paste into the README; the ``task`` and ``depth`` columns name
    each cell, so :mod:`gradsurrogate.xor.compare` matches it wherever it is pasted."""
    labels = key_cells(rows)
    if not labels:
        return []
    lines = [f"Key table ({task}; final test accuracy, mean ± 95% CI over n seeds):", "",
             "| " + " | ".join(["task", "depth", "n", *labels]) + " |",
             "|" + "---|" * (len(labels) + 3)]
    for d in sorted({r["config"].get("depth", 0) for r in rows}):
        sub = [r for r in rows if r["config"].get("depth", 0) == d]
        cells = [_by_label(sub, name) for name in labels]
        ns = sorted({c["n"] for c in cells if c is not None})
        lines.append("| " + " | ".join([task, str(d), "/".join(map(str, ns)),
                                         *[_cell(c) for c in cells]]) + " |")
    return [*lines, ""]


def plot_summary(task: str, rows: Sequence[dict[str, Any]], chance: float | None,
                 path: Path) -> None:
    """One figure per task: the headline cells and the feedback family, mean with 95% CI error
    bars, one colour per depth; chance (dotted) and each depth's learn threshold (dashed).
    Hollow markers: unstable cells."""
    from matplotlib.figure import Figure

    depths = sorted({r["config"].get("depth", 0) for r in rows})
    labels = key_cells(rows)
    import matplotlib

    fig = Figure(figsize=(max(4.0, 0.75 * len(labels) + 1.5), 3.6), dpi=90)
    ax = fig.subplots()
    colours = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    width = 0.7 / max(1, len(depths))
    for k, d in enumerate(depths):
        sub = [r for r in rows if r["config"].get("depth", 0) == d]
        col = colours[k % len(colours)]
        legend = f"depth {d}"
        for i, name in enumerate(labels):
            row = _by_label(sub, name)
            if row is None or not math.isfinite(row["acc_mean"]):
                continue
            hw = row["acc_hw"] if math.isfinite(row["acc_hw"]) else 0.0
            ax.errorbar([i + (k - (len(depths) - 1) / 2) * width], [row["acc_mean"]], [hw],
                        color=col, marker="o", ms=5, capsize=3, ls="none",
                        mfc="none" if row["unstable"] else col, label=legend)
            legend = None
        exact = _find(sub, "exact", "exact")
        if chance is not None and exact is not None:
            ax.axhline(chance + LEARN_FRACTION * (exact["acc_mean"] - chance), color=col,
                       ls="--", lw=0.8)
    if chance is not None:
        ax.axhline(chance, color="k", ls=":", lw=1, label="chance")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=35, ha="right", fontsize=7)
    ax.set_ylabel("final test accuracy\n(mean, 95% CI)", fontsize=8)
    ax.set_title(f"{task}: headline cells (dashed: learn threshold per depth; "
                 "hollow: unstable)", fontsize=9)
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    save_figure(fig, path)


def label(row: dict[str, Any]) -> str:
    """``exact``, ``target mode[:p]`` of a summary row, or the spec (e.g. ``dfa``) for specs
    that are not per-target modes."""
    if row["target"] in ("exact", row["mode"]):
        return row["target"]
    return f"{row['target']} {row['mode']}" + ("" if row["p"] is None else f":{row['p']:g}")
