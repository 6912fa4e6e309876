"""Public API: each ``__all__`` lists names that exist, once; the top level re-exports them."""

import importlib

import pytest

import gradsurrogate as gs

CORE = ["gradsurrogate.backward", "gradsurrogate.backward.modes", "gradsurrogate.backward.spec",
        "gradsurrogate.backward.draws", "gradsurrogate.backward.stack",
        "gradsurrogate.backward.feedback", "gradsurrogate.functional", "gradsurrogate.layers",
        "gradsurrogate.convert", "gradsurrogate.attention", "gradsurrogate.dfa",
        "gradsurrogate.diagnostics",
        "gradsurrogate.ensemble", "gradsurrogate.registry"]


@pytest.mark.parametrize("name", ["gradsurrogate", *CORE])
def test_all_names_exist_once(name):
    module = importlib.import_module(name)
    names = module.__all__
    assert len(names) == len(set(names)), name
    missing = [n for n in names if not hasattr(module, n)]
    assert missing == [], f"{name}.__all__ names undefined {missing}"


def test_top_level_reexports_are_the_subpackage_objects():
    """Every top-level name is the very object of the one core module that exports it."""
    owners: dict[str, list[str]] = {}
    for name in CORE[1:]:  # the modules, not the backward package that gathers them
        for n in importlib.import_module(name).__all__:
            owners.setdefault(n, []).append(name)
    for n in gs.__all__:
        if n == "__version__":
            continue
        assert len(owners.get(n, [])) == 1, (n, owners.get(n))
        assert getattr(gs, n) is getattr(importlib.import_module(owners[n][0]), n)
