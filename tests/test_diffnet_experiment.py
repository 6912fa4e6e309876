"""The reference's experiments (``gradsurrogate.diffnet.experiment``, ``report``, ``cli``):
training, schedules, recipes, resume, seed spread, learning curves, per-layer lrs."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch


def crash_at(epoch: int):
    """A ``log`` callback that interrupts training at the end of (0-based) ``epoch``."""

    def log(metrics: dict) -> None:
        if metrics["epoch"] == epoch:
            raise KeyboardInterrupt

    return log


def test_quick_experiment_smoke(tmp_path: pytest.TempPathFactory) -> None:
    """CLI end to end (tiny): table next to the reference numbers, figures, resume."""
    from gradsurrogate.diffnet import ExperimentConfig, train_one
    from gradsurrogate.diffnet.cli import main

    argv = ["--quick", "--out", str(tmp_path), "--activations", "relu", "tanh",
            "--epochs", "2", "--n-train", "512", "--wandb", "disabled"]
    assert main(argv) == 0
    table = (tmp_path / "table.md").read_text()
    assert "Type 1 Loss / ReLu" in table and "Hessian Loss / TanH" in table
    assert "8.239e-07" in table and "1.163e-02" in table  # reference cells, 1-d and 2-d
    for name in ("sin1d_relu", "sin1d_tanh", "cossin2d_relu", "cossin2d_tanh"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
    (stored,) = tmp_path.glob("sin1d_tanh-*.npz")
    stamp = stored.stat().st_mtime_ns
    lines = (tmp_path / "results.jsonl").read_text().count("\n")
    assert lines == 4  # one record per (problem, activation) run
    assert main(argv) == 0  # resume: nothing retrained
    assert stored.stat().st_mtime_ns == stamp
    assert (tmp_path / "results.jsonl").read_text().count("\n") == lines
    # a short run does learn: training loss falls for every loss variant
    cfg = ExperimentConfig(problem="sin1d", width=32, n_train=1024, epochs=6, lr=1e-2)
    res = train_one(cfg, "tanh")
    assert res["train_loss"].shape == (6, 3)
    assert (res["train_loss"][-1] < 0.7 * res["train_loss"][0]).all()
    assert np.isfinite(res["mse"]).all() and res["mse"].shape == (3, 3)


def test_lr_schedules() -> None:
    """constant = the reference's lr throughout; cosine falls monotonically from lr to r·lr
    and is applied epoch by epoch (same first epoch, different second one)."""
    from gradsurrogate.diffnet import ExperimentConfig, train_one
    from gradsurrogate.diffnet.config import lr_at

    const = ExperimentConfig(epochs=50)
    assert {lr_at(const, e) for e in range(50)} == {1e-3}
    cos = replace(const, schedule="cosine", lr_final=0.05)
    lrs = np.array([lr_at(cos, e) for e in range(50)])
    assert lrs[0] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(5e-5)
    assert (np.diff(lrs) < 0).all()
    assert lrs[25] == pytest.approx(1e-3 * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * 25 / 49))))
    tuned = ExperimentConfig().with_recipe("tuned")
    assert (tuned.amsgrad, tuned.schedule) == (False, "cosine")
    assert lr_at(tuned, 499) == pytest.approx(3e-6)
    assert ExperimentConfig().with_recipe("reference") == ExperimentConfig()
    with pytest.raises(ValueError, match=r"'fast'.*reference, tuned"):
        ExperimentConfig().with_recipe("fast")
    with pytest.raises(ValueError, match=r"'step'.*constant, cosine"):
        ExperimentConfig(schedule="step")
    with pytest.raises(ValueError, match=r"lr_final.*1\.5"):
        ExperimentConfig(lr_final=1.5)
    small = ExperimentConfig(problem="sin1d", width=8, n_train=512, epochs=2, lr=1e-2)
    a = train_one(small, "tanh")["train_loss"]
    b = train_one(replace(small, schedule="cosine", lr_final=1e-3), "tanh")["train_loss"]
    np.testing.assert_array_equal(a[0], b[0])
    assert (a[1] != b[1]).all()


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_training_resumes_from_checkpoint(
    tmp_path: pytest.TempPathFactory, schedule: str
) -> None:
    """An interrupted run resumed from its checkpoint ends exactly where an unbroken one does."""
    from gradsurrogate.diffnet import ExperimentConfig, train_one

    cfg = ExperimentConfig(problem="cossin2d", width=8, n_train=512, epochs=4, schedule=schedule,
                           hidden_lr="fan_in" if schedule == "cosine" else "same")
    unbroken = train_one(cfg, "softplus")


    ckpt = tmp_path / "state.pt"
    with pytest.raises(KeyboardInterrupt):
        train_one(cfg, "softplus", log=crash_at(2), checkpoint=ckpt, checkpoint_every=2)
    assert torch.load(ckpt, weights_only=False)["epoch"] == 2
    from gradsurrogate.diffnet.experiment import evaluate_checkpoint

    cfg_back, act, partial = evaluate_checkpoint(ckpt)
    assert cfg_back == cfg and act == "softplus" and int(partial["epoch"]) == 2
    assert partial["mse"].shape == (3, 3) and np.isfinite(partial["mse"]).all()
    resumed = train_one(cfg, "softplus", checkpoint=ckpt, checkpoint_every=2)
    np.testing.assert_array_equal(resumed["mse"], unbroken["mse"])
    np.testing.assert_array_equal(resumed["train_loss"], unbroken["train_loss"])


def test_table_with_activations_at_different_stages() -> None:
    """One activation with all losses, another with only Type 1 / 2 (a split run half done):
    the missing cells read "–", the counts cover the cells that exist."""
    from gradsurrogate.diffnet.report import format_table

    def res(losses: list[str], value: float) -> dict[str, np.ndarray]:
        e = len(losses)
        return {"losses": np.array(losses), "mse": np.full((e, 3), value),
                "finished": np.ones(e, bool), "epoch": np.full(e, 500)}

    results = {"relu": res(["type1", "type2", "hessian"], 1.0), "tanh": res(["hessian"], 1e-9)}
    table, wins, compared = format_table("sin1d", results)
    assert "Type 1 Loss / TanH (not run)" in table and "Hessian Loss / ReLu |" in table
    assert (wins, compared) == (0, 6)  # relu: 6 compared cells at 1.0; tanh: hessian only
    assert table.splitlines()[2].count("–") == 2  # f row: tanh type1, type2


def test_several_initialisations_per_loss(tmp_path: pytest.TempPathFactory) -> None:
    """inits=K trains K independently initialised members per loss on the same batches:
    the first one is reported as usual, all K land in ``mse_inits`` and a spread table."""
    from gradsurrogate.diffnet import ExperimentConfig, run_experiment, train_one
    from gradsurrogate.diffnet.report import write_report

    cfg = ExperimentConfig(problem="sin1d", width=8, n_train=512, epochs=2, inits=3,
                           losses=("type1", "type2", "hessian"), activations=("tanh",))
    res = train_one(cfg, "tanh")
    assert res["mse"].shape == (3, 3) and res["mse_inits"].shape == (3, 3, 3)
    np.testing.assert_array_equal(res["mse"], res["mse_inits"][:, 0])
    assert np.unique(res["mse_inits"][:, :, 0]).size == 9  # different initialisations
    assert res["train_loss"].shape == (2, 3) and res["y"].shape[0] == 3
    run_experiment(cfg, tmp_path)
    text = write_report(tmp_path, ["sin1d"], figures=False)
    assert "Median [min, max] over 3 initialisations" in text
    assert "medians at or below the reference" in text
    with pytest.raises(ValueError, match="inits must be an integer >= 1; got 0"):
        ExperimentConfig(inits=0)
    from gradsurrogate.diffnet.cli import main

    argv = ["--quick", "--problem", "sin1d", "--activations", "tanh", "--epochs", "1",
            "--n-train", "256", "--inits", "2", "--out", str(tmp_path / "cli"),
            "--wandb", "disabled", "--no-figures"]
    assert main(argv) == 0
    assert "over 2 initialisations" in (tmp_path / "cli" / "table.md").read_text()


def test_learning_curves(tmp_path: pytest.TempPathFactory) -> None:
    """eval_every=k records the test MSEs after every k-th epoch without changing training
    (bitwise); the last row is the final result; the curves survive a resume, reach the
    tracker and the report draws them."""
    from gradsurrogate.diffnet import ExperimentConfig, train_one
    from gradsurrogate.diffnet.cli import main
    from gradsurrogate.diffnet.experiment import evaluate_checkpoint

    cfg = ExperimentConfig(problem="cossin2d", width=8, n_train=512, epochs=4,
                           schedule="cosine", lr=1e-2)
    plain = train_one(cfg, "tanh")
    assert "test_mse" not in plain
    seen: list[dict] = []
    curves = train_one(replace(cfg, eval_every=2), "tanh", log=seen.append)
    np.testing.assert_array_equal(curves["train_loss"], plain["train_loss"])
    np.testing.assert_array_equal(curves["mse"], plain["mse"])
    assert curves["test_mse"].shape == (3, 2, 3) and list(curves["test_epochs"]) == [2, 4]
    np.testing.assert_array_equal(curves["test_mse"][:, -1], plain["mse"])
    assert (curves["test_mse"][:, 0] != curves["test_mse"][:, 1]).all()  # it moved
    assert seen[1]["tanh/type2/test_df"] == curves["test_mse"][1, 0, 1]
    assert "tanh/type1/test_f" not in seen[0]  # epoch 1: no evaluation
    with pytest.raises(ValueError, match="eval_every must be an integer >= 0; got -1"):
        ExperimentConfig(eval_every=-1)


    ckpt = tmp_path / "state.pt"
    with pytest.raises(KeyboardInterrupt):
        train_one(replace(cfg, eval_every=2), "tanh", log=crash_at(2), checkpoint=ckpt,
                  checkpoint_every=2)
    partial = evaluate_checkpoint(ckpt)[2]
    np.testing.assert_array_equal(partial["test_mse"][:, 0], curves["test_mse"][:, 0])
    assert np.isnan(partial["test_mse"][:, 1]).all()
    resumed = train_one(replace(cfg, eval_every=2), "tanh", checkpoint=ckpt, checkpoint_every=2)
    np.testing.assert_array_equal(resumed["test_mse"], curves["test_mse"])

    argv = ["--quick", "--problem", "sin1d", "--activations", "relu", "--epochs", "2",
            "--n-train", "256", "--eval-every", "1", "--out", str(tmp_path / "cli"),
            "--wandb", "disabled"]
    assert main(argv) == 0
    assert (tmp_path / "cli" / "sin1d_relu_curves.png").stat().st_size > 1000


def test_hidden_lr_fan_in(tmp_path: pytest.TempPathFactory) -> None:
    """hidden_lr="fan_in" divides the lr of the hidden-to-hidden matrices (only) by their
    fan-in, epoch by epoch (read from the optimiser state in the checkpoints); a
    one-hidden-layer net has none, so its training is bitwise unchanged."""
    from gradsurrogate.diffnet import ExperimentConfig, train_one
    from gradsurrogate.diffnet.config import lr_at

    cfg = ExperimentConfig(problem="cossin2d", width=8, n_train=512, epochs=3, lr=1e-2,
                           schedule="cosine", hidden_lr="fan_in", losses=("type1",))
    ckpt = tmp_path / "state.pt"
    groups: list[list[dict]] = []

    def read_groups(metrics: dict) -> None:  # the checkpoint is written before the log call
        state = torch.load(ckpt, weights_only=False)
        groups.append(state["models"][0][1]["param_groups"])

    deep = train_one(cfg, "tanh", log=read_groups, checkpoint=ckpt, checkpoint_every=1)
    for epoch, (rest, hidden) in enumerate(groups):
        assert len(hidden["params"]) == 1 and len(rest["params"]) == 5  # W2 vs W1, W3, b1–b3
        assert hidden["lr_scale"] == 1 / 8
        assert rest["lr"] == pytest.approx(lr_at(cfg, epoch))
        assert hidden["lr"] == pytest.approx(lr_at(cfg, epoch) / 8)
    same = train_one(replace(cfg, hidden_lr="same"), "tanh")
    assert (deep["mse"] != same["mse"]).all()
    shallow = replace(cfg, problem="sin1d")
    np.testing.assert_array_equal(train_one(shallow, "tanh")["mse"],
                                  train_one(replace(shallow, hidden_lr="same"), "tanh")["mse"])
    assert ExperimentConfig().with_recipe("tuned").hidden_lr == "same"  # an option only
    with pytest.raises(ValueError, match=r"'width'.*same, fan_in, freq"):
        ExperimentConfig(hidden_lr="width")


def test_hidden_lr_freq() -> None:
    """hidden_lr="freq": the hidden layers (W and b) of a cos(ωa) net learn at lr / ω, and
    the net then trains like a cos(a) net whose hidden parameters are ω times larger:
    same losses (up to Adam's ε; no weight decay here). Other activations: no scaling."""
    from gradsurrogate.diffnet import DifferentialMLP, ExperimentConfig, train_one
    from gradsurrogate.diffnet.experiment import param_groups

    def net(activation: str) -> DifferentialMLP:
        return DifferentialMLP(2, 1, width=8, depth=2, activation=activation, dtype=torch.float64,
                               generator=torch.Generator().manual_seed(1))

    rest, scaled = param_groups(net("cos2pi"), "freq")
    assert len(scaled["params"]) == 4 and scaled["lr_scale"] == pytest.approx(1 / (2 * math.pi))
    assert [p.shape for p in rest["params"]] == [(1, 1, 8), (1, 1)]  # the output layer
    assert len(param_groups(net("tanh"), "freq")) == 1  # not periodic: nothing scaled
    cfg = ExperimentConfig(problem="cossin2d", width=8, n_train=512, epochs=2,
                           hidden_lr="freq", losses=("type1",))
    for act in ("tanh", "relu"):  # through train_one: bitwise unchanged
        np.testing.assert_array_equal(train_one(cfg, act)["mse"],
                                      train_one(replace(cfg, hidden_lr="same"), act)["mse"])
    assert (train_one(cfg, "cos2pi")["mse"]
            != train_one(replace(cfg, hidden_lr="same"), "cos2pi")["mse"]).all()

    def run(activation: str, hidden_lr: str) -> list[float]:
        model = net(activation)
        if activation == "cos":  # cos(a') with a' = 2π·a: copy the cos2pi net, hidden ×2π
            with torch.no_grad():
                for dst, src in zip(model.parameters(), net("cos2pi").parameters()):
                    dst.copy_(src)
                for w, b in zip(model.weights[:-1], model.biases[:-1]):
                    w.mul_(2 * math.pi)
                    b.mul_(2 * math.pi)
        opt = torch.optim.Adam(param_groups(model, hidden_lr))
        gen = torch.Generator().manual_seed(2)
        x = torch.rand(64, 2, generator=gen, dtype=torch.float64) * 6 - 3
        target = torch.sin(x.sum(-1, keepdim=True))
        out = []
        for _ in range(20):
            for g in opt.param_groups:
                g["lr"] = 1e-2 * g.get("lr_scale", 1.0)
            loss = (model(x)[0] - target).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            out.append(loss.item())
        return out

    # equal up to Adam's ε (1e-8), whose weight relative to √v differs by the factor ω
    np.testing.assert_allclose(run("cos2pi", "freq"), run("cos", "same"), rtol=1e-6)
    assert not np.allclose(run("cos2pi", "same"), run("cos", "same"), rtol=1e-3)


def test_results_of_older_versions_are_reused(
    tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An older version's stored result (``<problem>_<activation>[__<losses>].npz``, no
    results.jsonl, settings written before hidden_lr / eval_every existed) is reported and
    reused without training (a record now points at it); a real change retrains. An older
    checkpoint (tagged with every activation of its command) resumes."""
    from gradsurrogate.diffnet import ExperimentConfig, run_experiment, train_one
    from gradsurrogate.diffnet import store as store_mod
    from gradsurrogate.diffnet.config import settings_text
    from gradsurrogate.diffnet.report import load_results
    from gradsurrogate.diffnet.store import legacy_path

    cfg = ExperimentConfig(problem="sin1d", width=8, n_train=256, epochs=2, activations=("tanh",),
                           losses=("type2",))
    res = train_one(cfg, "tanh")
    path = legacy_path(tmp_path, "sin1d", "tanh", ("type2",))
    assert path.name == "sin1d_tanh__type2.npz"
    old = "\n".join(line for line in settings_text(cfg).splitlines()
                    if not line.startswith(("hidden_lr", "eval_every")))
    np.savez(path, **{k: v for k, v in res.items() if k not in ("diverged_at", "epochs_run")},
             config=np.array(old))
    ((_, results),) = load_results(tmp_path, "sin1d")  # reported before any rerun
    np.testing.assert_array_equal(results["tanh"]["mse"][:, 0], res["mse"][:, 0])
    calls: list[str] = []

    def counted(run_cfg: ExperimentConfig, activation: str, *args: object, **kw: object) -> dict:
        calls.append(activation)
        return train_one(run_cfg, activation, *args, **kw)

    monkeypatch.setattr(store_mod, "train_one", counted)
    stamp = path.stat().st_mtime_ns
    rec = run_experiment(cfg, tmp_path)["tanh"]
    assert calls == [] and rec["file"] == path.name and path.stat().st_mtime_ns == stamp
    assert rec["mse"]["type2"]["df"] == res["mse"][0, 1]
    run_experiment(cfg, tmp_path)  # now through its record
    assert calls == []
    ((_, results),) = load_results(tmp_path, "sin1d")
    assert list(results["tanh"]["losses"]) == ["type2"]
    run_experiment(replace(cfg, hidden_lr="freq"), tmp_path)  # a real change retrains
    assert calls == ["tanh"]

    both = replace(cfg, activations=("relu", "tanh"))
    ckpt = legacy_path(tmp_path, "sin1d", "relu", ("type2",)).with_suffix(".ckpt.pt")
    with pytest.raises(KeyboardInterrupt):
        train_one(both, "relu", log=crash_at(0), checkpoint=ckpt, checkpoint_every=1)
    state = torch.load(ckpt, weights_only=False)
    for key in ("hidden_lr", "eval_every"):
        del state["tag"][0][key]
    del state["test_mse"]
    torch.save(state, ckpt)
    seen: list[int] = []
    rec = run_experiment(replace(cfg, activations=("relu",)), tmp_path,
                         log=lambda m: seen.append(m["epoch"]))["relu"]
    assert seen == [1] and not ckpt.exists()  # resumed after epoch 1 of 2
    unbroken = train_one(replace(cfg, activations=("relu",)), "relu")
    assert rec["mse"]["type2"]["f"] == unbroken["mse"][0, 0]


def test_curves_of_split_runs_and_odd_intervals(tmp_path: pytest.TempPathFactory) -> None:
    """Split runs: a member stored without curves gets NaN rows; curves at different epochs
    are dropped with a warning. eval_every not dividing epochs stops at its last multiple;
    eval_every > epochs records nothing, also in a checkpoint."""
    from gradsurrogate.diffnet import ExperimentConfig, run_experiment, train_one
    from gradsurrogate.diffnet.experiment import evaluate_checkpoint
    from gradsurrogate.diffnet.report import load_results

    cfg = ExperimentConfig(problem="sin1d", width=8, n_train=256, epochs=3, activations=("tanh",))
    run_experiment(replace(cfg, losses=("type1", "type2"), eval_every=2), tmp_path)
    run_experiment(replace(cfg, losses=("hessian",)), tmp_path)
    ((_, results),) = load_results(tmp_path, "sin1d")  # one setting: eval_every aside
    res = results["tanh"]
    assert list(res["test_epochs"]) == [2] and res["test_mse"].shape == (3, 1, 3)
    assert np.isfinite(res["test_mse"][:2]).all() and np.isnan(res["test_mse"][2]).all()
    assert (res["test_mse"][:2, -1] != res["mse"][:2]).all()  # epoch 2, not the final 3
    run_experiment(replace(cfg, losses=("hessian",), eval_every=1), tmp_path)
    with pytest.warns(UserWarning, match="different epochs"):
        res = load_results(tmp_path, "sin1d")[0][1]["tanh"]
    assert "test_mse" not in res and "test_epochs" not in res

    late = replace(cfg, eval_every=5, losses=("type1",))
    assert "test_mse" not in train_one(late, "tanh")
    ckpt = tmp_path / "state.pt"
    with pytest.raises(KeyboardInterrupt):
        train_one(late, "tanh", log=crash_at(1), checkpoint=ckpt, checkpoint_every=1)
    assert "test_mse" not in evaluate_checkpoint(ckpt)[2]


def test_reference_cos_column_is_compared_with_cos_x() -> None:
    """The reference's Cos column was made with cos(x): it is compared with ``cos``;
    ``cos2pi`` gets its own column with no reference number."""
    from gradsurrogate.diffnet.report import REFERENCE, format_table

    for rows in REFERENCE.values():
        for row in rows.values():
            assert "cos" in row and "cos2pi" not in row
    one = {"losses": np.array(["type1"]), "mse": np.array([[1e-9, 1e-9, 1e-9]]),
           "finished": np.array([True]), "epoch": np.array([500]),
           "diverged_at": np.array([0])}
    text, wins, compared = format_table("sin1d", {"cos2pi": one, "cos": one})
    assert (wins, compared) == (3, 3)
    head = text.splitlines()[0]
    assert head.index("Type 1 Loss / Cos |") < head.index("Type 1 Loss / Cos 2πx")
