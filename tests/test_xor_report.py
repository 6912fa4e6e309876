"""The benchmark report's statistics: CI tables, the unstable marker, the headline verdicts,
the feedback ranking, per-task grouping and the interval comparison of tables (synthetic
records with hand-computed intervals; no training)."""

import json
import math

import pytest

from gradsurrogate.runs import RunStore
from gradsurrogate.xor.compare import compare_sources, main, parse_markdown, std_to_half_width
from gradsurrogate.xor.config import XorConfig
from gradsurrogate.xor.headline import classify, key_table_lines, observations, ranking
from gradsurrogate.xor.report import report_tables, summarise, summary_rows, write_report

EXACT2 = [0.90, 0.91, 0.92, 0.90, 0.91]  # mean 0.908, CI [0.8976, 0.9184]
CELLS = {  # (depth, spec): final test accuracies of seeds 0..4
    (2, "exact"): EXACT2,
    (2, "grad_weight=sign"): EXACT2,                             # as exact
    (2, "grad_input=sign"): [0.55, 0.60, 0.50, 0.58, 0.52],      # fails
    (2, "grad_input=flip:0.45"): [0.85, 0.86, 0.84, 0.85, 0.85],  # learns, below exact
    (2, "grad_weight=flip:0.45"): [0.9, 0.5, 0.9, 0.5, 0.9],      # unstable, inconclusive
    (2, "weight=random"): [0.89, 0.90, 0.91, 0.90, 0.90],         # ties with exact
    (4, "exact"): [0.6, 0.9, 0.7, 0.9, 0.8],                      # unstable: std 0.130
}


def _record(cfg: XorConfig, acc: float) -> dict:
    return {"run_id": cfg.run_id, "config": cfg.to_dict(), "final_test_acc": acc,
            "final_test_loss": 0.3, "diverged": False, "diverged_step": None,
            "bayes_acc": 0.91, "steps_to_90pct_bayes": 25, "best_test_acc": acc,
            "max_test_loss_rise": 0.0, "grad_diagnostics": {}}


def _records(cells=CELLS, **fields) -> list[dict]:
    return [_record(XorConfig(depth=d, seed=s, spec=spec, steps=50, **fields), acc)
            for (d, spec), accs in cells.items() for s, acc in enumerate(accs)]


def _folder(path, records):
    with RunStore(path) as store:
        store.append(records)
    return path


def _row(rows, depth, target, mode, p=None):
    return next(r for r in rows if r["config"]["depth"] == depth and r["target"] == target
                and r["mode"] == mode and r["p"] == p)


def test_summary_rows_hold_t_intervals_and_the_unstable_flag():
    rows = summarise(_records())
    e = _row(rows, 2, "exact", "exact")
    s = math.sqrt(280e-6 / 4)  # deviations -8, 2, 12, -8, 2 (×1e-3)
    assert e["task"] == "xor" and e["n"] == 5 and e["acc_mean"] == pytest.approx(0.908)
    assert e["acc_std"] == pytest.approx(s)
    assert e["acc_hw"] == pytest.approx(2.7764451 * s / math.sqrt(5), rel=1e-6)
    assert not e["unstable"] and e["chance"] == 0.5
    assert _row(rows, 2, "grad_weight", "flip", 0.45)["unstable"]
    assert _row(rows, 4, "exact", "exact")["unstable"]
    # records written before tasks existed (no "task" in their config) are xor
    old = [dict(r, config={k: v for k, v in r["config"].items() if k != "task"})
           for r in _records()]
    assert [(r["task"], r["acc_mean"]) for r in summarise(old)] == \
        [(r["task"], r["acc_mean"]) for r in rows]


def test_headline_verdicts_follow_the_stated_criteria():
    rows = summarise(_records())
    exact = _row(rows, 2, "exact", "exact")
    assert classify(_row(rows, 2, "grad_weight", "sign"), exact, 0.5) == "as exact"
    assert classify(_row(rows, 2, "grad_input", "sign"), exact, 0.5) == "fails"
    assert classify(_row(rows, 2, "grad_input", "flip", 0.45), exact, 0.5) == \
        "learns, below exact"
    assert classify(_row(rows, 2, "grad_weight", "flip", 0.45), exact, 0.5) == "inconclusive"
    obs = dict(observations(rows, 0.5))
    assert obs["sign of ∇θ trains"][2].startswith("holds")
    assert obs["sign of ∇x does not train"][2].startswith("holds")
    assert obs["flips up to p = 0.45 still learn (∇x)"][2].startswith("holds")
    assert obs["flips up to p = 0.45 still learn (∇θ)"][2].startswith("inconclusive")
    assert obs["depth makes training unstable (exact)"][4].startswith("holds (unstable")
    assert obs["sign of ∇θ trains"][4].startswith("no data")  # depth 4 has exact only


def test_ranking_ties_overlapping_intervals():
    rows = [r for r in summarise(_records()) if r["config"]["depth"] == 2]
    ranked = {x["method"]: x for x in ranking(rows)}
    assert set(ranked) == {"exact", "random"}
    assert ranked["exact"]["rank"] == ranked["random"]["rank"] == 1
    assert ranked["random"]["ties"] == ["exact"]
    # a method whose interval lies entirely below another's ranks behind it
    low = dict(rows[0], target="dfa", mode="dfa", p=None, acc_mean=0.6, acc_low=0.55,
               acc_high=0.65, acc_hw=0.05, config={**rows[0]["config"], "spec": "dfa"})
    ranked = {x["method"]: x for x in ranking([*rows, low])}
    assert ranked["dfa"]["rank"] == 3 and ranked["dfa"]["ties"] == []


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    """A folder of the synthetic records with its report written (once per module)."""
    out = _folder(tmp_path_factory.mktemp("reported") / "run", _records())
    return out, write_report(out)


def test_report_groups_by_task_and_writes_summary_json(reported):
    records = _records()
    other = [dict(r, config={**r["config"], "task": "other-task"}, chance_acc=0.1,
                  run_id=r["run_id"][:-1] + "x") for r in records]
    rows = summarise(records + other)
    assert {r["task"] for r in rows} == {"xor", "other-task"}
    assert [r["task"] for r in rows][:1] == ["xor"]  # xor first
    assert {r["chance"] for r in rows if r["task"] == "other-task"} == {0.1}
    keys = [r["key"] for r in summary_rows(rows)]
    assert "xor / depth 2 / grad_input flip:0.45" in keys
    assert "other-task / depth 4 / exact" in keys and len(keys) == len(set(keys))

    out, path = reported
    text = path.read_text()
    assert text.startswith("# XOR destroy-Jacobian report")
    assert "Report written on:" in text and "torch" in text
    assert "| grad_weight | 0.740 ± 0.272† |" in text  # mean 0.74, s = √0.048, unstable
    assert "### Depth 2: final test accuracy (mean ± 95% CI, n = 5 seeds)" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows"][0]["key"] == "xor / depth 2 / exact"
    assert summary["rows"][0]["n"] == 5
    for name in ("acc_vs_p.png", "summary_xor.png", "curves.png", "boundaries.png"):
        assert (out / "figures" / name).stat().st_size > 1000


def test_compare_a_run_with_itself_a_shifted_run_and_an_old_std_table(reported, tmp_path,
                                                                      capsys):
    a = reported[0]
    md = tmp_path / "README.md"
    md.write_text("# Somewhere else\n\n" + report_tables(a) + "\n")
    for old, new in ((a, a), (md, a), (a / "summary.json", a), (md, md)):
        result = compare_sources(old, new)
        assert result and {r["verdict"] for r in result} == {"agree"}, (old, new)
    shifted = {k: [x - 0.05 if k == (2, "grad_input=flip:0.45") else x for x in v]
               for k, v in CELLS.items()}
    b = _folder(tmp_path / "b", _records(shifted))
    bad = [r for r in compare_sources(md, b) if r["verdict"] != "agree"]
    assert [r["key"] for r in bad] == ["xor | 2 | grad_input flip:0.45",  # key table
                                       "grad_input | flip 0.45"]  # depth-2 table
    assert {r["verdict"] for r in bad} == {"disagree"}
    assert main([str(md), str(b)]) == 1 and main([str(a), str(a)]) == 0
    # the key table alone, pasted under other headings (a README), is matched by task/depth
    key = tmp_path / "KEY.md"
    key.write_text("# README\n\n## Results\n\n" + "\n".join(
        key_table_lines("xor", summarise(_records()))))
    assert "| xor | 4 | 5 | 0.780 ± 0.162† | – |" in key.read_text()
    result = [r for r in compare_sources(key, a) if r["verdict"] != "only new"]
    assert len(result) == 7 and {r["verdict"] for r in result} == {"agree"}
    assert "xor | 2 | grad_input flip:0.45" in {r["key"] for r in result}
    bad = [r for r in compare_sources(key, b) if r["verdict"] not in ("agree", "only new")]
    assert [r["key"] for r in bad] == ["xor | 2 | grad_input flip:0.45"]
    assert "disagree" in capsys.readouterr().out
    assert main([str(tmp_path / "nothing"), str(a)]) == 2
    # an older '± std' table over 3 seeds (population std): half-width t·σ·√(3/2)/√3
    assert std_to_half_width(0.146, 3) == pytest.approx(4.3026527 * 0.146 / math.sqrt(2))
    old = "| depth | exact | target | sign |\n|---|---|---|---|\n" \
          "| 2 | 0.906 ± 0.005 | grad_input | 0.780 ± 0.146 |\n| | | grad_weight | 0.9 ± 0.01 |\n"
    cells = parse_markdown(old, old_std_n=3)
    assert [(c["labels"], c["column"]) for c in cells] == [
        (("2", "grad_input"), "exact"), (("2", "grad_input"), "sign"),
        (("2", "grad_weight"), "sign")]  # the blank depth repeats the row above
    assert cells[1]["half_width"] == pytest.approx(std_to_half_width(0.146, 3))


def test_multi_task_report_has_a_section_figures_and_ranking_per_task(tmp_path):
    from gradsurrogate.tasks import TASKS

    if "mnist1d-mlp" not in TASKS:
        pytest.skip("mnist1d-mlp task not registered")
    accs = {"exact": [0.62, 0.66, 0.64, 0.65, 0.63], "weight=fa": [0.50, 0.52, 0.51, 0.49, 0.53],
            "dfa": [0.40, 0.41, 0.39, 0.42, 0.38], "weight=usf": [0.60, 0.64, 0.62, 0.66, 0.63]}
    other = [dict(_record(XorConfig(task="mnist1d-mlp", depth=2, seed=s, spec=spec, steps=50),
                          a), bayes_acc=None, chance_acc=0.1)
             for spec, xs in accs.items() for s, a in enumerate(xs)]
    out = _folder(tmp_path / "run", _records() + other)
    text = write_report(out).read_text()
    assert text.startswith("# Destroy-Jacobian benchmark report")
    assert "## Task: xor" in text and "## Task: mnist1d-mlp" in text
    assert "chance 0.1" in text
    # usf [0.60, 0.66] overlaps exact [0.62, 0.66]: tied at rank 1; fa then dfa strictly below
    assert "| 2 | 1 | exact | 0.640 ± 0.020 | 5 | usf |" in text
    assert "| 2 | 3 | fa | 0.510 ± 0.020 | 5 | – |" in text
    assert "| 2 | 4 | dfa | 0.400 ± 0.020 | 5 | – |" in text
    for name in ("acc_vs_p.png", "acc_vs_p_mnist1d-mlp.png", "summary_mnist1d-mlp.png"):
        assert (out / "figures" / name).exists()
    keys = [r["key"] for r in json.loads((out / "summary.json").read_text())["rows"]]
    assert "mnist1d-mlp / depth 2 / dfa" in keys


def test_varying_settings_get_one_headline_table_each(tmp_path):
    cells = {k: v for k, v in CELLS.items() if k[0] == 2}
    out = _folder(tmp_path / "lr", _records(cells, lr=0.01) + _records(cells, lr=0.02))
    text = report_tables(out)
    assert "#### Settings lr=0.01" in text and "#### Settings lr=0.02" in text
    assert text.count("| sign of ∇θ trains | holds (as exact; 0.908 ± 0.010) |") == 2


def test_header_names_the_machines_and_versions(tmp_path):
    import torch

    from gradsurrogate.xor.results import environment

    env = environment()
    assert env["torch"] == torch.__version__ and env["cpu_count"] >= 1 and env["processor"]
    cells = {(2, "exact"): EXACT2}
    out = _folder(tmp_path / "env", [dict(r, env={**env, "processor": "CPU-X"})
                                     for r in _records(cells)])
    text = report_tables(out)
    assert f"Runs made on: CPU-X ({env['cpu_count']} CPUs" in text
    assert f"torch {torch.__version__}, gradsurrogate {env['gradsurrogate']}" in text
