"""XOR grids: composition of the default grid, atomic results, resume after a kill, report."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gradsurrogate.io import append_jsonl_many, read_jsonl
from gradsurrogate.runs import RunStore, StoreBusyError, StoreWarning
from gradsurrogate.xor import XorConfig, default_grid, grid_configs, read_results, run_grid
from gradsurrogate.xor.grid import chunk_configs, spec_for
from gradsurrogate.xor.results import finished_ids

TINY = dict(steps=12, eval_every=4, diag_every=6, n_train=64, n_test=64, batch_size=16, width=8)



def test_default_grid_is_the_destroy_experiment():
    configs = default_grid()
    assert len(configs) == 560  # (5 targets x (sign + 10 flip p) + exact) x 2 depths x 5 seeds
    assert len({c.run_id for c in configs}) == 560
    assert {c.depth for c in configs} == {2, 4} and {c.seed for c in configs} == {0, 1, 2, 3, 4}
    specs = {c.spec for c in configs}
    assert "exact" in specs and "grad_weight=sign" in specs and "grad_input=flip:0.45" in specs
    assert ("grad_input=flip:0.45,grad_weight=flip:0.45,weight=flip:0.45,input=flip:0.45"
            in specs)
    assert all(c.data_seed == c.init_seed == c.noise_seed == c.seed for c in configs)
    assert str(spec_for("all", "sign")) == \
        "grad_input=sign,grad_weight=sign,weight=sign,input=sign"
    with pytest.raises(ValueError, match="unknown grid target 'bias'; accepted: grad_input"):
        spec_for("bias", "sign")
    # All runs of one depth share a group key: one ensemble per depth.
    assert len(chunk_configs(configs, 320)) == 2
    assert [len(c) for c in chunk_configs(configs, 100)] == [94, 94, 92, 94, 94, 92]


def test_grid_configs_hand_computed():
    base = XorConfig(**TINY)
    configs = grid_configs(base, ["weight"], ["flip", "sign"], [0.1, 0.5], [1], [0, 1],
                           include_exact=False)
    assert [(c.seed, c.spec) for c in configs] == [
        (0, "weight=flip:0.1"), (0, "weight=flip:0.5"), (0, "weight=sign"),
        (1, "weight=flip:0.1"), (1, "weight=flip:0.5"), (1, "weight=sign")]


def test_atomic_appends_and_torn_lines_are_skipped(tmp_path):
    path = tmp_path / "results.jsonl"
    append_jsonl_many(path, [{"run_id": "a", "x": float("nan")}, {"run_id": "b", "x": 1.5}])
    with path.open("ab") as fh:  # a torn write, as a crash in mid-line would leave
        fh.write(b'{"run_id": "c", "x"')
    rows = list(read_jsonl(path))
    assert rows == [{"run_id": "a", "x": None}, {"run_id": "b", "x": 1.5}]
    with pytest.warns(StoreWarning, match=r"results.jsonl:3: skipped, torn last line"):
        assert set(RunStore(tmp_path).records()) == {"a", "b"}
    for line in path.read_bytes().split(b"\n")[:2]:
        json.loads(line)  # strict JSON (no NaN)


def test_run_grid_resumes_and_skips_finished(tmp_path, killed_grid):
    configs = grid_configs(XorConfig(**TINY), ["grad_input", "all"], ["flip", "sign"],
                           [0.0, 0.45], [1, 2], [0])
    killed_grid(configs, tmp_path, max_group=4)
    records = run_grid(configs, tmp_path, max_group=4)
    lines = list(read_jsonl(tmp_path / "results.jsonl"))
    assert len(records) == len(configs) == len(lines)  # nothing ran twice
    again = run_grid(configs, tmp_path, max_group=4)
    assert len(list(read_jsonl(tmp_path / "results.jsonl"))) == len(configs)
    assert sorted(r["run_id"] for r in again) == sorted(c.run_id for c in configs)
    curves = list(read_jsonl(tmp_path / "curves.jsonl"))
    assert {c["run_id"] for c in curves} == {c.run_id for c in configs}
    rec = records[0]
    for key in ("config", "final_test_acc", "final_test_loss", "diverged", "bayes_acc",
                "steps_to_90pct_bayes", "grad_diagnostics"):
        assert key in rec
    assert rec["config"]["spec"] == XorConfig.from_dict(rec["config"]).spec
    assert XorConfig.from_dict(rec["config"]).run_id == rec["run_id"]


KILLER = textwrap.dedent("""
    import os, signal, sys
    from gradsurrogate.xor import XorConfig, grid_configs, run_grid
    configs = grid_configs(XorConfig(steps=12, eval_every=4, diag_every=0, n_train=64,
                                     n_test=64, batch_size=16, width=8),
                           ["grad_input"], ["flip"], [0.1, 0.2, 0.3, 0.4], [1], [0, 1, 2])
    chunks = []
    def die(records):
        chunks.append(records)
        if len(chunks) == int(sys.argv[2]):
            # a kill in the middle of the next write: a torn line at the end of the file
            with open(os.path.join(sys.argv[1], "results.jsonl"), "ab") as fh:
                fh.write(b'{"run_id": "torn", "config": {"dep')
            os.kill(os.getpid(), signal.SIGKILL)
    run_grid(configs, sys.argv[1], max_group=1, on_chunk=die if int(sys.argv[2]) else None)
""")


def test_resume_after_sigkill_with_a_torn_line(tmp_path):
    """SIGKILL after the 4th of 15 chunks, leaving a torn line: the rerun keeps the 4 finished
    runs, trains exactly the 11 others, and no record sticks to the fragment."""
    out = tmp_path / "grid"
    killed = subprocess.run([sys.executable, "-c", KILLER, str(out), "4"], capture_output=True)
    assert killed.returncode == -9
    done = list(read_jsonl(out / "results.jsonl"))  # the torn fragment is not a line yet
    assert len(done) == 4
    rerun = subprocess.run([sys.executable, "-c", KILLER, str(out), "0"], capture_output=True,
                           text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert "results.jsonl:5: skipped" in rerun.stderr  # the fragment, reported by line
    with pytest.warns(StoreWarning, match="results.jsonl:5: skipped, not JSON"):
        final = list(RunStore(out).records().values())
    assert len(final) == 15 == len({r["run_id"] for r in final})
    assert final[:4] == done  # finished runs were kept, not redone
    assert not list(out.glob(".*.tmp*"))


def test_junk_lines_do_not_block_resume_or_report(tmp_path):
    configs = grid_configs(XorConfig(**TINY), ["grad_weight"], ["sign"], [], [1], [0])
    run_grid(configs, tmp_path, max_group=4)
    with (tmp_path / "results.jsonl").open("a") as fh:
        fh.write('42\nnull\n[]\n{}\n{"run_id": 7}\nnot json\n\n')
    with pytest.warns(StoreWarning) as caught:
        assert len(run_grid(configs, tmp_path, max_group=4)) == 2  # nothing retrained
    lines = sorted({str(w.message).split(": skipped")[0].rsplit(":", 1)[1] for w in caught})
    assert lines == ["3", "4", "5", "6", "7", "8"]
    from gradsurrogate.xor.cli import report_main

    with pytest.warns(StoreWarning):
        assert report_main([str(tmp_path)]) == 0
    assert "2 runs" in (tmp_path / "report.md").read_text()


def test_a_second_writer_is_refused(tmp_path):
    configs = grid_configs(XorConfig(**TINY), ["grad_weight"], ["sign"], [], [1], [0])
    with RunStore(tmp_path):
        with pytest.raises(StoreBusyError, match="in use by another gradsurrogate process"):
            run_grid(configs, tmp_path)
        from gradsurrogate.xor.cli import grid_main

        assert grid_main(["--out", str(tmp_path), "--steps=4", "--wandb=disabled",
                          "--targets=grad_weight", "--modes=sign", "--depths=1",
                          "--seeds=0"]) == 2
    assert not (tmp_path / "results.jsonl").exists()
    assert len(run_grid(configs, tmp_path)) == 2  # lock released


def test_runs_stored_under_old_ids_resume(tmp_path):
    """Records written with another id (an older id scheme) are re-keyed from their stored
    config, so a resumed grid does not rerun them."""
    configs = grid_configs(XorConfig(**TINY), ["grad_weight"], ["sign"], [], [1], [0])
    run_grid(configs, tmp_path)
    path = tmp_path / "results.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps({**r, "run_id": "old" + r["run_id"]}) + "\n"
                            for r in rows))
    assert finished_ids(tmp_path) == {c.run_id for c in configs}
    assert len(run_grid(configs, tmp_path)) == 2
    assert len(path.read_text().splitlines()) == 2  # nothing appended


def test_grid_cli_writes_report(tmp_path):
    from gradsurrogate.xor.cli import grid_main

    out = tmp_path / "g"
    code = grid_main(["--out", str(out), "--steps=12", "--width=8", "--n-train=64",
                      "--n-test=64", "--batch-size=16", "--eval-every=4", "--ps=0,0.5",
                      "--depths=1,2", "--seeds=0,1", "--wandb=disabled"])
    assert code == 0
    report = (out / "report.md").read_text()
    assert "## Depth 1" in report and "| grad_weight |" in report and "Exact baseline" in report
    for name in ("acc_vs_p.png", "curves.png", "boundaries.png"):
        assert (out / "figures" / name).read_bytes()[:4] == b"\x89PNG"
    assert len(read_results(out)) == 2 * 2 * (5 * 3 + 1)
    assert grid_main(["--out", str(out), "--depths", "0", "--wandb", "disabled"]) == 2


def test_report_on_empty_dir_is_a_clear_error(tmp_path):
    from gradsurrogate.xor.cli import report_main

    assert report_main([str(tmp_path)]) == 2
    assert not Path(tmp_path / "report.md").exists()


def test_grid_keeps_explicit_sub_seeds():
    base = XorConfig(**TINY, data_seed=7)  # data seed set explicitly, the others follow seed
    configs = grid_configs(base, ["weight"], ["sign"], [], [1], [0, 1, 2], include_exact=False)
    assert [(c.seed, c.data_seed, c.init_seed, c.noise_seed) for c in configs] == \
        [(0, 7, 0, 0), (1, 7, 1, 1), (2, 7, 2, 2)]
    # fixed_seeds names them explicitly (a sub-seed equal to seed cannot be inferred)
    fixed = grid_configs(XorConfig(**TINY), ["weight"], ["sign"], [], [1], [0, 1],
                         include_exact=False, fixed_seeds=["init_seed"])
    assert [(c.data_seed, c.init_seed, c.noise_seed) for c in fixed] == [(0, 0, 0), (1, 0, 1)]
    assert all(c.data_seed == c.seed for c in grid_configs(base, ["weight"], ["sign"], [], [1],
                                                          [0, 1], fixed_seeds=()))
    with pytest.raises(ValueError, match=r"unknown sub-seed.*'seed'.*accepted: data_seed"):
        grid_configs(base, fixed_seeds=["seed"])


def test_grid_cli_keeps_given_sub_seeds(tmp_path):
    from gradsurrogate.xor.cli import grid_main

    out = tmp_path / "g"
    code = grid_main(["--out", str(out), "--steps=8", "--width=4", "--n-train=32",
                      "--n-test=32", "--batch-size=16", "--eval-every=4", "--diag-every=0",
                      "--targets=grad_input", "--modes=sign", "--depths=1", "--seeds=0,1",
                      "--data-seed=5", "--noise_seed=3", "--no-exact", "--no-report",
                      "--wandb=disabled"])
    assert code == 0
    seeds = sorted((r["config"]["seed"], r["config"]["data_seed"], r["config"]["init_seed"],
                    r["config"]["noise_seed"]) for r in read_results(out))
    assert seeds == [(0, 5, 0, 3), (1, 5, 1, 3)]


def test_random_feedback_scales_form_separate_vectorised_groups(tmp_path):
    from gradsurrogate.xor import run_xor

    configs = grid_configs(XorConfig(**TINY), ["weight"], ["random", "random:0.5"], [], [1],
                           [0, 1], include_exact=False)
    assert sorted(c.spec for c in configs) == ["weight=random"] * 2 + ["weight=random:0.5"] * 2
    assert {c.feedback_scale for c in configs} == {1.0, 0.5}
    assert XorConfig(**TINY).feedback_scale is None
    chunks = chunk_configs(configs, 256)
    assert sorted(len(c) for c in chunks) == [2, 2]
    assert all(len({c.spec for c in chunk}) == 1 for chunk in chunks)
    records = {r["run_id"]: r for r in run_grid(configs, tmp_path, vectorised=True)}
    assert len(records) == 4 and all(r["group_size"] == 2 for r in records.values())
    half = next(c for c in configs if c.spec == "weight=random:0.5")
    assert records[half.run_id]["final_test_loss"] == pytest.approx(
        run_xor(half)[0]["final_test_loss"], rel=1e-4)
