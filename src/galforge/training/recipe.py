"""The recipe interface: what a model brings to the generic training loop.

A :class:`Recipe` owns the networks, their optimisers, the losses and the update rule of
one model family (how many D steps per G step, regularisation cadence, schedules such as
dropout removal).  :class:`galforge.training.trainer.Trainer` owns everything else: the
batches, EMA, learning-rate schedules, sample grids, logs, checkpoints, exact resume,
device, mixed precision and data parallelism.

A :class:`BatchSource` turns a step number into a batch.  It must be a pure function of
``(seed, step)`` so that a resumed run sees exactly the batches an uninterrupted run would
have seen, without any saved data-loader state.  :class:`StampBatches` is the default
(shuffled epochs over a stack of stamps, with random flips/rotations); a recipe can return
its own from :meth:`Recipe.make_batches` (e.g. random crops of varying size from a field).
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from galforge.errors import ConfigError, TrainingError


def derive_seed(seed: int, *keys: int | str) -> int:
    """A 63-bit seed derived from ``seed`` and any number of keys (step, rank, stream name).

    Different keys give independent streams; the same keys always give the same seed.
    """
    ints = [int(seed) & 0xFFFFFFFFFFFFFFFF]
    for k in keys:
        if isinstance(k, str):
            ints.extend(k.encode())
        else:
            ints.append(int(k) & 0xFFFFFFFFFFFFFFFF)
    words = np.random.SeedSequence(ints).generate_state(2, np.uint32)
    return int((int(words[0]) << 31) ^ int(words[1])) & 0x7FFFFFFFFFFFFFFF


def step_generator(seed: int, step: int, *keys, device="cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded from ``(seed, step, *keys)``."""
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, step, *keys))
    return g


class BatchSource:
    """Deterministic batches: ``batch(step)`` depends only on the seed and ``step``.

    ``steps_per_epoch`` is the number of steps that make one pass over the data.  A batch is
    an ``N×C×H×W`` float32 tensor in model space; its size may differ from step to step.
    """

    steps_per_epoch: int = 1

    def batch(self, step: int) -> Tensor:  # pragma: no cover - interface
        raise TrainingError(f"{type(self).__name__} does not implement batch(step)")


def _augment(x: Tensor, rng: torch.Generator, flips: bool, rot90: bool, rotate: str | None):
    if not (flips or rot90 or rotate):
        return x
    try:
        from galforge.data.transforms import augment_batch
    except ImportError:
        if rotate:
            raise
        return _flip_rot90(x, rng, flips, rot90)
    return augment_batch(x, rng, flips=flips, rot90=rot90, rotate=rotate)


def _flip_rot90(x: Tensor, rng: torch.Generator, flips: bool, rot90: bool) -> Tensor:
    """Per-image random flips (p = 0.5 each axis) and quarter turns, for square stamps."""
    n = x.shape[0]
    draws = torch.randint(0, 2, (n, 3), generator=rng)
    turns = torch.randint(0, 4, (n,), generator=rng)
    out = []
    for i in range(n):
        img = x[i]
        if flips and draws[i, 0]:
            img = img.flip(-1)
        if flips and draws[i, 1]:
            img = img.flip(-2)
        if rot90 and x.shape[-1] == x.shape[-2] and turns[i]:
            img = torch.rot90(img, int(turns[i]), dims=(-2, -1))
        out.append(img)
    return torch.stack(out)


class StampBatches(BatchSource):
    """Shuffled epochs over a stack of stamps, with per-image random augmentation.

    Epoch ``e`` visits the images in the order of a permutation drawn from
    ``(seed, "epoch", e)``; step ``s`` takes the ``s % steps_per_epoch``-th slice of
    ``batch_size`` images (the incomplete last slice is dropped, so every batch has the same
    size; with fewer images than ``batch_size`` every batch is the whole set).  Augmentation
    draws come from ``(seed, "augment", s)``.
    """

    def __init__(self, data: Tensor, batch_size: int, seed: int, *, flips: bool = True,
                 rot90: bool = True, rotate: str | None = None):
        if data.dim() != 4 or data.shape[0] == 0:
            raise TrainingError(f"training data must be a non-empty N×C×H×W stack, got "
                                f"shape {tuple(data.shape)}")
        self.data = data
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.flips, self.rot90, self.rotate = bool(flips), bool(rot90), rotate
        n = data.shape[0]
        self.steps_per_epoch = max(1, n // self.batch_size)
        self._perm_epoch = -1
        self._perm: Tensor | None = None

    def indices(self, step: int) -> Tensor:
        """Indices of the images of the batch of ``step`` (the global batch, all ranks)."""
        epoch, i = divmod(int(step), self.steps_per_epoch)
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(derive_seed(self.seed, "epoch", epoch))
            self._perm = torch.randperm(self.data.shape[0], generator=g)
            self._perm_epoch = epoch
        b = min(self.batch_size, self.data.shape[0])
        return self._perm[i * b:(i + 1) * b]

    def batch(self, step: int) -> Tensor:
        x = self.data.index_select(0, self.indices(step))
        g = torch.Generator().manual_seed(derive_seed(self.seed, "augment", int(step)))
        return _augment(x, g, self.flips, self.rot90, self.rotate)


class Recipe:
    """Base class of training recipes (one per model family).

    Subclasses set ``family`` (the generator family of the models registry) and
    ``DEFAULTS`` (their hyper-parameters, which become the ``model.*`` config keys), build
    their networks and optimisers in ``__init__``, and implement :meth:`train_step`,
    :meth:`sample_latent`, :meth:`generator` and :meth:`generator_spec`.

    Inside :meth:`train_step`, compute losses under ``with self.autocast():`` and update
    with :meth:`optimize` (``self.optimize("D", loss_d)``): it handles mixed-precision
    gradient scaling and the gradient averaging of data-parallel runs, so the same recipe
    runs on one CPU, one GPU or several processes.
    """

    family: ClassVar[str] = ""
    name: ClassVar[str] = ""
    DEFAULTS: ClassVar[dict[str, Any]] = {}
    #: snapshot cadence (steps) when ``train.snapshot_every`` is not set; 0 keeps none
    SNAPSHOT_EVERY: ClassVar[int] = 0
    #: named configurations selected by the ``config`` key of ``DEFAULTS`` (``model.config``):
    #: ``{"paper": {key: value, ...}, ...}``; the default one is ``DEFAULTS["config"]``
    CONFIGS: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(self, config: dict, channels: int, image_size: int | None, device,
                 seed: int = 0):
        defaults = self.default_config()
        unknown = set(config) - set(defaults)
        if unknown:
            raise ConfigError(
                f"unknown model option(s) {sorted(unknown)} for {self.name or self.family}; "
                f"valid: {', '.join(sorted(defaults))}"
            )
        chosen = config.get("config", defaults.get("config"))
        if self.CONFIGS and chosen is not None:
            if chosen not in self.CONFIGS:
                raise ConfigError(
                    f"model.config={chosen!r} is not a configuration of "
                    f"{self.name or self.family}; choose one of {', '.join(sorted(self.CONFIGS))}"
                )
            defaults.update(copy.deepcopy(self.CONFIGS[chosen]))
        self.config = {**defaults, **config}
        self.channels = int(channels)
        self.image_size = image_size
        self.device = torch.device(device)
        self.seed = int(seed)
        self.amp_dtype: torch.dtype | None = None
        self.world_size = 1
        self._scalers: dict[str, Any] = {}

    # ------------------------------------------------------------------ to implement
    @classmethod
    def default_config(cls) -> dict:
        """The recipe's hyper-parameters and their defaults (a fresh copy).

        With named configurations, the default one's values are included.
        """
        out = copy.deepcopy(dict(cls.DEFAULTS))
        if cls.CONFIGS and "config" in out:
            out.update(copy.deepcopy(cls.CONFIGS[out["config"]]))
        return out

    def default_ema(self) -> float:
        """EMA decay of the generator when ``train.ema`` is not set (0: no EMA).

        A recipe whose config has an ``ema`` key uses it; otherwise EMA is off.
        """
        return float(self.config.get("ema", 0.0) or 0.0)

    @classmethod
    def image_size_for(cls, params: dict) -> int | None:
        """Image size the networks need (data are resized to it); None: any size."""
        size = params.get("image_size")
        return int(size) if size is not None else None

    def modules(self) -> dict[str, nn.Module]:
        """Every network to checkpoint, by name (``{"G": ..., "D": ...}``)."""
        raise TrainingError(f"{type(self).__name__} does not define modules()")

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Every optimiser to checkpoint, by name."""
        raise TrainingError(f"{type(self).__name__} does not define optimizers()")

    def train_step(self, real: Tensor, step: int, rng: torch.Generator) -> dict[str, float]:
        """One update on the batch ``real``; returns the losses (and other scalars) as floats.

        ``rng`` is a generator on the recipe's device seeded from ``(seed, step, rank)``:
        draw every latent and label from it.
        """
        raise TrainingError(f"{type(self).__name__} does not define train_step()")

    def sample_latent(self, n: int, rng: torch.Generator) -> Tensor:
        """Latent input for ``n`` images, drawn from ``rng`` (on ``rng``'s device)."""
        raise TrainingError(f"{type(self).__name__} does not define sample_latent()")

    def generator(self) -> nn.Module:
        """The network that makes images."""
        raise TrainingError(f"{type(self).__name__} does not define generator()")

    def generator_spec(self) -> dict:
        """JSON spec such that ``build_generator(family, spec)`` rebuilds the generator."""
        raise TrainingError(f"{type(self).__name__} does not define generator_spec()")

    def output_range(self) -> tuple[float, float]:
        """Range of the generator's output: (-1, 1) for tanh, (0, 1) for sigmoid heads."""
        return (-1.0, 1.0)

    def on_epoch_end(self, epoch: int) -> None:
        """Called after each completed epoch (``epoch`` = epochs done so far)."""

    def make_batches(self, data: Tensor, batch_size: int, seed: int) -> BatchSource | None:
        """A custom batch source, or None for the trainer's default :class:`StampBatches`."""
        return None

    def state_dict(self) -> dict:
        """JSON-safe recipe state beyond the module/optimiser tensors (saved in checkpoints)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""

    # ------------------------------------------------------------------ provided
    def setup(self, *, amp_dtype: torch.dtype | None = None, world_size: int = 1) -> None:
        """Called by the trainer: mixed precision dtype (None: off) and data-parallel size."""
        self.amp_dtype = amp_dtype
        self.world_size = int(world_size)
        self._scalers = {}
        if amp_dtype == torch.float16:
            for name in self.optimizers():
                self._scalers[name] = torch.amp.GradScaler(self.device.type)

    def autocast(self):
        """Mixed-precision context (does nothing unless the trainer enabled AMP)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def optimize(self, name: str, loss: Tensor, params=None) -> None:
        """Zero the grads of optimiser ``name``, back-propagate ``loss`` and step.

        Gradients are averaged over processes in a data-parallel run, and scaled/unscaled
        when fp16 AMP is on.  ``params`` restricts the zeroing to a parameter list.
        """
        opt = self.optimizers()[name]
        opt.zero_grad(set_to_none=True)
        scaler = self._scalers.get(name)
        if scaler is not None:
            scaler.scale(loss).backward()
        else:
            loss.backward()
        if self.world_size > 1:
            from galforge.training.distributed import average_gradients

            average_gradients(p for group in opt.param_groups for p in group["params"])
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()

    def scaler_state(self) -> dict:
        """JSON-safe state of the fp16 gradient scalers (empty when not used)."""
        return {k: {kk: (float(vv) if isinstance(vv, float) else vv)
                    for kk, vv in s.state_dict().items()} for k, s in self._scalers.items()}

    def load_scaler_state(self, state: dict) -> None:
        for k, s in self._scalers.items():
            if k in state and state[k]:
                s.load_state_dict(state[k])

    def set_lr_factor(self, factor: float) -> None:
        """Set every learning rate to ``factor`` × its initial value (LR schedules)."""
        for opt in self.optimizers().values():
            for group in opt.param_groups:
                group.setdefault("initial_lr", group["lr"])
                group["lr"] = group["initial_lr"] * float(factor)

    def learning_rates(self) -> dict[str, float]:
        return {name: float(opt.param_groups[0]["lr"]) for name, opt in self.optimizers().items()}
