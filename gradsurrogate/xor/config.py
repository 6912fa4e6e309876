"""One XOR run's settings (:class:`XorConfig`) and its stable identifier."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ..backward import TARGETS, BackwardSpec, Learned, RandomFeedback, accepted_modes
from ..ensemble import OPTIMIZERS
from ..registry import check_choice, check_int, check_number
from ..runs import run_id
from .data import check_data_params

__all__ = ["OPTIMIZERS", "SUB_SEEDS", "XorConfig"]

#: per-stream seeds; each defaults to ``seed``
SUB_SEEDS: tuple[str, ...] = ("data_seed", "init_seed", "noise_seed")


@dataclasses.dataclass(frozen=True)
class XorConfig:
    """Every setting of one run. ``spec`` holds the backward modes as a spec string.

    ``data_seed``, ``init_seed`` and ``noise_seed`` default to ``seed`` (stored resolved, so the
    record names every seed used): the data seed draws the train/test sets and the minibatch
    order, the init seed the weights, the noise seed the backward perturbations.
    """

    depth: int = 2
    width: int = 16
    steps: int = 600
    lr: float = 0.01
    optimizer: str = "adam"
    batch_size: int = 64
    n_train: int = 512
    n_test: int = 2048
    sigma: float = 0.5
    label_noise: float = 0.05
    seed: int = 0
    data_seed: int | None = None
    init_seed: int | None = None
    noise_seed: int | None = None
    spec: str = "exact"
    eval_every: int = 25
    diag_every: int = 100

    def __post_init__(self) -> None:
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
        check_choice(self.optimizer, OPTIMIZERS, "optimizer")
        spec = self.backward_spec()
        for target, mode in spec.modes().items():
            if isinstance(mode, Learned):
                raise ValueError(f"the XOR benchmark has no learned surrogate: {target}=learned "
                                 "is not accepted; accepted: " + ", ".join(
                                     m for m in accepted_modes(target).split(", ")
                                     if not m.startswith("learned")))
        object.__setattr__(self, "spec", str(spec))

    def backward_spec(self) -> BackwardSpec:
        return BackwardSpec.parse(self.spec)

    @property
    def uses_feedback(self) -> bool:
        """True when ``weight='random'`` (a fixed feedback matrix per layer)."""
        return isinstance(self.backward_spec().weight, RandomFeedback)

    @property
    def full_batch(self) -> bool:
        return self.batch_size == 0 or self.batch_size >= self.n_train

    def to_dict(self) -> dict[str, Any]:
        """Every setting plus the spec's per-target modes (flat, W&B-config friendly)."""
        out = dataclasses.asdict(self)
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
        return (self.depth, self.width, self.steps, self.optimizer, self.batch_size,
                self.n_train, self.n_test, self.eval_every, self.diag_every,
                self.feedback_scale)
