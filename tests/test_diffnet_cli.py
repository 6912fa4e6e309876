"""``gradsurrogate diffnet`` under bad input and faults: every bad value exits 2 with a message
naming it, divergence is recorded (never stored as a result), damaged side files are named and
``--restart`` recovers, W&B gets the resolved config, threads do not change results, sweeps."""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from gradsurrogate.cli import main as gradsurrogate_main
from gradsurrogate.diffnet import ExperimentConfig, train_one
from gradsurrogate.diffnet import experiment as experiment_mod
from gradsurrogate.diffnet.cli import (
    build_parser,
    configs_from_args,
    main,
    report_main,
    run_sweep,
)
from gradsurrogate.diffnet.config import run_config
from gradsurrogate.diffnet.store import run_stem
from gradsurrogate.runs import RunStore

TINY = ["--problem", "sin1d", "--activations", "tanh", "--width", "8", "--n-train", "512",
        "--epochs", "2", "--no-figures", "--wandb", "disabled"]


def records(out: Path) -> list[dict]:
    path = out / "results.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def resolved(argv: list[str]) -> ExperimentConfig:
    (cfg,) = configs_from_args(build_parser().parse_args(argv))
    return cfg


@pytest.mark.parametrize(("flags", "message"), [
    (["--epochs", "0"], "epochs must be an integer in [1, 1000000]; got 0"),
    (["--epochs", "-1"], "epochs must be an integer in [1, 1000000]; got -1"),
    (["--epochs", "100000000000000"],
     "epochs must be an integer in [1, 1000000]; got 100000000000000"),
    (["--n-train", "1000000000000"],
     "n_train must be an integer in [1, 100000000]; got 1000000000000"),
    (["--epochs", "abc"], "argument --epochs: invalid int value: 'abc'"),
    (["--width", "0"], "width must be an integer >= 1; got 0"),
    (["--depth", "0"], "depth must be an integer >= 1; got 0"),
    (["--inits", "0"], "inits must be an integer >= 1; got 0"),
    (["--eval-every", "-1"], "eval_every must be an integer >= 0; got -1"),
    (["--seed", "-1"], "seed must be an integer >= 0; got -1"),
    (["--n-train", "100"], "n_train (100) must be at least batch (256)"),
    (["--n_train=0"], "n_train must be an integer in [1, 100000000]; got 0"),
    (["--batch", "0"], "batch must be an integer >= 1; got 0"),
    (["--lr", "0"], "lr must be a finite number in (0, "),
    (["--lr", "-1"], "got -1.0"),
    (["--lr", "nan"], "lr must be a finite number in (0, 3.4e+38]; got nan"),
    (["--lr", "inf"], "lr must be a finite number in (0, 3.4e+38]; got inf"),
    (["--lr", "1e300"], "lr must be a finite number in (0, 3.4e+38]; got 1e+300"),
    (["--lr-final", "0"], "lr_final must be a finite number in (0, 1]; got 0.0"),
    (["--lr-final", "nan"], "lr_final must be a finite number in (0, 1]; got nan"),
    (["--gain-hidden", "nan"], "gain_hidden must be a finite number in (0, "),
    (["--gain-hidden", "-1"], "gain_hidden must be a finite number in (0, "),
    (["--weight-decay", "-1"], "weight_decay must be a finite number in [0, "),
    (["--noise", "inf"], "noise must be a finite number in [0, "),
    (["--threads", "-1"], "--threads must be an integer in [0, 4096]; got -1"),
    (["--activations", "swish"], "unknown activation 'swish'; accepted: linear, relu"),
    (["--activations", "tanh,tanh"], "activations list tanh more than once"),
    (["--problem", "sin3d"], "unknown problem 'sin3d'; accepted: sin1d, cossin2d, all"),
    (["--losses", "type3"], "unknown loss 'type3'; accepted: type1, type2, hessian"),
    (["--recipe", "fast"], "unknown recipe 'fast'; accepted: reference, tuned"),
    (["--schedule", "step"], "unknown schedule 'step'; accepted: constant, cosine"),
    (["--hidden-lr", "width"], "unknown hidden_lr 'width'; accepted: same, fan_in, freq"),
    (["--dtype", "float16"], "unknown dtype 'float16'; accepted: float32, float64"),
    (["--amsgrad", "maybe"], "expected a boolean (true/false); got 'maybe'"),
    (["--wandb", "loud"], "invalid choice: 'loud'"),
    (["--bogus"], "unrecognized arguments: --bogus"),
])
def test_bad_values_exit_2_naming_them(tmp_path: Path, capsys: pytest.CaptureFixture,
                                       flags: list[str], message: str) -> None:
    """Each bad value: exit 2, one ``gradsurrogate diffnet: error:`` line naming it (and the
    accepted ones), no traceback, nothing trained. ``--epochs 0``, ``--lr 0`` and
    ``--n-train`` < batch used to train nothing and exit 0."""
    out = tmp_path / "out"
    assert main([*TINY, "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("gradsurrogate diffnet: error: ")
    assert records(out) == []


def test_out_not_writable_fails_before_training(tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main([*TINY, "--out", str(blocker / "sub")]) == 2
    assert f"output folder '{blocker / 'sub'}' is not writable" in capsys.readouterr().err


def test_config_is_validated_once_and_normalised() -> None:
    """The Python entry point refuses the same values; names, lists and numbers are
    normalised, so equal settings give equal configs and run ids."""
    for bad in ({"epochs": 0}, {"lr": 0.0}, {"lr": float("inf")}, {"n_train": 100},
                {"activations": ()}, {"amsgrad": "yes"}, {"depth": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ExperimentConfig(**bad)
    with pytest.raises(ValueError, match=r"^losses must be a non-empty list of names; got \(\)"):
        ExperimentConfig(losses=())
    a = ExperimentConfig(activations=["TanH", "relu"], losses=["type1"], lr=1)
    assert a.activations == ("tanh", "relu") and a.losses == ("type1",)
    assert a.lr == 1.0 and isinstance(a.lr, float)
    assert a == ExperimentConfig(activations=("tanh", "relu"), losses=("type1",), lr=1.0)


def test_nan_loss_from_epoch_one_is_recorded_diverged(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    """lr 1e30: every loss is non-finite in epoch 1; the run stops there, is recorded as
    diverged at diverged_step 0 (0-based epoch index: no epoch completed before it), no arrays
    are stored, the table says diverged@1 (1-based epoch), exit 0; a rerun reuses it."""
    out = tmp_path / "out"
    assert main([*TINY, "--epochs", "3", "--lr", "1e30", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "diverged@1" in printed and not re.search(r"\bnan\b", printed, re.IGNORECASE)
    assert "1 run(s) diverged" in printed
    assert "sin1d/tanh type1 after 0 epoch(s), type2 after 0 epoch(s)" in printed
    (rec,) = records(out)
    assert rec["diverged"] is True and rec["diverged_step"] == 0 and rec["epochs_run"] == 1
    assert rec["diverged_losses"] == {"type1": 0, "type2": 0, "hessian": 0}
    assert rec["file"] is None and rec["mse"] == {}
    assert rec["config"]["lr"] == 1e30
    assert not list(out.glob("*.npz")) and not list(out.glob("*.ckpt.pt"))
    assert main([*TINY, "--epochs", "3", "--lr", "1e30", "--out", str(out)]) == 0
    assert len(records(out)) == 1  # resumed, not retrained


def test_one_diverging_member_leaves_the_others_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A NaN loss of the Type 2 member from its first batch: it is recorded with
    diverged_step 0 (shown diverged@1) and left out of the stored arrays; the other members
    (same ensemble) end bitwise where they end without it."""
    cfg = resolved(TINY)
    clean = train_one(cfg, "tanh")
    real = experiment_mod.member_losses

    def poisoned(pred: tuple, target: dict, losses: tuple[str, ...]) -> torch.Tensor:
        y, jac, hes = pred  # y (E, B, 1) times NaN for the Type 2 member: its loss and its
        scale = torch.tensor([float("nan") if x == "type2" else 1.0 for x in losses])
        return real((y * scale.to(y)[:, None, None], jac, hes), target, losses)  # grads NaN

    monkeypatch.setattr(experiment_mod, "member_losses", poisoned)
    out = tmp_path / "out"
    assert main([*TINY, "--out", str(out)]) == 0
    (rec,) = records(out)
    assert rec["diverged_losses"] == {"type2": 0} and rec["diverged_step"] == 0
    assert set(rec["mse"]) == {"type1", "hessian"} and rec["epochs_run"] == 2
    with np.load(out / rec["file"]) as stored:
        assert list(stored["losses"]) == ["type1", "hessian"]
        for key in ("mse", "y", "J", "H", "train_loss"):
            assert np.isfinite(stored[key]).all()
        np.testing.assert_array_equal(stored["mse"], clean["mse"][[0, 2]])
        np.testing.assert_array_equal(stored["train_loss"], clean["train_loss"][:, [0, 2]])
    table = (out / "table.md").read_text()
    assert "diverged@1" in table and f"{clean['mse'][0, 0]:.3e}" in table


def test_non_finite_parameters_after_the_last_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Every training loss finite, the final test outputs not (as when the last update leaves
    non-finite parameters): diverged_step = the number of epochs run (2), shown
    diverged@end, no arrays stored, exit 0."""
    real = experiment_mod.evaluate_mse

    def poisoned(net: object, test: dict) -> dict:
        return {k: v * np.nan for k, v in real(net, test).items()}

    monkeypatch.setattr(experiment_mod, "evaluate_mse", poisoned)
    out = tmp_path / "out"
    assert main([*TINY, "--losses", "type1", "--out", str(out)]) == 0
    (rec,) = records(out)
    assert rec["diverged"] is True and rec["diverged_step"] == 2 and rec["epochs_run"] == 2
    assert rec["diverged_losses"] == {"type1": 2} and rec["file"] is None
    assert rec["mse"] == {} and rec["final_train_loss"] == {}  # kept variants only: none
    table = (out / "table.md").read_text()
    assert "diverged@end" in table and "Type 1 Loss / TanH after the last epoch" in table
    capsys.readouterr()


def test_damaged_npz_and_checkpoint_are_named_and_restart_recovers(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    argv = [*TINY, "--out", str(out)]
    assert main(argv) == 0
    (first,) = records(out)
    npz = out / first["file"]
    npz.write_bytes(b"PK\x03\x04 not a zip")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"stored result '{npz}' is unreadable" in err and "--restart" in err
    assert "Traceback" not in err
    assert main([*argv, "--restart"]) == 0
    second = records(out)[-1]
    assert second["file"] == first["file"] and second["mse"] == first["mse"]  # deterministic
    with np.load(npz) as stored:
        assert stored["mse"].shape == (3, 3)

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    ckpt = fresh / f"{run_stem(run_config(resolved(TINY), 'tanh'))}.ckpt.pt"
    ckpt.write_bytes(b"\x00 torn checkpoint")
    assert main([*TINY, "--out", str(fresh)]) == 2
    err = capsys.readouterr().err
    assert f"checkpoint '{ckpt}' is unreadable" in err and "--restart" in err
    assert records(fresh) == []
    assert main([*TINY, "--out", str(fresh), "--restart"]) == 0
    assert records(fresh)[0]["mse"] == first["mse"] and not ckpt.exists()


def test_wandb_gets_the_resolved_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tracker receives the config that ran (recipe, then --quick, then single flags),
    not the argparse namespace (which has lr=None under --recipe tuned)."""
    seen: list[dict] = []

    class Recorder:
        def __init__(self, mode: str | None, project: str, config: dict, **kw: object) -> None:
            seen.append({"mode": mode, "project": project, "config": config, "logs": []})

        def log(self, data: dict, step: int | None = None) -> None:
            seen[-1]["logs"].append(data)

        def summary(self, data: dict) -> None:
            seen[-1]["summary"] = data

        def finish(self) -> None:
            pass

    monkeypatch.setattr("gradsurrogate.diffnet.cli.Tracker", Recorder)
    argv = ["--recipe", "tuned", "--quick", *TINY, "--out", str(tmp_path)]
    assert main(argv) == 0
    want = ExperimentConfig(problem="sin1d", activations=("tanh",), width=8, n_train=512,
                            epochs=2).with_recipe("tuned")
    (run,) = seen
    assert run["config"] == dataclasses.asdict(want)
    assert (run["config"]["lr"], run["config"]["amsgrad"], run["config"]["schedule"]) == \
        (3e-3, False, "cosine")
    assert (run["mode"], run["project"]) == ("disabled", "gradsurrogate-diffnet")
    assert [m["epoch"] for m in run["logs"]] == [0, 1]
    assert run["summary"]["tanh/type1/test_f"] == records(tmp_path)[0]["mse"]["type1"]["f"]
    assert main([*argv, "--lr", "0.01", "--amsgrad"]) == 0  # single flags beat the recipe
    assert (seen[-1]["config"]["lr"], seen[-1]["config"]["amsgrad"]) == (0.01, True)
    assert seen[-1]["config"]["schedule"] == "cosine"


def test_default_results_do_not_depend_on_threads(tmp_path: Path) -> None:
    """--threads defaults to 1; a quick run with 1 and with 2 threads stores the same arrays."""
    assert build_parser().parse_args([]).threads == 1
    argv = [*TINY, "--problem", "cossin2d", "--losses", "type1", "hessian"]
    for n in (1, 2):
        assert main([*argv, "--threads", str(n), "--out", str(tmp_path / str(n))]) == 0
    (one,), (two,) = records(tmp_path / "1"), records(tmp_path / "2")
    assert one["mse"] == two["mse"] and one["run_id"] == two["run_id"]
    with np.load(tmp_path / "1" / one["file"]) as a, np.load(tmp_path / "2" / two["file"]) as b:
        for key in ("y", "J", "H", "train_loss"):
            np.testing.assert_array_equal(a[key], b[key])


def test_run_sweep(tmp_path: Path) -> None:
    """A tiny lr grid: every line parsed first (a bad one names itself, nothing runs), then
    run resumably into one folder with one table per lr; the shipped sweep parses."""
    common = argparse.Namespace(wandb="disabled", wandb_project="test", threads=1)
    line = ["--problem=sin1d", "--activations=tanh", "--width=8", "--n_train=256",
            "--epochs=1", "--losses=type1", "--no-figures"]
    bad = [[*line, "--lr=0.01"], [*line, "--lr=nan"]]
    with pytest.raises(ValueError, match=r"sweep line 2 .*--lr=nan.*lr must be a finite"):
        run_sweep(bad, str(tmp_path / "bad"), common)
    assert not (tmp_path / "bad").exists()
    argvs = [[*line, f"--lr={lr}"] for lr in (0.001, 0.01)]
    assert run_sweep(argvs, str(tmp_path / "sweep"), common) == 0
    recs = records(tmp_path / "sweep")
    assert [r["config"]["lr"] for r in recs] == [0.001, 0.01]
    assert recs[0]["mse"] != recs[1]["mse"]
    table = (tmp_path / "sweep" / "table.md").read_text()
    assert "— lr=0.001" in table and "— lr=0.01" in table
    assert run_sweep(argvs, str(tmp_path / "sweep"), common) == 0
    assert len(records(tmp_path / "sweep")) == 2  # resumed

    spec = yaml.safe_load((Path(__file__).parents[1] / "sweeps" / "diffnet_lr.yaml").read_text())
    assert "diffnet" in spec["command"]
    params = spec["parameters"]
    grid = [p.get("values", [p.get("value")]) for p in params.values()]
    cfgs = [resolved([f"--{k}={v}" for k, v in zip(params, combo)])
            for combo in itertools.product(*grid)]
    assert sorted(c.lr for c in cfgs) == [0.001, 0.003, 0.01, 0.03]
    assert {(c.width, c.n_train, c.epochs) for c in cfgs} == {(32, 1024, 3)}


def test_one_writer_per_folder_and_subfolders_merge(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    """A second process on a busy --out exits 2 before training; parallel processes use
    their own subfolders (each locked by its writer) and the parent's report merges them
    into one table. The report locks the parent (busy: exit 2), except
    --include-unfinished, which is meant to run while runs write."""
    with RunStore(tmp_path):
        assert main([*TINY, "--out", str(tmp_path)]) == 2
    assert "in use by another gradsurrogate process" in capsys.readouterr().err
    assert records(tmp_path) == []
    for act in ("tanh", "relu"):
        argv = [*TINY, "--activations", act, "--losses", "type1"]
        assert main([*argv, "--out", str(tmp_path / act)]) == 0
    capsys.readouterr()
    report = ["--report-only", "--problem", "sin1d", "--no-figures", "--out", str(tmp_path)]
    with RunStore(tmp_path / "tanh"), RunStore(tmp_path / "relu"):  # runs write subfolders
        assert main(report) == 0
    with RunStore(tmp_path):  # another process writes the parent itself
        assert main(report) == 2
        assert "in use by another gradsurrogate process" in capsys.readouterr().err
        assert main([*report, "--include-unfinished"]) == 0  # no lock
    table = (tmp_path / "table.md").read_text()
    assert "Type 1 Loss / ReLu | Type 1 Loss / TanH |" in table
    assert table.count("### ") == 1  # one setting, one table
    for act in ("tanh", "relu"):
        assert f"{records(tmp_path / act)[0]['mse']['type1']['df']:.3e}" in table


def test_report_command_rebuilds_a_diffnet_folder(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    """`gradsurrogate report DIR` on a folder diffnet wrote = `diffnet --report-only --out
    DIR`: the same table.md (up to its Command line); exit 2 naming a folder without diffnet
    results."""
    out = tmp_path / "out"
    assert main([*TINY, "--out", str(out)]) == 0
    (rec,) = records(out)
    assert main(["--report-only", "--no-figures", "--out", str(out)]) == 0
    via_flag = (out / "table.md").read_text()
    (out / "table.md").unlink()
    capsys.readouterr()
    assert gradsurrogate_main(["report", str(out), "--no-figures"]) == 0
    via_report = (out / "table.md").read_text()
    assert via_report.startswith(f"Command: `gradsurrogate report {out} --no-figures`")
    assert via_report.split("\n", 1)[1] == via_flag.split("\n", 1)[1]
    assert f"{rec['mse']['type1']['f']:.3e}" in via_report
    assert gradsurrogate_main(["report", str(out)]) == 0  # figures too
    assert (out / "sin1d_tanh.png").stat().st_size > 0
    capsys.readouterr()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["--report-only", "--out", str(empty)]) == 2
    err = capsys.readouterr().err
    assert f"gradsurrogate diffnet: error: no diffnet results in '{empty}'" in err
    assert not (empty / "table.md").exists()
    (empty / "results.jsonl").write_text("")
    (empty / ".gradsurrogate-part").write_text("restore\n")  # another part's folder
    assert report_main([str(empty)]) == 2
    assert f"gradsurrogate report: error: no diffnet results in '{empty}' (written by " \
        "'restore')" in capsys.readouterr().err
