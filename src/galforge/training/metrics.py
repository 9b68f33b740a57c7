"""In-training metrics: :class:`MetricHook` and hooks that compare samples with training images.

A hook's ``fn(trainer)`` runs every ``every`` steps on the main process; its value is logged as
``metric_<name>`` and, when it improves, keeps the checkpoint in ``RUN/checkpoints/best``.
:func:`sample_metric_hooks` builds hooks from any measure of image sets (a function of the
real images returning a function of the generated ones), so the measures themselves (e.g. the
Fréchet galaxy distance of :mod:`galforge.evaluation`) stay outside training: whoever
starts the run (the ``train`` command) passes them in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from galforge.errors import ConfigError
from galforge.options import check_choices

if TYPE_CHECKING:
    from galforge.training.trainer import Trainer


@dataclass
class MetricHook:
    """An in-training metric: ``fn(trainer) -> float`` every ``every`` steps.

    Logged as ``metric_<name>``; when it improves (``mode``: ``min`` or ``max``) the
    checkpoint is kept in ``RUN/checkpoints/best`` with ``best.json`` beside it. For example
    a Fréchet distance of ``trainer.sample_physical(n)`` against held-out images.
    """

    name: str
    fn: Callable[[Trainer], float]
    every: int
    mode: Literal["min", "max"] = "min"
    keep: bool = True  # keep RUN/checkpoints/best when it improves (else log only)

    def __post_init__(self):
        if int(self.every) < 1:
            raise ConfigError(f"metric {self.name!r}: every={self.every} must be >= 1")
        check_choices(self, where=f"metric {self.name!r}")

    def better(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        return value < best if self.mode == "min" else value > best


def training_images(trainer: Trainer, n: int) -> np.ndarray:
    """The first ``n`` training images in physical units (float32; the largest images of a
    recipe trained on several sizes)."""
    data = trainer.data
    if isinstance(data, dict):
        data = data[max(data)]
    real = np.asarray(
        data[: int(n)].float().cpu().numpy() if hasattr(data, "cpu") else data[: int(n)],
        dtype=np.float32,
    )
    if trainer.normalizer is not None:
        real = np.asarray(trainer.normalizer.inverse(real), dtype=np.float32)
    return real


def sample_metric_hooks(
    measure: Callable[[np.ndarray], Callable[[np.ndarray], dict[str, float]]],
    names: Sequence[str],
    every: int,
    n: int,
    keep: str,
) -> list[MetricHook]:
    """One :class:`MetricHook` per name in ``names`` (each smaller is better), every ``every``
    steps, comparing ``n`` samples of the export generator with the first ``n`` training images
    (physical units).

    ``measure(real)`` is called once, on the first metric step, and returns the function that
    maps the generated images to ``{name: value}``; it runs once per metric step for all the
    hooks.  ``keep`` names the hook whose best value keeps ``checkpoints/best``.
    """
    names = tuple(names)
    if keep not in names:
        raise ConfigError(f"--keep-best {keep!r}: choose one of {', '.join(names)}")
    if int(n) < 2:
        raise ConfigError(f"--metric-n {n}: the metrics need at least 2 images")
    state: dict = {}

    def compute(trainer: Trainer) -> dict[str, float]:
        if state.get("step") != trainer.step:
            if "measure" not in state:
                real = training_images(trainer, n)
                state["measure"], state["n"] = measure(real), len(real)
            fake = trainer.sample_physical(state["n"])
            state.update(step=trainer.step, values=state["measure"](fake))
        return state["values"]

    return [
        MetricHook(
            name, lambda t, name=name: compute(t)[name], int(every), "min", keep=name == keep
        )
        for name in names
    ]
