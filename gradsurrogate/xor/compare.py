"""Compare two benchmark tables by overlap of their 95% confidence intervals, never by digits.

A table source is a results folder (``results.jsonl``: summarised afresh), a ``summary.json``
written by :func:`gradsurrogate.xor.report.write_report` (or the folder holding one), or a
Markdown file (e.g. the README) whose table cells read ``mean ± half-width``. Markdown cells are
named by (heading, row labels, column header); the heading is dropped where the rest names the
cell uniquely on both sides, so a table pasted under another heading still matches. Blank row
labels take the value above them (tables that print the depth once per block).

``main(argv)`` is the command (``scripts/compare_tables.py OLD NEW``): it prints one line per
cell and a tally, and exits 1 when a cell disagrees (disjoint intervals) or an old cell is
missing from the new table, else 0 (2 on a bad argument).
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..stats import compare, t_quantile

__all__ = ["compare_sources", "format_comparison", "load_table", "main", "parse_markdown",
           "std_to_half_width"]

_CELL = re.compile(r"^\s*\**([-+]?\d+(?:\.\d+)?)\s*±\s*(\d+(?:\.\d+)?|–|-|nan)")
#: columns that never name a cell (they change from run to run)
IGNORED_COLUMNS = {"rank", "n", "tied with", "ties", "std", "range", "div", "reach", "best",
                   "test loss", "rise", "cos w0"}


def std_to_half_width(std: float, n: int, population: bool = True) -> float:
    """The 95% CI half-width of a mean printed as ``mean ± std`` over ``n`` seeds
    (``population``: std with n in the denominator, as older reports printed)."""
    if n < 2:
        raise ValueError(f"a confidence interval needs n >= 2 seeds; got {n}")
    sample = std * (n / (n - 1)) ** 0.5 if population else std
    return t_quantile(0.975, n - 1) * sample / n ** 0.5


def _split(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _tables(text: str) -> list[tuple[str, list[str], list[list[str]]]]:
    """(heading, header, rows) of every Markdown table in ``text``."""
    out: list[tuple[str, list[str], list[list[str]]]] = []
    section, lines = "", text.splitlines()
    current: list[list[str]] | None = None
    for i, line in enumerate(lines):
        s = line.strip()
        if s.startswith("#"):
            section, current = s.lstrip("#").strip(), None
        elif not s.startswith("|"):
            current = None
        elif current is None:
            nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
            if "-" in nxt and set(nxt.replace("|", "").replace(":", "").strip()) <= {"-"}:
                current = []
                out.append((section, [c.lower() for c in _split(s)], current))
        elif not set(s.replace("|", "").replace(":", "").strip()) <= {"-"}:
            current.append(_split(s))
    return out


def parse_markdown(text: str, old_std_n: int | None = None) -> list[dict[str, Any]]:
    """Rows ``{"section", "labels", "column", "mean", "half_width"}`` of every ``mean ± h``
    cell of the Markdown tables in ``text``: ``labels`` are the row's cells in the columns that
    hold no interval (blank ones repeat the row above), ``column`` the cell's header.
    ``old_std_n``: the tables print ``mean ± std`` (population std) over this many seeds;
    converted to 95% CI half-widths."""
    out: list[dict[str, Any]] = []
    for section, header, rows in _tables(text):
        width = len(header)
        rows = [(r + [""] * width)[:width] for r in rows]
        values = {j for r in rows for j, c in enumerate(r) if _CELL.match(c)}
        labels = [j for j in range(width) if j not in values and header[j] not in IGNORED_COLUMNS]
        above = [""] * width
        for r in rows:
            for j in labels:
                if r[j] == "":
                    r[j] = above[j]
            above = r
            for j in sorted(values):
                m = _CELL.match(r[j])
                if not m or header[j] in IGNORED_COLUMNS:
                    continue
                hw = None if m.group(2) in ("–", "-", "nan") else float(m.group(2))
                if hw is not None and old_std_n is not None:
                    hw = std_to_half_width(hw, old_std_n)
                out.append({"section": section, "labels": tuple(r[j] for j in labels),
                            "column": header[j], "mean": float(m.group(1)), "half_width": hw})
    return out


def _keyed(rows: list[dict[str, Any]], with_section: set[tuple[Any, ...]]
           ) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        short = (r["labels"], r["column"])
        name = " | ".join([*r["labels"], r["column"]])
        out.append({**r, "key": f"{r['section']} :: {name}" if short in with_section else name})
    return out


def load_table(source: str | Path, old_std_n: int | None = None) -> list[dict[str, Any]]:
    """Rows of a table source (see the module docstring), each with a ``key`` for JSON and
    folder sources, or ``section``/``labels``/``column`` for Markdown ones."""
    path = Path(source)
    if path.is_dir() and (path / "results.jsonl").exists():
        from .report import summarise, summary_rows
        from .results import read_results

        records = read_results(path)
        if not records:
            raise ValueError(f"no results in {str(path / 'results.jsonl')!r}")
        return summary_rows(summarise(records))
    if path.is_dir():
        path = path / "summary.json"
    if not path.exists():
        raise ValueError(f"no table at {str(source)!r}: expected a results folder, a "
                         "summary.json or a Markdown file")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            return list(json.loads(text)["rows"])
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{str(path)!r} is not a summary.json ({err})") from None
    rows = parse_markdown(text, old_std_n)
    if not rows:
        raise ValueError(f"{str(path)!r} holds no 'mean ± half-width' table cells")
    return rows


def _as_markdown_rows(source: str | Path) -> list[dict[str, Any]]:
    """A folder's report tables as Markdown rows (to compare with a Markdown source)."""
    from .report import report_tables

    path = Path(source)
    return parse_markdown(report_tables(path if path.is_dir() else path.parent))


def compare_sources(old: str | Path, new: str | Path, old_std_n: int | None = None
                    ) -> list[dict[str, Any]]:
    """:func:`gradsurrogate.stats.compare` of two table sources (a folder compared with a
    Markdown file is rendered as its report's tables first)."""
    a, b = load_table(old, old_std_n), load_table(new)
    md_a, md_b = "section" in (a[0] if a else {}), "section" in (b[0] if b else {})
    if md_a != md_b:
        folder = Path(new if md_a else old)
        if not (folder / "results.jsonl").exists():
            raise ValueError(f"to compare a Markdown table with {str(folder)!r}, pass the "
                             "results folder (its report tables are rendered and matched)")
        if md_a:
            b = _as_markdown_rows(new)
        else:
            a = _as_markdown_rows(old)
    if md_a or md_b:
        twice: set[tuple[Any, ...]] = set()  # (labels, column) that one side holds twice
        for side in (a, b):
            per = Counter((r["labels"], r["column"]) for r in side)
            twice |= {k for k, c in per.items() if c > 1}
        a, b = _keyed(a, twice), _keyed(b, twice)
    return compare(a, b)


def format_comparison(result: Sequence[dict[str, Any]]) -> str:
    """One line per cell (``verdict  key  old [lo, hi]  new [lo, hi]``) and a tally."""
    def iv(x: tuple[float, float] | None) -> str:
        return "–" if x is None else f"[{x[0]:.3f}, {x[1]:.3f}]"

    lines = [f"{r['verdict']:<11}  {r['key']}  old {iv(r['old'])}  new {iv(r['new'])}"
             for r in result]
    tally = Counter(r["verdict"] for r in result)
    lines.append("tally: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.items())))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``compare OLD NEW [--old-std N]``: exit 0 if every old cell has an overlapping new one."""
    from ..cli import run_command

    def body() -> int:
        parser = argparse.ArgumentParser(
            prog="gradsurrogate compare", allow_abbrev=False,
            description="Compare two tables cell by cell by overlap of their 95% confidence "
                        "intervals. OLD/NEW: a results folder, a summary.json, or a Markdown "
                        "file with 'mean ± half-width' cells.")
        parser.add_argument("old")
        parser.add_argument("new")
        parser.add_argument("--old-std", type=int, default=None, metavar="N",
                            help="OLD prints 'mean ± std' (population std) over N seeds: "
                                 "convert to 95%% CI half-widths")
        args = parser.parse_args(list(argv or []))
        result = compare_sources(args.old, args.new, args.old_std)
        print(format_comparison(result))
        bad = [r for r in result if r["verdict"] in ("disagree", "only old")]
        return 1 if bad else 0

    return run_command("compare", body)
