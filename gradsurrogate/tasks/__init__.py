"""Tasks of the destroy-Jacobian benchmark: a registry behind the XOR grid machinery.

A :class:`Task` gives its data (train/test tensors built in-process and seeded), its model
builder (every weight layer a surrogate layer following the run's backward spec), its default
run settings (the ``None`` fields of :class:`~gradsurrogate.xor.config.XorConfig` resolve to
them) and whether its runs can be stacked into one vectorised ensemble. Registered tasks:

* ``xor`` — Gaussian XOR, Linear+GELU MLP (the original benchmark);
* ``mnist1d-mlp`` — MNIST-1D (40 inputs, 10 classes), the authors' ReLU MLP (2 × 100);
* ``mnist1d-cnn`` — MNIST-1D, the authors' Conv1d network (3 convs of 25 channels, stride 2);
* ``digits-mlp`` — sklearn's 8×8 digits (64 inputs, 10 classes), ReLU MLP;
* ``sort-transformer`` — sort a sequence of digits with a small Transformer encoder
  (per-token classification; exercises attention).

``depth``/``width`` are hidden layers/units for MLPs, conv layers/channels for the CNN and
encoder layers/model width for the Transformer.

Exact baselines (final test accuracy, torch 2.x CPU, float32; the MNIST-1D authors report MLP
68 %, CNN 94 %; their setting: Adam lr 1e-2, batch 100, 6,000 steps, widths 100 / 25
channels): ``mnist1d-mlp`` at their setting (``--steps 6000``) 67.7 % (seed 0); the default
here trains 2,000 steps (66.8 % seed 0: within the published ±2 %, and a 300-run grid stays
within minutes). ``mnist1d-cnn`` at their setting (the default) 92.9 % (seed 0; 91.1 % after
2,000 steps). ``digits-mlp`` 97.8 % (seed 0; no published number, and the task is too easy
to separate methods). ``sort-transformer`` 99.9 % per-token accuracy after 400 steps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..registry import lookup

if TYPE_CHECKING:
    from ..xor.config import XorConfig
    from ..xor.data import XorData

__all__ = ["FA_FAMILY", "TASKS", "TASK_FIELDS", "Task", "get_task", "task_names"]

#: config fields whose default (``None``) is the task's own
TASK_FIELDS: tuple[str, ...] = ("depth", "width", "steps", "lr", "batch_size", "n_train",
                                "n_test", "eval_every", "diag_every")

#: weight modes of the feedback-alignment family, as grid entries when registered
# ``random`` is left out: the same law and draws as ``fa`` (its older name), so identical runs
FA_FAMILY: tuple[str, ...] = ("fa", "usf", "frsf", "brsf")

DataFn = Callable[["XorConfig", torch.dtype, torch.device], tuple["XorData", "XorData"]]
BuildFn = Callable[["XorConfig", torch.Generator, torch.dtype, torch.device], nn.Module]
EnsembleFn = Callable[[Sequence["XorConfig"], Sequence[torch.Generator], torch.dtype,
                       torch.device], nn.Module]


@dataclasses.dataclass(frozen=True)
class Task:
    """One task. ``data(config, dtype, device) -> (train, test)`` (``XorData``: x, y);
    ``build(config, noise_generator, dtype, device) -> model`` (logits (n, classes) or
    (n, L, classes) for per-token tasks); ``mlp``: a stack of Linear layers that
    :class:`~gradsurrogate.xor.model.EnsembleXorMLP` can vectorise (``in_features``,
    ``classes``, ``activation``); ``fixed_data``: the data do not depend on the data seed (one
    copy shared by every ensemble member; the data seed still orders the minibatches);
    ``max_train``/``max_test``: set sizes available; ``published``: the reference number;
    ``ensemble(configs, generators, dtype, device)``: the runs of one group as one ensemble
    model (input (e, n, ...) or shared (n, ...) → logits (e, n, classes); member ``k``
    initialised as ``build`` initialises run ``k``, drawing its noise from
    ``generators[k]``; :func:`mlp_ensemble` for the MLP tasks), ``None`` for a task that
    runs one config at a time; ``example_floats(config)``:
    the floats of the widest hidden activation per example (sizes evaluation blocks and
    decides whether a group splits by mode kind; default ``width``)."""

    name: str
    description: str
    defaults: Mapping[str, Any]
    data: DataFn
    build: BuildFn
    mlp: bool = False
    in_features: int = 0
    classes: int = 0
    activation: str = "relu"
    fixed_data: bool = True
    max_train: int | None = None
    max_test: int | None = None
    grid_depths: tuple[int, ...] = (2,)
    grid_feedback: tuple[str, ...] | None = None  # None: the FA family (+ DFA when available)
    published: str = ""
    ensemble: EnsembleFn | None = None
    example_floats: Callable[[XorConfig], int] | None = None

    @property
    def vectorised(self) -> bool:
        """Runs of this task can share one ensemble (it has an ``ensemble`` builder)."""
        return self.ensemble is not None

    def activation_floats(self, config: XorConfig) -> int:
        """Floats of the widest hidden activation per example (an MLP's ``width``)."""
        if self.example_floats is not None:
            return self.example_floats(config)
        return config.width


TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    """``TASKS[name]``; ``ValueError`` naming the accepted tasks otherwise."""
    return lookup(TASKS, name, "task")


def task_names() -> list[str]:
    return list(TASKS)


def _xor_data(config: XorConfig, dtype: torch.dtype, device: torch.device
              ) -> tuple[XorData, XorData]:
    from ..xor.data import make_xor_split

    return make_xor_split(config.n_train, config.n_test, config.sigma, config.label_noise,
                          config.data_seed, dtype, device)


def mlp_builder(config: XorConfig, noise: torch.Generator, dtype: torch.dtype,
                device: torch.device) -> nn.Module:
    """The task's MLP (``init_params`` from the init seed, one surrogate Linear per layer)."""
    from ..xor.data import generator
    from ..xor.model import XorMLP, init_params

    task = get_task(config.task)
    params = init_params(config.depth, config.width, generator(config.init_seed, "init"),
                         dtype, device, task.in_features, task.classes)
    return XorMLP(params, config.backward_spec(), noise, task.activation)


def mlp_ensemble(configs: Sequence[XorConfig], generators: Sequence[torch.Generator],
                 dtype: torch.dtype, device: torch.device) -> nn.Module:
    """The MLPs of ``configs`` (one group) as one :class:`~..xor.model.EnsembleXorMLP`, member
    ``k`` initialised as :func:`mlp_builder` initialises run ``k``."""
    from ..xor.data import generator
    from ..xor.model import EnsembleXorMLP, init_params

    task = get_task(configs[0].task)
    params = [init_params(c.depth, c.width, generator(c.init_seed, "init"), dtype, device,
                          task.in_features, task.classes) for c in configs]
    return EnsembleXorMLP(params, [c.backward_spec() for c in configs], generators,
                          task.activation)


def _lazy(module: str, name: str) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        import importlib

        return getattr(importlib.import_module(module, __name__), name)(*args, **kwargs)

    call.__name__ = name
    return call


_MNIST1D = dict(depth=2, width=100, steps=2000, lr=0.01, batch_size=100, n_train=4000,
                n_test=1000, eval_every=250, diag_every=1000)

register_task(Task(
    "xor", "Gaussian XOR (2 inputs, 2 classes), Linear+GELU MLP",
    dict(depth=2, width=16, steps=600, lr=0.01, batch_size=64, n_train=512, n_test=2048,
         eval_every=25, diag_every=100),
    _xor_data, mlp_builder, mlp=True, ensemble=mlp_ensemble, in_features=2, classes=2,
    activation="gelu", fixed_data=False, grid_depths=(2, 4), grid_feedback=(),
    published="Bayes accuracy"))
register_task(Task(
    "mnist1d-mlp", "MNIST-1D (40 inputs, 10 classes), the authors' ReLU MLP",
    _MNIST1D, _lazy(".data", "mnist1d_split"), mlp_builder, mlp=True, ensemble=mlp_ensemble,
    in_features=40, classes=10, max_train=4000, max_test=1000,
    published="MLP 68% (MNIST-1D authors)"))
register_task(Task(
    "mnist1d-cnn", "MNIST-1D, the authors' Conv1d network (stride-2 convs, ReLU, linear)",
    {**_MNIST1D, "depth": 3, "width": 25}, _lazy(".data", "mnist1d_split"),
    _lazy(".models", "build_cnn"), in_features=40, classes=10, max_train=4000,
    max_test=1000, grid_depths=(3,), published="CNN 94% (MNIST-1D authors)",
    ensemble=_lazy(".models", "build_cnn_ensemble"),
    example_floats=_lazy(".models", "cnn_example_floats")))
register_task(Task(
    "digits-mlp", "sklearn digits (8x8 = 64 inputs, 10 classes), ReLU MLP",
    dict(depth=2, width=64, steps=1000, lr=0.01, batch_size=64, n_train=1437, n_test=360,
         eval_every=50, diag_every=250),
    _lazy(".data", "digits_split"), mlp_builder, mlp=True, ensemble=mlp_ensemble,
    in_features=64, classes=10, max_train=1437, max_test=360,
    published="none (easy: a frozen random MLP + readout 92%)"))
register_task(Task(
    "sort-transformer", "sort 8 digits (per-token classes) with a Transformer encoder",
    dict(depth=2, width=32, steps=400, lr=0.003, batch_size=64, n_train=4000, n_test=1000,
         eval_every=50, diag_every=0),
    _lazy(".data", "sort_split"), _lazy(".models", "build_transformer"), classes=10,
    fixed_data=False, published="none (synthetic)"))
