"""In-training metric hooks built from a measure of image sets (training/metrics.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from galforge.errors import ConfigError
from galforge.training.metrics import sample_metric_hooks


class _Trainer:
    """What the hooks read of a trainer: its data, normaliser, step and samples."""

    def __init__(self):
        self.data = torch.arange(5 * 4, dtype=torch.float32).reshape(5, 1, 2, 2)
        self.normalizer = None
        self.step = 10
        self.sampled = []

    def sample_physical(self, n):
        self.sampled.append(n)
        return np.full((n, 1, 2, 2), float(self.step), np.float32)


def test_hooks_share_one_computation_per_step_on_the_first_training_images():
    calls = {"real": [], "fake": 0}

    def measure(real):
        calls["real"].append(real.copy())

        def of(fake):
            calls["fake"] += 1
            return {"a": float(fake.mean() - real.mean()), "b": float(len(fake))}

        return of

    hooks = sample_metric_hooks(measure, ("a", "b"), every=5, n=3, keep="b")
    assert [h.name for h in hooks] == ["a", "b"] and [h.keep for h in hooks] == [False, True]
    trainer = _Trainer()
    assert hooks[0].fn(trainer) == pytest.approx(10.0 - 5.5)
    assert hooks[1].fn(trainer) == 3.0
    assert calls["fake"] == 1 and trainer.sampled == [3]  # one computation for both hooks
    np.testing.assert_array_equal(calls["real"][0], trainer.data[:3].numpy())
    trainer.step = 15
    assert hooks[0].fn(trainer) == pytest.approx(15.0 - 5.5)
    assert calls["fake"] == 2 and len(calls["real"]) == 1  # the real set is measured once


def test_hooks_refuse_a_keep_name_they_do_not_make_and_too_few_images():
    with pytest.raises(ConfigError, match="--keep-best 'c': choose one of a, b"):
        sample_metric_hooks(lambda real: None, ("a", "b"), every=5, n=3, keep="c")
    with pytest.raises(ConfigError, match="--metric-n 1"):
        sample_metric_hooks(lambda real: None, ("a", "b"), every=5, n=1, keep="a")
