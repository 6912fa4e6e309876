"""Grids of XOR runs: the destroy experiment's default grid and a resumable, vectorised runner.

A grid is targets × modes × p values × depths × seeds on top of a base :class:`XorConfig`.
``target`` is one of the backward targets or ``"all"`` (every target at once); a mode that takes
a parameter (``flip``, ``blend``) gets one run per p, others one run. :func:`run_grid` groups runs
by :meth:`XorConfig.group_key` and mode kind (:func:`ensemble_chunks`), trains each chunk of at
most ``max_group`` members as one ensemble, appends every finished chunk to ``results.jsonl``
and skips runs already recorded.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..backward import MODES, TARGETS, BackwardSpec, Blend, Flip, make_mode
from ..registry import check_choice, check_int, check_number
from ..runs import RunStore
from ..tasks import FA_FAMILY, get_task
from ..tracking import Tracker
from .config import SUB_SEEDS, XorConfig, is_model_spec
from .results import finished_ids, read_results, write_run
from .train import run_xor
from .vectorised import run_ensemble

__all__ = ["DEFAULT_DEPTHS", "DEFAULT_MODES", "DEFAULT_PS", "DEFAULT_SEEDS", "DEFAULT_TARGETS",
           "GridSpec", "can_vectorise", "default_feedback", "default_grid", "ensemble_chunks",
           "feedback_spec", "grid_configs", "mode_kinds", "run_grid", "spec_for"]

DEFAULT_TARGETS: tuple[str, ...] = (*TARGETS, "all")
DEFAULT_MODES: tuple[str, ...] = ("sign", "flip")
DEFAULT_PS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.45, 0.5, 0.6, 0.8, 1.0)
DEFAULT_DEPTHS: tuple[int, ...] = (2, 4)
DEFAULT_SEEDS: tuple[int, ...] = (0, 1, 2, 3, 4)
PARAMETRISED = ("flip", "blend")
MAX_GROUP = 320  #: most runs per vectorised ensemble by default (a 5-seed depth of the grid)
KIND_GROUP = 64  #: most runs per one-kind ensemble (:func:`ensemble_chunks`; cache-sized)
MIN_KIND = 16  #: a mode kind with fewer runs is pooled with others into mixed ensembles
KIND_SPLIT_WORK = 8192  #: batch × widest activation per example from which a group is split by kind


def spec_for(target: str, mode: str, p: float | None = None) -> BackwardSpec:
    """The spec that applies ``mode`` (with parameter ``p``) to ``target`` or to ``"all"``."""
    check_choice(target, DEFAULT_TARGETS, "grid target")
    targets = TARGETS if target == "all" else (target,)
    return BackwardSpec(**{t: make_mode(mode, p, t) for t in targets})


def feedback_spec(entry: str) -> str:
    """A feedback-axis entry as a spec string: a bare weight mode (``fa``, ``random:0.5``)
    means ``weight=MODE``; ``dfa[:...]``, ``learned`` and full spec strings are kept
    (validated)."""
    if not isinstance(entry, str) or not entry.strip():
        raise ValueError(f"a feedback entry must be a spec string; got {entry!r}")
    text = entry.strip()
    if is_model_spec(text):
        return XorConfig(spec=text).spec
    if "=" not in text and text.lower() != "exact":
        text = f"weight={text}"
    try:
        return str(BackwardSpec.parse(text))
    except ValueError as err:
        raise ValueError(f"bad feedback entry {entry!r} (a weight mode, a spec or "
                         f"dfa[:INIT][:SCALE]): {err}") from None


def default_feedback(task: str = "xor") -> tuple[str, ...]:
    """The feedback axis of ``task``'s default grid: none for XOR (its grid is the destroy
    experiment), else every registered FA-family weight mode (``fa``, ``usf``,
    ``frsf``, ``brsf``) and ``dfa`` when :mod:`gradsurrogate.dfa` is available."""
    own = get_task(task).grid_feedback
    if own is not None:
        return own
    out = [f"weight={m}" for m in FA_FAMILY if m in MODES]
    try:
        from .. import dfa  # noqa: F401
    except ImportError:  # pragma: no cover - until DFA lands
        return tuple(out)
    return (*out, "dfa")


def grid_configs(base: XorConfig, targets: Sequence[str] = DEFAULT_TARGETS,
                 modes: Sequence[str] = DEFAULT_MODES, ps: Sequence[float] = DEFAULT_PS,
                 depths: Sequence[int] = DEFAULT_DEPTHS, seeds: Sequence[int] = DEFAULT_SEEDS,
                 include_exact: bool = True, fixed_seeds: Iterable[str] | None = None,
                 feedback: Sequence[str] = ()) -> list[XorConfig]:
    """Configs of the grid (plus one exact baseline per depth and seed when ``include_exact``),
    plus one run per ``feedback`` entry (whole specs: ``weight=fa``, ``dfa``, ...).

    Each run's ``seed`` is one of ``seeds``; its sub-seeds (``data_seed``, ``init_seed``,
    ``noise_seed``) follow that seed, except those named in ``fixed_seeds``, which keep
    ``base``'s value in every run (e.g. one data set for all seeds). ``fixed_seeds=None``: the
    sub-seeds of ``base`` that differ from ``base.seed`` (i.e. were set explicitly) are fixed.
    Order: depth, then seed, then target, mode and p; duplicates are dropped.
    """
    if fixed_seeds is None:
        fixed = {name for name in SUB_SEEDS if getattr(base, name) != base.seed}
    else:
        fixed = set(fixed_seeds)
        if not fixed <= set(SUB_SEEDS):
            raise ValueError(f"unknown sub-seed(s) {sorted(fixed - set(SUB_SEEDS))} in "
                             f"fixed_seeds; accepted: {', '.join(SUB_SEEDS)}")
    follow = {name: None for name in SUB_SEEDS if name not in fixed}
    out: dict[str, XorConfig] = {}
    for depth in depths:
        for seed in seeds:
            cfg = base.replace(depth=depth, seed=seed, **follow)
            if include_exact:
                out.setdefault(cfg.replace(spec="exact").run_id, cfg.replace(spec="exact"))
            for target in targets:
                for mode in modes:
                    values = ps if mode.strip().lower() in PARAMETRISED else (None,)
                    for p in values:
                        c = cfg.replace(spec=str(spec_for(target, mode, p)))
                        out.setdefault(c.run_id, c)
            for entry in feedback:
                c = cfg.replace(spec=feedback_spec(entry))
                out.setdefault(c.run_id, c)
    return list(out.values())


@dataclasses.dataclass(frozen=True)
class GridSpec:
    """The axes of a grid (the ``grid``/``xor-grid`` flags are generated from these fields):
    targets (backward targets or ``all``) × modes × ps (for flip/blend) × depths × seeds, plus
    the exact baselines when ``include_exact`` and the ``feedback`` specs (FA family, DFA).
    ``depths``/``feedback`` ``None``: the task's defaults (:func:`default_feedback`).
    Validated on construction."""

    targets: tuple[str, ...] = DEFAULT_TARGETS
    modes: tuple[str, ...] = DEFAULT_MODES
    ps: tuple[float, ...] = DEFAULT_PS
    depths: tuple[int, ...] | None = None
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    include_exact: bool = True
    feedback: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("targets", "modes", "ps", "depths", "seeds", "feedback"):
            if getattr(self, name) is None:
                continue
            values = tuple(getattr(self, name))
            if not values and name not in ("ps", "feedback", "modes", "targets"):
                raise ValueError(f"the grid needs at least one value in {name}")
            object.__setattr__(self, name, values)
        if self.feedback is not None:
            object.__setattr__(self, "feedback",
                               tuple(feedback_spec(f) for f in self.feedback))
        for target in self.targets:
            check_choice(target, DEFAULT_TARGETS, "grid target")
        for p in self.ps:
            check_number(p, "p (in ps)", low=0.0, high=1.0, low_open=False)
        for mode in self.modes:
            for p in self.ps if mode.strip().lower() in PARAMETRISED else (None,):
                make_mode(mode, p, TARGETS[0] if mode != "random" else "weight")
        if any(m.strip().lower() in PARAMETRISED for m in self.modes) and not self.ps:
            raise ValueError("flip/blend modes need at least one value in ps")
        for depth in self.depths or ():
            check_int(depth, "depth", 1, 1000)
        for seed in self.seeds:
            check_int(seed, "seed", 0)

    def configs(self, base: XorConfig, fixed_seeds: Iterable[str] | None = None
                ) -> list[XorConfig]:
        """:func:`grid_configs` of these axes on top of ``base`` (its task fills the axes left
        ``None``)."""
        task = get_task(base.task)
        depths = task.grid_depths if self.depths is None else self.depths
        feedback = default_feedback(task.name) if self.feedback is None else self.feedback
        return grid_configs(base, self.targets, self.modes, self.ps, depths, self.seeds,
                            self.include_exact, fixed_seeds, feedback)


def default_grid(base: XorConfig | None = None) -> list[XorConfig]:
    """The destroy experiment of ``base``'s task (default XOR): every target and all together
    × {sign, flip p ∈ DEFAULT_PS} × the task's depths (XOR: {2, 4}) × seeds 0-4, plus exact
    baselines (XOR: 560 runs) and, for other tasks, the FA family and DFA."""
    return GridSpec().configs(base or XorConfig())


def chunk_configs(configs: list[XorConfig], max_group: int) -> list[list[XorConfig]]:
    """Configs split by :meth:`XorConfig.group_key` into equal-sized chunks of at most
    ``max_group`` (input order kept within a group)."""
    groups: dict[tuple[Any, ...], list[XorConfig]] = {}
    for c in configs:
        groups.setdefault(c.group_key(), []).append(c)
    out = []
    for members in groups.values():
        n = -(-len(members) // max_group)  # equal-sized chunks
        size = -(-len(members) // n)
        out += [members[k:k + size] for k in range(0, len(members), size)]
    return out


def mode_kinds(config: XorConfig) -> tuple[str, ...]:
    """The kind of each target's mode (flip/blend by type, whatever their parameter; other
    modes by their full name): members whose kinds agree stack into one mode per target
    (a flip with an (e,) probability), with no per-member dispatch."""
    modes = config.backward_spec().modes()
    return tuple(modes[t].name if isinstance(modes[t], (Flip, Blend)) else str(modes[t])
                 for t in TARGETS)


def ensemble_chunks(configs: list[XorConfig], max_group: int = MAX_GROUP,
                    kind_group: int = KIND_GROUP) -> list[list[XorConfig]]:
    """The ensembles :func:`run_grid` trains: per group key, the members of each mode kind
    (:func:`mode_kinds`) with at least :data:`MIN_KIND` runs form their own chunks of at most
    ``min(max_group, kind_group)``; the smaller kinds are pooled into mixed chunks of that
    size. One-kind ensembles skip the per-member dispatch of
    :class:`~gradsurrogate.backward.MemberModes` (an index_select/index_copy of every
    perturbed tensor), and ensembles of about 50 members keep a layer's weights and
    activations in cache. Groups whose members are small (batch × widest activation below
    :data:`KIND_SPLIT_WORK`) stay in :func:`chunk_configs`' chunks of ``max_group``: there the
    per-step Python overhead of each extra ensemble outweighs both. Measured (CPU time of the
    default grid at 60 steps, docs/benchmark.md): split by kind, MNIST-1D MLP (100 × 100)
    runs 1.13× faster, digits (64 × 64) 1.02×, XOR (64 × 16) 0.88× (hence not split)."""
    check_int(max_group, "max_group", 1)
    check_int(kind_group, "kind_group", 1)
    size = min(max_group, kind_group)
    groups: dict[tuple[Any, ...], list[XorConfig]] = {}
    for c in configs:
        groups.setdefault(c.group_key(), []).append(c)
    out = []
    for group in groups.values():
        c0 = group[0]
        batch = c0.n_train if c0.full_batch else c0.batch_size
        if batch * get_task(c0.task).activation_floats(c0) < KIND_SPLIT_WORK:
            out += chunk_configs(group, max_group)  # small model: per-step overhead dominates
            continue
        kinds: dict[tuple[str, ...], list[XorConfig]] = {}
        for c in group:
            kinds.setdefault(mode_kinds(c), []).append(c)
        pooled = [c for members in kinds.values() if len(members) < MIN_KIND for c in members]
        for members in kinds.values():
            if len(members) >= MIN_KIND:
                out += chunk_configs(members, size)
        out += chunk_configs(pooled, size) if pooled else []
    return out


def run_grid(configs: Sequence[XorConfig], out_dir: str | Path | RunStore,
             max_group: int = MAX_GROUP,
             vectorised: bool = True, wandb: str | None = "disabled",
             project: str = "gradsurrogate-xor", progress: bool | None = None,
             device: torch.device | str | None = None, dtype: torch.dtype | None = None,
             on_chunk: Callable[[list[dict[str, Any]]], None] | None = None
             ) -> list[dict[str, Any]]:
    """Run ``configs`` not yet recorded in ``out_dir``; return the records of all ``configs``.

    Vectorised: each chunk of :func:`ensemble_chunks` (runs sharing a group key, split by mode
    kind, at most ``max_group``) is one ensemble and one W&B run (a table of its members);
    sequential (and runs that cannot be stacked: non-MLP tasks, DFA): one :func:`run_xor` per
    config. Finished chunks are appended atomically, so a killed grid resumes where it
    stopped. ``out_dir`` is a folder (locked for the duration: a second process on it gets
    :class:`~gradsurrogate.runs.StoreBusyError`) or an already locked :class:`RunStore`.
    ``progress=None`` shows a bar only on a TTY.
    """
    check_int(max_group, "max_group", 1)
    if isinstance(out_dir, RunStore) and out_dir.locked:
        return _run_grid(configs, out_dir, max_group, vectorised, wandb, project, progress,
                         device, dtype, on_chunk)
    with RunStore(out_dir.out if isinstance(out_dir, RunStore) else out_dir) as store:
        return _run_grid(configs, store, max_group, vectorised, wandb, project, progress,
                         device, dtype, on_chunk)


def _run_grid(configs: Sequence[XorConfig], store: RunStore, max_group: int, vectorised: bool,
              wandb: str | None, project: str, progress: bool | None,
              device: torch.device | str | None, dtype: torch.dtype | None,
              on_chunk: Callable[[list[dict[str, Any]]], None] | None
              ) -> list[dict[str, Any]]:
    out_dir = store.out
    unique = list({c.run_id: c for c in configs}.values())
    done = finished_ids(out_dir)
    todo = [c for c in unique if c.run_id not in done]
    stacked = [c for c in todo if vectorised and can_vectorise(c)]
    chunks = [(True, ch) for ch in ensemble_chunks(stacked, max_group)]
    chunks += [(False, [c]) for c in todo if not (vectorised and can_vectorise(c))]
    bar = tqdm(total=len(todo), desc="runs", unit="run",
               disable=None if progress is None else not progress)
    try:
        for k, (ensemble, chunk) in enumerate(chunks):
            start = time.perf_counter()
            pairs = run_ensemble(chunk, device, dtype, progress) if ensemble \
                else [run_xor(chunk[0], device, dtype)]
            for record, _ in pairs:
                record["group_size"] = len(chunk)
            write_run(store, pairs)
            _log_chunk(wandb, project, out_dir, k, chunk, pairs, time.perf_counter() - start)
            if on_chunk is not None:
                on_chunk([r for r, _ in pairs])
            bar.update(len(chunk))
    finally:
        bar.close()
    wanted = {c.run_id for c in unique}
    return [r for r in read_results(out_dir) if r["run_id"] in wanted]


def can_vectorise(config: XorConfig) -> bool:
    """Runs of MLP tasks and of tasks with an ensemble builder (the MNIST-1D CNN) stack into
    ensembles; the Transformer, DFA and learned feedback run one by one."""
    return get_task(config.task).vectorised and not config.model_level


TABLE_COLUMNS = ["run_id", "spec", "depth", "seed", "lr", "final_test_acc", "final_test_loss",
                 "diverged", "steps_to_90pct_bayes"]


def _log_chunk(mode: str | None, project: str, out_dir: Path, k: int, chunk: list[XorConfig],
               pairs: list[tuple[dict[str, Any], dict[str, Any]]], seconds: float) -> None:
    """One W&B run per chunk with a table of its members (skipped when disabled)."""
    if mode == "disabled":
        return
    c0 = chunk[0]
    shared = {f.name: getattr(c0, f.name) for f in dataclasses.fields(c0)
              if len({getattr(c, f.name) for c in chunk}) == 1}
    tracker = Tracker(mode, project, {**shared, "n_runs": len(chunk)},
                      name=f"{out_dir.name}-chunk{k}", group=out_dir.name, job_type="xor-grid")
    rows = [[r["run_id"], r["config"]["spec"], r["config"]["depth"], r["config"]["seed"],
             r["config"]["lr"], r["final_test_acc"], r["final_test_loss"], r["diverged"],
             r["steps_to_90pct_bayes"]] for r, _ in pairs]
    tracker.table("runs", TABLE_COLUMNS, rows)
    accs = [r["final_test_acc"] for r, _ in pairs]
    tracker.summary({"mean_final_test_acc": sum(accs) / len(accs), "seconds": seconds,
                     "n_diverged": sum(bool(r["diverged"]) for r, _ in pairs)})
    tracker.finish()
