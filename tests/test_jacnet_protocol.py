"""The reference's protocol as the JacNet default (training points, ε, annealing on the batch
sum), minibatch training and its resumable state, and inverses of any model (exact path for
invertible structures, pseudo-inverse path with a warning otherwise)."""

from __future__ import annotations

import itertools
import math
import warnings

import pytest
import torch

from gradsurrogate.jacnet import JacNet, PseudoInverseWarning
from gradsurrogate.jacnet.exp1d import Config1D, training_points
from gradsurrogate.jacnet.pinv import pinv_apply
from gradsurrogate.jacnet.training import Trainer, target_magnitude, train

F64 = torch.float64


def test_protocol_default_is_the_reference_code() -> None:
    cfg = Config1D()
    assert (cfg.points, cfg.n_train, cfg.lr, cfg.eps, cfg.anneal, cfg.steps) == \
        ("even", 5, 0.01, 1e-3, "sum", 50)
    assert torch.equal(training_points(cfg), torch.linspace(-1, 1, 5)[:, None])
    assert training_points(Config1D(dtype="float64"))[:, 0].tolist() == [-1, -0.5, 0, 0.5, 1]
    # the random variant: the seed's first uniform draws on the training range
    rnd = training_points(Config1D(points="random", seed=3))
    gen = torch.Generator().manual_seed(3)
    expect = (-1 + 2 * torch.rand(5, 1, generator=gen, dtype=F64)).float()
    assert torch.equal(rnd, expect) and not torch.equal(rnd, training_points(cfg))


def test_legacy_records_are_the_random_protocol() -> None:
    old = {k: v for k, v in Config1D().__dict__.items() if k not in ("points", "eps", "anneal")}
    assert Config1D.from_record(old) == Config1D(points="random", eps=1e-4, anneal="mean")
    assert Config1D.from_record(Config1D().__dict__) == Config1D()


def _flat_model(y0: float = 0.0) -> JacNet:
    """A 1-d unconstrained JacNet with all weights 0: J = 0, so ŷ = y0 and the first loss is
    exactly mean |y - y0|."""
    m = JacNet(1, 1, hidden=4, structure="none", y0=torch.tensor([y0])).double()
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
    return m


@pytest.mark.parametrize("anneal, batch_size, halved", [
    ("sum", 0, True),     # 0.5 < 0.1 + 0.1 · Σ|y| = 0.1 + 0.1 · 10 · 0.5 = 0.6
    ("mean", 0, False),   # 0.5 > 0.1 + 0.1 · mean |y| = 0.15
    ("sum", 5, False),    # the minibatch's sum: 0.5 > 0.1 + 0.1 · 5 · 0.5 = 0.35
])
def test_annealing_threshold_is_on_the_batch_sum(anneal: str, batch_size: int,
                                                 halved: bool) -> None:
    x = torch.linspace(-1, 1, 10, dtype=F64)[:, None]
    y = torch.full_like(x, 0.5)
    assert target_magnitude(y, "sum") == pytest.approx(5.0)
    assert target_magnitude(y, "mean") == pytest.approx(0.5)
    tr = Trainer(_flat_model(), x, y, lr=1e-3, batch_size=batch_size, anneal=anneal)
    tr._step(None if batch_size == 0 else torch.arange(batch_size), 0)
    first = tr.result.history[0]
    assert first["loss"] == pytest.approx(0.5, abs=1e-15) and first["atol"] == 0.1
    assert tr.schedule.atol == (0.05 if halved else 0.1)
    assert tr.schedule.rtol == (0.05 if halved else 0.1)


def _trained(batch_size: int, steps: int = 4, seed: int = 0) -> tuple[JacNet, list[dict]]:
    torch.manual_seed(1)
    m = JacNet(1, 1, hidden=8, structure="invertible", eps=1e-3).double()
    x = torch.linspace(-1, 1, 7, dtype=F64)[:, None]
    res = train(m, x, torch.exp(x) - 1, steps, 0.01, batch_size=batch_size, seed=seed)
    return m, res.history


def test_minibatch_equals_full_batch_when_batch_covers_the_data() -> None:
    full, h_full = _trained(0)
    for b in (7, 100):
        mb, h_mb = _trained(b)
        assert [h["loss"] for h in h_mb] == [h["loss"] for h in h_full]
        assert all(torch.equal(p, q) for p, q in zip(full.parameters(), mb.parameters()))
    _, h_small = _trained(3, steps=2)
    assert len(h_small) == 2 * math.ceil(7 / 3)  # 3 minibatches per epoch
    assert [h["batch"] for h in h_small] == [3, 3, 1, 3, 3, 1]
    _, h_again = _trained(3, steps=2)  # the shuffling is seeded
    assert [h["loss"] for h in h_again] == [h["loss"] for h in h_small]
    assert [h["loss"] for h in _trained(3, steps=2, seed=5)[1]] != [h["loss"] for h in h_small]


def test_trainer_state_resumes_exactly() -> None:
    x = torch.linspace(-1, 1, 9, dtype=F64)[:, None]
    y = torch.exp(x)

    def fresh() -> Trainer:
        torch.manual_seed(2)
        m = JacNet(1, 1, hidden=8, structure="invertible", eps=1e-3, y0=torch.ones(1)).double()
        return Trainer(m, x, y, 0.02, batch_size=4, seed=1)

    straight = fresh()
    straight.fit(3)
    first = fresh()
    first.fit(2)
    state = first.state_dict()
    resumed = fresh()
    resumed.load_state_dict(state)
    resumed.fit(3)
    assert [e["loss"] for e in resumed.result.epochs] == [e["loss"] for e in straight.result.epochs]
    assert resumed.schedule.n == straight.schedule.n
    assert all(torch.equal(p, q) for p, q in zip(straight.model.parameters(),
                                                  resumed.model.parameters()))


@pytest.mark.parametrize("d_in, structure", [(1, "lipschitz"), (3, "conservative")])
def test_pseudo_inverse_step_reduces_the_residual(d_in: int, structure: str) -> None:
    # non-invertible structures whose forward map has J as its derivative (curl-free): a
    # pinv step is a Gauss-Newton step and shrinks ‖f(x) - y‖ quadratically
    torch.manual_seed(3)
    m = JacNet(d_in, 1, hidden=16, structure=structure, activation="tanh").double()
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(8, d_in, generator=gen, dtype=F64)
    y = m(x + 0.05 * torch.randn(8, d_in, generator=gen, dtype=F64), n=48)
    r = m(x, n=48) - y
    J = m.jacobian(x)
    step = pinv_apply(J, r, damping=0.0)
    # full row rank: J · pinv(J) r = r, so the step removes the residual to first order
    assert torch.allclose((J @ step[:, :, None])[:, :, 0], r, atol=1e-12)
    xk, before = x, r.norm(dim=-1)
    for _ in range(4):  # Gauss-Newton: every step shrinks every residual
        xk = xk - pinv_apply(m.jacobian(xk), m(xk, n=48) - y, damping=0.0)
        after = (m(xk, n=48) - y).norm(dim=-1)
        assert torch.all(after <= 0.5 * before + 1e-15)
        before = after
    assert after.median().item() < 1e-12 and after.max().item() < 1e-2 * r.abs().max().item()
    with pytest.warns(PseudoInverseWarning, match=f"structure '{structure}' is not invertible"):
        x1 = m.inverse(y, method="rk4", steps=64, refine=2, forward_opts={"n": 48})
    assert x1.shape == (8, d_in) and torch.isfinite(x1).all()
    # where the model is locally invertible, the pseudo-inverse lands on y
    assert (m(x1, n=48) - y).abs().median().item() < 1e-6


def test_pseudo_inverse_path_warns() -> None:
    torch.manual_seed(3)
    m = JacNet(3, 2, hidden=16, structure="none", activation="tanh").double()  # J is 2×3
    y = m(torch.randn(2, 3, dtype=F64), n=32)
    with pytest.warns(PseudoInverseWarning, match="structure 'none' is not invertible"):
        xs = m.inverse(y, method="rk4", steps=64)
    assert xs.shape == (2, 3) and torch.isfinite(xs).all()
    lip = JacNet(1, 1, structure="lipschitz")
    with pytest.warns(PseudoInverseWarning, match="not a true inverse"):
        lip.inverse(torch.zeros(2, 1), method="rk4", steps=4)
    with pytest.raises(ValueError, match="inverse needs an invertible structure"):
        lip.inverse(torch.zeros(2, 1), pseudo=False)
    with pytest.raises(ValueError, match="pseudo-inverse damping must be a finite number"):
        m.inverse(y, damping=float("nan"))


def test_invertible_structures_keep_the_exact_path() -> None:
    torch.manual_seed(4)
    m = JacNet(2, 2, hidden=8, structure="orientation", activation="tanh").double()
    y = m(torch.randn(5, 2, dtype=F64), n=32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PseudoInverseWarning)  # no warning on the exact path
        exact = m.inverse(y)
        shifted = m.inverse(y, pseudo=True)  # pinv(J + 1e-5 I): close, not equal
    assert 0 < (exact - shifted).abs().max().item() < 1e-3


def test_inverse_round_trip_of_a_trained_invertible_model_float64() -> None:
    # the reference's exp protocol in float64: 5 even points, ε = 1e-3, lr 0.01, 50 steps
    torch.manual_seed(0)
    m = JacNet(1, 1, 64, 1, "invertible", eps=1e-3, y0=torch.ones(1, dtype=F64)).double()
    x = torch.linspace(-1, 1, 5, dtype=F64)[:, None]
    fit = train(m, x, torch.exp(x), 50, 0.01)
    assert fit.history[-1]["loss"] < 0.05
    xs = torch.linspace(-1, 1, 41, dtype=F64)[:, None]  # the training range
    tight = {"rtol": 1e-10, "atol": 1e-10}
    with torch.no_grad():
        y = m(xs, method="adaptive", **tight)
        back = m.inverse(y, **tight)
    assert (back - xs).abs().max().item() <= 1e-6


def test_node_count_grows_on_a_per_point_tolerance_under_the_sum_rule() -> None:
    # with the batch sum the annealing threshold is large (400 points), yet nodes must still
    # grow whenever the step's error estimate exceeds the per-point atol + rtol · mean ‖y‖
    torch.manual_seed(5)
    x = torch.linspace(-1, 1, 400, dtype=F64)[:, None]
    y = 20 * torch.exp(3 * x)
    m = JacNet(1, 1, hidden=32, structure="none", activation="relu").double()
    with torch.no_grad():  # a steep field with kinks everywhere: Q_4 and Q_8 disagree
        m.net[0].weight.mul_(20)
        m.net[2].weight.mul_(100)
    tr = Trainer(m, x, y, lr=1e-3, anneal="sum")
    tr.fit(8)
    hist = tr.result.history
    assert all(b["atol"] == a["atol"] / 2 for a, b in itertools.pairwise(hist))  # 38 < 2685
    grew = []
    for now, nxt in itertools.pairwise(hist):
        tol = nxt["atol"] + nxt["rtol"] * y.abs().mean().item()
        assert nxt["n"] == (min(2 * now["n"], 64) if now["error"] > tol else now["n"])
        grew.append(nxt["n"] > now["n"])
    assert hist[0]["n"] == 4 and sum(grew) >= 2
    # the mean rule on the same data: 38 > 0.1 + 0.1 · 67, no halving, no growth
    torch.manual_seed(5)
    m2 = JacNet(1, 1, hidden=32, structure="none", activation="relu").double()
    m2.load_state_dict(tr.model.state_dict())
    mean = Trainer(m2, x, y, lr=1e-3, anneal="mean")
    mean.fit(3)
    assert [(h["n"], h["atol"]) for h in mean.result.history] == [(4, 0.1)] * 3


def test_legacy_2d_records_used_the_mean_rule() -> None:
    from gradsurrogate.jacnet import Config2D

    old = {k: v for k, v in Config2D().__dict__.items() if k != "anneal"}
    assert Config2D.from_record(old) == Config2D(anneal="mean") != Config2D()
