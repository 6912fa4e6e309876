"""One run's settings (:class:`XorConfig`, any task) and its stable identifier."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ..backward import (
    TARGETS,
    BackwardSpec,
    FeedbackMode,
    Learned,
    RandomFeedback,
    accepted_modes,
)
from ..ensemble import OPTIMIZERS
from ..registry import check_choice, check_int, check_number
from ..runs import run_id
from ..tasks import TASK_FIELDS, TASKS, Task, get_task
from .data import check_data_params

__all__ = ["OPTIMIZERS", "SUB_SEEDS", "XorConfig", "is_dfa", "is_model_spec"]

#: per-stream seeds; each defaults to ``seed``
SUB_SEEDS: tuple[str, ...] = ("data_seed", "init_seed", "noise_seed")


def is_dfa(spec: object) -> bool:
    """True for a spec string naming direct feedback alignment (``"dfa"``, ``"dfa:..."``)."""
    return isinstance(spec, str) and spec.strip().lower().partition(":")[0].strip() == "dfa"


def is_model_spec(spec: object) -> bool:
    """True for the model-level specs: ``dfa[...]`` and ``learned`` (every Linear's feedback
    matrix restored online from probes of its forward, :mod:`gradsurrogate.restore.online`)."""
    return is_dfa(spec) or (isinstance(spec, str) and spec.strip().lower() == "learned")


@dataclasses.dataclass(frozen=True)
class XorConfig:
    """Every setting of one run. ``spec`` holds the backward modes as a spec string (or
    ``dfa[:INIT][:SCALE]``: direct feedback alignment, :mod:`gradsurrogate.dfa`; ``learned``:
    feedback restored online, :class:`gradsurrogate.restore.online.OnlineRestorer`); ``task``
    names the data set and model (:data:`gradsurrogate.tasks.TASKS`; default ``xor``).

    Fields left ``None`` (depth, width, steps, lr, batch_size, n_train, n_test, eval_every,
    diag_every) take the task's defaults (stored resolved; for ``xor`` the values of the XOR
    benchmark, so every XOR run id is unchanged). ``sigma``/``label_noise`` are XOR's.

    ``data_seed``, ``init_seed`` and ``noise_seed`` default to ``seed`` (stored resolved, so the
    record names every seed used): the data seed draws the train/test sets and the minibatch
    order, the init seed the weights, the noise seed the backward perturbations.
    """

    depth: int | None = None
    width: int | None = None
    steps: int | None = None
    lr: float | None = None
    optimizer: str = "adam"
    batch_size: int | None = None
    n_train: int | None = None
    n_test: int | None = None
    sigma: float = 0.5
    label_noise: float = 0.05
    seed: int = 0
    data_seed: int | None = None
    init_seed: int | None = None
    noise_seed: int | None = None
    spec: str = "exact"
    eval_every: int | None = None
    diag_every: int | None = None
    task: str = "xor"

    def __post_init__(self) -> None:
        if not isinstance(self.task, str):
            raise ValueError(f"task must be a name; got {self.task!r}; accepted: "
                             f"{', '.join(TASKS)}")
        task = get_task(self.task)
        object.__setattr__(self, "task", task.name)
        for name in TASK_FIELDS:
            if getattr(self, name) is None:
                object.__setattr__(self, name, task.defaults[name])
        for name in SUB_SEEDS:
            if getattr(self, name) is None:
                object.__setattr__(self, name, self.seed)
        # sizes beyond these ranges cannot run (memory, or years of steps): refused up front
        ints = {"depth": (1, 1000), "width": (1, 1 << 20), "steps": (1, 10**9),
                "batch_size": (0, 1 << 30), "n_train": (1, 1 << 30), "n_test": (1, 1 << 30),
                "seed": (0, None), "data_seed": (0, None), "init_seed": (0, None),
                "noise_seed": (0, None), "eval_every": (1, None), "diag_every": (0, None)}
        for name, (low, high) in ints.items():
            check_int(getattr(self, name), name, low, high)
        object.__setattr__(self, "lr", check_number(self.lr, "lr"))
        check_data_params(self.sigma, self.label_noise)
        object.__setattr__(self, "sigma", float(self.sigma))
        object.__setattr__(self, "label_noise", float(self.label_noise))
        self._check_task(task)
        check_choice(self.optimizer, OPTIMIZERS, "optimizer")
        if is_dfa(self.spec):
            from ..dfa import DFASpec

            object.__setattr__(self, "spec", str(DFASpec.parse(self.spec)))
            return
        if is_model_spec(self.spec):
            object.__setattr__(self, "spec", "learned")
            return
        spec = self.backward_spec()
        for target, mode in spec.modes().items():
            if isinstance(mode, Learned):
                raise ValueError(f"the XOR benchmark has no learned surrogate: {target}=learned "
                                 "is not accepted; accepted: " + ", ".join(
                                     m for m in accepted_modes(target).split(", ")
                                     if not m.startswith("learned")))
        object.__setattr__(self, "spec", str(spec))

    def _check_task(self, task: Task) -> None:
        """Settings that only one task uses, and the set sizes a task has."""
        if task.name != "xor":
            for name in ("sigma", "label_noise"):
                default = next(f.default for f in dataclasses.fields(self) if f.name == name)
                if getattr(self, name) != default:
                    raise ValueError(f"{name} applies to the xor task only; task "
                                     f"{task.name!r} has its own data")
        for name, most in (("n_train", task.max_train), ("n_test", task.max_test)):
            if most is not None and getattr(self, name) > most:
                raise ValueError(f"{name} must be at most {most} for task {task.name!r}; got "
                                 f"{getattr(self, name)}")

    def backward_spec(self) -> BackwardSpec:
        """The per-layer spec (exact for DFA, whose model-level hook replaces grad_input)."""
        return BackwardSpec() if self.model_level else BackwardSpec.parse(self.spec)

    @property
    def model_level(self) -> bool:
        """True for ``dfa[...]`` and ``learned`` (model-level specs; runs are not stacked)."""
        return is_model_spec(self.spec)

    @property
    def dfa(self) -> bool:
        """True when ``spec`` is direct feedback alignment (``dfa[:INIT][:SCALE]``)."""
        return is_dfa(self.spec)

    @property
    def uses_feedback(self) -> bool:
        """True when the weight mode is a feedback mode (``random``, ``fa``, ...)."""
        return isinstance(self.backward_spec().weight, FeedbackMode)

    @property
    def full_batch(self) -> bool:
        return self.batch_size == 0 or self.batch_size >= self.n_train

    def to_dict(self) -> dict[str, Any]:
        """Every setting plus the spec's per-target modes (flat, W&B-config friendly)."""
        out = dataclasses.asdict(self)
        if not self.model_level:
            out.update(self.backward_spec().to_dict())
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> XorConfig:
        """Inverse of :meth:`to_dict`. Per-target keys, if present, must agree with ``spec``
        (a conflict is a ``ValueError`` naming the target and both modes)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"an XOR config must be a mapping; got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names - set(TARGETS)
        if unknown:
            raise ValueError(f"unknown XOR config key(s) {sorted(unknown)}; accepted: "
                             f"{sorted(names | set(TARGETS))}")
        kwargs = {k: v for k, v in data.items() if k in names}
        targets = {k: v for k, v in data.items() if k in TARGETS}
        if targets:
            from_targets = BackwardSpec.from_dict(targets)
            if "spec" not in kwargs:
                kwargs["spec"] = str(from_targets)
            else:
                spec = BackwardSpec.parse(kwargs["spec"]).modes()
                for target, mode in from_targets.modes().items():
                    if target in targets and str(mode) != str(spec[target]):
                        raise ValueError(f"conflicting XOR config: {target}={targets[target]!r} "
                                         f"but spec {kwargs['spec']!r} has {target}="
                                         f"{spec[target]}")
        return cls(**kwargs)

    def replace(self, **changes: Any) -> XorConfig:
        return dataclasses.replace(self, **changes)

    @property
    def run_id(self) -> str:
        """:func:`gradsurrogate.runs.run_id`: 12 hex digits naming the fields that differ from
        their defaults (a field added later with a default keeps every stored id)."""
        return run_id(self)

    @property
    def feedback_scale(self) -> float | None:
        """The scale of ``weight='random[:scale]'`` (``None`` without random feedback)."""
        weight = self.backward_spec().weight
        return float(weight.scale) if isinstance(weight, RandomFeedback) else None

    def group_key(self) -> tuple[Any, ...]:
        """Settings that runs stacked in one vectorised ensemble must share (random feedback
        cannot be mixed with other weight modes, nor with another feedback scale)."""
        weight = self.backward_spec().weight
        feedback = str(weight) if isinstance(weight, FeedbackMode) else None
        return (self.task, self.depth, self.width, self.steps, self.optimizer,
                self.batch_size, self.n_train, self.n_test, self.eval_every, self.diag_every,
                self.spec if self.model_level else feedback)
