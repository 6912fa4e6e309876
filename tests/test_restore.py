"""Jacobian restoration: sampling, targets, trainer, least squares, learned backward bridge."""

from __future__ import annotations

import math

import pytest
import torch

import gradsurrogate as gs
from gradsurrogate.restore import (
    NonFiniteLossError,
    RestoreConfig,
    RestoreProblem,
    build_surrogate,
    directional_change,
    equations,
    least_squares_jacobian,
    least_squares_restore,
    least_squares_scalar,
    linear_problem,
    make_surrogate,
    normalised_epochs,
    restore,
    sample_cotangents,
    sample_directions,
    surrogate_line_integral,
    tanh_problem,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def cfg_for(p: RestoreProblem, **settings) -> RestoreConfig:
    """A config with the dims of problem ``p``."""
    return RestoreConfig(dim_in=p.dim_in, dim_out=p.dim_out, **settings)


def test_directions_live_in_one_random_subspace() -> None:
    d, sub = sample_directions(3, 5, 10, 4, "gaussian", gen())
    assert d.shape == (3, 5, 10) and sub.shape == (4,)
    outside = torch.ones(10, dtype=torch.bool)
    outside[sub] = False
    assert torch.all(d[..., outside] == 0) and torch.all(d[..., sub] != 0)
    r, _ = sample_directions(2, 3, 6, 6, "rademacher", gen())
    assert set(r.unique().tolist()) == {-1.0, 1.0}
    c, sub = sample_directions(2, 3, 6, 3, "coordinate", gen())
    assert torch.equal(c.sum(-1), torch.ones(2, 3)) and set(c[0].argmax(-1).tolist()) == set(
        sub.tolist())
    d2, _ = sample_directions(3, 5, 10, 4, "gaussian", gen())
    assert torch.equal(d, d2)  # same seed, same numbers


def test_cotangents_and_epoch_normalisation() -> None:
    u = sample_cotangents(2, 3, 3, "basis")
    assert torch.equal(u[1], torch.eye(3))
    assert sample_cotangents(2, 4, 3, "gaussian", gen(), torch.float64).dtype == torch.float64
    assert normalised_epochs(8, 4, 2) == 16 and normalised_epochs(8, 4, 8, 0.5) == 2


def test_bad_arguments_raise_clear_errors() -> None:
    p = linear_problem(4, 3)
    s = make_surrogate("structured", 4, 3)
    with pytest.raises(ValueError, match=r"dim_sample=5 is out of range.*dim_in=4"):
        cfg_for(p, dim_sample=5)
    with pytest.raises(ValueError, match=r"dim_sample=0"):
        sample_directions(1, 1, 4, 0)
    with pytest.raises(ValueError, match=r"unknown loss 'l1'; accepted: mse"):
        cfg_for(p, dim_sample=2, loss="l1")
    with pytest.raises(ValueError, match=r"unknown surrogate 'cnn'; accepted: structured, mlp"):
        make_surrogate("cnn", 4, 3)
    with pytest.raises(ValueError, match=r"unknown target 'adjoint'; accepted: jvp, fd"):
        cfg_for(p, dim_sample=2, target="adjoint")
    with pytest.raises(ValueError, match=r"unknown direction distribution 'sobol'"):
        sample_directions(1, 1, 4, 2, "sobol")
    # the trainer refuses a problem whose dims are not the config's
    with pytest.raises(ValueError, match=r"problem maps dim_in=4 .* config says dim_in=6"):
        restore(p, s, RestoreConfig(dim_in=6, dim_out=3, dim_sample=2), progress=False)
    with pytest.raises(ValueError, match=r"unknown on_nonfinite 'ignore'; accepted: raise, stop"):
        restore(p, s, cfg_for(p, dim_sample=2), progress=False, on_nonfinite="ignore")


def test_jvp_and_finite_differences_agree() -> None:
    p = tanh_problem(6, 5, seed=1, dtype=torch.float64)
    alpha = p.alpha(8, gen(2))
    d = torch.randn(8, 6, generator=gen(3), dtype=torch.float64)
    exact = torch.einsum("noi,ni->no", p.jacobian(alpha), d)
    jvp, n_jvp = directional_change(p.f, alpha, d, "jvp")
    central, n_c = directional_change(p.f, alpha, d, "fd", step=1e-4, scheme="central")
    forward, _ = directional_change(p.f, alpha, d, "fd", step=1e-6, scheme="forward")
    assert (n_jvp, n_c) == (8, 16)
    torch.testing.assert_close(jvp, exact, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(central, jvp, rtol=0, atol=1e-7)
    torch.testing.assert_close(forward, jvp, rtol=0, atol=1e-5)


def test_line_integral_of_a_structured_surrogate_is_its_product() -> None:
    s = make_surrogate("structured", 5, 3, generator=gen(4), dtype=torch.float64)
    u = torch.randn(4, 2, 3, generator=gen(5), dtype=torch.float64)
    a = torch.randn(4, 5, generator=gen(6), dtype=torch.float64)
    d = torch.randn(4, 5, generator=gen(7), dtype=torch.float64)
    integral = surrogate_line_integral(s, u, a, d)
    torch.testing.assert_close(integral, torch.einsum("nco,oi,ni->nc", u, s.B, d))
    # a point-dependent surrogate: compare with a fine Riemann sum of g(u, a + t d)·d
    m = make_surrogate("mlp", 5, 3, generator=gen(8), dtype=torch.float64, width=8)
    t = (torch.arange(2000, dtype=torch.float64) + 0.5) / 2000
    pts = a[None] + t[:, None, None] * d[None]
    riemann = (m(u[None], pts[:, :, None]) * d[None, :, None]).sum(-1).mean(0)
    torch.testing.assert_close(surrogate_line_integral(m, u, a, d), riemann, atol=1e-6, rtol=0)


@pytest.mark.parametrize("target", ["jvp", "fd", "integral"])
def test_structured_restoration_of_small_A(target: str) -> None:
    p = linear_problem(6, 5, seed=0)
    s = make_surrogate("structured", 6, 5, generator=gen(1))
    cfg = cfg_for(p, dim_sample=3, target=target, seed=0, budget=3.0)  # replay, 3x the limit
    res = restore(p, s, cfg, progress=False)
    assert res.status == "done" and res.final["cosine"] > 0.999
    assert res.final["rel_error"] < 0.05 and res.final["heldout_rel"] < 0.05
    assert res.jvp_evals == res.history[-1]["jvp_evals"] == cfg.total_probes == 18
    assert res.f_evals == (1 if target == "jvp" else 2) * 18
    assert res.info["bank_probes"] + res.info["heldout_probes"] == 18
    assert res.history[0]["cosine"] < 0.9
    if target != "integral":  # the least-squares baseline on the same probes is reported
        assert res.info["ls_cosine"] > 0.999


def test_cosine_loss_restores_direction_and_the_probes_fix_the_scale() -> None:
    p = linear_problem(6, 5, seed=0)
    s = make_surrogate("structured", 6, 5, initial_messup=3.0, generator=gen(1))
    res = restore(p, s, cfg_for(p, loss="cosine", budget=3.0), progress=False)
    assert res.final["cosine"] >= 0.999 and res.final["rel_error"] < 1e-2
    assert abs(res.info["scale_fix"] - 1) > 0.3  # the loss alone left the scale off


def test_runs_are_reproducible() -> None:
    def run() -> list[float]:
        p = linear_problem(5, 4, seed=2)
        s = make_surrogate("mlp", 5, 4, generator=gen(3), width=8)
        res = restore(p, s, cfg_for(p, dim_sample=2, loss="mixed", epochs=5, eval_every=1),
                      progress=False)
        return [h["loss"] for h in res.history]

    assert run() == run()


def test_probe_budget_replays_stored_probes() -> None:
    p = linear_problem(8, 8, seed=0)
    s = make_surrogate("structured", 8, 8, generator=gen(1))
    cfg = cfg_for(p, probe_budget=16, target_cosine=0.999, probes="replay")
    res = restore(p, s, cfg, progress=False)
    assert res.jvp_evals == 16 and res.status == "target_reached"
    assert res.info["bank_probes"] == 12 and res.info["heldout_probes"] == 4
    fresh = restore(p, make_surrogate("structured", 8, 8, generator=gen(1)),
                    cfg.replace(probes="fresh", target_cosine=None), progress=False)
    assert fresh.jvp_evals == 16 and fresh.info["stop"] == "budget"  # spent, then stopped


def test_nonfinite_loss_raises_or_stops() -> None:
    p = linear_problem(4, 4, seed=0)
    cfg = cfg_for(p, dim_sample=4, loss="mse", epochs=200, lr=1e30, optimizer="sgd",
                  eval_every=1)
    with pytest.raises(NonFiniteLossError, match=r"non-finite restoration loss .* at step 1 "):
        restore(p, make_surrogate("structured", 4, 4), cfg, progress=False)
    res = restore(p, make_surrogate("structured", 4, 4), cfg, progress=False,
                  on_nonfinite="stop")
    # step 0's update (lr 1e30) blows B up; step 1's loss is inf: 0-based index 1, i.e. one
    # update applied before it
    assert res.status == "diverged" and res.diverged and res.diverged_step == 1
    assert len(res.history) == 2 and math.isnan(res.final["loss"])
    assert math.isfinite(res.history[0]["loss"]) and not math.isfinite(res.history[1]["loss"])
    # the one and only update overflows B (lr near the float32 maximum): every loss was
    # finite, the parameters are not -> diverged_step = the number of steps (1)
    last = cfg_for(p, dim_sample=4, loss="mse", epochs=1, lr=3e38, optimizer="sgd",
                   eval_every=1)
    with pytest.raises(NonFiniteLossError, match=r"parameters after the last update \(1 steps"):
        restore(p, build_surrogate(last), last, progress=False)
    res = restore(p, build_surrogate(last), last, progress=False, on_nonfinite="stop")
    assert res.diverged and res.diverged_step == 1 and len(res.history) == 1
    assert math.isfinite(res.history[0]["loss"])


def test_least_squares_reaches_the_information_limit() -> None:
    p = linear_problem(10, 7, seed=5, dtype=torch.float64)
    _, m = least_squares_restore(p, probes=10, dim_sample=10, seed=1)
    assert m["cosine"] > 1 - 1e-10 and m["rel_error"] < 1e-8
    _, m9 = least_squares_restore(p, probes=9, dim_sample=10, seed=1)
    assert m9["rel_error"] > 1e-3  # fewer than dim_in probes cannot pin A down
    # random subspaces of 5 coordinates: 10 probes leave coordinates unseen, more cover them
    assert least_squares_restore(p, probes=10, dim_sample=5, seed=1)[1]["rel_error"] > 1e-3
    assert least_squares_restore(p, probes=40, dim_sample=5, seed=1)[1]["rel_error"] < 1e-8
    # scalar equations with enough cotangents give the same matrix
    g = gen(9)
    A = p.jacobian(torch.zeros(1, 10, dtype=torch.float64))[0]
    d = torch.randn(80, 10, generator=g, dtype=torch.float64)
    u = torch.randn(80, 7, generator=g, dtype=torch.float64)
    y = torch.einsum("eo,oi,ei->e", u, A, d)
    torch.testing.assert_close(least_squares_scalar(u, d, y), A)
    torch.testing.assert_close(least_squares_jacobian(d, d @ A.T), A)


def test_learned_backward_after_restoration_matches_exact() -> None:
    torch.manual_seed(0)
    layer = gs.SurrogateLinear(6, 4, generator=0)
    p = linear_problem(6, 4, matrix=layer.weight.detach())
    s = make_surrogate("structured", 6, 4, generator=gen(1))
    restore(p, s, cfg_for(p, budget=3.0), progress=False)
    x = torch.randn(5, 6, generator=gen(2), requires_grad=True)
    gy = torch.randn(5, 4, generator=gen(3))
    (exact,) = torch.autograd.grad(layer(x), x, gy)
    for spec in (gs.BackwardSpec(grad_input=gs.Learned(s)),
                 gs.BackwardSpec(weight=gs.Learned(s.feedback)),
                 gs.BackwardSpec(grad_input="learned").bind(s)):
        layer.spec = spec
        (learned,) = torch.autograd.grad(layer(x), x, gy)
        cos = torch.nn.functional.cosine_similarity(learned.flatten(), exact.flatten(), dim=0)
        assert cos > 0.9999
        torch.testing.assert_close(learned, exact, atol=5e-3, rtol=0)
    # an unrestored surrogate is far off: the test can fail
    layer.spec = gs.BackwardSpec(grad_input=gs.Learned(make_surrogate("structured", 6, 4)))
    (fresh,) = torch.autograd.grad(layer(x), x, gy)
    assert not torch.allclose(fresh, exact, atol=5e-2)


def test_equations_hold_exactly_for_the_true_jacobian() -> None:
    p = linear_problem(5, 3, seed=4, dtype=torch.float64)
    s = make_surrogate("structured", 5, 3, dtype=torch.float64)
    with torch.no_grad():
        s.B.copy_(p.jacobian(torch.zeros(1, 5, dtype=torch.float64))[0])
    alpha = p.alpha(2, gen(1))
    d, _ = sample_directions(2, 4, 5, 3, "gaussian", gen(2), torch.float64)
    df, _ = directional_change(p.f, alpha.repeat_interleave(4, 0), d.reshape(-1, 5))
    u = sample_cotangents(2, 6, 3, "rademacher", gen(3), torch.float64)
    pred, y = equations(s, u, alpha[:, None], d, df.reshape(2, 4, 3))
    assert pred.shape == y.shape == (2, 6, 4)
    torch.testing.assert_close(pred, y)


def test_loglinexp_units_are_signed_monomials_for_integer_exponents() -> None:
    s = make_surrogate("loglinexp", 2, 3, dtype=torch.float64, width=2, eps=0.0)
    with torch.no_grad():
        s.W.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 1.0]], dtype=torch.float64))
        s.R.copy_(torch.eye(2, dtype=torch.float64))
    u = torch.tensor([[-2.0, 3.0, -0.5]], dtype=torch.float64)
    out = s(u, torch.zeros(1, 2, dtype=torch.float64))
    torch.testing.assert_close(out, torch.tensor([[-2.0, 9.0 * -0.5]], dtype=torch.float64))


@pytest.mark.parametrize(("name", "lr", "opts"), [("loglinexp", 2e-2, {}),
                                                  ("mlp", 5e-3, {"width": 32})])
def test_free_form_surrogates_learn(name: str, lr: float, opts: dict) -> None:
    p = linear_problem(6, 4, seed=0)
    s = make_surrogate(name, 6, 4, generator=gen(1), **opts)
    res = restore(p, s, cfg_for(p, dim_sample=6, epochs=1500, lr=lr, points=4,
                                optimizer="adam", probes="fresh", budget=1e5, eval_every=1,
                                target_cosine=0.95), progress=False)
    assert res.history[0]["cosine"] < 0.2 and res.status == "target_reached"


def test_cotangents_from_a_recorded_stream() -> None:
    p = linear_problem(5, 4, seed=0)
    recorded = torch.randn(50, 4, generator=gen(5))  # e.g. output gradients of a training run

    def source(n: int, c: int, g: torch.Generator) -> torch.Tensor:
        return recorded[torch.randint(0, 50, (n, c), generator=g)]

    s = make_surrogate("structured", 5, 4, generator=gen(1))
    res = restore(p, s, cfg_for(p, target_cosine=0.999), progress=False,
                  cotangent_source=source)
    assert res.status == "target_reached"


@pytest.mark.parametrize("target, budget, rows_per_probe", [
    ("jvp", 11, 1),  # 4 held out, then 6 probes and 1 of the next 6 (not a whole row)
    ("fd", 13, 2),  # 4 held out, then 6 + 3; fd evaluates f twice per probe
])
def test_probe_budget_counts_exactly_the_evaluated_probes(target: str, budget: int,
                                                          rows_per_probe: int) -> None:
    import dataclasses

    p = linear_problem(5, 4, seed=2, dtype=torch.float64)
    seen = []

    def f(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.shape[0])
        return p.f(x)

    counted = dataclasses.replace(p, f=f)
    cfg = cfg_for(p, dim_sample=3, points=2, loss="mse", target=target, epochs=6,
                  probe_budget=budget)
    s = make_surrogate("structured", 5, 4, generator=gen(1), dtype=torch.float64)
    res = restore(counted, s, cfg, progress=False)
    assert [h["jvp_evals"] for h in res.history] == [budget]  # replay: one bank, then train
    assert res.jvp_evals == budget and res.f_evals == rows_per_probe * budget
    assert sum(seen) == res.f_evals  # f saw exactly the counted rows
    assert all(math.isfinite(h["loss"]) for h in res.history)


def test_constructors_follow_the_default_dtype() -> None:
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        p = linear_problem(4, 3)
        assert p.alpha(2, gen()).dtype == torch.float64
        assert tanh_problem(4, 3).f(p.alpha(2, gen())).dtype == torch.float64
        for name in ("structured", "mlp", "loglinexp"):
            s = make_surrogate(name, 4, 3, generator=gen(1))
            assert {q.dtype for q in s.parameters()} == {torch.float64}, name
        assert sample_cotangents(2, 3, 3, "rademacher", gen()).dtype == torch.float64
        assert sample_directions(2, 3, 4, 2, "gaussian", gen())[0].dtype == torch.float64
        # explicit dtypes still win; a given matrix sets the problem's dtype
        assert linear_problem(4, 3, dtype=torch.float32).alpha(2, gen()).dtype == torch.float32
        assert make_surrogate("structured", 4, 3, dtype=torch.float32).B.dtype == torch.float32
        m32 = torch.ones(3, 4, dtype=torch.float32)
        assert linear_problem(4, 3, matrix=m32).alpha(1, gen()).dtype == torch.float32
    finally:
        torch.set_default_dtype(old)
    assert make_surrogate("structured", 4, 3).B.dtype == old


def test_subspaces_cycle_through_every_coordinate_without_replacement() -> None:
    from gradsurrogate.restore.sampling import SubspaceCycler

    cyc, g = SubspaceCycler(10, 4), gen(0)
    subs = [cyc(g) for _ in range(5)]  # 20 draws = two full passes over 10 coordinates
    assert all(len(set(s.tolist())) == 4 for s in subs)
    counts = torch.bincount(torch.cat(subs), minlength=10)
    assert counts.min() >= 1 and counts.max() <= 3  # each coordinate once per pass (+ overlap)
    first = torch.cat(subs[:2]).tolist()  # the first 8 draws repeat no coordinate
    assert len(set(first)) == 8


def test_a_users_function_and_the_least_squares_method() -> None:
    from gradsurrogate.restore.problems import callable_problem

    A = torch.randn(3, 5, generator=gen(4))
    p = callable_problem(torch.nn.Linear(5, 3, bias=False).requires_grad_(False), 5)
    assert p.dim_out == 3 and p.jacobian is not None  # by autograd
    p = callable_problem(lambda x: x @ A.T, 5)
    torch.testing.assert_close(p.jacobian(torch.zeros(2, 5))[0], A)
    cfg = RestoreConfig(dim_in=5, dim_out=3, method="least-squares", budget=2.0)
    s = build_surrogate(cfg)
    res = restore(p, s, cfg, progress=False)
    assert res.jvp_evals == 10 and res.final["rel_error"] < 1e-5  # 6 probes >= dim_in: exact
    with pytest.raises(ValueError, match="needs surrogate 'structured'"):
        RestoreConfig(method="least-squares", surrogate="mlp")
