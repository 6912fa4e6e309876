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
from .config import RESTORE_OPTIMIZERS, RestoreConfig
from .losses import get_loss
from .problems import RestoreProblem, jacobian_metrics
from .sampling import sample_cotangents, sample_directions
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

    @property
    def diverged(self) -> bool:
        return self.status == "diverged"


class _ProbeBank:
    """Stored probes ``α`` (p, i), ``dα`` (p, i), ``df`` (p, o) for replay."""

    def __init__(self, budget: int) -> None:
        self.budget, self.parts = budget, []
        self.size = 0

    def add(self, alpha: Tensor, dalpha: Tensor, df: Tensor) -> None:
        take = min(self.budget - self.size, alpha.shape[0])
        self.parts.append((alpha[:take], dalpha[:take], df[:take]))
        self.size += take
        if self.full:
            self.alpha, self.dalpha, self.df = (torch.cat(t) for t in zip(*self.parts))

    @property
    def full(self) -> bool:
        return self.size >= self.budget

    def groups(self, n: int, k: int, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        idx = torch.randint(0, self.size, (n, k), generator=gen, device=gen.device)
        idx = idx.to(self.alpha.device)
        return self.alpha[idx], self.dalpha[idx], self.df[idx]


def equations(surrogate: Surrogate, u: Tensor, alpha: Tensor, dalpha: Tensor, df: Tensor,
              target: str = "jvp", integral_opts: dict[str, Any] | None = None
              ) -> tuple[Tensor, Tensor]:
    """Predictions and targets (n, c, k) of the scalar equations.

    ``u`` (n, c, o); ``alpha`` (n, k, i) or (n, 1, i) (one point per row); ``dalpha`` (n, k, i);
    ``df`` (n, k, o). ``pred = g(u, α)·dα`` (or its line integral for ``integral``),
    ``y = u·df``.
    """
    y = torch.einsum("nko,nco->nck", df, u)
    if target == "integral":
        n, k, i = dalpha.shape
        c = u.shape[1]
        a = alpha.expand(n, k, i).reshape(n * k, i)
        uu = u[:, None].expand(n, k, c, u.shape[-1]).reshape(n * k, c, u.shape[-1])
        pred = surrogate_line_integral(surrogate, uu, a, dalpha.reshape(n * k, i),
                                       **(integral_opts or {}))
        return pred.reshape(n, k, c).transpose(1, 2), y
    g = surrogate(u[:, :, None, :], alpha[:, None])  # (n, c, 1|k, i)
    return (g * dalpha[:, None]).sum(-1), y


def _draw_probes(problem: RestoreProblem, cfg: RestoreConfig, gen: torch.Generator,
                 dtype: torch.dtype, device: torch.device, limit: int | None = None
                 ) -> tuple[Tensor, Tensor, Tensor, int]:
    """Draw one minibatch of ``n·k`` probes and evaluate ``f`` on them.

    Returns ``alpha`` (n, 1, i), ``dalpha`` (n, k, i), ``df`` (n, k, o) and the ``f`` rows
    evaluated. With ``limit < n·k`` only the first ``limit`` probes (row-major) are evaluated
    and returned: as ``limit/k`` full rows when ``k`` divides ``limit``, otherwise as one row of
    ``limit`` probes with their own points (``alpha`` (1, limit, i)).
    """
    n, i, k = cfg.points, problem.dim_in, cfg.k
    alpha = problem.alpha(n, gen).to(device=device, dtype=dtype)
    dalpha, _ = sample_directions(n, k, i, cfg.dim_sample, cfg.direction_dist, gen, dtype, device)
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


def restore(problem: RestoreProblem, surrogate: Surrogate, cfg: RestoreConfig,
            progress: bool = True, callback: Callable[[dict[str, Any]], None] | None = None,
            cotangent_source: Callable[[int, int, torch.Generator], Tensor] | None = None,
            on_nonfinite: str = "raise") -> RestoreResult:
    """Train ``surrogate`` on ``problem`` for ``cfg.epochs`` epochs (``steps_per_epoch``
    minibatches each); metrics vs the true Jacobian (when known) after every epoch.

    ``problem`` and ``surrogate`` are usually :func:`~.config.build_problem` /
    :func:`~.config.build_surrogate` of ``cfg``; any others must have ``cfg``'s dims. The
    trainer reads ``cfg``'s trainer settings (loss, target, epochs, lr, ...).

    ``cotangent_source(n, c, generator) -> (n, c, o)`` replaces the random cotangents (e.g.
    real output gradients recorded from a training run); ``callback(record)`` sees each epoch.

    ``jvp_evals`` counts directional evaluations (probes) of ``f``; ``f_evals`` counts rows
    evaluated (2 per probe for fd/integral). A non-finite loss raises
    :class:`NonFiniteLossError` (``on_nonfinite="raise"``) or ends the run with status
    ``"diverged"`` and ``diverged_step`` (``"stop"``): the 0-based index of the step whose loss
    was not finite, i.e. the number of updates applied before it (that step's update is not
    applied); when the last update leaves non-finite parameters, the number of steps.
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
    opt = RESTORE_OPTIMIZERS[cfg.optimizer](surrogate.parameters(), lr=cfg.lr)
    bank = _ProbeBank(cfg.probe_budget) if cfg.probe_budget else None
    integral_opts = {"method": cfg.integral_method}
    if cfg.integral_method in ("gauss-legendre", "gauss-kronrod"):
        integral_opts["n"] = cfg.integral_nodes
    k, c = cfg.k, cfg.c
    history: list[dict[str, Any]] = []
    jvp_evals = f_evals = step = 0
    status, reached_at, diverged_step = "done", None, None
    start = time.perf_counter()
    bar = tqdm(range(1, cfg.epochs + 1), desc=f"restore {cfg.loss}", disable=None if progress
               else True, leave=False)
    for epoch in bar:
        losses = []
        for _ in range(cfg.steps_per_epoch):
            if bank is None or not bank.full:
                # the step that fills the bank evaluates (and trains on) only the probes it stores
                limit = None if bank is None else bank.budget - bank.size
                alpha, dalpha, df, rows = _draw_probes(problem, cfg, gen, dtype, device, limit)
                if bank is not None:
                    bank.add(alpha.expand_as(dalpha).flatten(0, 1), dalpha.flatten(0, 1),
                             df.flatten(0, 1))
                jvp_evals += dalpha.shape[0] * dalpha.shape[1]
                f_evals += rows
            else:
                alpha, dalpha, df = bank.groups(cfg.points, k, gen)
            if cotangent_source is not None:
                u = cotangent_source(alpha.shape[0], c, gen).to(device=device, dtype=dtype)
            else:
                u = sample_cotangents(alpha.shape[0], c, problem.dim_out, cfg.cotangent_dist,
                                      gen, dtype, device)
            pred, y = equations(surrogate, u, alpha, dalpha, df, cfg.target, integral_opts)
            loss = loss_fn(pred, y)
            if not torch.isfinite(loss):  # `step` updates were applied before this one
                msg = (f"non-finite restoration loss {loss.item()} at step {step} (0-based: "
                       f"after {step} update(s); epoch {epoch}; loss {cfg.loss}, lr {cfg.lr}, "
                       f"surrogate {surrogate.name}); lower the lr or the initial_messup")
                if on_nonfinite == "raise":
                    raise NonFiniteLossError(msg)
                status, diverged_step = "diverged", step
                losses.append(loss.item())
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            losses.append(loss.item())
        record: dict[str, Any] = {
            "epoch": epoch, "loss": sum(losses) / len(losses) if losses else float("nan"),
            "jvp_evals": jvp_evals, "f_evals": f_evals,
            "time": time.perf_counter() - start,
        }
        if true_jac is not None:
            with torch.no_grad():
                record.update(jacobian_metrics(surrogate.jacobian(eval_alpha), true_jac))
        history.append(record)
        if callback is not None:
            callback(record)
        if status == "diverged":
            break
        if "cosine" in record:
            bar.set_postfix(cos=f"{record['cosine']:.4f}", loss=f"{record['loss']:.3g}")
            if cfg.target_cosine is not None and record["cosine"] >= cfg.target_cosine:
                status, reached_at = "target_reached", jvp_evals
                break
    bar.close()
    if status != "diverged" and not all(bool(q.isfinite().all()) for q in surrogate.parameters()):
        if on_nonfinite == "raise":  # the last update overflowed the parameters
            raise NonFiniteLossError(f"non-finite surrogate parameters after the last update "
                                     f"({step} steps); lower the lr or the initial_messup")
        status, diverged_step = "diverged", step
    final = {k_: v for k_, v in history[-1].items() if isinstance(v, float)}
    if status == "diverged" and not math.isfinite(final.get("loss", 0.0)):
        final["loss"] = float("nan")
    return RestoreResult(history, jvp_evals, f_evals, status, final, reached_at, diverged_step)
