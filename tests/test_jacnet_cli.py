"""``gradsurrogate jacnet`` as a user meets it: bad values, divergence, resume, torn results
files, thread counts and sweeps. Every run here is tiny (a few steps, a coarse grid)."""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from matplotlib.figure import Figure

from gradsurrogate.jacnet import Config1D, Config2D, Config100D, Plan, experiment, report
from gradsurrogate.jacnet.cli import main, parse_plan, run_sweep
from gradsurrogate.jacnet.training import train
from gradsurrogate.runs import StoreWarning

TINY = ["--steps", "3", "--grid", "11", "--seeds", "2", "--figure-seed", "0",
        "--wandb", "disabled"]
ROOT = Path(__file__).resolve().parents[1]


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()
            if line.strip()]


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Keys of the runs actually trained (``experiment.run_one`` calls)."""
    calls: list[str] = []
    real = experiment.run_one

    def spy(cfg, *args, **kwargs):
        calls.append(experiment.record_key(cfg))
        return real(cfg, *args, **kwargs)

    monkeypatch.setattr(experiment, "run_one", spy)
    return calls


@pytest.fixture
def quick_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blank 1x1 figures (drawing the real ones costs seconds on a loaded machine)."""
    for name in ("figure_1d", "figure_2d"):
        monkeypatch.setattr(report, name, lambda record, curves: Figure(figsize=(1, 1)))


@pytest.mark.parametrize("argv, message", [
    (["exp", "--lr", "inf"], "lr must be a finite number in (0, 3.4e+38]; got inf"),
    (["exp", "--lr", "nan"], "lr must be a finite number in (0, 3.4e+38]; got nan"),
    (["exp", "--lr", "0"], "lr must be a finite number in (0, 3.4e+38]; got 0.0"),
    (["abs", "--lr", "1e300"], "got 1e+300"),
    (["all", "--steps", "0"], "steps must be an integer >= 1; got 0"),
    (["2d", "--activation", "foo"], "unknown activation 'foo'; accepted: linear, relu"),
    (["exp", "--method", "foo"], "unknown training method 'foo'; accepted: gauss-legendre, "
                                 "dopri5"),
    (["exp", "--seeds", "0"], "--seeds must be an integer >= 1; got 0"),
    (["abs", "--figure-seed", "-1"], "--figure-seed must be an integer >= 0; got -1"),
    (["2d", "--steps-2d", "0"], "--steps-2d must be an integer >= 1; got 0"),
    (["exp", "--train-range", "1,-1"], "train_range must be ordered lo < hi; got (1.0, -1.0)"),
    (["exp", "--test-range", "0,inf"], "test_range must be a finite number"),
    (["exp", "--dtype", "float16"], "unknown dtype 'float16'; accepted: float32, float64"),
    (["exp", "--inverse-tol", "nan"], "inverse_tol must be a finite number in (0, 1); got nan"),
    (["--experiment=sinh"], "unknown experiment 'sinh'; accepted: exp, abs, 2d, 100d, all"),
    (["--lr=0.1"], "no experiment given; pass one of exp, abs, 2d, 100d, all"),
    (["exp", "--points", "grid"], "unknown training points 'grid'; accepted: even, random"),
    (["abs", "--eps", "0"], "eps must be a finite number in (0, 3.4e+38]; got 0.0"),
    (["exp", "--anneal", "max"], "unknown annealing scale 'max'; accepted: sum, mean"),
    (["100d", "--batch-size", "-1"], "batch_size must be an integer >= 0; got -1"),
    (["100d", "--epochs", "0"], "epochs must be an integer >= 1; got 0"),
    (["100d", "--models", "complex"], "unknown 100-d model structure 'complex'"),
    (["--experiment=100d", "--dim", "0"], "dim must be an integer >= 1; got 0"),
    (["100d", "--steps", "3"], "unrecognized arguments: --steps 3"),
    (["100d", "--seeds", "0"], "--seeds must be an integer >= 1; got 0"),
    (["exp", "--experiment=abs"], "two experiments given: 'exp' and --experiment 'abs'"),
    (["exp", "--threads", "-1"], "--threads must be an integer"),
    (["exp", "--lr", "abc"], "argument --lr: invalid float value: 'abc'"),
    (["sinh"], "argument experiment: invalid choice: 'sinh'"),
])
def test_bad_values_exit_2_naming_the_value(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           argv: list[str], message: str) -> None:
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "gradsurrogate jacnet: error: " in err and message in err
    assert "Traceback" not in err
    assert not out.exists()  # rejected before any work


def test_unwritable_out_fails_before_training(tmp_path: Path, capsys, counted) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["abs", *TINY, "--out", str(blocker / "sub")]) == 2
    assert "is not writable" in capsys.readouterr().err and counted == []


def test_python_entry_points_validate_once() -> None:
    with pytest.raises(ValueError, match=r"lr must be a finite number .* got nan"):
        Config1D(lr=float("nan"))
    with pytest.raises(ValueError, match=r"steps must be an integer >= 1; got 2.0"):
        Config1D(steps=2.0)
    with pytest.raises(ValueError, match=r"unknown 1-d target 'sin'; accepted: exp, abs"):
        Config1D(target="sin")
    with pytest.raises(ValueError, match=r"box must be a finite number .* got inf"):
        Config2D(box=float("inf"))
    with pytest.raises(ValueError, match=r"seeds must be an integer >= 1; got 0"):
        Plan(seeds=0)
    with pytest.raises(ValueError, match=r"unknown experiment 'all'"):
        Plan(experiments=("all",))
    cfg = Config1D(activation=" Tanh ", train_range=[-1, 1])  # normalised once
    assert cfg.activation == "tanh" and cfg.train_range == (-1.0, 1.0)
    assert cfg == Config1D(activation="tanh")
    with pytest.raises(AttributeError):
        cfg.lr = 1.0  # type: ignore[misc]  # frozen


def test_non_finite_loss_stops_training_at_that_step() -> None:
    torch.manual_seed(0)
    from gradsurrogate.jacnet import JacNet

    model = JacNet(1, 1, hidden=4)
    before = [p.clone() for p in model.parameters()]
    x = torch.linspace(-1, 1, 5)[:, None]
    res = train(model, x, torch.full_like(x, float("nan")), steps=5)
    assert res.diverged and res.diverged_step == 0 and res.history == []
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # no update


def test_diverging_run_is_recorded_as_diverged(tmp_path: Path, capsys, counted) -> None:
    out = tmp_path / "out"
    argv = ["exp", *TINY, "--seeds", "1", "--lr", "1e30", "--out", str(out)]
    assert main(argv) == 0
    (rec,) = records(out)
    # step 0 has the finite loss of the initial weights; its update (lr 1e30) overflows
    assert rec["diverged"] is True and rec["diverged_step"] == 1
    assert rec["diverged_model"] == "structured" and "baseline" not in rec
    assert rec["structured"]["steps_done"] == 1
    text = capsys.readouterr().out
    assert "every seed diverged" in text and "non-finite loss at step 1" in text
    assert (out / "report.md").read_text() in text
    assert main(argv) == 0 and len(counted) == 1  # a diverged run is finished, not retried


def test_rerun_resumes_and_survives_a_torn_line(tmp_path: Path, capsys, counted) -> None:
    out = tmp_path / "out"
    argv = ["abs", *TINY, "--out", str(out)]
    assert main(argv) == 0
    first = records(out)
    assert len(counted) == 2 and len(first) == 2
    assert {r["config"]["seed"] for r in first} == {0, 1}
    md = (out / "report.md").read_text()
    figure = out / "figures" / "jacnet_abs_steps-3_grid-11_seed-0.png"
    assert f"]({figure.relative_to(out)})" in md
    assert figure.read_bytes().startswith(b"\x89PNG")

    assert main(argv) == 0 and len(counted) == 2  # nothing trained again
    assert records(out) == first and (out / "report.md").read_text() == md

    # records stored before a config field existed (here: inverse_tol) still resume
    lines = (out / "results.jsonl").read_text().splitlines(keepends=True)
    old = [json.loads(line) for line in lines]
    for rec in old:
        del rec["config"]["inverse_tol"]
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old))
    assert main(argv) == 0 and len(counted) == 2

    # a kill mid-write: the last record is torn, and a junk line precedes it
    lines = (out / "results.jsonl").read_text().splitlines(keepends=True)
    (out / "results.jsonl").write_text(lines[0] + "42\n" + lines[1][: len(lines[1]) // 2])
    with pytest.warns(StoreWarning) as caught:
        assert main(argv) == 0
    said = " ".join(str(w.message) for w in caught)
    assert "results.jsonl:2: skipped, not a record" in said
    assert "results.jsonl:3: skipped, torn last line" in said
    assert counted[2:] == [first[1]["run_id"]]  # only the torn run trains again
    assert (out / "report.md").read_text() == md  # same numbers (deterministic)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StoreWarning)
        assert main(argv) == 0 and len(counted) == 3

    # the figure run's curves lost: only that run trains again, to redraw
    (out / "curves" / f"{first[0]['run_id']}.json").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StoreWarning)
        assert main(argv) == 0
    assert counted[3:] == [first[0]["run_id"]]


def _metrics(rec: dict) -> dict:
    return {k: ({m: x for m, x in v.items() if m != "train_time"} if isinstance(v, dict)
                else v) for k, v in rec.items()}


def test_threads_1_and_2_give_identical_default_results(tmp_path: Path,
                                                        quick_figures: None) -> None:
    runs = []
    for threads in ("1", "2"):
        out = tmp_path / threads
        argv = ["abs", "--steps", "3", "--grid", "11", "--seeds", "1", "--figure-seed", "0",
                "--wandb", "disabled", "--threads", threads, "--out", str(out)]
        assert main(argv) == 0
        runs.append([_metrics(r) for r in records(out)])
    assert runs[0] == runs[1]
    assert runs[0][0]["structured"]["test_mae"] > 0


def test_run_sweep_two_configs(tmp_path: Path, capsys, counted, quick_figures: None) -> None:
    common = argparse.Namespace(wandb="disabled", wandb_project="p", threads=1)
    line = ["--experiment=abs", "--steps=2", "--grid=11", "--seeds=1", "--figure_seed=0"]
    argvs = [[*line, "--method=gauss-legendre"], [*line, "--method=dopri5"]]
    with pytest.raises(ValueError, match=r"sweep line 2 .*unknown training method 'rk4'"):
        run_sweep([argvs[0], [*line, "--method=rk4"]], str(tmp_path / "out"), common)
    assert not (tmp_path / "out").exists() and counted == []  # validated before any run
    assert run_sweep(argvs, str(tmp_path / "out"), common) == 0
    recs = records(tmp_path / "out")
    assert sorted(r["config"]["method"] for r in recs) == ["dopri5", "gauss-legendre"]
    text = (tmp_path / "out" / "report.md").read_text()
    assert "## abs (gauss-legendre, seeds 0..0)" in text and "## abs (dopri5" in text
    assert run_sweep(argvs, str(tmp_path / "out"), common) == 0 and len(counted) == 2


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "sweeps").glob("jacnet_*.yaml")))
def test_shipped_sweep_lines_parse(name: str) -> None:
    sweep = yaml.safe_load((ROOT / "sweeps" / name).read_text())
    assert "jacnet" in sweep["command"]
    params = sweep["parameters"]
    names = list(params)
    grids = [p["values"] if "values" in p else [p["value"]] for p in params.values()]
    plans = [parse_plan([f"--{n}={v}" for n, v in zip(names, combo)], raising=True)[0]
             for combo in itertools.product(*grids)]
    assert len({p.base_1d for p in plans}) == len(plans) > 1


def test_100d_sweep_lines_get_the_100d_flags() -> None:
    plan, _ = parse_plan(["--experiment=100d", "--batch_size=32", "--epochs=2", "--seeds=2"],
                         raising=True)
    assert plan.experiments == ("100d",) and plan.seeds_100d == 2
    assert plan.config_100d == Config100D(batch_size=32, epochs=2)
    assert [c.seed for c in plan.configs()] == [0, 1]
    with pytest.raises(ValueError, match="unrecognized arguments: --points=even"):
        parse_plan(["100d", "--points=even"], raising=True)


def test_legacy_records_rerun_under_the_new_protocol(tmp_path: Path, counted,
                                                     quick_figures: None) -> None:
    out = tmp_path / "out"
    argv = ["abs", *TINY, "--seeds", "1", "--out", str(out)]
    assert main(argv) == 0 and len(counted) == 1
    (rec,) = records(out)
    for key in ("points", "eps", "anneal"):  # as stored before the protocol change
        del rec["config"][key]
    (out / "results.jsonl").write_text(json.dumps(rec) + "\n")
    assert main(argv) == 0 and len(counted) == 2  # made with random points: trained again
    assert records(out)[-1]["config"]["points"] == "even"


def test_step_logs_go_to_the_history_store(tmp_path: Path, quick_figures: None) -> None:
    out = tmp_path / "out"
    assert main(["abs", *TINY, "--seeds", "1", "--out", str(out)]) == 0
    (rec,) = records(out)
    hist = [json.loads(s) for s in (out / "history.jsonl").read_text().splitlines()]
    assert sorted((h["model"], h["step"]) for h in hist) == \
        [(m, k) for m in ("baseline", "structured") for k in range(3)]
    assert all(h["run"] == rec["run_id"] and h["loss"] > 0 for h in hist)


def test_tracker_gets_the_resolved_config_and_per_step_losses(tmp_path: Path, monkeypatch,
                                                              quick_figures: None) -> None:
    made: list[dict] = []

    class FakeTracker:
        def __init__(self, mode, project, config, **kw):
            made.append({"mode": mode, "project": project, "config": config, "logs": []})

        def log(self, data, step=None):
            made[-1]["logs"].append((step, data))

        def summary(self, data):
            made[-1]["summary"] = data

        def finish(self):
            made[-1]["finished"] = True

    monkeypatch.setattr(experiment, "Tracker", FakeTracker)
    argv = ["abs", *TINY, "--wandb", "offline", "--wandb-project", "proj", "--out",
            str(tmp_path)]
    assert main(argv) == 0
    assert [t["config"] for t in made] == [
        dataclasses.asdict(Config1D(target="abs", steps=3, grid=11, seed=s)) for s in (0, 1)]
    t = made[0]
    assert t["mode"] == "offline" and t["project"] == "proj" and t["finished"]
    assert [step for step, _ in t["logs"]] == [0, 1, 2]
    assert set(t["logs"][0][1]) == {"structured/loss", "baseline/loss"}
    assert t["summary"]["structured/test_mae"] == records(tmp_path)[0]["structured"]["test_mae"]


def test_report_command_rebuilds_a_jacnet_folder(tmp_path, capsys):
    from gradsurrogate.cli import main as gs_main

    out = tmp_path / "j"
    assert main(["abs", *TINY, "--out", str(out), "--wandb", "disabled"]) == 0
    first = (out / "report.md").read_text()
    (out / "report.md").unlink()
    assert gs_main(["report", str(out), "abs", *TINY]) == 0
    assert (out / "report.md").read_text() == first
    assert gs_main(["report", str(out), "exp", *TINY]) == 2  # exp never ran there
    assert "lacks 2 of the 2 runs" in capsys.readouterr().err  # seeds 0, 1 (figure seed 0)
