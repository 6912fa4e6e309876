"""XOR CLI: flags (both forms, generated from XorConfig), bad values, the sweep hook."""

import argparse

import pytest

from gradsurrogate.io import read_jsonl
from gradsurrogate.xor.cli import grid_main, parse_xor_args, run_main, run_sweep

TINY = ["--steps", "8", "--width", "4", "--n-train", "32", "--n-test", "32", "--batch-size",
        "8", "--eval-every", "4", "--diag-every", "4"]


def test_flags_parse_in_both_forms():
    spaced = ["--depth", "3", "--width", "8", "--steps", "50", "--lr", "0.02", "--optimizer",
              "sgd", "--batch-size", "0", "--sigma", "0.4", "--label-noise", "0.1", "--seed",
              "5", "--grad-input", "flip", "--grad-input-p", "0.3", "--weight", "sign",
              "--input", "blend", "--input-p", "0.5", "--grad-weight", "sign:rescale",
              "--wandb", "disabled", "--out", "x"]
    joined = [f"{a}={b}" for a, b in zip(spaced[::2], spaced[1::2])]
    underscored = [a.replace("-", "_").replace("__", "--") for a in joined]
    configs = [parse_xor_args(argv)[1] for argv in (spaced, joined, underscored)]
    assert configs[0] == configs[1] == configs[2]
    c = configs[0]
    assert (c.depth, c.width, c.steps, c.lr, c.optimizer, c.batch_size) == (3, 8, 50, 0.02,
                                                                            "sgd", 0)
    assert (c.sigma, c.label_noise, c.seed, c.noise_seed) == (0.4, 0.1, 5, 5)
    assert c.spec == ("grad_input=flip:0.3,grad_weight=sign:rescale,weight=sign,"
                      "input=blend:0.5")
    args, _ = parse_xor_args(joined)
    assert args.wandb == "disabled" and args.out == "x"
    short = parse_xor_args(["--perturb=all", "--mode=flip", "--p=0.45"])[1]
    assert short.spec == ("grad_input=flip:0.45,grad_weight=flip:0.45,weight=flip:0.45,"
                          "input=flip:0.45")
    assert parse_xor_args(["--grad-weight=flip:0.2"])[1].spec == "grad_weight=flip:0.2"


@pytest.mark.parametrize(("argv", "fragment"), [
    (["--grad-input", "flop"], "unknown backward mode 'flop'"),
    (["--grad-input", "sign", "--grad-input-p", "0.3"], "takes no parameter"),
    (["--grad-input-p", "0.3"], "needs a mode"),
    (["--input", "random"], "does not apply to input"),
    (["--perturb", "bias", "--mode", "sign"],
     "unknown --perturb target 'bias'; accepted: grad_input"),
    (["--perturb", "all", "--mode", "sign", "--weight", "sign"], "set both"),
    (["--sigma", "-1"], "sigma must be a finite number in (0, 3.4e+38]; got -1"),
    (["--lr", "inf"], "lr must be a finite number in (0, 3.4e+38]; got inf"),
    (["--lr", "nan"], "lr must be a finite number in (0, 3.4e+38]; got nan"),
    (["--lr", "1e300"], "lr must be a finite number in (0, 3.4e+38]; got 1e+300"),
    (["--lr", "0"], "lr must be a finite number in (0, 3.4e+38]; got 0.0"),
    (["--label-noise", "0.5"], "label_noise must be a finite number in [0, 0.5); got 0.5"),
    (["--optimizer", "adamw"], "unknown optimizer 'adamw'; accepted: adam, sgd"),
    (["--steps", "0"], "steps must be an integer in [1, 1000000000]; got 0"),
    (["--depth", "99999999999999999999"], "depth must be an integer in [1, 1000]"),
    (["--width", "99999999999999999999"], "width must be an integer in [1, 1048576]"),
    (["--seed", "99999999999999999999"], "seed must be an integer >= 0 (at most 2**63 - 1)"),
    (["--perturb", "", "--mode", "flip", "--p", "0.2"], "--perturb '' names no target"),
    (["--grad-weight", "flip", "--grad-weight-p", "1.5"],
     "must be a finite number in [0, 1]; got 1.5"),
])
def test_bad_flags_give_clear_errors(argv, fragment, capsys):
    with pytest.raises(ValueError) as err:
        parse_xor_args(argv)
    assert fragment in str(err.value)
    assert run_main([*argv, "--wandb", "disabled"]) == 2
    assert fragment in capsys.readouterr().err


def test_run_main_writes_record_and_curves(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    out = tmp_path / "run"
    assert run_main([*TINY, "--grad-weight=sign", f"--out={out}", "--wandb=offline"]) == 0
    (rec,) = list(read_jsonl(out / "results.jsonl"))
    (cur,) = list(read_jsonl(out / "curves.jsonl"))
    assert rec["config"]["spec"] == "grad_weight=sign" and rec["config"]["grad_weight"] == "sign"
    assert rec["run_id"] == cur["run_id"] and cur["step"] == [0, 4, 8]
    assert list((tmp_path / "wb" / "wandb").glob("offline-run-*"))  # offline W&B run written


def test_sweep_hook_runs_vectorised(tmp_path):
    lines = [[f"--perturb={t}", "--mode=flip", f"--p={p}", "--steps=8", "--width=4",
              "--n-train=32", "--n_test=32", "--batch-size=8", "--eval-every=4"]
             for t in ("grad_input", "grad_weight") for p in (0.2, 0.4)]
    common = argparse.Namespace(wandb="disabled", wandb_project=None, threads=1)
    out = tmp_path / "out"
    assert run_sweep(lines, str(out), common) == 0
    rows = list(read_jsonl(out / "results.jsonl"))
    assert len(rows) == 4 and all(r["vectorised"] and r["group_size"] == 4 for r in rows)
    assert {r["config"]["spec"] for r in rows} == {
        "grad_input=flip:0.2", "grad_input=flip:0.4", "grad_weight=flip:0.2",
        "grad_weight=flip:0.4"}
    assert (out / "report.md").exists()
    with pytest.raises(ValueError, match=r"bad xor flags '--lr=inf'.*lr must be a finite"):
        run_sweep([["--lr=inf"]], str(out), common)


def test_a_wandb_failure_never_fails_the_run(tmp_path, monkeypatch):
    import wandb

    def broken(*args, **kwargs):
        raise RuntimeError("no network")

    monkeypatch.setattr(wandb, "init", broken)
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match=r"W&B .*init failed.*no network"):
        assert run_main([*TINY, f"--out={out}", "--wandb=online"]) == 0
    assert len(list(read_jsonl(out / "results.jsonl"))) == 1


def test_grid_rejects_bad_values_before_training(tmp_path, capsys):
    out = tmp_path / "g"
    assert grid_main(["--lr", "1e300", "--out", str(out), "--wandb", "disabled"]) == 2
    assert "lr must be a finite number" in capsys.readouterr().err
    assert grid_main(["--targets", "bias", "--out", str(out), "--wandb", "disabled"]) == 2
    assert "unknown grid target 'bias'; accepted: grad_input" in capsys.readouterr().err
    assert grid_main(["--max-group", "0", "--out", str(out), "--wandb", "disabled"]) == 2
    assert "--max-group must be an integer >= 1; got 0" in capsys.readouterr().err
    for bad, msg in ((["--depths", ","], "the grid needs at least one value in depths"),
                     (["--modes", "sign", "--ps", "nan"], "p (in ps) must be a finite number"),
                     (["--seeds", "1.5"], "--seeds: bad value(s) '1.5'"),
                     (["--depth", "3"], "unrecognized arguments: --depth 3"),
                     (["--out", ""], "an empty --out would write into the current folder")):
        args = ["--out", str(out), "--wandb", "disabled", *bad]
        assert grid_main(args) == 2
        assert msg in capsys.readouterr().err
    assert not (out / "results.jsonl").exists()  # nothing trained


def test_unwritable_out_fails_before_training(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert run_main([*TINY, f"--out={blocker / 'sub'}", "--wandb=disabled"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gradsurrogate xor: error: output folder") and "not writable" in err


def test_default_results_are_the_same_with_one_and_two_threads(tmp_path):
    import torch

    before = torch.get_num_threads()
    try:
        recs = []
        for n in (1, 2):
            out = tmp_path / f"t{n}"
            assert run_main([*TINY, "--grad-input=flip:0.3", f"--out={out}", "--wandb=disabled",
                             f"--threads={n}"]) == 0
            (rec,) = read_jsonl(out / "results.jsonl")
            recs.append({k: v for k, v in rec.items() if k != "seconds"})
        assert recs[0] == recs[1]
    finally:
        torch.set_num_threads(before)


def test_a_diverging_run_is_recorded_as_diverged(tmp_path):
    out = tmp_path / "d"
    assert run_main([*TINY, "--optimizer=sgd", "--lr=1e30", f"--out={out}",
                     "--wandb=disabled"]) == 0
    (rec,) = read_jsonl(out / "results.jsonl")
    assert rec["diverged"] is True and 0 < rec["diverged_step"] < 8
    assert rec["steps_done"] == rec["diverged_step"]


def test_file_system_errors_and_bad_wandb_mode_fail_before_training(tmp_path, monkeypatch,
                                                                     capsys):
    out = tmp_path / "g"
    out.mkdir()
    (out / "figures").write_text("a file where the figures folder goes")
    grid = ["--out", str(out), "--steps=4", "--wandb=disabled", "--targets=grad_weight",
            "--modes=sign", "--depths=1", "--seeds=0"]
    assert grid_main(grid) == 2
    assert "output folder" in capsys.readouterr().err
    assert not (out / "results.jsonl").exists()
    monkeypatch.setenv("WANDB_MODE", "bogus")
    assert grid_main([*grid[:3], *grid[4:], "--no-report"]) == 2
    assert "unknown W&B mode in WANDB_MODE 'bogus'" in capsys.readouterr().err
    assert not (out / "results.jsonl").exists()


def test_report_of_folders(tmp_path, capsys):
    from gradsurrogate.cli import main

    assert main(["report", str(tmp_path)]) == 2
    assert "holds no gradsurrogate results" in capsys.readouterr().err
    out = tmp_path / "x"
    assert run_main([*TINY, f"--out={out}", "--wandb=disabled"]) == 0
    assert main(["report", str(out)]) == 0
    assert (out / "report.md").read_text().startswith("# XOR destroy-Jacobian report")
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["report", str(out), "--figures", str(blocker / "figs")]) == 2
    assert "gradsurrogate report: error:" in capsys.readouterr().err
