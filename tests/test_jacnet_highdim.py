"""``gradsurrogate jacnet 100d`` at a tiny size: minibatch training, per-epoch lines in
``history.jsonl``, checkpoints, and resume after an interruption mid-run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from matplotlib.figure import Figure

from gradsurrogate.jacnet import Config100D, experiment, report
from gradsurrogate.jacnet.cli import main
from gradsurrogate.jacnet.highdim import Target100D
from gradsurrogate.jacnet.training import Trainer

TINY = ["100d", "--dim", "4", "--n-train", "24", "--n-test", "8", "--hidden", "8",
        "--epochs", "3", "--batch-size", "10", "--seeds", "1", "--n-inverse", "3",
        "--wandb", "disabled"]


def lines(path: Path) -> list[dict]:
    return [json.loads(s) for s in path.read_text().splitlines() if s.strip()]


def _metrics(rec: dict) -> dict:
    """A record without its wall times."""
    return {**rec, "models": {n: {k: v for k, v in m.items() if k != "train_time"}
                              for n, m in rec["models"].items()}}


@pytest.fixture
def epochs_run(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts Trainer.epoch calls; blank report figures (drawing costs seconds)."""
    calls: list[int] = []
    real = Trainer.epoch

    def spy(self):
        calls.append(len(self.result.epochs))
        return real(self)

    monkeypatch.setattr(Trainer, "epoch", spy)
    monkeypatch.setattr(report, "figure_100d", lambda history: Figure(figsize=(1, 1)))
    return calls


def test_target_is_invertible_with_a_spd_jacobian() -> None:
    tgt = Target100D(6)
    x = torch.rand(5, 6, dtype=torch.float64) * 2 - 1
    assert torch.allclose(tgt.inverse(tgt(x)), x, atol=1e-12)
    J = torch.autograd.functional.jacobian(lambda z: tgt(z[None])[0], x[0])
    assert torch.allclose(J, J.T, atol=1e-12) and torch.linalg.eigvalsh(J).min() > 0


def test_100d_cli_trains_in_minibatches_logs_epochs_and_resumes(tmp_path: Path,
                                                              epochs_run: list[int]) -> None:
    out = tmp_path / "out"
    assert main([*TINY, "--out", str(out)]) == 0
    (rec,) = lines(out / "results.jsonl")
    assert rec["experiment"] == "100d" and rec["diverged"] is False
    assert rec["config"] == {**Config100D().__dict__, "dim": 4, "n_train": 24, "n_test": 8,
                             "hidden": 8, "epochs": 3, "batch_size": 10, "n_inverse": 3,
                             "seed": 0, "models": ["invertible", "none"]}
    inv, free = rec["models"]["invertible"], rec["models"]["none"]
    assert inv["epochs_done"] == 3 and inv["steps_done"] == 9  # ceil(24 / 10) per epoch
    assert inv["min_sym_eig"] >= 1e-4 * (1 - 1e-5)  # J = A Aᵀ + 1e-4 I
    assert inv["inverse_exact"] is True and free["inverse_exact"] is False
    assert inv["round_trip_max_refined"] <= inv["round_trip_max"]  # refining never hurts
    hist = lines(out / "history.jsonl")
    assert sorted((h["model"], h["epoch"]) for h in hist) == \
        [(m, e) for m in ("invertible", "none") for e in range(3)]
    assert all(h["steps"] == 3 and h["test_mae"] > 0 and h["run"] == rec["run_id"] for h in hist)
    assert not (out / "checkpoints" / f"{rec['run_id']}.pt").exists()
    text = (out / "report.md").read_text()
    assert "## 100-d (gauss-legendre, seeds 0..0)" in text and "| invertible |" in text
    assert len(epochs_run) == 6
    assert main([*TINY, "--out", str(out)]) == 0 and len(epochs_run) == 6  # nothing retrained

    # an interruption after epoch 2 of 3: the rerun trains epoch 3 only, to the same result
    def killed_after_epoch_1(cfg, on_epoch=None, checkpoint=None):
        def hook(model, summary):
            on_epoch(model, summary)
            if summary["epoch"] == 1 and model == "none":
                raise KeyboardInterrupt
        return real(cfg, hook, checkpoint)

    real = experiment.run_100d
    part = tmp_path / "part"
    experiment.run_100d = killed_after_epoch_1
    try:
        with pytest.raises(KeyboardInterrupt):
            main([*TINY, "--out", str(part)])
    finally:
        experiment.run_100d = real
    assert not (part / "results.jsonl").exists()
    assert len(lines(part / "history.jsonl")) == 4
    ckpt = part / "checkpoints" / f"{rec['run_id']}.pt"
    assert ckpt.exists()
    before = len(epochs_run)
    assert main([*TINY, "--out", str(part)]) == 0
    assert epochs_run[before:] == [2, 2]  # one epoch per model, the third
    (resumed,) = lines(part / "results.jsonl")
    assert _metrics(resumed) == _metrics(rec)
    assert not ckpt.exists() and len(lines(part / "history.jsonl")) == 6 + 4  # 4 rewritten
