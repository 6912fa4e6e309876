"""Restoring nonlinear maps: the jacnet and gradnet surrogates (linear in the cotangent), their
integrals, and the nonlinear CLI defaults."""

from __future__ import annotations

import pytest
import torch

from gradsurrogate.restore import (
    RestoreConfig,
    build_problem,
    build_surrogate,
    make_surrogate,
    restore,
    surrogate_line_integral,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_jacnet_surrogate_is_linear_in_the_cotangent_and_saves(tmp_path) -> None:
    from gradsurrogate.restore.evaluate import heldout_scales, load_surrogate, save_surrogate

    cfg = RestoreConfig(problem="tanh_bias", dim_in=4, dim_out=3, surrogate="jacnet", width=8)
    p = build_problem(cfg)
    s = build_surrogate(cfg)
    u, a = torch.randn(5, 3, generator=gen(1)), torch.randn(5, 4, generator=gen(2))
    torch.testing.assert_close(s(100 * u, a), 100 * s(u, a))
    torch.testing.assert_close(s(u, a), torch.einsum("no,noi->ni", u, s.jacobian(a)))
    with torch.no_grad():  # the exact Jacobian net: held-out cosine 1 at every scale
        exact = heldout_scales(p, s, points=16)
    assert len({round(v["cosine"], 6) for v in exact.values()}) == 1  # scale-invariant
    path = save_surrogate(s, cfg, tmp_path / "g.pt")
    s2, cfg2 = load_surrogate(path)
    assert cfg2 == cfg
    torch.testing.assert_close(s2(u, a), s(u, a))


@pytest.mark.parametrize("depth", [1, 2])
def test_gradnet_vjp_jvp_and_integral_are_those_of_its_network(depth: int) -> None:
    s = make_surrogate("gradnet", 5, 3, generator=gen(3), dtype=torch.float64, width=7,
                       depth=depth)
    a, d = (torch.randn(4, 5, generator=gen(n), dtype=torch.float64) for n in (4, 5))
    u = torch.randn(4, 3, generator=gen(6), dtype=torch.float64)
    _, pull = torch.func.vjp(s.potential, a)
    torch.testing.assert_close(s(u, a), pull(u)[0], rtol=1e-13, atol=1e-13)
    _, jd = torch.func.jvp(s.potential, (a,), (d,))
    torch.testing.assert_close(s.directional(a, d), jd, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(s.jacobian(a), torch.func.vmap(torch.func.jacrev(s.potential))(a),
                               rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(s(1e4 * u, a), 1e4 * s(u, a))  # linear in the cotangent
    uu = torch.randn(4, 2, 3, generator=gen(7), dtype=torch.float64)  # exact line integral
    expect = torch.einsum("nco,no->nc", uu, s.potential(a + d) - s.potential(a))
    torch.testing.assert_close(surrogate_line_integral(s, uu, a, d), expect)
    j = make_surrogate("jacnet", 5, 3, generator=gen(8), dtype=torch.float64, width=8)
    t = (torch.arange(2000, dtype=torch.float64) + 0.5) / 2000  # jacnet: Ĵ dα integrated once
    riemann = (j(uu[None], (a[None] + t[:, None, None] * d[None])[:, :, None])
               * d[None, :, None]).sum(-1).mean(0)
    torch.testing.assert_close(surrogate_line_integral(j, uu, a, d), riemann, atol=1e-6, rtol=0)


def test_nonlinear_defaults_restore_tanh_bias_at_every_cotangent_scale() -> None:
    from gradsurrogate.restore import heldout_scales

    linear = RestoreConfig()  # the linear profile is unchanged
    assert (linear.surrogate, linear.budget, linear.optimizer, linear.schedule, linear.points,
            linear.cotangent_dist, linear.k) == ("structured", 2.0, "sgd", "constant", 1,
                                                 "gaussian", 16)
    cfg = RestoreConfig(problem="tanh_bias", dim_in=6, dim_out=6, width=32, epochs=400)
    assert (cfg.surrogate, cfg.budget, cfg.optimizer, cfg.schedule, cfg.cotangent_dist,
            cfg.k) == ("gradnet", 50.0, "adam", "cosine", "basis", 1)
    assert RestoreConfig(problem="tanh_bias", surrogate="jacnet").budget == 2.0
    p, s = build_problem(cfg), build_surrogate(cfg)
    res = restore(p, s, cfg, progress=False)
    assert res.jvp_evals == 300 and res.info["bank_probes"] == 288
    held = heldout_scales(p, s, points=64)
    cos = [v["cosine"] for v in held.values()]
    assert min(cos) >= 0.99 and max(cos) - min(cos) < 1e-6  # the same at 1e-2 .. 1e2
    assert res.info["ls_cosine"] < 0.9  # the best constant Jacobian on the same probes
    c2 = cfg.replace(target="integral")  # finite steps f(α + dα) - f(α) = h(α + dα) - h(α)
    s2 = build_surrogate(c2)
    res2 = restore(p, s2, c2, progress=False)
    assert res2.f_evals == 2 * res2.jvp_evals
    assert min(v["cosine"] for v in heldout_scales(p, s2, points=64).values()) >= 0.98
