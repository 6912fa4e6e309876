"""DifferentialMLP against torch.func, weight gradients, ensembles, and the quick experiment."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import hessian, jacrev, vmap

from gradsurrogate.activations import ACTIVATIONS
from gradsurrogate.diffnet import DifferentialMLP

F64 = torch.float64


def _reference(net: DifferentialMLP, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """y, J, H by torch.func on ``net.value`` (per ensemble member via the diagonal blocks)."""
    n = net.n_in
    if net.ensemble is None:
        flat = x.reshape(-1, n)
        jac, hes = vmap(jacrev(net.value))(flat), vmap(hessian(net.value))(flat)
        lead = x.shape[:-1]
    else:
        e = net.ensemble
        flat = x.reshape(e, -1, n).transpose(0, 1)  # (B, E, n): one point per member
        jac = vmap(jacrev(net.value))(flat)  # (B, E, m, E, n)
        hes = vmap(hessian(net.value))(flat)  # (B, E, m, E, n, E, n)
        idx = torch.arange(e)
        jac = jac[:, idx, :, idx]  # (E, B, m, n)
        hes = hes[:, idx, :, idx, :, idx]  # (E, B, m, n, n)
        lead = x.shape[:-1]
        jac, hes = jac.reshape(*lead, *jac.shape[-2:]), hes.reshape(*lead, *hes.shape[-3:])
        return net.value(x), jac, hes
    return net.value(x), jac.reshape(*lead, *jac.shape[1:]), hes.reshape(*lead, *hes.shape[1:])


def _assert_machine_close(got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.shape == want.shape
    scale = max(1.0, want.abs().max().item())
    err = (got - want).abs().max().item() if got.numel() else 0.0
    assert err <= 1e-10 * scale, f"max error {err:.3e} at scale {scale:.3e}"


@settings(max_examples=80, deadline=None)
@given(
    activation=st.sampled_from(sorted(ACTIVATIONS)),
    mode=st.sampled_from(["auto", "forward", "reverse"]),
    depth=st.integers(1, 3),
    n=st.integers(1, 3),
    m=st.integers(1, 3),
    lead=st.sampled_from([(), (4,), (2, 3), (0,)]),
    ensemble=st.sampled_from([None, 2]),
    seed=st.integers(0, 2**16),
)
def test_matches_torch_func(
    activation: str,
    mode: str,
    depth: int,
    n: int,
    m: int,
    lead: tuple[int, ...],
    ensemble: int | None,
    seed: int,
) -> None:
    gen = torch.Generator().manual_seed(seed)
    net = DifferentialMLP(
        n, m, width=6, depth=depth, activation=activation, ensemble=ensemble,
        generator=gen, dtype=F64,
    )
    shape = ((ensemble,) if ensemble else ()) + lead + (n,)
    x = torch.randn(shape, generator=gen, dtype=F64)
    y0, j0 = net(x, mode=mode)
    y1, j1, h1 = net(x, hessian=True, mode=mode)
    out = (ensemble,) if ensemble else ()
    assert y0.shape == (*out, *lead, m) and j0.shape == (*out, *lead, m, n)
    assert h1.shape == (*out, *lead, m, n, n)
    if x.numel() == 0:
        return
    y_ref, j_ref, h_ref = _reference(net, x)
    for got, want in ((y0, y_ref), (y1, y_ref), (j0, j_ref), (j1, j_ref), (h1, h_ref)):
        _assert_machine_close(got, want)


@pytest.mark.parametrize("mode", ["forward", "reverse"])
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_every_activation_mode_and_depth(activation: str, mode: str) -> None:
    """Deterministic sweep on top of the random one: every activation × mode × depth 1..3."""
    for depth in (1, 2, 3):
        gen = torch.Generator().manual_seed(depth)
        net = DifferentialMLP(2, 2, width=5, depth=depth, activation=activation,
                              generator=gen, dtype=F64)
        x = torch.randn(2, 3, 2, generator=gen, dtype=F64)
        y, jac, hes = net(x, hessian=True, mode=mode)
        _, jac_only = net(x, mode=mode)
        for got, want in zip((y, jac, hes, jac_only), (*_reference(net, x), _reference(net, x)[1])):
            _assert_machine_close(got, want)


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_weight_gradients_match_torch_func(mode: str) -> None:
    """Losses on J and H train: their weight gradients equal those through torch.func."""
    gen = torch.Generator().manual_seed(1)
    net = DifferentialMLP(3, 2, width=5, depth=2, activation="tanh", generator=gen, dtype=F64)
    x = torch.randn(7, 3, generator=gen, dtype=F64)

    def loss(y: torch.Tensor, jac: torch.Tensor, hes: torch.Tensor) -> torch.Tensor:
        return y.sin().sum() + (jac**2).sum() + (hes**3).sum()

    ours = torch.autograd.grad(loss(*net(x, hessian=True, mode=mode)), list(net.parameters()))
    ref = torch.autograd.grad(loss(*_reference(net, x)), list(net.parameters()))
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    _, jac = net(x, mode=mode)
    params = list(net.parameters())[:-1]  # J does not depend on the output bias
    g_j = torch.autograd.grad(jac.square().sum(), params)
    g_ref = torch.autograd.grad(_reference(net, x)[1].square().sum(), params)
    for a, b in zip(g_j, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_ensemble_members_are_independent_networks() -> None:
    gen = torch.Generator().manual_seed(2)
    ens = DifferentialMLP(2, 1, width=8, depth=2, activation="softplus", ensemble=3,
                          generator=gen, dtype=F64)
    x = torch.randn(3, 5, 2, generator=gen, dtype=F64)
    y, jac, hes = ens(x, hessian=True)
    assert y.shape == (3, 5, 1) and jac.shape == (3, 5, 1, 2) and hes.shape == (3, 5, 1, 2, 2)
    for e in range(3):
        single = DifferentialMLP(2, 1, width=8, depth=2, activation="softplus", dtype=F64)
        with torch.no_grad():
            for p_single, p_ens in zip(single.parameters(), ens.parameters()):
                p_single.copy_(p_ens[e : e + 1])
        for a, b in zip(single(x[e], hessian=True), (y[e], jac[e], hes[e])):
            torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)
    # members start from different weights; a loss on one member moves only that member
    assert not torch.equal(ens.weights[0][0], ens.weights[0][1])
    y[0].sum().backward()
    assert ens.weights[0].grad[1:].abs().max() == 0 and ens.weights[0].grad[0].abs().max() > 0


def test_modes_dtype_device_and_init() -> None:
    net = DifferentialMLP(2, 1, width=16, depth=2)
    assert net.resolve_mode(False) == "reverse" and net.resolve_mode(True) == "reverse"
    wide = DifferentialMLP(1, 4)
    assert wide.resolve_mode(False) == "forward" and wide.resolve_mode(True) == "forward"
    assert DifferentialMLP(16, 16).resolve_mode(True) == "forward"
    assert DifferentialMLP(16, 15).resolve_mode(True) == "reverse"
    x = torch.randn(4, 2)
    y, jac, hes = net(x, hessian=True)
    assert y.dtype == jac.dtype == hes.dtype == torch.float32
    assert y.device == x.device
    assert all(torch.all(b == 0.1) for b in net.biases)
    big = DifferentialMLP(200, 300, width=300, depth=1, generator=torch.Generator().manual_seed(0))
    std = big.weights[0].std().item()  # xavier normal, gain √2: √2·√(2/(200+300))
    assert abs(std - math.sqrt(2) * math.sqrt(2 / 500)) < 0.01
    ortho = DifferentialMLP(3, 1, width=4, w_init="orthogonal", gain_hidden=1.0, b_init=0.0)
    w = ortho.weights[0][0]
    torch.testing.assert_close(w.T @ w, torch.eye(3))
    sparse = DifferentialMLP(3, 1, width=10, w_init="sparse", p_sparse=0.5)
    assert (sparse.weights[0][0] == 0).sum() >= 10
    a = DifferentialMLP(2, 1, generator=torch.Generator().manual_seed(5))
    b = DifferentialMLP(2, 1, generator=torch.Generator().manual_seed(5))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_bad_arguments_raise_value_error() -> None:
    net = DifferentialMLP(2, 1, width=4)
    with pytest.raises(ValueError, match="sideways"):
        net(torch.zeros(3, 2), mode="sideways")
    with pytest.raises(ValueError, match="n_in=2"):
        net(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="registered"):
        DifferentialMLP(2, 1, activation="swish")
    with pytest.raises(ValueError, match="xavier_normal"):
        DifferentialMLP(2, 1, w_init="kaiming")
    with pytest.raises(ValueError, match="E=3"):
        DifferentialMLP(2, 1, ensemble=3)(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="depth"):
        DifferentialMLP(2, 1, depth=0)


@pytest.mark.parametrize("problem", ["sin1d", "cossin2d"])
def test_problem_truths_are_consistent(problem: str) -> None:
    """The experiments' exact J and H equal autograd derivatives of their f."""
    from gradsurrogate.diffnet.experiment import PROBLEMS

    truth = PROBLEMS[problem].truth
    x = torch.rand(6, PROBLEMS[problem].n_in, dtype=F64, generator=torch.Generator().manual_seed(0))
    f = lambda p: truth(p[None])[0][0]
    _, jac, hes = truth(x)
    torch.testing.assert_close(jac, vmap(jacrev(f))(x))
    torch.testing.assert_close(hes, vmap(hessian(f))(x))


def test_quick_experiment_smoke(tmp_path: pytest.TempPathFactory) -> None:
    """CLI end to end (tiny): table next to the reference numbers, figures, resume."""
    from gradsurrogate.diffnet.cli import main
    from gradsurrogate.diffnet.experiment import ExperimentConfig, train_one

    argv = ["--quick", "--out", str(tmp_path), "--activations", "relu", "tanh",
            "--epochs", "2", "--n-train", "512", "--wandb", "disabled"]
    assert main(argv) == 0
    table = (tmp_path / "table.md").read_text()
    assert "Type 1 Loss / ReLu" in table and "Hessian Loss / TanH" in table
    assert "8.239e-07" in table and "1.163e-02" in table  # reference cells, 1-d and 2-d
    for name in ("sin1d_relu", "sin1d_tanh", "cossin2d_relu", "cossin2d_tanh"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
    stored = tmp_path / "sin1d_tanh.npz"
    stamp = stored.stat().st_mtime_ns
    assert main(argv) == 0  # resume: nothing retrained
    assert stored.stat().st_mtime_ns == stamp
    # a short run does learn: training loss falls for every loss variant
    cfg = ExperimentConfig(problem="sin1d", width=32, n_train=1024, epochs=6, lr=1e-2)
    res = train_one(cfg, "tanh")
    assert res["train_loss"].shape == (6, 3)
    assert (res["train_loss"][-1] < 0.7 * res["train_loss"][0]).all()
    assert np.isfinite(res["mse"]).all() and res["mse"].shape == (3, 3)


def test_lr_schedules() -> None:
    """constant = the reference's lr throughout; cosine falls monotonically from lr to r·lr
    and is applied epoch by epoch (same first epoch, different second one)."""
    from gradsurrogate.diffnet.experiment import ExperimentConfig, lr_at, train_one

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
    from gradsurrogate.diffnet.experiment import ExperimentConfig, train_one

    cfg = ExperimentConfig(problem="cossin2d", width=8, n_train=512, epochs=4, schedule=schedule,
                           hidden_lr="fan_in" if schedule == "cosine" else "same")
    unbroken = train_one(cfg, "softplus")

    def crash_in_epoch_3(metrics: dict) -> None:
        if metrics["epoch"] == 2:
            raise KeyboardInterrupt

    ckpt = tmp_path / "state.pt"
    with pytest.raises(KeyboardInterrupt):
        train_one(cfg, "softplus", log=crash_in_epoch_3, checkpoint=ckpt, checkpoint_every=2)
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
    from gradsurrogate.diffnet.experiment import ExperimentConfig, run_experiment, train_one
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
    with pytest.raises(ValueError, match="inits must be a positive integer, got 0"):
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
    from gradsurrogate.diffnet.cli import main
    from gradsurrogate.diffnet.experiment import ExperimentConfig, evaluate_checkpoint, train_one

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
    with pytest.raises(ValueError, match="eval_every must be a non-negative integer, got -1"):
        ExperimentConfig(eval_every=-1)

    def crash_in_epoch_3(metrics: dict) -> None:
        if metrics["epoch"] == 2:
            raise KeyboardInterrupt

    ckpt = tmp_path / "state.pt"
    with pytest.raises(KeyboardInterrupt):
        train_one(replace(cfg, eval_every=2), "tanh", log=crash_in_epoch_3, checkpoint=ckpt,
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


def test_hidden_lr_fan_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """hidden_lr="fan_in" divides the lr of the hidden-to-hidden matrices (only) by their
    fan-in, epoch by epoch; a one-hidden-layer net has none, so its training is bitwise
    unchanged."""
    import gradsurrogate.diffnet.experiment as ex

    cfg = ex.ExperimentConfig(problem="cossin2d", width=8, n_train=512, epochs=3, lr=1e-2,
                              schedule="cosine", hidden_lr="fan_in", losses=("type1",))
    built: list = []
    build = ex._build
    monkeypatch.setattr(ex, "_build", lambda *a: built.append(build(*a)) or built[-1])
    lrs: list[list[float]] = []
    deep = ex.train_one(cfg, "tanh", log=lambda m: lrs.append(
        [g["lr"] for g in built[0][2][0].param_groups]))
    rest, hidden = built[0][2][0].param_groups
    assert [p.shape for p in hidden["params"]] == [(1, 8, 8)]  # (E, o, i): the 8×8 matrix
    assert len(rest["params"]) == 5 and hidden["lr_scale"] == 1 / 8
    for epoch, (lr_rest, lr_hidden) in enumerate(lrs):
        assert lr_rest == pytest.approx(ex.lr_at(cfg, epoch))
        assert lr_hidden == pytest.approx(ex.lr_at(cfg, epoch) / 8)
    same = ex.train_one(replace(cfg, hidden_lr="same"), "tanh")
    assert (deep["mse"] != same["mse"]).all()
    shallow = replace(cfg, problem="sin1d")
    np.testing.assert_array_equal(ex.train_one(shallow, "tanh")["mse"],
                                  ex.train_one(replace(shallow, hidden_lr="same"), "tanh")["mse"])
    assert ex.ExperimentConfig().with_recipe("tuned").hidden_lr == "same"  # an option only
    with pytest.raises(ValueError, match=r"'width'.*same, fan_in, freq"):
        ex.ExperimentConfig(hidden_lr="width")


def test_hidden_lr_freq() -> None:
    """hidden_lr="freq": the hidden layers (W and b) of a cos(ωa) net learn at lr / ω, and
    the net then trains like a cos(a) net whose hidden parameters are ω times larger:
    same losses (up to Adam's ε and the weight decay, switched off here)."""
    from gradsurrogate.diffnet.experiment import ExperimentConfig, _build, _param_groups, train_one

    cfg = ExperimentConfig(problem="cossin2d", width=8, n_train=512, epochs=1,
                           hidden_lr="freq", losses=("type1",), dtype="float64")
    _, nets, opts = _build(cfg, "cos2pi", torch.Generator().manual_seed(0))
    rest, scaled = opts[0].param_groups
    assert len(scaled["params"]) == 4 and scaled["lr_scale"] == pytest.approx(1 / (2 * math.pi))
    assert [p.shape for p in rest["params"]] == [(1, 1, 8), (1, 1)]  # the output layer
    _, nets, _ = _build(cfg, "tanh", torch.Generator().manual_seed(0))
    assert len(_param_groups(nets[0], "freq")) == 1  # not periodic: nothing scaled
    for act in ("tanh", "relu"):  # bitwise unchanged for non-periodic activations
        np.testing.assert_array_equal(train_one(cfg, act)["mse"],
                                      train_one(replace(cfg, hidden_lr="same"), act)["mse"])

    # cos(2π·a) with lr/2π on the hidden layers ≡ cos(a) with the hidden params ×2π
    def run(activation: str, hidden_lr: str) -> list[float]:
        gen = torch.Generator().manual_seed(1)
        c = replace(cfg, hidden_lr=hidden_lr, weight_decay=0.0)
        _, nets, opts = _build(c, activation, gen)
        net, opt = nets[0], opts[0]
        if activation == "cos":
            ref = _build(c, "cos2pi", torch.Generator().manual_seed(1))[1][0]
            with torch.no_grad():
                for dst, src in zip(net.parameters(), ref.parameters()):
                    dst.copy_(src)
                for w, b in zip(net.weights[:-1], net.biases[:-1]):
                    w.mul_(2 * math.pi)
                    b.mul_(2 * math.pi)
        x = torch.rand(64, 2, generator=gen, dtype=torch.float64) * 6 - 3
        target = torch.sin(x.sum(-1, keepdim=True))
        out = []
        for _ in range(20):
            for g in opt.param_groups:
                g["lr"] = 1e-2 * g.get("lr_scale", 1.0)
            loss = (net(x[None])[0] - target).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            out.append(loss.item())
        return out

    # equal up to Adam's ε (1e-8), whose weight relative to √v differs by the factor ω
    np.testing.assert_allclose(run("cos2pi", "freq"), run("cos", "same"), rtol=1e-6)
    assert not np.allclose(run("cos2pi", "same"), run("cos", "same"), rtol=1e-3)
