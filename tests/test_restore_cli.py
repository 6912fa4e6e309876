"""Restore skeleton: one config, CLI errors, the run store (records, divergence, resume),
sweeps and thread-count independence."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest

from gradsurrogate.cli import main as gradsurrogate_main
from gradsurrogate.cli import report_main as generic_report
from gradsurrogate.restore import RestoreConfig, report_table, run_restore
from gradsurrogate.restore.cli import build_parser, main, parse_config, run_sweep
from gradsurrogate.runs import RunStore, run_id

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--dim-in", "4", "--dim-out", "3", "--dim-sample", "2", "--epochs", "3",
        "--wandb", "disabled"]
TINY_CFG = RestoreConfig(dim_in=4, dim_out=3, dim_sample=2, epochs=3)
DIVERGING = ["--lr", "1e30", "--optimizer", "sgd", "--epochs", "50", "--eval-every", "1"]


def strict_lines(path: Path) -> list[dict]:
    """The JSON lines of ``path``; fails on a bare NaN/Infinity token."""
    def bare(token: str) -> None:
        pytest.fail(f"bare {token} token in {path.name}")

    return [json.loads(line, parse_constant=bare) for line in path.read_text().splitlines()]


BAD = [
    (["--loss", "huber"], "unknown loss 'huber'; accepted: mse, cosine"),
    (["--surrogate", "cnn"], "unknown surrogate 'cnn'; accepted: structured, mlp, loglinexp"),
    (["--schedule", "step"], "unknown schedule 'step'; accepted: constant, cosine"),
    (["--points", "many"], "points must be"),
    (["--lr", "inf"], "lr must be a finite number in (0, 3.4e+38]; got inf"),
    (["--lr", "nan"], "lr must be a finite number in (0, 3.4e+38]; got nan"),
    (["--lr", "1e300"], "lr must be a finite number in (0, 3.4e+38]; got 1e+300"),
    (["--lr", "0"], "lr must be a finite number in (0, 3.4e+38]; got 0.0"),
    (["--dim-in", "4", "--dim-sample", "5"], "dim_sample=5 is out of range"),
    (["--epochs", "foo"], "epochs must be a positive integer or 'auto'; got 'foo'"),
    (["--epochs", "0"], "epochs must be an integer in [1, 1000000000]; got 0"),
    (["--lr", "foo"], "lr must be a positive number or 'auto'; got 'foo'"),
    (["--budget", "0"], "budget must be a finite number in (0, 3.4e+38]; got 0.0"),
    (["--probes", "live"], "unknown probes 'live'; accepted: replay, fresh"),
    (["--method", "lsq"], "unknown method 'lsq'; accepted: train, least-squares"),
    (["--subspace", "x"], "unknown subspace 'x'; accepted: cycle, random"),
    (["--problem", "nosuchmod:f"], "problem 'nosuchmod:f': cannot import 'f' from 'nosuchmod'"),
    (["--initial-messup", "inf"], "initial_messup must be a finite number"),
    (["--target-cosine", "nan"], "target_cosine must be a finite number in [-1, 1]; got nan"),
    (["--fd-step", "-1"], "fd_step must be a finite number in (0, 3.4e+38]; got -1.0"),
    (["--target", "adjoint"], "unknown target 'adjoint'; accepted: jvp, fd, integral"),
    (["--width", "8"], "width=8 applies to the mlp, loglinexp, jacnet and gradnet surrogates"),
    (["--threads", "-1"], "--threads must be an integer in [0, 4096]; got -1"),
    (["--loss", "log_mse:nan"], "bad loss 'log_mse:nan': loss 'mse' takes no parameter"),
    (["--epochs", "1000000001"], "epochs must be an integer in [1, 1000000000]; got 1000000001"),
    (["--epoch-scale", "1e30"], "epochs 'auto' = ceil(epoch_scale*dim_in*dim_out/dim_sample) = "
                                "1.6e+31 (epoch_scale=1e+30) is more than 1e+09"),
]


@pytest.mark.parametrize(("argv", "message"), BAD)
def test_bad_values_exit_2_naming_the_value(tmp_path: Path, capsys, argv: list[str],
                                            message: str) -> None:
    out = tmp_path / "out"
    assert main([*argv, "--wandb", "disabled", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"gradsurrogate restore: error: {message}" in err and "Traceback" not in err
    assert not out.exists()  # rejected before any work


@pytest.mark.parametrize(("settings", "message"), [
    ({"loss": "huber"}, "unknown loss 'huber'"),
    ({"surrogate": "cnn"}, "unknown surrogate 'cnn'"),
    ({"lr": math.inf}, "got inf"),
    ({"lr": math.nan}, "got nan"),
    ({"lr": 1e300}, "got 1e+300"),
    ({"lr": 0}, "lr must be a finite number in (0, "),
    ({"dim_in": 4, "dim_sample": 5}, "dim_sample=5 is out of range"),
    ({"epochs": "foo"}, "got 'foo'"),
    ({"epoch_scale": math.inf}, "epoch_scale must be a finite number"),
    ({"seed": -1}, "seed must be an integer >= 0; got -1"),
    ({"loss": "log_gensim:2.5"}, "bad loss 'log_gensim:2.5': loss 'gensim': exponent a"),
    ({"epoch_scale": 1e30}, "= 1.6e+31 (epoch_scale=1e+30) is more than 1e+09; lower"),
    ({"epochs": 10**9 + 1}, "epochs must be an integer in [1, 1000000000]"),
])
def test_python_entry_points_raise_value_error(settings: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        RestoreConfig(**settings)
    assert message in str(err.value)
    argv = [f"--{k}={v}" for k, v in settings.items()]
    with pytest.raises(ValueError) as err:
        parse_config(argv)
    assert message in str(err.value)


def test_config_is_the_one_source_of_settings() -> None:
    cfg = RestoreConfig(dim_in=64, dim_out=64, dim_sample=16, epochs="auto", epoch_scale=2,
                        loss="  MSE", surrogate="Structured")
    assert cfg.epochs == max(1000, 2 * 64 * 64 // 16) and cfg.loss == "mse"
    assert cfg.surrogate == "structured" and cfg.lr == "auto"  # the CLI's default
    assert RestoreConfig.from_dict(cfg.to_dict()) == cfg
    # "auto" stored resolved: the same run as the explicit count, under one id
    assert run_id(cfg) == run_id(cfg.replace(epochs=1000)) != run_id(cfg.replace(epochs=999))
    assert parse_config(["--dim_in=64", "--dim-out=64", "--dim_sample=16", "--epochs=auto",
                         "--epoch_scale=2"]) == cfg.replace(loss="mse")
    with pytest.raises(ValueError, match=r"unknown restore config key 'lrr'; accepted: problem, "):
        RestoreConfig.from_dict({"lrr": 0.1})
    with pytest.raises(ValueError, match=r"unrecognized arguments: --lrr=0\.1"):
        parse_config(["--lrr=0.1"])


def test_run_records_are_strict_json_and_resume(tmp_path: Path, capsys) -> None:
    assert main([*TINY, "--out", str(tmp_path)]) == 0
    assert main([*TINY, "--out", str(tmp_path)]) == 0
    assert "skipping (--restart to rerun)" in capsys.readouterr().out
    (rec,) = strict_lines(tmp_path / "results.jsonl")  # resumed: still one record
    assert rec["run_id"] == run_id(TINY_CFG) and rec["config"] == TINY_CFG.to_dict()
    assert rec["status"] == "done" and rec["diverged"] is False and rec["diverged_step"] is None
    assert rec["epochs_run"] == 3 and rec["jvp_evals"] == 8 and rec["f_evals"] == 8
    assert rec["x_limit"] == 2.0 and rec["probes"] == "replay" and rec["ls_cosine"] > 0.99
    assert 0 < rec["final_sign_agreement"] <= 1 and rec["final_rel_error"] > 0
    history = strict_lines(tmp_path / "history" / f"{rec['run_id']}.json")[0]
    assert [h["jvp_evals"] for h in history] == [8]  # one evaluation: the last step
    assert history[-1]["cosine"] == rec["final_cosine"]
    assert rec["run_id"] in (tmp_path / "report.md").read_text()
    assert generic_report([str(tmp_path)]) == 0  # the folder is marked as restore's
    assert f"| {rec['run_id']} |" in capsys.readouterr().out
    # the Python entry point resumes from the same store; --restart reruns to the same
    # numbers (--force: its hidden earlier name)
    assert run_restore(TINY_CFG, tmp_path, echo=None) == rec
    assert main([*TINY, "--out", str(tmp_path), "--restart"]) == 0
    assert main([*TINY, "--out", str(tmp_path), "--force"]) == 0
    first, again, third = strict_lines(tmp_path / "results.jsonl")
    for key in ("run_id", "config", "final_cosine", "final_rel_error", "final_loss"):
        assert again[key] == first[key] == third[key]
    assert "--restart" in build_parser().format_help()
    assert "--force" not in build_parser().format_help()


def test_diverging_run_is_recorded_as_diverged(tmp_path: Path, capsys) -> None:
    """lr 1e30: step 0's update blows B up, step 1's loss is inf. The run stops, exits 0 (as
    in every part) with a message, and records diverged_step 1 (0-based = 1 update applied)."""
    assert main([*TINY, *DIVERGING, "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "diverged: non-finite loss or parameters at step 1 (0-based: after 1 update(s))" \
        in err and "Traceback" not in err
    (rec,) = strict_lines(tmp_path / "results.jsonl")
    assert rec["status"] == "diverged" and rec["diverged"] is True
    assert rec["diverged_step"] == 1 and rec["epochs_run"] == 2  # stopped, not 50 epochs
    assert rec["final_loss"] is None and rec["config"]["lr"] == 1e30
    history = strict_lines(tmp_path / "history" / f"{rec['run_id']}.json")[0]
    assert history[0]["loss"] > 0 and history[-1]["loss"] is None
    assert "1 diverged" in (tmp_path / "report.md").read_text()
    # a diverged run is finished: a rerun skips it (and still reports it)
    assert main([*TINY, *DIVERGING, "--out", str(tmp_path)]) == 0
    assert len(strict_lines(tmp_path / "results.jsonl")) == 1


def test_out_not_writable_fails_before_any_run(tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main([*TINY, "--out", str(blocker / "sub")]) == 2
    assert "gradsurrogate restore: error: output folder" in capsys.readouterr().err


def test_records_of_the_earlier_flat_format_resume(tmp_path: Path) -> None:
    flat = {**TINY_CFG.to_dict(), "run_id": "0123456789ab", "status": "done",
            "final_cosine": 0.5}
    del flat["integral_nodes"], flat["eval_points"]  # fields added later keep their defaults
    (tmp_path / "results.jsonl").write_text(json.dumps(flat) + "\n" + '{"run_id": "junk"}\n')
    rec = run_restore(TINY_CFG, tmp_path, echo=None)
    assert rec["final_cosine"] == 0.5 and rec["run_id"] == run_id(TINY_CFG)  # not rerun
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 2


def test_run_sweep_runs_every_line_once_and_reports(tmp_path: Path, capsys) -> None:
    common = argparse.Namespace(wandb="disabled", wandb_project="test", threads=1)
    base = ["--dim_in=4", "--dim_out=3", "--dim_sample=2", "--epochs=3"]
    argvs = [[*base, "--loss=mse"], [*base, "--loss=cosine"]]
    assert run_sweep(argvs, str(tmp_path), common) == 0
    recs = strict_lines(tmp_path / "results.jsonl")
    assert [r["config"]["loss"] for r in recs] == ["mse", "cosine"]
    assert recs[0] == run_restore(TINY_CFG, tmp_path, echo=None)  # same run as the CLI's
    report = (tmp_path / "report.md").read_text()
    assert "| run_id | loss | status |" in report and all(r["run_id"] in report for r in recs)
    assert run_sweep(argvs, str(tmp_path), common) == 0  # resumed: nothing new
    assert len(strict_lines(tmp_path / "results.jsonl")) == 2
    # a bad line is named before any run
    bad_out = tmp_path / "bad"
    with pytest.raises(ValueError, match=r"sweep run 2 \(.*--lr=inf\): lr must be a finite"):
        run_sweep([argvs[0], [*base, "--lr=inf"]], str(bad_out), common)
    assert not (bad_out / "results.jsonl").exists()
    capsys.readouterr()


@pytest.mark.parametrize("name", ["restore_dim_sample_loss", "restore_messup_lr"])
def test_shipped_sweeps_expand_into_valid_configs(name: str) -> None:
    from gradsurrogate.sweep import expand_sweep, load_sweep, sweep_command, sweep_runner

    config = load_sweep(ROOT / "sweeps" / f"{name}.yaml", validate=False)
    command = sweep_command(config)
    assert command.name == "restore" and sweep_runner("restore") is run_sweep
    configs = [parse_config(command.argv(p)) for p in expand_sweep(config, seed=0)]
    if name == "restore_dim_sample_loss":  # grid: 5 dim_sample x 8 losses x 2 seeds
        assert len(configs) == len(set(configs)) == 80
        assert {c.epochs for c in configs} == {max(1000, 2 * 64 * 64 // c.dim_sample)
                                               for c in configs}  # epochs: auto
    else:  # random search, run_cap 60
        assert len(configs) == 60
        assert all(0.01 <= c.initial_messup <= 100 and 1e-3 <= c.lr <= 0.1 for c in configs)


def test_threads_1_and_2_give_identical_results(tmp_path: Path) -> None:
    argv = ["--dim-in", "8", "--dim-out", "8", "--dim-sample", "4", "--epochs", "20",
            "--wandb", "disabled"]
    runs = []
    for threads in (1, 2):
        out = tmp_path / f"t{threads}"
        assert main([*argv, "--threads", str(threads), "--out", str(out)]) == 0
        (rec,) = strict_lines(out / "results.jsonl")
        runs.append((rec, strict_lines(out / "history" / f"{rec['run_id']}.json")[0]))
    (r1, h1), (r2, h2) = runs
    assert r1["run_id"] == r2["run_id"]  # --threads is not a setting of the run
    for key in ("final_cosine", "final_rel_error", "final_sign_agreement", "final_loss"):
        assert r1[key] == r2[key]
    drop = ("time",)
    assert [{k: v for k, v in h.items() if k not in drop} for h in h1] == \
        [{k: v for k, v in h.items() if k not in drop} for h in h2]


def test_report_table_lists_varying_settings() -> None:
    assert report_table([]) == "(no runs)"
    a = {"run_id": "a", "config": TINY_CFG.to_dict(), "status": "done", "final_cosine": 0.25}
    b = {"run_id": "b", "config": TINY_CFG.replace(seed=3).to_dict(), "status": "diverged",
         "diverged_step": 7}
    lines = report_table([a, b]).splitlines()
    assert lines[0].startswith("| run_id | seed | status | final_cosine |")
    assert lines[2].startswith("| a | 0 | done | 0.2500 |") and "| b | 3 | diverged |" in lines[3]
    assert lines[3].endswith("| 7 |")


def test_report_command_rebuilds_a_restore_folder(tmp_path: Path, capsys) -> None:
    """`gradsurrogate report DIR` on a folder restore wrote: rewrites report.md under the
    folder lock (busy: exit 2); a folder without restore results: exit 2, named."""
    out = tmp_path / "runs"
    assert main([*TINY, "--out", str(out)]) == 0
    (rec,) = strict_lines(out / "results.jsonl")
    (out / "report.md").unlink()
    capsys.readouterr()
    assert gradsurrogate_main(["report", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed == (out / "report.md").read_text()
    assert printed.startswith("# Jacobian restoration: 1 run(s)") and f"| {rec['run_id']} |" \
        in printed
    with RunStore(out):  # a run is writing the folder
        assert gradsurrogate_main(["report", str(out)]) == 2
    assert "gradsurrogate report: error:" in capsys.readouterr().err
    (out / "results.jsonl").unlink()
    assert gradsurrogate_main(["report", str(out)]) == 2
    assert f"no restore results in '{out}' (no results.jsonl)" in capsys.readouterr().err


def test_help_shows_the_declared_epochs_default() -> None:
    text = " ".join(build_parser().format_help().split())
    assert "stored resolved (default: auto)" in text


def test_a_nonlinear_problem_gets_the_gradnet_surrogate_by_default(tmp_path: Path) -> None:
    from gradsurrogate.restore import load_surrogate

    argv = ["--problem", "tanh_bias", "--dim-in", "3", "--dim-out", "2", "--width", "8",
            "--epochs", "20", "--wandb", "disabled", "--out", str(tmp_path)]
    assert main(argv) == 0
    (rec,) = strict_lines(tmp_path / "results.jsonl")
    cfg = rec["config"]
    assert (cfg["surrogate"], cfg["budget"], cfg["optimizer"], cfg["schedule"]) == (
        "gradnet", 50.0, "adam", "cosine")
    assert rec["x_limit"] == 50.0 and rec["jvp_evals"] == 150
    cos = list(rec["heldout_scales"].values())  # linear in the cotangent: one value
    assert len(cos) == 5 and max(cos) - min(cos) < 1e-6
    surrogate, loaded = load_surrogate(tmp_path / "surrogates" / f"{rec['run_id']}.pt")
    assert loaded.to_dict() == cfg and type(surrogate).__name__ == "GradNet"
