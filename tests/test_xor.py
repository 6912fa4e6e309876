"""XOR benchmark: data, Bayes accuracy, training, vectorised == sequential, divergence."""

import math

import pytest
import torch

from gradsurrogate.xor import XorConfig, bayes_accuracy, make_xor, run_ensemble, run_xor
from gradsurrogate.xor.data import derive_seed, generator, make_xor_split
from gradsurrogate.xor.model import EnsembleXorMLP, XorMLP, init_params

SHORT = dict(steps=40, eval_every=10, diag_every=20, n_train=256, n_test=512, batch_size=32)



def test_data_statistics_match_the_generative_model():
    sigma, noise, n = 0.5, 0.1, 40_000
    data = make_xor(n, sigma, noise, torch.Generator().manual_seed(3), dtype=torch.float64)
    x, y, yc = data.x, data.y, data.y_clean
    assert x.shape == (n, 2) and y.dtype == torch.int64
    # The four blobs are equally likely; class balance 1/2.
    assert abs(yc.double().mean().item() - 0.5) < 0.01
    # Blob centre = sign pattern closest to the point; per-blob mean and std.
    centre = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]], dtype=x.dtype)
    blob = torch.cdist(x, centre).argmin(1)
    for k in range(4):
        pts = x[(blob == k) & (torch.cdist(x, centre)[:, k] < 3 * sigma)]
        assert torch.allclose(pts.mean(0), centre[k], atol=0.03)
    # Flipped-label fraction and the Bayes rule's empirical accuracy.
    assert abs((y != yc).double().mean().item() - noise) < 0.006
    rule = (x[:, 0] * x[:, 1] < 0).long()
    assert abs((rule == y).double().mean().item() - bayes_accuracy(sigma, noise)) < 0.006
    # Marginal std of a coordinate: sqrt(1 + sigma²).
    assert abs(x[:, 0].std().item() - math.sqrt(1 + sigma**2)) < 0.01


def test_bayes_accuracy_closed_form():
    q = 0.5 * (1 + math.erf(1 / (0.5 * math.sqrt(2))))
    a = q * q + (1 - q) ** 2
    assert bayes_accuracy(0.5, 0.0) == pytest.approx(a)
    assert bayes_accuracy(0.5, 0.05) == pytest.approx(0.95 * a + 0.05 * (1 - a))
    assert bayes_accuracy(1e-3, 0.2) == pytest.approx(0.8)
    assert bayes_accuracy(100.0, 0.0) == pytest.approx(0.5, abs=1e-4)


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"sigma": 0.0}, "sigma must be a finite number in (0, 3.4e+38]; got 0.0"),
    ({"sigma": float("nan")}, "sigma must be a finite number in (0, 3.4e+38]; got nan"),
    ({"label_noise": 0.5}, "label_noise must be a finite number in [0, 0.5); got 0.5"),
    ({"optimizer": "rmsprop"}, "unknown optimizer 'rmsprop'; accepted: adam, sgd"),
    ({"depth": 0}, "depth must be an integer in [1, 1000]; got 0"),
    ({"lr": -1.0}, "lr must be a finite number in (0, 3.4e+38]; got -1.0"),
    ({"lr": float("inf")}, "lr must be a finite number in (0, 3.4e+38]; got inf"),
    ({"lr": 1e300}, "lr must be a finite number in (0, 3.4e+38]; got 1e+300"),
    ({"steps": 2.5}, "steps must be an integer in [1, 1000000000]; got 2.5"),
    ({"spec": "grad_input=learned"}, "grad_input=learned is not accepted"),
    ({"spec": "grad_input=flop"}, "unknown backward mode 'flop'"),
])
def test_config_rejects_bad_values(kwargs, fragment):
    with pytest.raises(ValueError, match=None) as err:
        XorConfig(**kwargs)
    assert fragment in str(err.value)


def test_from_dict_rejects_conflicting_keys():
    c = XorConfig(spec="grad_input=sign")
    assert XorConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match=r"conflicting XOR config: grad_input='flip:0.3' but spec"):
        XorConfig.from_dict({**c.to_dict(), "grad_input": "flip:0.3"})
    with pytest.raises(ValueError, match=r"unknown XOR config key\(s\) \['depht'\]"):
        XorConfig.from_dict({"depht": 3})
    with pytest.raises(ValueError, match="must be a mapping"):
        XorConfig.from_dict(42)


def test_seeds_are_separate_streams_and_reproducible():
    seeds = [derive_seed(s, name) for s in (0, 1) for name in ("train", "test", "init")]
    assert len(set(seeds)) == len(seeds)  # pairwise distinct streams
    a, ta = make_xor_split(64, 32, 0.5, 0.05, seed=7)
    _, tb = make_xor_split(128, 32, 0.5, 0.05, seed=7)
    assert torch.equal(ta.x, tb.x) and torch.equal(ta.y, tb.y)  # test set independent of n_train
    assert not torch.equal(a.x, make_xor_split(64, 32, 0.5, 0.05, seed=8)[0].x)
    c = XorConfig(seed=4)
    assert (c.data_seed, c.init_seed, c.noise_seed) == (4, 4, 4)
    assert XorConfig(seed=4, noise_seed=9).run_id != c.run_id
    r1, c1 = run_xor(XorConfig(spec="grad_input=flip:0.3", **SHORT))
    r2, c2 = run_xor(XorConfig(spec="grad_input=flip:0.3", **SHORT))
    assert c1["test_loss"] == c2["test_loss"] and r1["run_id"] == r2["run_id"]
    _, c3 = run_xor(XorConfig(spec="grad_input=flip:0.3", noise_seed=1, **SHORT))
    assert c3["test_loss"] != c1["test_loss"]


def test_model_shapes_follow_dtype_and_match_ensemble_member():
    params = init_params(3, 8, generator(0, "init"), dtype=torch.float64)
    model = XorMLP(params, "exact")
    x = torch.randn(5, 2, dtype=torch.float64)
    assert model(x).shape == (5, 2) and model(x).dtype == torch.float64
    assert [n for n, _ in model.named_parameters()][:2] == ["hidden.0.weight", "hidden.0.bias"]
    ens = EnsembleXorMLP([params, params], ["exact", "weight=sign"])
    out = ens(x)
    assert out.shape == (2, 5, 2)
    assert torch.allclose(out[0], model(x)) and torch.allclose(out[1], model(x))


def test_short_exact_run_reaches_near_bayes_accuracy():
    record, curves = run_xor(XorConfig(steps=150, eval_every=25, diag_every=50, seed=1))
    bayes = record["bayes_acc"]
    assert record["final_test_acc"] > bayes - 0.02
    assert record["steps_to_90pct_bayes"] is not None and record["steps_to_90pct_bayes"] <= 150
    assert curves["test_acc"][0] < 0.8  # it learned it
    assert not record["diverged"]
    diag = record["grad_diagnostics"]["hidden.1/grad_weight"]
    assert diag["cosine"] == pytest.approx(1.0, abs=1e-5) and diag["norm_ratio"] == \
        pytest.approx(1.0, abs=1e-5)


PERTURBED = ["exact", "grad_input=flip:0.3", "grad_weight=flip:0.45,weight=flip:0.1",
             "weight=sign,input=blend:0.5", "grad_weight=sign", "input=flip:1",
             "grad_input=blend:0.25", "grad_weight=none"]


def test_vectorised_equals_sequential_for_perturbed_configs():
    configs = [XorConfig(spec=s, seed=k % 3, lr=0.01 * (1 + k % 2), depth=3, **SHORT)
               for k, s in enumerate(PERTURBED)]
    vec = run_ensemble(configs)
    for config, (rv, cv) in zip(configs, vec):
        rs, cs = run_xor(config)
        assert rv["run_id"] == rs["run_id"] == config.run_id
        assert cv["step"] == cs["step"]
        for key in ("train_loss", "test_loss"):
            assert cv[key] == pytest.approx(cs[key], rel=1e-5, abs=1e-6), (config.spec, key)
        assert rv["final_test_acc"] == pytest.approx(rs["final_test_acc"], abs=1e-6)
        for layer, d in rs["grad_diagnostics"].items():
            for metric, value in d.items():
                assert rv["grad_diagnostics"][layer][metric] == pytest.approx(
                    value, rel=1e-5, abs=1e-6), (config.spec, layer, metric)
        assert cv["boundary"] == pytest.approx(cs["boundary"], abs=1e-3)


def test_random_feedback_group_and_mixing_error():
    configs = [XorConfig(spec="weight=random", seed=s, **SHORT) for s in range(2)]
    vec = run_ensemble(configs)
    for config, (rv, _) in zip(configs, vec):
        assert rv["final_test_loss"] == pytest.approx(run_xor(config)[0]["final_test_loss"],
                                                      rel=1e-4)
    with pytest.raises(ValueError, match="must share"):
        run_ensemble([configs[0], XorConfig(**SHORT)])


def test_divergence_stops_the_run_and_spares_the_other_members():
    bad = XorConfig(optimizer="sgd", lr=100.0, depth=4, **SHORT)
    good = bad.replace(lr=0.05)
    rec, curves = run_xor(bad)
    assert rec["diverged"] and rec["diverged_step"] == curves["step"][-1] < bad.steps
    assert rec["final_test_loss"] is None and 0.0 <= rec["final_test_acc"] <= 1.0
    (rb, cb), (rg, cg) = run_ensemble([bad, good])
    assert rb["diverged"] and rb["diverged_step"] == rec["diverged_step"]
    assert cb["step"] == curves["step"] and rb["final_test_acc"] == rec["final_test_acc"]
    seq_good = run_xor(good)[1]
    assert not rg["diverged"]
    assert cg["test_loss"] == pytest.approx(seq_good["test_loss"], rel=1e-4)


def test_instability_measure():
    from gradsurrogate.xor.record import max_rise

    assert max_rise([3.0, 1.0, 2.0, 0.5, None, 1.5]) == 1.0
    assert max_rise([3.0, 2.0, 1.0]) == 0.0 and max_rise([None]) is None


def test_an_overflow_on_the_last_update_counts_as_divergence():
    """The loss before the only update is finite; the update overflows the logits, so the run
    diverged at step 1 (= steps), in the sequential and the vectorised runner alike."""

    c = XorConfig(steps=1, optimizer="sgd", lr=3e38, width=4, n_train=16, n_test=16,
                  batch_size=0, eval_every=1, diag_every=0)
    rec, _ = run_xor(c)
    (vec, _), (calm, _) = run_ensemble([c, c.replace(lr=0.01)])
    assert (rec["diverged"], rec["diverged_step"]) == (vec["diverged"], vec["diverged_step"]) \
        == (True, 1)
    assert calm["diverged"] is False and calm["diverged_step"] is None
