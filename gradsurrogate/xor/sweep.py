"""W&B sweep YAMLs, expanded locally (no W&B server): grid and random search.

Parameter syntax follows W&B: ``value`` (constant), ``values`` (categorical, optionally with
``probabilities``), ``min``/``max`` with a ``distribution`` (``uniform``, ``int_uniform``,
``q_uniform``, ``log_uniform`` (bounds in log space), ``log_uniform_values``,
``q_log_uniform(_values)``, ``inv_log_uniform(_values)``, ``normal``/``q_normal``/``log_normal``/
``q_log_normal`` with ``mu``/``sigma``, ``beta``/``q_beta`` with ``a``/``b``). Without a
``distribution``, integer bounds mean ``int_uniform`` and float bounds ``uniform``. A grid takes
the Cartesian product of ``values``/``value`` parameters (continuous ones are an error, as in
W&B); a random search draws ``count`` configs from a seeded generator. Parameter names are the
``gradsurrogate xor`` flag names; each expanded config is the ``--name=value`` argv a
``wandb agent`` would pass.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

__all__ = ["DISTRIBUTIONS", "expand_sweep", "load_sweep", "sample_parameter", "sweep_schema",
           "to_argv", "validate_sweep"]

DISTRIBUTIONS: tuple[str, ...] = (
    "constant", "categorical", "categorical_w_probabilities", "int_uniform", "uniform",
    "q_uniform", "log_uniform", "log_uniform_values", "q_log_uniform", "q_log_uniform_values",
    "inv_log_uniform", "inv_log_uniform_values", "normal", "q_normal", "log_normal",
    "q_log_normal", "beta", "q_beta",
)
METHODS: tuple[str, ...] = ("grid", "random")


def sweep_schema() -> dict[str, Any]:
    """W&B's sweep-config JSON schema, as shipped in the ``sweeps`` package (wandb[sweeps])."""
    spec = importlib.util.find_spec("sweeps")  # locate without importing the package
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("W&B's sweep schema needs the 'sweeps' package: pip install "
                         "'wandb[sweeps]'")
    path = Path(next(iter(spec.submodule_search_locations))) / "config" / "schema.json"
    return json.loads(path.read_text())


def validate_sweep(config: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` listing every violation of W&B's sweep schema."""
    import jsonschema

    validator = jsonschema.Draft7Validator(sweep_schema())
    errors = sorted(validator.iter_errors(dict(config)), key=lambda e: list(e.path))
    if errors:
        lines = [f"{'/'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in errors]
        raise ValueError("sweep config violates W&B's schema:\n  " + "\n  ".join(lines))


def load_sweep(path: str | Path, validate: bool = True) -> dict[str, Any]:
    """Read (and validate) a sweep YAML."""
    with Path(path).open() as fh:
        config = yaml.safe_load(fh)
    if not isinstance(config, dict):
        raise ValueError(f"{path}: a sweep config must be a YAML mapping; got {type(config)}")
    if validate:
        validate_sweep(config)
    return config


def _distribution(name: str, spec: Mapping[str, Any]) -> str:
    if not isinstance(spec, Mapping):
        raise ValueError(f"parameter {name!r}: expected a mapping such as {{values: [...]}}; "
                         f"got {spec!r}")
    if "parameters" in spec:
        raise ValueError(f"parameter {name!r}: nested parameters are not supported (the xor "
                         "flags are flat)")
    dist = spec.get("distribution")
    if dist is None:
        if "value" in spec:
            dist = "constant"
        elif "values" in spec:
            dist = "categorical_w_probabilities" if "probabilities" in spec else "categorical"
        elif "min" in spec and "max" in spec:
            ints = all(isinstance(spec[k], int) and not isinstance(spec[k], bool)
                       for k in ("min", "max"))
            dist = "int_uniform" if ints else "uniform"
        else:
            raise ValueError(f"parameter {name!r}: needs value, values or min/max; got {spec!r}")
    if dist not in DISTRIBUTIONS:
        raise ValueError(f"parameter {name!r}: unknown distribution {dist!r}; accepted: "
                         f"{', '.join(DISTRIBUTIONS)}")
    return dist


def _quantise(x: float, q: float) -> float | int:
    y = round(x / q) * q
    return round(y) if float(q).is_integer() else round(float(y), 12)


def sample_parameter(name: str, spec: Mapping[str, Any], rng: np.random.Generator) -> Any:
    """One draw of parameter ``name`` from its W&B ``spec``."""
    dist = _distribution(name, spec)
    q = float(spec.get("q", 1.0))
    lo, hi = spec.get("min"), spec.get("max")
    mu, sigma = float(spec.get("mu", 0.0)), float(spec.get("sigma", 1.0))
    if dist == "constant":
        return spec["value"]
    if dist == "categorical":
        return spec["values"][int(rng.integers(len(spec["values"])))]
    if dist == "categorical_w_probabilities":
        p = np.asarray(spec["probabilities"], dtype=float)
        return spec["values"][int(rng.choice(len(p), p=p / p.sum()))]
    if dist == "int_uniform":
        return int(rng.integers(int(lo), int(hi) + 1))
    if dist == "uniform":
        return float(rng.uniform(lo, hi))
    if dist == "q_uniform":
        return _quantise(rng.uniform(lo, hi), q)
    if dist in ("log_uniform", "q_log_uniform"):
        x = math.exp(rng.uniform(lo, hi))
        return x if dist == "log_uniform" else _quantise(x, q)
    if dist in ("log_uniform_values", "q_log_uniform_values"):
        x = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        return x if dist == "log_uniform_values" else _quantise(x, q)
    if dist == "inv_log_uniform":
        return math.exp(-rng.uniform(lo, hi))
    if dist == "inv_log_uniform_values":
        return 1.0 / math.exp(rng.uniform(math.log(1.0 / hi), math.log(1.0 / lo)))
    if dist in ("normal", "q_normal"):
        x = rng.normal(mu, sigma)
        return float(x) if dist == "normal" else _quantise(x, q)
    if dist in ("log_normal", "q_log_normal"):
        x = math.exp(rng.normal(mu, sigma))
        return x if dist == "log_normal" else _quantise(x, q)
    x = rng.beta(float(spec.get("a", 1.0)), float(spec.get("b", 1.0)))  # beta, q_beta
    return float(x) if dist == "beta" else _quantise(x, q)


def expand_sweep(config: Mapping[str, Any], count: int | None = None, seed: int = 0
                 ) -> list[dict[str, Any]]:
    """Parameter dicts of a sweep: the full grid, or ``count`` random draws.

    ``count`` defaults to ``run_cap`` (random: 20 when unset; grid: no cap).
    """
    method = config.get("method")
    if method not in METHODS:
        raise ValueError(f"local sweeps support method grid or random; got {method!r} "
                         "(run bayes sweeps with `wandb sweep` + `wandb agent`)")
    params = config.get("parameters") or {}
    if not params:
        raise ValueError("sweep config has no parameters")
    count = config.get("run_cap") if count is None else count
    if count is not None and (isinstance(count, bool) or not isinstance(count, int)
                              or count < 1):
        raise ValueError(f"count must be a positive integer; got {count!r}")
    if method == "grid":
        axes = []
        for name, spec in params.items():
            dist = _distribution(name, spec)
            if dist == "constant":
                axes.append([spec["value"]])
            elif dist == "categorical":
                axes.append(list(spec["values"]))
            else:
                raise ValueError(f"grid search needs values/value for every parameter; "
                                 f"{name!r} has distribution {dist!r}")
        out = [dict(zip(params, combo)) for combo in itertools.product(*axes)]
        return out if count is None else out[:count]
    rng = np.random.default_rng(seed)
    return [{name: sample_parameter(name, spec, rng) for name, spec in params.items()}
            for _ in range(20 if count is None else count)]


def to_argv(params: Mapping[str, Any]) -> list[str]:
    """``--name=value`` flags, as ``wandb agent`` passes them through ``${args}``."""
    return [f"--{name}={value}" for name, value in params.items()]
