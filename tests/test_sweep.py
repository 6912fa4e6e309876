"""`gradsurrogate sweep`: local expansion against W&B's own engine (the `sweeps` package: grid
order exactly, random draws identical for one seed and from the stated distributions), schema
checks, and dispatch on the YAML's command to a part's `run_sweep` (a fake part here)."""

import random
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats

import gradsurrogate.cli as gcli
from gradsurrogate.sweep import main
from gradsurrogate.sweep_space import (
    expand_sweep,
    load_sweep,
    parameter_spec,
    sample_parameter,
    to_argv,
    validate_sweep,
)

SWEEPS = sorted((Path(__file__).parent.parent / "sweeps").glob("*.yaml"))
HANDMADE_GRID = {"method": "grid", "parameters": {
    "zeta": {"values": ["b", "a", "b"]},             # repeated value: runs once
    "alpha": {"values": [2, 1, 1.0, 3]},             # 1 and 1.0 are one value for W&B
    "mid": {"value": 7},                             # constant between the axes
    "count": {"min": 1, "max": 3},                   # int_uniform: 1, 2, 3
    "step": {"distribution": "q_uniform", "min": 0, "max": 0.3, "q": 0.1},  # arange: max out
    "Upper": {"values": [[1, 2], {"k": 1}]},         # sorts before lower case; lists, dicts
}}
# one of every distribution, for the random draws
ALL_RANDOM = {"method": "random", "parameters": {
    "c": {"value": 3},
    "cat": {"values": ["x", "y", "z"]},
    "catp": {"values": [10, 20, 30], "probabilities": [0.2, 0.5, 0.3]},
    "iu": {"min": -2, "max": 4},
    "u": {"min": 0.5, "max": 2.0},
    "qu": {"distribution": "q_uniform", "min": 0, "max": 1, "q": 0.05},
    "qui": {"distribution": "q_uniform", "min": 0, "max": 100, "q": 5},
    "luv": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-1},
    "qluv": {"distribution": "q_log_uniform_values", "min": 1, "max": 1000, "q": 1},
    "iluv": {"distribution": "inv_log_uniform_values", "min": 0.01, "max": 10.0},
    "n": {"distribution": "normal", "mu": 1.0, "sigma": 2.0},
    "qn": {"distribution": "q_normal", "mu": 0, "sigma": 3, "q": 0.5},
    "ln": {"distribution": "log_normal", "mu": -1.0, "sigma": 0.5},
    "qln": {"distribution": "q_log_normal", "mu": 2, "sigma": 1, "q": 1},
    "be": {"distribution": "beta", "a": 2.0, "b": 5.0},
    "qbe": {"distribution": "q_beta", "a": 1, "b": 1, "q": 0.1},
}}


@pytest.fixture(scope="module")
def engine():
    # the submodule: a bare `sweeps` also imports as a namespace package from the repo's
    # sweeps/ folder of YAMLs when W&B's engine is not installed
    pytest.importorskip("sweeps.grid_search")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydantic config-key warnings inside `sweeps`
        from sweeps.grid_search import grid_search_next_runs
        from sweeps.random_search import random_search_next_runs
    return grid_search_next_runs, random_search_next_runs


def _values(runs):
    return [{k: v["value"] for k, v in run.config.items()} for run in runs if run is not None]


def _wandb_grid(engine, config):
    return _values(engine[0]([], config, n=10_000))


def _wandb_random(engine, config, n, seed):
    state = random.getstate()
    random.seed(seed)  # W&B draws from the global `random` stream
    try:
        return _values(engine[1](config, n=n))
    finally:
        random.setstate(state)


@pytest.mark.parametrize("path", [p for p in SWEEPS if "method: grid" in p.read_text()],
                         ids=lambda p: p.name)
def test_shipped_grids_match_wandb_order_exactly(engine, path):
    config = load_sweep(path)
    ours, theirs = expand_sweep(config), _wandb_grid(engine, config)
    assert len(ours) > 1 and ours == theirs
    assert [list(run) for run in ours] == [list(run) for run in theirs]  # key order too
    assert [type(v) for run in ours for v in run.values()] == \
        [type(v) for run in theirs for v in run.values()]
    assert expand_sweep(config, count=5) == theirs[:5]


def test_handmade_grid_matches_wandb_order_exactly(engine):
    validate_sweep(HANDMADE_GRID)
    ours, theirs = expand_sweep(HANDMADE_GRID), _wandb_grid(engine, HANDMADE_GRID)
    assert ours == theirs and len(ours) == 2 * 3 * 3 * 3 * 2  # Upper alpha count step zeta
    assert [type(r["alpha"]) for r in ours] == [type(r["alpha"]) for r in theirs]
    assert [r["alpha"] for r in ours[:54:18]] == [2, 1.0, 3]  # 1, 1.0: one run, last spelling
    assert type(ours[18]["alpha"]) is float
    assert sorted({r["step"] for r in ours}) == [0.0, 0.1, 0.2]  # max 0.3 left out, as W&B
    assert ours[0] == {"Upper": [1, 2], "alpha": 2, "count": 1, "mid": 7, "step": 0.0,
                       "zeta": "b"}
    assert ours[1]["zeta"] == "a" and ours[2]["step"] == 0.1  # last name varies fastest


def test_shipped_random_sweeps_draw_what_wandb_draws(engine):
    for path in [p for p in SWEEPS if "method: random" in p.read_text()]:
        config = load_sweep(path)
        ours = expand_sweep(config, 50, seed=11)
        assert ours == _wandb_random(engine, config, 50, 11)
        assert len(expand_sweep(config)) == config["run_cap"]


def test_every_distribution_draws_what_wandb_draws(engine):
    validate_sweep(ALL_RANDOM)
    ours = expand_sweep(ALL_RANDOM, 150, seed=5)
    theirs = _wandb_random(engine, ALL_RANDOM, 150, 5)
    for name in ALL_RANDOM["parameters"]:
        a, b = [r[name] for r in ours], [r[name] for r in theirs]
        assert a == b, name
        assert [type(x) for x in a] == [type(x.item() if hasattr(x, "item") else x) for x in b]
    assert expand_sweep(ALL_RANDOM, 3, seed=6) != expand_sweep(ALL_RANDOM, 3, seed=5)


def test_random_draws_follow_the_stated_distributions():
    runs = expand_sweep(ALL_RANDOM, 4000, seed=0)
    col = {name: np.array([r[name] for r in runs], dtype=object)
           for name in ALL_RANDOM["parameters"]}
    ks = lambda name, cdf: stats.kstest(col[name].astype(float), cdf).pvalue
    assert ks("u", stats.uniform(0.5, 1.5).cdf) > 1e-3
    assert ks("n", stats.norm(1.0, 2.0).cdf) > 1e-3
    assert ks("ln", stats.lognorm(s=0.5, scale=np.exp(-1.0)).cdf) > 1e-3
    assert ks("be", stats.beta(2.0, 5.0).cdf) > 1e-3
    log_luv = np.log10(col["luv"].astype(float))  # uniform in log10 space on [-4, -1]
    assert log_luv.min() >= -4 and log_luv.max() <= -1
    assert stats.kstest(log_luv, stats.uniform(-4, 3).cdf).pvalue > 1e-3
    inv = np.log10(1 / col["iluv"].astype(float))  # 1/x log-uniform on [0.1, 100]
    assert stats.kstest(inv, stats.uniform(-1, 3).cdf).pvalue > 1e-3
    assert set(col["iu"]) == set(range(-2, 5)) and all(type(x) is int for x in col["iu"])
    assert set(col["c"]) == {3} and set(col["cat"]) == {"x", "y", "z"}
    freq = [np.mean(col["catp"] == v) for v in (10, 20, 30)]
    assert np.allclose(freq, [0.2, 0.5, 0.3], atol=0.03)
    qu = col["qu"].astype(float)  # float q: multiples of 0.05 (float), 0 and 1 at half weight
    assert np.allclose(qu / 0.05, np.round(qu / 0.05)) and qu.min() == 0 and qu.max() == 1
    assert all(type(x) is int and x % 5 == 0 for x in col["qui"])  # integer q: ints
    assert all(type(x) is int and 1 <= x <= 1000 for x in col["qluv"])
    assert np.allclose(col["qbe"].astype(float) * 10, np.round(col["qbe"].astype(float) * 10))
    spec = ALL_RANDOM["parameters"]["luv"]  # one parameter: one uniform per run, as above
    rng = random.Random(2)
    assert [sample_parameter("luv", spec, rng) for _ in range(5)] == [
        r["luv"] for r in expand_sweep({"method": "random", "parameters": {"luv": spec}}, 5, 2)]


def test_grid_refusals_and_argv_forms():
    with pytest.raises(ValueError, match="grid search takes value, values, int_uniform or"):
        expand_sweep({"method": "grid", "parameters": {"lr": {"min": 0.001, "max": 0.1}}})
    with pytest.raises(ValueError, match=r"grid search .* 'categorical_w_probabilities'"):
        expand_sweep({"method": "grid", "parameters": {
            "x": {"values": [1, 2], "probabilities": [0.5, 0.5]}}})
    with pytest.raises(ValueError, match="grid or random; got 'bayes'"):
        expand_sweep({"method": "bayes", "parameters": {"lr": {"value": 0.1}}})
    assert to_argv({"a": 0.1, "b": True, "c": False, "d": [1, 2]}) == [
        "--a=0.1", "--b=True", "--c=False", "--d=[1, 2]"]
    assert to_argv({"a": 0.1, "b": True, "c": False}, "${args_no_boolean_flags}") == [
        "--a=0.1", "--b"]


@pytest.mark.parametrize(("config", "fragment"), [
    ({"method": "grdi", "parameters": {"lr": {"values": [0.1]}}}, "unknown method 'grdi'"),
    ({"method": "grid", "parameters": {}}, "parameters must be a non-empty mapping"),
    ({"method": "grid", "parameters": {"p": {"valuez": [1]}}}, "needs value, values"),
    ({"method": "random", "parameters": {"lr": {"distribution": "log_uniform_values",
                                                "min": 0, "max": 1}}}, "needs min > 0"),
    ({"method": "random", "parameters": {"lr": {"min": 1, "max": 1}}}, "min 1 is not less"),
    ({"method": "random", "parameters": {"x": {"distribution": "cauchy"}}},
     "parameter 'x': unknown distribution 'cauchy'; accepted: constant"),
    ({"method": "random", "parameters": {"x": {"distribution": "log_uniform", "min": 0,
                                               "max": 1}}}, "use log_uniform_values"),
    ({"method": "random", "parameters": {"x": {"values": [1, 2], "probabilities": [0.5]}}},
     "one number >= 0 per value"),
    ({"method": "random", "parameters": {"x": {"distribution": "normal", "sigma": -1}}},
     "sigma, a, b >= 0"),
    ({"method": "random", "parameters": {"x": {"distribution": "uniform", "min": 0,
                                               "max": 1, "q": 2}}}, "unknown \\['q'\\]"),
    ({"method": "random", "run_cap": 0, "parameters": {"x": {"value": 1}}}, "run_cap must be"),
    ({"method": "grid", "parameters": {"a b": {"value": 1}}}, "bad parameter name 'a b'"),
])
def test_validation_names_the_problem(config, fragment):
    with pytest.raises(ValueError, match=fragment):
        validate_sweep(config)


def test_wandb_schema_is_applied_when_installed(engine):
    with pytest.raises(ValueError, match="metric"):
        validate_sweep({"method": "grid", "metric": "loss", "parameters": {"x": {"value": 1}}})
    assert parameter_spec("x", {"distribution": "q_normal"})[1] == {
        "distribution": "q_normal", "mu": 0, "sigma": 1, "q": 1.0}


# ----------------------------------------------------------------------------------------------
# Dispatch on the YAML's command, through a fake part module
# ----------------------------------------------------------------------------------------------

@pytest.fixture
def fake_parts(monkeypatch):
    """Commands `fake` (with run_sweep, recording its calls) and `nosweep` (without)."""
    calls = []
    fake = types.ModuleType("fake_part_cli")
    fake.run_sweep = lambda argvs, out, common: calls.append((argvs, out, common)) or 0
    monkeypatch.setitem(sys.modules, "fake_part_cli", fake)
    monkeypatch.setitem(sys.modules, "nosweep_cli", types.ModuleType("nosweep_cli"))
    monkeypatch.setattr(gcli, "COMMANDS", {
        "fake": ("fake_part_cli:main", "fake"), "nosweep": ("nosweep_cli:main", "no sweeps"),
        "sweep": ("gradsurrogate.sweep:main", "this command")})
    monkeypatch.delenv("WANDB_MODE", raising=False)
    return calls


def _yaml(tmp_path, command, method="grid", name="s.yaml", **extra):
    params = {"b": {"values": [1, 2]}, "a": {"value": "x"}}
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"method": method, "command": command, "parameters": params,
                                    **extra}))
    return path


CMD = ["${env}", "${interpreter}", "${program}", "fake", "--wandb=online", "--depth=3",
       "${args}", "--tail", "1"]


def test_dispatch_takes_the_command_and_literal_flags_from_the_yaml(tmp_path, fake_parts,
                                                                     capsys, monkeypatch):
    path = _yaml(tmp_path, CMD, project="proj-from-yaml")
    monkeypatch.chdir(tmp_path)
    assert main([str(path)]) == 0
    ((argvs, out, common),) = fake_parts
    assert argvs == [["--depth=3", "--a=x", "--b=1", "--tail", "1"],
                     ["--depth=3", "--a=x", "--b=2", "--tail", "1"]]
    assert out == "runs/sweep-s"
    assert (common.wandb, common.wandb_project, common.threads) == ("online", "proj-from-yaml", 1)
    assert "2 runs of gradsurrogate fake" in capsys.readouterr().out
    assert main([str(path), "--count", "1", "--wandb", "disabled", "--out", "o",
                 "--wandb-project", "p", "--threads", "2"]) == 0
    argvs, out, common = fake_parts[1]
    assert argvs == [["--depth=3", "--a=x", "--b=1", "--tail", "1"]] and out == "o"
    assert (common.wandb, common.wandb_project, common.threads) == ("disabled", "p", 2)
    monkeypatch.setenv("WANDB_MODE", "offline")  # the user's environment beats the YAML
    assert main([str(path)]) == 0 and fake_parts[2][2].wandb is None


def test_dry_run_prints_the_lines_and_runs_nothing(tmp_path, fake_parts, capsys):
    path = _yaml(tmp_path, ["python", "-m", "gradsurrogate", "fake", "${args}",
                            "--out=elsewhere"], method="random", run_cap=3)
    assert main([str(path), "--dry-run", "--sweep-seed", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"gradsurrogate fake {' '.join(to_argv(p))}"
                     for p in expand_sweep(load_sweep(path), seed=4)]
    assert len(lines) == 3 and not fake_parts
    assert main([str(path), "--count", "5"]) == 0
    assert len(fake_parts[0][0]) == 5 and fake_parts[0][1] == "elsewhere"


@pytest.mark.parametrize(("command", "fragment"), [
    (["${env}", "${program}", "frobnicate", "${args}"],
     "names no gradsurrogate command; accepted: fake, nosweep"),
    (["${program}", "nosweep", "${args}"],
     "command 'nosweep' does not support sweeps (its module has no run_sweep); commands with "
     "sweeps: fake"),
    (["${program}", "fake"], "must pass the parameters once, as ${args}"),
    (["${program}", "fake", "${args_json}"], "must pass the parameters once"),
    (["${program}", "fake", "--wandb=loud", "${args}"],
     "unknown --wandb mode in the sweep's command 'loud'; accepted: disabled, offline, online"),
])
def test_bad_commands_exit_2_with_the_reason(tmp_path, fake_parts, capsys, command, fragment):
    assert main([str(_yaml(tmp_path, command)), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gradsurrogate sweep: error: ") and fragment in err
    assert not fake_parts


@pytest.mark.parametrize(("text", "fragment"), [
    ("method: grid\nparameters: {b: {values: [1, 2]}\n", "cannot read sweep file"),
    ("- just\n- a list\n", "must be a YAML mapping"),
    ("method: bayes\ncommand: [fake, '${args}']\nparameters: {b: {min: 0.1, max: 1.0}}\n",
     "local sweeps support method grid or random; got 'bayes'"),
    ("method: grid\ncommand: [fake, '${args}']\nparameters: {b: {values: []}}\n",
     "values must be a non-empty list"),
])
def test_bad_yaml_exits_2(tmp_path, fake_parts, capsys, text, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gradsurrogate sweep: error: ") and fragment in err
    assert main([str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read sweep file" in capsys.readouterr().err
    assert main([str(path), "--count", "0"]) == 2
    assert "--count must be an integer >= 1; got 0" in capsys.readouterr().err
    assert not fake_parts
