"""Surrogate layer state: feedback and generator state in state_dict (exact resume),
re-conversion, exact_backward, the global RNG, deepcopy, and torch.compile fullgraph."""

import copy

import pytest
import torch
from torch import nn

import gradsurrogate as gs
from gradsurrogate.backward import MODES, FeedbackMode
from gradsurrogate.layers import _state_generator


def _mlp(spec, generator=0, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Conv1d(1, 2, 3, padding=1),
                          nn.Flatten(), nn.Linear(16, 3))

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = model

        def forward(self, x):
            h = self.body[1](self.body[0](x)).unsqueeze(1)
            return self.body[4](self.body[3](self.body[2](h)))

    return gs.convert(Wrap(), spec, generator=generator)


def _step(model, opt, x, y):
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    opt.step()
    return grads


@pytest.mark.parametrize("spec", ["weight=random", "weight=random,grad_weight=flip:0.2",
                                  "grad_input=flip:0.3"])
def test_resume_from_state_dict_gives_bitwise_equal_next_gradients(spec):
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)
    model = _mlp(spec)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(3):
        _step(model, opt, x, y)
    saved = copy.deepcopy((model.state_dict(), opt.state_dict()))
    if "random" in spec:
        assert "body.0.feedback" in saved[0]
    if "flip" in spec:
        assert "body.0.generator_state" in saved[0]
    want = [_step(model, opt, x, y) for _ in range(2)]
    resumed = _mlp(spec, generator=123, seed=9)  # other weights, feedback and noise stream
    opt2 = torch.optim.SGD(resumed.parameters(), lr=0.1, momentum=0.9)
    resumed.load_state_dict(saved[0])
    opt2.load_state_dict(saved[1])
    got = [_step(resumed, opt2, x, y) for _ in range(2)]
    assert all(torch.equal(a, b) for w, h in zip(want, got) for a, b in zip(w, h))


def test_plain_checkpoint_loads_and_fa_feedback_is_kept():
    torch.manual_seed(0)
    plain = nn.Linear(4, 3)
    layer = gs.convert(nn.Linear(4, 3), "weight=random", generator=0)
    fb = layer.feedback.clone()
    layer.load_state_dict(plain.state_dict())  # strict: a torch checkpoint has no feedback
    assert torch.equal(layer.weight, plain.weight) and torch.equal(layer.feedback, fb)
    exact = gs.SurrogateLinear(4, 3)  # no feedback yet: loading one sets it
    exact.load_state_dict(layer.state_dict())
    exact.spec = "weight=random"  # a loaded state is kept when its mode is set afterwards
    assert torch.equal(exact.feedback, fb)


def test_reconversion_redraws_and_exact_backward_does_not():
    model = nn.Sequential(nn.Linear(5, 4))
    gs.convert(model, "weight=random", generator=0)
    fb0 = model[0].feedback.clone()
    gs.convert(model, "weight=random")  # same spec, no generator: kept
    assert torch.equal(model[0].feedback, fb0)
    gs.convert(model, "weight=random", generator=1)  # new generator: redrawn from it
    fb1 = model[0].feedback.clone()
    assert not torch.equal(fb1, fb0)
    sub = _state_generator(torch.Generator().manual_seed(1))  # a stream seeded by one draw
    assert torch.equal(fb1, gs.RandomFeedback().draw(model[0].weight, sub))
    gs.convert(model, "weight=random:2")  # new weight mode: redrawn
    assert not torch.equal(model[0].feedback, fb1)
    fb2 = model[0].feedback.clone()
    with gs.exact_backward(model):
        assert model[0].spec.is_exact and torch.equal(model[0].feedback, fb2)
    assert str(model[0].spec) == "weight=random:2" and torch.equal(model[0].feedback, fb2)
    gs.convert(model, "grad_input=sign")  # the state goes with its mode
    assert model[0].feedback is None and "0.feedback" not in model.state_dict()


def test_no_global_rng_draw_when_a_generator_is_given():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.Linear(4, 2))
    x = torch.randn(3, 5)
    state = torch.get_rng_state()
    gs.convert(model, "weight=random,grad_input=flip:0.5,input=flip:0.2", generator=0)
    model(x).sum().backward()
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.parametrize("mode", ["random", "fa", "frsf"])
def test_feedback_is_not_the_weight_when_seeds_agree(mode):
    """``torch.manual_seed(s)`` + ``generator=s``: the weights and the feedback state used to
    come from the same stream (``B = W``: feedback alignment was backprop) for one layer and for
    every bias-free conv of a converted CNN. The state is drawn from a derived stream."""
    torch.manual_seed(0)
    layer = gs.SurrogateLinear(5, 3, spec=f"weight={mode}", generator=0)
    torch.manual_seed(0)
    cnn = gs.convert(nn.Sequential(nn.Conv2d(2, 3, 3, bias=False), nn.Conv2d(3, 3, 3, bias=False)),
                     f"weight={mode}", generator=0)
    for m in (layer, cnn[0], cnn[1]):
        assert not torch.allclose(m.feedback.abs(), m.weight.detach().abs())
    assert not torch.equal(cnn[0].feedback[:, :2].abs(), cnn[1].feedback[:, :2].abs())


def test_deepcopy_forks_the_generator():
    """A deepcopy draws different flip noise from the original (deterministically); the
    original's stream is untouched; layers sharing a generator still share the fork."""
    spec = "grad_input=flip:0.5"
    x = torch.ones(64, 6, requires_grad=True)

    def grads(m):
        x.grad = None
        m(x).sum().backward()
        return x.grad.clone()

    a, twin = _mlp(spec, generator=0), _mlp(spec, generator=0)
    b = copy.deepcopy(a)
    assert b.body[0].generator is b.body[4].generator is not a.body[0].generator
    ga, gb, gt = grads(a), grads(b), grads(twin)
    assert not torch.equal(ga, gb)
    assert torch.equal(ga, gt)  # the original's noise is as if it had never been copied
    # deterministic: copies of equal originals draw equal noise
    assert torch.equal(grads(copy.deepcopy(_mlp(spec))), grads(copy.deepcopy(_mlp(spec))))


def _deterministic_specs():
    """Every deterministic mode at least once, few layers (each traced Function costs time)."""
    weight = ["sign"] + [n for n, c in MODES.items()
                         if issubclass(c, FeedbackMode) and not c.random]
    other = ["grad_input=blend:0.5", "grad_weight=sign:rescale", "input=sign", "grad_input=sign",
             "grad_weight=none", "input=blend:0.3"]
    specs = [f"weight={w},{other[k % len(other)]}" for k, w in enumerate(weight)]
    return ["exact", "grad_input=none", *specs]


def test_compile_fullgraph_for_every_deterministic_mode():
    """``torch.compile(fullgraph=True, backend="eager")`` on a model whose layers carry every
    deterministic mode: dynamo must trace each surrogate Function's forward and backward into
    one graph (the check that failed with "Unsupported custom jvp"); the "eager" backend then
    runs that graph without lowering, which keeps the test fast. Gradients equal eager mode's
    bitwise. Flip compiles too with the global RNG (generator=None); with a torch.Generator
    dynamo cannot put the generator in the graph (a graph break per layer)."""
    specs = _deterministic_specs()
    torch.manual_seed(0)
    layers = [nn.Linear(6, 6) for _ in specs]
    pick = {str(k): s for k, s in enumerate(specs)}
    eager = gs.convert(nn.Sequential(*layers), lambda name, m: pick[name], generator=0)
    compiled = copy.deepcopy(eager)
    x = torch.randn(4, 6)
    g0 = torch.autograd.grad(eager(x).square().sum(), list(eager.parameters()),
                             allow_unused=True)  # grad_input=none cuts the layers before it
    torch._dynamo.reset()
    fn = torch.compile(compiled, fullgraph=True, backend="eager")
    g1 = torch.autograd.grad(fn(x).square().sum(), list(compiled.parameters()),
                             allow_unused=True)
    assert all((a is None) == (b is None) for a, b in zip(g0, g1))
    assert all(torch.equal(a, b) for a, b in zip(g0, g1) if a is not None)
    flip = gs.convert(nn.Sequential(nn.Linear(6, 6)), "grad_input=flip:0.5")
    torch._dynamo.reset()
    torch.compile(flip, fullgraph=True, backend="eager")(x).sum().backward()
    assert flip[0].weight.grad is not None
