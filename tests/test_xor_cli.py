"""XOR CLI flags (both forms), sweep expansion against hand-computed grids, W&B schema."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from gradsurrogate.xor.cli import parse_xor_args, run_main, sweep_main
from gradsurrogate.xor.results import read_jsonl
from gradsurrogate.xor.sweep import (
    expand_sweep,
    load_sweep,
    sample_parameter,
    to_argv,
    validate_sweep,
)

SWEEPS = sorted((Path(__file__).parent.parent / "sweeps").glob("xor_*.yaml"))
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
    (["--grad-input", "flop"], "unknown backward mode 'flop' for grad_input; accepted: exact"),
    (["--grad-input", "sign", "--grad-input-p", "0.3"], "takes no parameter"),
    (["--grad-input-p", "0.3"], "needs a mode"),
    (["--input", "random"], "does not apply to input"),
    (["--perturb", "bias", "--mode", "sign"], "unknown target 'bias'; accepted: grad_input"),
    (["--perturb", "all", "--mode", "sign", "--weight", "sign"], "set both"),
    (["--sigma", "-1"], "sigma must be a positive number; got -1.0"),
    (["--grad-weight", "flip", "--grad-weight-p", "1.5"], "must lie in [0, 1]; got 1.5"),
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


def test_grid_sweep_expansion_matches_hand_computed_grid():
    config = {"method": "grid", "parameters": {
        "perturb": {"values": ["grad_input", "weight"]}, "mode": {"value": "flip"},
        "p": {"values": [0.1, 0.5]}, "seed": {"values": [0, 1]}}}
    validate_sweep(config)
    runs = expand_sweep(config)
    hand = [{"perturb": t, "mode": "flip", "p": p, "seed": s}
            for t in ("grad_input", "weight") for p in (0.1, 0.5) for s in (0, 1)]
    assert sorted(map(str, runs)) == sorted(map(str, hand)) and len(runs) == 8
    assert to_argv(runs[0]) == ["--perturb=grad_input", "--mode=flip", "--p=0.1", "--seed=0"]
    assert expand_sweep(config, count=3) == runs[:3]
    bad = {"method": "grid", "parameters": {"lr": {"min": 0.001, "max": 0.1}}}
    with pytest.raises(ValueError, match="grid search needs values/value for every parameter"):
        expand_sweep(bad)
    with pytest.raises(ValueError, match="method grid or random; got 'bayes'"):
        expand_sweep({"method": "bayes", "parameters": {"lr": {"value": 0.1}}})


def test_shipped_sweeps_validate_and_expand():
    assert {p.name for p in SWEEPS} >= {"xor_flip_per_target.yaml", "xor_sign_vs_blend.yaml",
                                        "xor_random_p_lr.yaml"}
    sizes = {}
    for path in SWEEPS:
        config = load_sweep(path)  # validated against W&B's schema
        runs = expand_sweep(config)
        sizes[path.name] = len(runs)
        for run in runs:
            parse_xor_args(to_argv(run))  # every expanded config is valid xor flags
        assert "${args}" in config["command"] and "xor" in config["command"]
    assert sizes["xor_flip_per_target.yaml"] == 5 * 10 * 2 * 3
    assert sizes["xor_sign_vs_blend.yaml"] == 4 * 5 * 2 * 3
    assert sizes["xor_random_p_lr.yaml"] == 60


def test_schema_rejects_malformed_sweeps(tmp_path):
    with pytest.raises(ValueError, match="violates W&B's schema"):
        validate_sweep({"method": "grdi", "parameters": {"lr": {"values": [0.1]}}})
    with pytest.raises(ValueError, match="violates W&B's schema"):
        validate_sweep({"method": "random", "parameters": {
            "lr": {"distribution": "log_uniform_values", "min": 0, "max": 1}}})
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"method": "grid", "parameters": {"p": {"valuez": [1]}}}))
    assert sweep_main([str(path), "--dry-run"]) == 2


def test_random_parameters_follow_their_distributions():
    rng = np.random.default_rng(0)
    draw = lambda spec: [sample_parameter("x", spec, rng) for _ in range(400)]
    xs = draw({"distribution": "int_uniform", "min": 2, "max": 4})
    assert set(xs) == {2, 3, 4} and all(isinstance(x, int) for x in xs)
    xs = draw({"min": 0.5, "max": 0.6})  # float bounds without distribution: uniform
    assert all(0.5 <= x <= 0.6 for x in xs)
    xs = draw({"distribution": "log_uniform_values", "min": 1e-3, "max": 1e-1})
    assert all(1e-3 <= x <= 1e-1 for x in xs)
    assert abs(np.mean(np.log10(xs)) + 2) < 0.1  # uniform in log space
    xs = draw({"distribution": "q_uniform", "min": 0, "max": 1, "q": 0.25})
    assert set(xs) <= {0.0, 0.25, 0.5, 0.75, 1.0}
    xs = draw({"distribution": "q_log_uniform_values", "min": 1, "max": 100, "q": 1})
    assert all(isinstance(x, int) and 1 <= x <= 100 for x in xs)
    xs = draw({"distribution": "log_uniform", "min": 0, "max": 1})
    assert all(1 <= x <= np.e for x in xs)
    xs = draw({"values": ["a", "b"], "probabilities": [0.0, 1.0]})
    assert set(xs) == {"b"}
    with pytest.raises(ValueError, match="unknown distribution 'cauchy'; accepted: constant"):
        sample_parameter("x", {"distribution": "cauchy"}, rng)
    config = {"method": "random", "parameters": {"lr": {"distribution": "uniform", "min": 0,
                                                        "max": 1}}}
    assert expand_sweep(config, 5, seed=1) == expand_sweep(config, 5, seed=1)
    assert expand_sweep(config, 5, seed=1) != expand_sweep(config, 5, seed=2)


def test_sweep_main_runs_vectorised(tmp_path):
    path = tmp_path / "s.yaml"
    params = {"perturb": {"values": ["grad_input", "grad_weight"]}, "mode": {"value": "flip"},
              "p": {"values": [0.2, 0.4]}, "steps": {"value": 8}, "width": {"value": 4},
              "n-train": {"value": 32}, "n-test": {"value": 32}, "batch-size": {"value": 8},
              "eval-every": {"value": 4}}
    path.write_text(yaml.safe_dump({"method": "grid", "parameters": params}))
    out = tmp_path / "out"
    assert sweep_main([str(path), "--out", str(out), "--wandb", "disabled"]) == 0
    rows = list(read_jsonl(out / "results.jsonl"))
    assert len(rows) == 4 and all(r["vectorised"] and r["group_size"] == 4 for r in rows)
    assert (out / "report.md").exists()


def test_a_wandb_failure_never_fails_the_run(tmp_path, monkeypatch):
    import wandb

    def broken(*args, **kwargs):
        raise RuntimeError("no network")

    monkeypatch.setattr(wandb, "init", broken)
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="W&B init failed .*no network"):
        assert run_main([*TINY, f"--out={out}", "--wandb=online"]) == 0
    assert len(list(read_jsonl(out / "results.jsonl"))) == 1
