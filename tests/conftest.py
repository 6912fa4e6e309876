"""Shared test fixtures."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Tests use tiny tensors: one intra-op thread (on a loaded 2-core machine two threads stall
    on OpenMP barriers), restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def killed_grid():
    """``killed_grid(configs, out, after=1, **run_grid_kwargs)``: a grid stopped like Ctrl-C
    (a ``KeyboardInterrupt`` raised once ``after`` chunks were stored, between two chunks).
    Returns the records stored by then, checked to be some but not all of ``configs``; the
    caller then reruns ``run_grid`` on ``out`` to test the resume."""
    from gradsurrogate.xor import read_results, run_grid

    def run(configs, out, after=1, **kwargs):
        stored = []

        def stop(records):
            stored.append(len(records))
            if len(stored) == after:
                raise KeyboardInterrupt  # killed between two chunks

        with pytest.raises(KeyboardInterrupt):
            run_grid(configs, out, on_chunk=stop, **kwargs)
        first = read_results(out)
        assert 0 < len(first) == sum(stored) < len(configs)
        return first

    return run
