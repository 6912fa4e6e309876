"""Record biotorch's feedback matrices and DFA gradients into ``biotorch_feedback.json``.

Run with a Python that has ``biotorch`` (0.0.16) and torch installed::

    python tests/data/make_biotorch_fixture.py

Every float is stored with ``float.hex`` so the test compares bitwise. For each mode/init the
layer is built right after ``torch.manual_seed(seed)``; the test replays the same draws from a
``torch.Generator`` seeded alike (biotorch draws: nn's own init of W and b, then W and the
backward matrix again — plus both biases for kaiming — and, for brsf, one more matrix at
forward).
"""

from __future__ import annotations

import json
import math
import pathlib

import torch
from biotorch.layers import fa_constructor
from biotorch.module.biomodule import BioModule


def hexes(t: torch.Tensor) -> dict:
    return {"shape": list(t.shape), "hex": [float(v).hex() for v in t.detach().flatten().tolist()]}


def layer_case(kind: str, mode: str, init: str, seed: int) -> dict:
    config = {"type": mode, "options": {"constrain_weights": False, "gradient_clip": False,
                                        "init": init}}
    torch.manual_seed(seed)
    if kind == "linear":
        layer = fa_constructor.Linear(5, 3, True, config)
        x = torch.linspace(-1, 1, 4 * 5).reshape(4, 5).requires_grad_()
    else:
        layer = fa_constructor.Conv2d(2, 3, 2, 1, 0, 1, 1, True, "zeros", config)
        x = torch.linspace(-1, 1, 2 * 2 * 4 * 4).reshape(2, 2, 4, 4).requires_grad_()
    y = layer(x)
    g = torch.cos(torch.arange(y.numel(), dtype=torch.float32)).reshape(y.shape)
    y.backward(g)
    wb = layer.weight_backward.detach()
    used = wb.abs() * torch.sign(layer.weight.detach()) if mode == "frsf" else wb
    return {"kind": kind, "mode": mode, "init": init, "seed": seed,
            "weight": hexes(layer.weight), "matrix": hexes(used), "grad_input": hexes(x.grad),
            "grad_weight": hexes(layer.weight.grad)}


def dfa_case(init: str, seed: int) -> dict:
    torch.manual_seed(seed)
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 6),
                              torch.nn.Tanh(), torch.nn.Linear(6, 3))
    config = {"type": "dfa", "options": {"constrain_weights": False, "gradient_clip": False,
                                         "init": init}}
    model = BioModule(mlp, mode="dfa", output_dim=3, layer_config=config)
    x = torch.sin(torch.arange(7 * 4, dtype=torch.float32)).reshape(7, 4)
    targets = torch.tensor([0, 1, 2, 0, 1, 2, 1])
    loss_fn = torch.nn.CrossEntropyLoss()
    out = model(x, targets=targets, loss_function=loss_fn)
    loss_fn(out, targets).backward()
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    return {"init": init, "seed": seed, "x": hexes(x), "targets": targets.tolist(),
            "layers": [{"weight": hexes(m.weight), "bias": hexes(m.bias),
                        "feedback": hexes(m.weight_backward), "grad_weight": hexes(m.weight.grad),
                        "grad_bias": hexes(m.bias.grad)} for m in linears]}


def main() -> None:
    torch.set_num_threads(1)  # as the tests run: conv weight gradients sum in thread order
    cases = []
    for kind in ("linear", "conv2d"):
        for mode in ("fa", "usf", "frsf", "brsf"):
            for init in ("kaiming", "xavier"):
                if mode == "brsf" and init == "kaiming":
                    continue  # biotorch 0.0.16 raises NameError ('init' is not defined) here
                cases.append(layer_case(kind, mode, init, seed=7))
    data = {"biotorch": "0.0.16", "torch": torch.__version__.split("+")[0], "layers": cases,
            "dfa": [dfa_case("kaiming", 11), dfa_case("xavier", 12)]}
    assert all(math.isfinite(float.fromhex(v)) for c in cases for v in c["matrix"]["hex"])
    out = pathlib.Path(__file__).with_name("biotorch_feedback.json")
    out.write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    main()
