"""The search space of a W&B sweep YAML: validation and local expansion (grid and random).

Our own expander (no W&B server, no W&B engine at run time), written to agree with W&B's engine,
the ``sweeps`` package (0.3.0); ``tests/test_sweep.py`` checks the agreement:

* ``grid``: the same runs in the same order as ``sweeps.grid_search_next_runs``: parameters
  sorted by name, the last one varying fastest; ``value`` is held, ``values`` is an axis,
  ``int_uniform`` gives ``min..max``, ``q_uniform`` gives ``numpy.arange(min, max, q)`` (max
  left out, as in W&B); a repeated value (``1`` and ``1.0`` count as one) runs once, with the
  last spelling. Other distributions (and ``probabilities``) are refused, as in W&B.
* ``random``: run by run, one ``random.Random(seed).uniform(0, 1)`` per parameter in name order,
  mapped through W&B's inverse CDF of that distribution; so seed ``S`` draws exactly what
  ``random.seed(S)`` then ``sweeps.random_search_next_runs`` draws. ``count`` defaults to
  ``run_cap``, else 20.
* ``bayes`` needs the W&B server (``wandb sweep`` + ``wandb agent``).

Parameters: ``value``, ``values`` (+ ``probabilities``), ``min``/``max`` (integers:
``int_uniform``, else ``uniform``), or a ``distribution`` among :data:`DISTRIBUTIONS` with
``min``/``max``/``q``/``mu``/``sigma``/``a``/``b``. Each run becomes the ``--name=value`` flags
(``str(value)``) that ``wandb agent`` passes through ``${args}`` (:func:`to_argv`).

Validation needs no extra dependency: :func:`validate_sweep` always checks the method, run_cap,
command and every parameter as W&B's schema does (known keys per distribution, finite bounds with
``min < max``, ``q > 0``, probabilities summing to 1, the deprecated ``log_uniform`` family
refused); when W&B's schema file is installed (``pip install 'gradsurrogate[sweeps]'``, which
brings ``sweeps`` and ``jsonschema``) the whole YAML is also checked against that schema.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .registry import check_choice, check_int

__all__ = ["DEFAULT_RANDOM_COUNT", "DISTRIBUTIONS", "METHODS", "expand_sweep", "load_sweep",
           "parameter_spec", "sample_parameter", "sweep_schema", "to_argv", "validate_sweep"]

#: distribution -> (required keys, optional keys with W&B's defaults)
_SPECS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "constant": (("value",), {}),
    "categorical": (("values",), {}),
    "categorical_w_probabilities": (("values", "probabilities"), {}),
    "int_uniform": (("min", "max"), {}),
    "uniform": (("min", "max"), {}),
    "q_uniform": (("min", "max"), {"q": 1.0}),
    "log_uniform_values": (("min", "max"), {}),
    "q_log_uniform_values": (("min", "max"), {"q": 1.0}),
    "inv_log_uniform_values": (("min", "max"), {}),
    "normal": ((), {"mu": 0.0, "sigma": 1.0}),
    "q_normal": ((), {"mu": 0, "sigma": 1, "q": 1.0}),
    "log_normal": ((), {"mu": 0.0, "sigma": 1.0}),
    "q_log_normal": ((), {"mu": 0, "sigma": 1, "q": 1.0}),
    "beta": ((), {"a": 1, "b": 1}),
    "q_beta": ((), {"a": 1, "b": 1, "q": 1.0}),
}
DISTRIBUTIONS: tuple[str, ...] = tuple(_SPECS)
_DEPRECATED = {"log_uniform": "log_uniform_values", "inv_log_uniform": "inv_log_uniform_values",
               "q_log_uniform": "q_log_uniform_values"}
_INFERRED = {frozenset({"value"}): "constant", frozenset({"values"}): "categorical",
             frozenset({"values", "probabilities"}): "categorical_w_probabilities"}
_GRID_OK = ("constant", "categorical", "int_uniform", "q_uniform")
METHODS: tuple[str, ...] = ("grid", "random")
_ALL_METHODS = ("bayes", "random", "grid", "custom")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
#: random draws when neither --count nor run_cap says
DEFAULT_RANDOM_COUNT = 20


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def parameter_spec(name: str, spec: Any) -> tuple[str, dict[str, Any]]:
    """``(distribution, spec with W&B's defaults filled in)``; ``ValueError`` when malformed."""
    where = f"parameter {name!r}"
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where}: expected a mapping such as {{values: [...]}}; got {spec!r}")
    if "parameters" in spec:
        raise ValueError(f"{where}: nested parameters are not supported (command flags are flat)")
    keys, dist = set(spec), spec.get("distribution")
    if dist is None:  # W&B's inference, in the order of its schema
        if frozenset(keys) in _INFERRED:
            dist = _INFERRED[frozenset(keys)]
        elif keys == {"min", "max"}:
            ints = all(isinstance(spec[k], int) and not isinstance(spec[k], bool) for k in keys)
            dist = "int_uniform" if ints else "uniform"
        else:
            raise ValueError(f"{where}: needs value, values (+ probabilities), min/max or a "
                             f"distribution; got {dict(spec)!r}")
    if dist in _DEPRECATED:
        raise ValueError(f"{where} uses {dist}, where min/max specify base-e exponents (refused "
                         f"by W&B); use {_DEPRECATED[dist]} with the limit values")
    try:
        check_choice(dist, DISTRIBUTIONS, "distribution")
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    required, optional = _SPECS[dist]
    missing = [k for k in required if k not in spec]
    extra = sorted(keys - set(required) - set(optional) - {"distribution"})
    if missing or extra:
        raise ValueError(f"{where}: {dist} takes {', '.join([*required, *optional])}"
                         + (f"; missing {missing}" if missing else "")
                         + (f"; unknown {extra}" if extra else ""))
    full = {**optional, **spec, "distribution": dist}
    for key in ("min", "max", "q", "mu", "sigma", "a", "b"):
        if key in full and not _is_num(full[key]):
            raise ValueError(f"{where}: {key} must be a finite number; got {full[key]!r}")
    if dist == "int_uniform" and not all(isinstance(full[k], int) for k in ("min", "max")):
        raise ValueError(f"{where}: int_uniform needs integer min/max; got {dict(spec)!r}")
    if "min" in full and not full["min"] < full["max"]:
        raise ValueError(f"{where}: min {full['min']} is not less than max {full['max']}")
    if dist.endswith("_values") and full["min"] <= 0:
        raise ValueError(f"{where}: {dist} needs min > 0; got {full['min']}")
    if full.get("q", 1) <= 0 or min(full.get(k, 0) for k in ("sigma", "a", "b")) < 0:
        raise ValueError(f"{where}: q must be > 0 and sigma, a, b >= 0; got {dict(spec)!r}")
    if "values" in full and (not isinstance(full["values"], list) or not full["values"]):
        raise ValueError(f"{where}: values must be a non-empty list; got {full['values']!r}")
    if "probabilities" in full:
        p = full["probabilities"]
        if not isinstance(p, list) or len(p) != len(full["values"]) or \
                not all(_is_num(x) and x >= 0 for x in p) or \
                not math.isclose(sum(p), 1.0, rel_tol=1e-5, abs_tol=1e-8):
            raise ValueError(f"{where}: probabilities must be one number >= 0 per value, "
                             f"summing to 1; got {p!r}")
    return dist, full


def sweep_schema() -> dict[str, Any] | None:
    """W&B's sweep-config JSON schema as shipped in ``sweeps`` (extra ``sweeps``), else None."""
    spec = importlib.util.find_spec("sweeps")  # locate without importing the (heavy) package
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "config" / "schema.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _schema_violations(config: Mapping[str, Any]) -> list[str]:
    schema = sweep_schema()
    try:
        import jsonschema
    except ImportError:
        return []
    if schema is None:
        return []
    checker = jsonschema.FormatChecker()  # W&B's: "float"/"integer" formats are Python types
    checker.checks("float")(lambda v: isinstance(v, float))
    checker.checks("integer")(lambda v: isinstance(v, int))
    validator = jsonschema.Draft7Validator(schema, format_checker=checker)
    errors = sorted(validator.iter_errors(dict(config)), key=lambda e: list(map(str, e.path)))
    return [f"{'/'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in errors]


def validate_sweep(config: Any) -> None:
    """``ValueError`` listing every problem of a sweep config (see the module docstring)."""
    if not isinstance(config, Mapping):
        raise ValueError(f"a sweep config must be a mapping; got {type(config).__name__}")
    problems = []
    if config.get("method") not in _ALL_METHODS:
        problems.append(f"unknown method {config.get('method')!r}; accepted: "
                        f"{', '.join(_ALL_METHODS)}")
    if "run_cap" in config:
        try:
            check_int(config["run_cap"], "run_cap", 1)
        except ValueError as err:
            problems.append(str(err))
    if "command" in config and not isinstance(config["command"], list):
        problems.append(f"command must be a list; got {config['command']!r}")
    params = config.get("parameters")
    if not isinstance(params, Mapping) or not params:
        problems.append(f"parameters must be a non-empty mapping; got {params!r}")
    else:
        for name, spec in params.items():
            try:
                if not isinstance(name, str) or not _NAME.match(name):
                    raise ValueError(f"bad parameter name {name!r} (letters, digits, _ . -)")
                parameter_spec(name, spec)
            except ValueError as err:
                problems.append(str(err))
    problems = problems or _schema_violations(config)
    if problems:
        raise ValueError("bad sweep config:\n  " + "\n  ".join(problems))


def load_sweep(path: str | Path, validate: bool = True) -> dict[str, Any]:
    """Read (and validate) a sweep YAML; any problem is a ``ValueError`` naming the file."""
    try:
        config = yaml.safe_load(Path(path).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ValueError(f"cannot read sweep file {str(path)!r}: {err}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: a sweep config must be a YAML mapping; got "
                         f"{type(config).__name__}")
    if validate:
        try:
            validate_sweep(config)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
    return config


def _ppf(dist: str, s: Mapping[str, Any], u: np.ndarray) -> list[Any]:
    """W&B's inverse CDF (``sweeps.params.HyperParameter.ppf``) at each ``u`` in [0, 1],
    as plain Python values (numbers as ``float``, or ``int`` for int_uniform / an integer q)."""
    from scipy import stats

    if dist == "constant":
        return [s["value"]] * len(u)
    if dist in ("categorical", "categorical_w_probabilities"):
        idx = (stats.randint.ppf(u, 0, len(s["values"])).astype(int) if dist == "categorical"
               else np.argmin(u[:, None] >= np.cumsum(s["probabilities"]), axis=-1))
        return [s["values"][i] for i in idx.tolist()]
    if dist == "int_uniform":
        return stats.randint.ppf(u, s["min"], s["max"] + 1).astype(int).tolist()
    lo, hi, q = s.get("min"), s.get("max"), s.get("q")
    if dist in ("uniform", "q_uniform"):
        x = stats.uniform.ppf(u, lo, hi - lo)
    elif dist in ("log_uniform_values", "q_log_uniform_values"):
        x = np.exp(stats.uniform.ppf(u, np.log(lo), np.log(hi) - np.log(lo)))
    elif dist == "inv_log_uniform_values":
        x = np.exp(-stats.uniform.ppf(1 - u, -np.log(hi), -np.log(lo) + np.log(hi)))
    elif dist in ("normal", "q_normal"):
        x = stats.norm.ppf(u, loc=s["mu"], scale=s["sigma"])
    elif dist in ("log_normal", "q_log_normal"):
        x = stats.lognorm.ppf(u, s=s["sigma"], scale=np.exp(s["mu"]))
    else:  # beta, q_beta
        x = stats.beta.ppf(u, a=s["a"], b=s["b"])
    if dist.startswith("q_"):
        x = np.round(x / q) * q
        x = x.astype(int) if isinstance(q, int) else x
    return x.tolist()


def _uniforms(rng: random.Random, rows: int, cols: int) -> np.ndarray:
    """``rows x cols`` draws of ``rng.uniform(0, 1)``, row by row (W&B's order: run by run,
    one per parameter)."""
    return np.array([rng.uniform(0.0, 1.0) for _ in range(rows * cols)]).reshape(rows, cols)


def sample_parameter(name: str, spec: Mapping[str, Any], rng: random.Random) -> Any:
    """One draw of parameter ``name`` (one ``rng.uniform(0, 1)`` consumed, as W&B does)."""
    dist, full = parameter_spec(name, spec)
    return _ppf(dist, full, _uniforms(rng, 1, 1)[:, 0])[0]


def _grid_key(value: Any) -> str:
    """When W&B's grid counts two values as one (its ``yaml_hash``: 1 == 1.0, '1' != 1)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return yaml.dump(value, default_flow_style=True, sort_keys=True)


def _grid_axis(name: str, dist: str, s: Mapping[str, Any]) -> list[Any]:
    if dist not in _GRID_OK:
        raise ValueError(f"grid search takes value, values, int_uniform or q_uniform "
                         f"parameters; {name!r} has distribution {dist!r}")
    if dist == "int_uniform":
        values = list(range(s["min"], s["max"] + 1))
    elif dist == "q_uniform":
        values = np.arange(s["min"], s["max"], s["q"]).tolist()
    else:
        values = list(s["values"])
    unique: dict[str, Any] = {}
    for value in values:  # first position, last spelling, as W&B's dedup by hash
        unique[_grid_key(value)] = value
    return list(unique.values())


def expand_sweep(config: Mapping[str, Any], count: int | None = None, seed: int = 0
                 ) -> list[dict[str, Any]]:
    """Parameter dicts (keys sorted by name) of a sweep: the grid, or ``count`` random draws.

    ``count`` defaults to ``run_cap`` (grid: no cap; random: 20 when unset).
    """
    method = config.get("method")
    if method not in METHODS:
        raise ValueError(f"local sweeps support method grid or random; got {method!r} (run "
                         "bayes sweeps with `wandb sweep` + `wandb agent`)")
    params = config.get("parameters") or {}
    if not isinstance(params, Mapping) or not params:
        raise ValueError("sweep config has no parameters")
    count = config.get("run_cap") if count is None else count
    if count is not None:
        check_int(count, "count", 1)
    specs = {name: parameter_spec(name, params[name]) for name in sorted(params)}
    if method == "random":
        u = _uniforms(random.Random(seed), DEFAULT_RANDOM_COUNT if count is None else count,
                      len(specs))
        cols = [_ppf(dist, s, u[:, j]) for j, (dist, s) in enumerate(specs.values())]
        return [dict(zip(specs, row)) for row in zip(*cols)]
    axes = {name: _grid_axis(name, dist, s) for name, (dist, s) in specs.items()
            if dist != "constant"}
    runs = [{name: combo[name] if name in combo else s["value"]
             for name, (_, s) in specs.items()}
            for combo in (dict(zip(axes, values)) for values in itertools.product(*axes.values()))]
    return runs if count is None else runs[:count]


def to_argv(params: Mapping[str, Any], macro: str = "${args}") -> list[str]:
    """The flags ``wandb agent`` passes: ``--name=value`` (``${args}``), or with booleans as
    bare ``--name`` / left out (``${args_no_boolean_flags}``)."""
    if macro == "${args}":
        return [f"--{name}={value}" for name, value in params.items()]
    return [f"--{name}" if value is True else f"--{name}={value}"
            for name, value in params.items() if value is not False]

