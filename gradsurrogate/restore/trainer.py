"""Train a surrogate ``g`` from directional probes: ``g(∇_f, α)·dα ≈ ∇_f·df``.

One step (minibatch) draws ``n`` points ``α``, ``k`` directions per point in one random subspace
of ``dim_sample`` coordinates, and ``c`` cotangents ``u`` per point, evaluates ``df`` by the
target (jvp/fd/integral, ``n·k`` directional evaluations of ``f``) and forms the equations

    pred[n, c, k] = g(u_nc, α_n) · dα_nk          y[n, c, k] = u_nc · df_nk

compared by the loss as ``n·c`` vectors of length ``k`` (the gradient projected onto the sampled
subspace). Cotangents are free: a directional evaluation yields the whole vector ``df``.

With ``probe_budget`` the probes ``(α, dα, df)`` are stored until the budget is spent (the step
that reaches it evaluates, stores and trains on only the probes still within the budget) and
later steps replay random groups of ``k`` stored probes with fresh cotangents, so ``jvp_evals``
equals the budget (used to measure how many evaluations a method needs).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from ..registry import check_choice
from .baseline import least_squares_jacobian
from .config import FIT_BY_JVP, NONLINEAR_DEFAULTS, RESTORE_OPTIMIZERS, RestoreConfig
from .losses import get_loss
from .probes import HeldOut, ProbeBank, auto_lr, best_scale, scale_free
from .problems import RestoreProblem, jacobian_metrics
from .sampling import SubspaceCycler, sample_cotangents, sample_directions
from .surrogates import Surrogate
from .targets import directional_change, surrogate_line_integral

__all__ = ["ON_NONFINITE", "NonFiniteLossError", "RestoreResult", "equations", "restore"]

#: what :func:`restore` does on a non-finite loss: raise, or stop with status ``"diverged"``
ON_NONFINITE = ("raise", "stop")


class NonFiniteLossError(FloatingPointError):
    """The restoration loss became NaN or inf."""


@dataclasses.dataclass
class RestoreResult:
    """Per-epoch ``history`` records and the final state of a run."""

    history: list[dict[str, Any]]
    jvp_evals: int
    f_evals: int
    status: str  # "done", "target_reached" or "diverged"
    final: dict[str, float]
    reached_at: int | None = None  # jvp_evals when target_cosine was first reached
    #: 0-based index of the first optimizer step whose loss was not finite (= updates applied
    #: before it); the number of steps when the last update left non-finite parameters
    diverged_step: int | None = None
    #: how the run went: lr used, probe mode, bank / held-out sizes, best step, scale fix,
    #: the least-squares baseline on the same probes (``ls_*``), the stop reason
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def diverged(self) -> bool:
        return self.status == "diverged"


def equations(surrogate: Surrogate, u: Tensor, alpha: Tensor, dalpha: Tensor, df: Tensor,
              target: str = "jvp", integral_opts: dict[str, Any] | None = None
              ) -> tuple[Tensor, Tensor]:
    """Predictions and targets (n, c, k) of the scalar equations.

    ``u`` (n, c, o); ``alpha`` (n, k, i) or (n, 1, i) (one point per row); ``dalpha`` (n, k, i);
    ``df`` (n, k, o). ``pred = g(u, α)·dα`` (or its line integral for ``integral``),
    ``y = u·df``. A surrogate with a closed-form :meth:`~.surrogates.Surrogate.directional` /
    :meth:`~.surrogates.Surrogate.increment` (``gradnet``) gives ``pred = u·(Ĵ dα)`` directly.
    """
    y = torch.einsum("nko,nco->nck", df, u)
    direct = (surrogate.increment if target == "integral" else surrogate.directional)(
        alpha, dalpha)
    if direct is not None:  # (n, k, o): no cotangent-sized backward pass, no quadrature
        return torch.einsum("nko,nco->nck", direct, u), y
    if target == "integral":
        n, k, i = dalpha.shape
        c = u.shape[1]
        a = alpha.expand(n, k, i).reshape(n * k, i)
        uu = u[:, None].expand(n, k, c, u.shape[-1]).reshape(n * k, c, u.shape[-1])
        pred = surrogate_line_integral(surrogate, uu, a, dalpha.reshape(n * k, i),
                                       **(integral_opts or {}))
        return pred.reshape(n, k, c).transpose(1, 2), y
    g = surrogate(u[:, :, None, :], alpha[:, None])  # (n, c, 1|k, i)
    if g.shape[2] == 1:  # one gradient per (point, cotangent): a batched matrix product
        return g[:, :, 0] @ dalpha.transpose(1, 2), y
    return (g * dalpha[:, None]).sum(-1), y


def _draw_probes(problem: RestoreProblem, cfg: RestoreConfig, gen: torch.Generator,
                 dtype: torch.dtype, device: torch.device, limit: int | None = None,
                 cycler: SubspaceCycler | None = None) -> tuple[Tensor, Tensor, Tensor, int]:
    """Draw one minibatch of ``n·k`` probes and evaluate ``f`` on them.

    Returns ``alpha`` (n, 1, i), ``dalpha`` (n, k, i), ``df`` (n, k, o) and the ``f`` rows
    evaluated. With ``limit < n·k`` only the first ``limit`` probes (row-major) are evaluated
    and returned: as ``limit/k`` full rows when ``k`` divides ``limit``, otherwise as one row of
    ``limit`` probes with their own points (``alpha`` (1, limit, i)).
    """
    n, i, k = cfg.points, problem.dim_in, cfg.k
    alpha = problem.alpha(n, gen).to(device=device, dtype=dtype)
    sub = cycler(gen) if cycler is not None else None
    dalpha, _ = sample_directions(n, k, i, cfg.dim_sample, cfg.direction_dist, gen, dtype, device,
                                  subspace=sub)
    if cfg.target == "integral":
        dalpha = cfg.integral_step * dalpha
    alpha = alpha[:, None]
    if limit is not None and limit < n * k:
        if limit % k == 0:
            alpha, dalpha = alpha[:limit // k], dalpha[:limit // k]
        else:
            alpha = alpha.expand(n, k, i).reshape(1, n * k, i)[:, :limit]
            dalpha = dalpha.reshape(1, n * k, i)[:, :limit]
    rows, kk = dalpha.shape[0], dalpha.shape[1]
    rows_a = alpha.expand(rows, kk, i).reshape(rows * kk, i).contiguous()
    df, f_rows = directional_change(problem.f, rows_a, dalpha.reshape(rows * kk, i),
                                    "fd" if cfg.target == "fd" else cfg.target,
                                    step=1.0 if cfg.target == "integral" else cfg.fd_step,
                                    scheme=cfg.fd_scheme)
    return alpha, dalpha, df.reshape(rows, kk, -1), f_rows


def _check_dims(problem: RestoreProblem, surrogate: Surrogate, cfg: RestoreConfig) -> None:
    for what, obj in (("problem", problem), ("surrogate", surrogate)):
        if (obj.dim_in, obj.dim_out) != (cfg.dim_in, cfg.dim_out):
            raise ValueError(f"the {what} maps dim_in={obj.dim_in} to dim_out={obj.dim_out} but "
                             f"the config says dim_in={cfg.dim_in}, dim_out={cfg.dim_out}")




def _collect(problem: RestoreProblem, cfg: RestoreConfig, gen: torch.Generator,
             dtype: torch.dtype, device: torch.device, count: int, cycler: SubspaceCycler
             ) -> tuple[Tensor, Tensor, Tensor, int]:
    """``count`` probes as flat rows ``α`` (p, i), ``dα`` (p, i), ``df`` (p, o), and f rows."""
    parts, rows, left = [], 0, count
    while left > 0:
        alpha, dalpha, df, r = _draw_probes(problem, cfg, gen, dtype, device, left, cycler)
        parts.append((alpha.expand_as(dalpha).flatten(0, 1), dalpha.flatten(0, 1),
                      df.flatten(0, 1)))
        rows += r
        left -= dalpha.shape[0] * dalpha.shape[1]
    a, d, f = (torch.cat(t) for t in zip(*parts))
    return a, d, f, rows


def _heldout_pred(surrogate: Surrogate, held: HeldOut, target: str,
                  integral_opts: dict[str, Any]) -> Tensor:
    with torch.no_grad():
        return equations(surrogate, held.u, held.alpha, held.dalpha, held.df, target,
                         integral_opts)[0]


def _ls_baseline(dalpha: Tensor, df: Tensor, held: HeldOut | None, true_jac: Tensor | None,
                 target: str) -> tuple[Tensor | None, dict[str, float]]:
    """Least squares ``B`` on the training probes (a constant-Jacobian fit) and its metrics."""
    if target == "integral" or dalpha.shape[0] == 0:
        return None, {}
    B = least_squares_jacobian(dalpha, df)
    out: dict[str, float] = {}
    if held is not None:
        pred = torch.einsum("pki,oi,pco->pck", held.dalpha, B, held.u)
        out["ls_heldout_rel"] = held.residual(pred)
    if true_jac is not None:
        m = jacobian_metrics(B.expand(true_jac.shape[0], *B.shape), true_jac)
        out.update({f"ls_{k}": v for k, v in m.items()})
    return B, out


def restore(problem: RestoreProblem, surrogate: Surrogate, cfg: RestoreConfig,
            progress: bool = True, callback: Callable[[dict[str, Any]], None] | None = None,
            cotangent_source: Callable[[int, int, torch.Generator], Tensor] | None = None,
            on_nonfinite: str = "raise") -> RestoreResult:
    """Restore ``surrogate`` from at most ``cfg.total_probes`` directional evaluations of
    ``problem.f`` (``budget`` × the information limit ``dim_in``, held-out probes included).

    ``replay`` (default) evaluates the bank once, then takes up to ``epochs`` optimizer steps
    on it (shuffled passes); ``fresh`` draws new probes every step until the budget is spent.
    Every ``eval_every`` steps the held-out relative residual (probes only) is measured, the
    best state so far is kept, and the run stops once it is below ``stop_tol`` or has not
    improved by 1% for ``patience`` evaluations; the true-Jacobian metrics (``cosine``,
    ``rel_error``, ``sign_agreement``) are recorded beside it when ``problem`` knows its
    Jacobian (``target_cosine`` may stop on them). The surrogate ends in its best state; for a
    scale-free loss (``cosine``) its scale is then fixed by least squares on the training
    probes. ``method="least-squares"`` sets ``B`` by the closed form instead of training.

    ``cotangent_source(n, c, generator) -> (n, c, o)`` replaces the random cotangents;
    ``callback(record)`` sees each evaluation record. ``jvp_evals`` counts directional
    evaluations; ``f_evals`` rows of ``f`` (2 per probe for fd/integral). A non-finite loss
    raises :class:`NonFiniteLossError` (``on_nonfinite="raise"``) or ends the run with status
    ``"diverged"`` and ``diverged_step`` (0-based index of the step whose loss was not finite).
    """
    check_choice(on_nonfinite, ON_NONFINITE, "on_nonfinite")
    _check_dims(problem, surrogate, cfg)
    p0 = next(surrogate.parameters())
    dtype, device = p0.dtype, p0.device
    gen = torch.Generator().manual_seed(cfg.seed)
    eval_gen = torch.Generator().manual_seed(cfg.seed + 7919)
    eval_alpha = problem.alpha(cfg.eval_points, eval_gen).to(device=device, dtype=dtype)
    true_jac = problem.jacobian(eval_alpha) if problem.jacobian is not None else None
    loss_fn = get_loss(cfg.loss)
    rescale = scale_free(loss_fn)
    integral_opts: dict[str, Any] = {"method": cfg.integral_method}
    if cfg.integral_method in ("gauss-legendre", "gauss-kronrod"):
        integral_opts["n"] = cfg.integral_nodes
    cycler = SubspaceCycler(cfg.dim_in, cfg.dim_sample, cfg.subspace)
    k, c, total = cfg.k, cfg.c, cfg.total_probes
    start = time.perf_counter()
    info: dict[str, Any] = {"probes": cfg.probes, "budget_probes": total, "limit": cfg.dim_in}
    held = None
    jvp_evals = f_evals = 0
    if cfg.heldout_probes:
        ha, hd, hf, rows = _collect(problem, cfg, gen, dtype, device, cfg.heldout_probes, cycler)
        held = HeldOut(ha, hd, hf, 8, eval_gen)
        jvp_evals, f_evals = held.size, rows
    train_left = total - jvp_evals
    bank = None
    if cfg.probes == "replay" or cfg.method == "least-squares":
        ba, bd, bf, rows = _collect(problem, cfg, gen, dtype, device, train_left, cycler)
        bank = ProbeBank(ba, bd, bf)
        jvp_evals, f_evals, train_left = jvp_evals + bank.size, f_evals + rows, 0
    info.update(heldout_probes=held.size if held else 0, bank_probes=bank.size if bank else 0)
    seen: list[tuple[Tensor, Tensor, Tensor]] = [] if bank is None else [
        (bank.alpha, bank.dalpha, bank.df)]

    def evaluate(step: int, losses: list[float]) -> dict[str, Any]:
        rec: dict[str, Any] = {
            "epoch": step, "loss": sum(losses) / len(losses) if losses else float("nan"),
            "jvp_evals": jvp_evals, "f_evals": f_evals, "time": time.perf_counter() - start}
        if held is not None:
            pred = _heldout_pred(surrogate, held, cfg.target, integral_opts)
            rec["heldout_rel"] = held.residual(pred, rescale)
        if true_jac is not None:
            with torch.no_grad():
                rec.update(jacobian_metrics(surrogate.jacobian(eval_alpha), true_jac))
        return rec

    status, reached_at, diverged_step, step = "done", None, None, 0
    history: list[dict[str, Any]] = []
    if cfg.method == "least-squares":
        B, _ = _ls_baseline(bank.dalpha, bank.df, None, None, cfg.target)  # type: ignore[union-attr]
        with torch.no_grad():
            surrogate.B.copy_(B)  # type: ignore[union-attr]
        info.update(lr=None, stop="least squares")
        history.append(evaluate(0, []))
        return _finish(surrogate, cfg, history, jvp_evals, f_evals, status, None, None, info,
                       seen, held, true_jac, eval_alpha, evaluate, integral_opts, rescale)
    # the learning rate from the probes' norms
    if bank is not None:
        sd, sf = bank.dalpha, bank.df
    else:
        sd, sf = (held.dalpha[:, 0], held.df[:, 0]) if held is not None else (None, None)
    lr = cfg.lr
    if lr == "auto" and cfg.surrogate in FIT_BY_JVP:
        lr = float(NONLINEAR_DEFAULTS["lr"])
    if lr == "auto":
        if sd is None:
            _, sd3, sf3, rows3 = _draw_probes(problem, cfg, gen, dtype, device, train_left,
                                              cycler)
            sd, sf = sd3.flatten(0, 1), sf3.flatten(0, 1)  # spent on f: counted
            jvp_evals, f_evals = jvp_evals + sd.shape[0], f_evals + rows3
            train_left -= sd.shape[0]
        us = sample_cotangents(1, c, problem.dim_out, cfg.cotangent_dist,
                               torch.Generator().manual_seed(cfg.seed + 5), dtype, device)[0]
        lr, stats = auto_lr(loss_fn, sd, sf, us, k, c, cfg.dim_sample, cfg.lr_scale)
        info["lr_stats"] = stats
    info["lr"] = lr
    opt_cls = RESTORE_OPTIMIZERS[cfg.optimizer]
    opts = {"momentum": cfg.momentum} if cfg.optimizer == "sgd" else {}
    opt = opt_cls(surrogate.parameters(), lr=lr, **opts)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.epochs * cfg.steps_per_epoch)
             if cfg.schedule == "cosine" else None)
    points = cfg.points if bank is None else max(1, min(cfg.points, bank.size // k))
    best = (math.inf, None, 0)  # held-out residual, state, step
    stale, stop = 0, "epochs"
    losses: list[float] = []
    bar = tqdm(range(1, cfg.epochs + 1), desc=f"restore {cfg.loss}", disable=None if progress
               else True, leave=False)
    for epoch in bar:
        for _ in range(cfg.steps_per_epoch):
            if bank is not None:
                alpha, dalpha, df = bank.groups(points, k, gen)
            else:
                alpha, dalpha, df, rows = _draw_probes(problem, cfg, gen, dtype, device,
                                                       train_left, cycler)
                got = dalpha.shape[0] * dalpha.shape[1]
                jvp_evals, f_evals, train_left = jvp_evals + got, f_evals + rows, train_left - got
                if sum(t[0].shape[0] for t in seen) < 8 * cfg.dim_in:
                    seen.append((alpha.expand_as(dalpha).flatten(0, 1), dalpha.flatten(0, 1),
                                 df.flatten(0, 1)))
            if cotangent_source is not None:
                u = cotangent_source(alpha.shape[0], c, gen).to(device=device, dtype=dtype)
            else:
                u = sample_cotangents(alpha.shape[0], c, problem.dim_out, cfg.cotangent_dist,
                                      gen, dtype, device)
            pred, y = equations(surrogate, u, alpha, dalpha, df, cfg.target, integral_opts)
            loss = loss_fn(pred, y)
            if not torch.isfinite(loss):  # `step` updates were applied before this one
                msg = (f"non-finite restoration loss {loss.item()} at step {step} (0-based: "
                       f"after {step} update(s); epoch {epoch}; loss {cfg.loss}, lr {lr:.3g}, "
                       f"surrogate {surrogate.name}); lower the lr or the initial_messup")
                if on_nonfinite == "raise":
                    raise NonFiniteLossError(msg)
                status, diverged_step = "diverged", step
                losses.append(loss.item())
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            step += 1
            losses.append(loss.item())
            if bank is None and train_left <= 0:
                break
        last = epoch == cfg.epochs or status == "diverged" or (bank is None and train_left <= 0)
        if epoch % cfg.eval_every and not last:
            continue
        record = evaluate(epoch, losses)
        losses = []
        history.append(record)
        if callback is not None:
            callback(record)
        if status == "diverged":
            break
        score = record.get("heldout_rel", -record.get("cosine", 0.0))
        if math.isfinite(score) and score < best[0]:
            stale = 0 if score < 0.99 * best[0] else stale + 1
            best = (score, {n: t.detach().clone() for n, t in surrogate.state_dict().items()},
                    epoch)
        else:
            stale += 1
        if "cosine" in record:
            bar.set_postfix(cos=f"{record['cosine']:.4f}", held=f"{score:.3g}")
            if cfg.target_cosine is not None and record["cosine"] >= cfg.target_cosine:
                status, reached_at, stop = "target_reached", jvp_evals, "target_cosine"
                break
        if held is not None and score <= cfg.stop_tol:
            stop = "stop_tol"
            break
        if stale >= cfg.patience:
            stop = "patience"
            break
        if bank is None and train_left <= 0:
            stop = "budget"
            break
    bar.close()
    info.update(stop=stop, steps=step)
    if status != "diverged" and not all(bool(q.isfinite().all()) for q in surrogate.parameters()):
        if on_nonfinite == "raise":  # the last update overflowed the parameters
            raise NonFiniteLossError(f"non-finite surrogate parameters after the last update "
                                     f"({step} steps); lower the lr or the initial_messup")
        status, diverged_step = "diverged", step
    if status != "diverged" and best[1] is not None:
        surrogate.load_state_dict(best[1])
        info["best_step"] = best[2]
    return _finish(surrogate, cfg, history, jvp_evals, f_evals, status, reached_at,
                   diverged_step, info, seen, held, true_jac, eval_alpha, evaluate,
                   integral_opts, rescale)


def _finish(surrogate: Surrogate, cfg: RestoreConfig, history: list[dict[str, Any]],
            jvp_evals: int, f_evals: int, status: str, reached_at: int | None,
            diverged_step: int | None, info: dict[str, Any],
            seen: list[tuple[Tensor, Tensor, Tensor]],
            held: HeldOut | None, true_jac: Tensor | None, eval_alpha: Tensor,
            evaluate: Callable[[int, list[float]], dict[str, Any]],
            integral_opts: dict[str, Any], rescale: bool
            ) -> RestoreResult:
    """Fix a scale-free loss's scale, measure the final (best) state and the LS baseline."""
    if seen:
        a, d, f = (torch.cat(t) for t in zip(*seen))
        if status != "diverged" and rescale:  # the training probes fix the scale
            fit = HeldOut(a, d, f, 8, torch.Generator().manual_seed(cfg.seed + 11))
            s = best_scale(_heldout_pred(surrogate, fit, cfg.target, integral_opts), fit.y)
            surrogate.rescale_(s)
            info["scale_fix"] = s
        info.update(_ls_baseline(d, f, held, true_jac, cfg.target)[1])
    final = evaluate(info.get("best_step", history[-1]["epoch"] if history else 0), [])
    final["loss"] = history[-1]["loss"] if history else float("nan")
    final = {k_: v for k_, v in final.items() if isinstance(v, float)}
    if status == "diverged":
        final = {k_: v for k_, v in history[-1].items() if isinstance(v, float)}
        if not math.isfinite(final.get("loss", 0.0)):
            final["loss"] = float("nan")
    return RestoreResult(history, jvp_evals, f_evals, status, final, reached_at, diverged_step,
                         info)

