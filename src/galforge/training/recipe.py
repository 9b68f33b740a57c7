"""The recipe contract: what a model family brings to the generic training loop.

A :class:`Recipe` owns the networks, their optimisers, the losses and the update rule of
one model family; :class:`galforge.training.trainer.Trainer` owns everything else (batches,
EMA, learning-rate schedules, sample grids, logs, checkpoints, exact resume, device, mixed
precision, data parallelism, in-training metrics).  A recipe declares:

* ``Settings`` — a dataclass of its hyper-parameters whose defaults are the paper's; they
  become the ``model.*`` config keys.  ``CONFIGS`` names other sets of values
  (``model.config=cpu``); ``paper`` is always there and means the defaults;
  ``DEFAULT_CONFIG`` is the one used when none is named.
* :meth:`Recipe.phases` — the update as a list of :class:`Phase` objects run in order at
  each step they are due: ``Phase("discriminator")``, ``Phase("r1", interval=16)`` (lazy
  regularisation: run every 16 steps with its loss scaled by the gain, 16 by default, so
  the average strength is unchanged).  Phase ``name`` is the recipe method called as
  ``self.<name>(batch, ctx)`` with a :class:`StepContext` and returning scalar floats.
* :meth:`Recipe.augmentations` — stateful augmentations (:mod:`galforge.training.augment`)
  whose state the trainer checkpoints.
* :meth:`Recipe.data_need` — the data it trains on (:mod:`galforge.training.pipeline`).

Every random draw of a step comes from ``ctx.rng`` (seeded from ``(seed, step, rank)``);
dropout and other draws on torch's global generator happen inside the trainer's seeded,
forked scope (:func:`galforge.seeding.global_scope`).  Draws of one value per image (latents,
smoothed labels) made with ``ctx.rows(draw, n)`` are the rows ``rank::world`` of one draw for
the global batch, so a run on K processes sees the latents a single process would see with
the K-fold batch.

Data parallelism: the networks named in ``DDP_NETWORKS`` (recipe attributes whose
``forward`` the phases call) are wrapped by the trainer in ``DistributedDataParallel`` for
the duration of a step (:meth:`Recipe.data_parallel`): inside a phase ``self.D`` is the
wrapper, outside (EMA, checkpoints, bundles) it is the network itself, with its own state
dict names.  Other trained parameters are averaged by :meth:`Recipe.optimize`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from galforge.errors import ConfigError, TrainingError
from galforge.training.augment import Augment
from galforge.training.pipeline import BatchSource, DataNeed, PairedStamps, Stamps

__all__ = ["Phase", "Recipe", "StepContext"]

PAPER = "paper"


@dataclass(frozen=True)
class Phase:
    """One part of a training step: recipe method ``name``, run every ``interval`` steps.

    ``gain`` multiplies the phase's loss (``ctx.gain``); by default it is ``interval``, the
    lazy-regularisation convention that keeps the average strength of a term computed every
    ``interval`` steps.
    """

    name: str
    interval: int = 1
    gain: float | None = None

    def __post_init__(self):
        if int(self.interval) < 1:
            raise ConfigError(f"phase {self.name!r}: interval {self.interval} must be >= 1")

    def due(self, step: int) -> bool:
        """Whether the phase runs at (0-based) ``step``."""
        return int(step) % int(self.interval) == 0

    @property
    def loss_gain(self) -> float:
        return float(self.interval if self.gain is None else self.gain)


@dataclass
class StepContext:
    """What a phase method gets besides the batch."""

    step: int
    rng: torch.Generator
    phase: Phase
    rank: int = 0
    world_size: int = 1
    #: seeded like a one-process run's ``rng`` (``(seed, step, 0)``), the same on every
    #: process (for :meth:`rows`)
    shared_rng: torch.Generator | None = None

    @property
    def gain(self) -> float:
        return self.phase.loss_gain

    def rows(self, draw, n: int) -> Tensor:
        """``draw(m)`` (m values along dim 0) for this process's ``n`` images of the step.

        On one process ``draw(n)`` from :attr:`rng`; on K processes rows ``rank::K`` of
        ``draw(n * K)`` from :attr:`shared_rng`, which is seeded like the single process's
        ``rng`` — the global batch gets the draws one process with the K-fold batch would
        make. ``draw`` must use the generator it is given: ``draw(m, rng)``."""
        if self.world_size <= 1 or self.shared_rng is None:
            return draw(n, self.rng)
        return draw(n * self.world_size, self.shared_rng)[self.rank :: self.world_size]


class Recipe:
    """Base class of training recipes (one per model family; see the module docstring).

    Subclasses set ``family`` (the family of the models registry), ``Settings`` (a
    dataclass with paper defaults) and optionally ``CONFIGS``, build their networks and
    optimisers in ``__init__`` (``self.settings`` holds the typed values), and implement
    :meth:`modules`, :meth:`optimizers`, :meth:`generator`, :meth:`generator_spec`,
    :meth:`sample_latent` and one method per phase.

    Inside a phase, compute losses under ``with self.autocast():`` and update with
    :meth:`optimize` (``self.optimize("D", loss_d)``): it handles mixed-precision gradient
    scaling and the gradient averaging of data-parallel runs, so the same recipe runs on one
    CPU, one GPU or several processes.
    """

    family: ClassVar[str] = ""
    name: ClassVar[str] = ""
    Settings: ClassVar[type] = None
    #: named configs: overrides of the paper defaults (``model.config=NAME``); ``paper`` (the
    #: Settings defaults) is always one of them
    CONFIGS: ClassVar[dict[str, dict[str, Any]]] = {}
    #: the named config used when ``model.config`` is not given
    DEFAULT_CONFIG: ClassVar[str] = PAPER
    #: default overrides of a registered variant (``register_recipe("x128", image_size=128)``)
    OVERRIDES: ClassVar[dict[str, Any]] = {}
    #: the update, in order (see :class:`Phase`); override :meth:`phases` for settings-driven ones
    PHASES: ClassVar[tuple[Phase, ...]] = ()
    #: snapshot cadence (steps) when ``train.snapshot_every`` is not set; 0 keeps none
    SNAPSHOT_EVERY: ClassVar[int] = 0
    #: data parallelism: recipe attributes holding networks that the phases call only through
    #: their ``forward`` (never a sub-network directly), each wrapped in DDP during a step
    #: (see the module docstring); other trained parameters are averaged after backward
    DDP_NETWORKS: ClassVar[tuple[str, ...]] = ()
    #: ``find_unused_parameters`` of those wrappers: True when a backward reaches some but not
    #: all of a wrapped network's trainable parameters (one with all of them frozen, D during
    #: G's update, fires no DDP hook and needs nothing)
    DDP_FIND_UNUSED: ClassVar[bool] = False

    def __init__(
        self,
        config: dict | Any,
        channels: int,
        image_size: int | None,
        device,
        seed: int = 0,
        normalizer: dict | None = None,
    ):
        if self.Settings is not None and isinstance(config, self.Settings):
            name, settings = self.DEFAULT_CONFIG, config
        else:
            name, settings = self.resolve_settings(config)
        self.settings = settings
        #: the settings as the ``model.*`` dict (recorded in run.json and bundles)
        self.config: dict[str, Any] = self.settings_dict(settings, name)
        self.channels = int(channels)
        self.image_size = image_size
        self.device = torch.device(device)
        self.seed = int(seed)
        #: the data normaliser's description (``Normalizer.to_dict()``), for networks that
        #: work in physical units (a DCGAN's sky noise); None when the caller has none
        self.normalizer = normalizer
        self.amp_dtype: torch.dtype | None = None
        self.world_size = 1
        self.rank = 0
        self._scalers: dict[str, Any] = {}
        #: DDP wrappers by attribute name (set by :meth:`wrap_data_parallel`)
        self._ddp: dict[str, nn.Module] = {}
        self._ddp_params: set[int] = set()

    # ------------------------------------------------------------------ settings
    @classmethod
    def named_configs(cls) -> dict[str, dict[str, Any]]:
        """Named configs by name (``paper`` first: the defaults), as overrides."""
        out = {PAPER: {}}
        for k, v in cls.CONFIGS.items():
            out[k] = {**out.get(k, {}), **v}
        return out

    @classmethod
    def _fields(cls) -> list[str]:
        if cls.Settings is None or not dataclasses.is_dataclass(cls.Settings):
            raise TrainingError(f"recipe {cls.__name__} has no Settings dataclass")
        return [f.name for f in dataclasses.fields(cls.Settings)]

    @classmethod
    def resolve_settings(cls, config: dict | None = None) -> tuple[str, Any]:
        """``(config name, typed settings)`` from a ``model.*`` dict.

        Paper defaults < the variant's overrides < the named config (``config`` key) < the
        other keys of ``config``.
        """
        config = dict(config or {})
        name = config.pop("config", None) or cls.DEFAULT_CONFIG
        named = cls.named_configs()
        if name not in named:
            raise ConfigError(
                f"model.config={name!r} is not a configuration of {cls.name or cls.family}; choose "
                f"one of {', '.join(named)}"
            )
        fields = cls._fields()
        unknown = set(config) - set(fields)
        if unknown:
            raise ConfigError(
                f"unknown model option(s) {sorted(unknown)} for {cls.name or cls.family}; "
                f"valid: {', '.join(sorted(['config', *fields]))}"
            )
        try:
            settings = cls.Settings(**{**cls.OVERRIDES, **named[name], **config})
        except TypeError as exc:
            raise ConfigError(f"model options of {cls.name or cls.family}: {exc}") from exc
        return name, settings

    @classmethod
    def make_settings(cls, config: dict | Any = None) -> Any:
        """Typed settings from a ``model.*`` dict (or settings, returned as they are)."""
        if cls.Settings is not None and isinstance(config, cls.Settings):
            return config
        return cls.resolve_settings(config)[1]

    @staticmethod
    def settings_dict(settings, name: str) -> dict[str, Any]:
        """JSON-safe ``model.*`` dict of ``settings`` (with the config name)."""
        return {"config": name, **dataclasses.asdict(settings)}

    @classmethod
    def default_config(cls) -> dict:
        """The ``model.*`` keys and their defaults (the paper config, variant overrides applied)."""
        return cls.settings_dict(*reversed(cls.resolve_settings({})))

    @classmethod
    def config_overrides(cls) -> dict[str, dict[str, Any]]:
        """Named configs as full ``model.*`` dicts (for the config resolver): every key, so
        that choosing one (``model.config=paper``) leaves nothing of the default config
        behind when the default is another (the DCGAN's ``cpu`` turns on sky noise, which
        ``paper`` does not mention)."""
        out = {}
        for name, over in cls.named_configs().items():
            try:
                out[name] = cls.settings_dict(cls.resolve_settings({"config": name})[1], name)
            except ConfigError:  # a config that needs other keys: its overrides alone
                out[name] = {**cls.OVERRIDES, **over}
        return out

    def default_ema(self) -> float:
        """EMA decay of the generator when ``train.ema`` is not set (0: no EMA).

        A recipe whose settings have an ``ema`` field uses it; otherwise EMA is off.
        """
        return float(getattr(self.settings, "ema", 0.0) or 0.0)

    def sky_description(self, channels: int) -> dict:
        """The normaliser a generator's sky noise works through: the data's, or (a recipe
        built without data, e.g. to time a step) model space itself with a noise scale of
        0.01."""
        if self.normalizer is not None:
            return dict(self.normalizer)
        c = int(channels)
        lo, hi = (float(v) for v in type(self).output_range_for(self.settings))
        return {
            "stretch": "linear",
            "target": [lo, hi],
            "lo": [lo] * c,
            "hi": [hi] * c,
            "offset": [0.0] * c,
            "softening": [0.01] * c,
        }

    def ema_batchnorm_layers(self, ema: nn.Module) -> list[nn.Module]:
        """The batch-norm layers of the generator's EMA copy whose running statistics are
        recomputed for the EMA weights before export (default: all of them; a recipe with a
        frozen sub-network excludes its layers)."""
        from galforge.training.ema import batchnorm_layers

        return batchnorm_layers(ema)

    @classmethod
    def data_need(cls, settings) -> DataNeed:
        """What the recipe trains on; default: stamps at ``settings.image_size`` (if any)."""
        size = getattr(settings, "image_size", None)
        return Stamps(int(size) if size is not None else None)

    @classmethod
    def image_size_for(cls, params: dict) -> int | None:
        """Image size the networks need (data are resized to it); None: any size."""
        need = cls.data_need(cls.make_settings(params))
        if isinstance(need, Stamps):
            return need.size
        if isinstance(need, PairedStamps):
            return max(need.sizes)
        return None

    # ------------------------------------------------------------------ to implement
    def modules(self) -> dict[str, nn.Module]:
        """Every network to checkpoint, by name (``{"G": ..., "D": ...}``)."""
        raise TrainingError(f"{type(self).__name__} does not define modules()")

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Every optimiser to checkpoint, by name."""
        raise TrainingError(f"{type(self).__name__} does not define optimizers()")

    def phases(self) -> tuple[Phase, ...]:
        """The phases of a step, in order (default: ``PHASES``)."""
        if not self.PHASES:
            raise TrainingError(f"{type(self).__name__} declares no phases (PHASES)")
        return tuple(self.PHASES)

    def augmentations(self) -> dict[str, Augment]:
        """Stateful augmentations by name (their state is checkpointed)."""
        return {}

    def sample_latent(self, n: int, rng: torch.Generator) -> Tensor:
        """Latent input for ``n`` images, drawn from ``rng`` (on ``rng``'s device)."""
        raise TrainingError(f"{type(self).__name__} does not define sample_latent()")

    def sample_conditions(self, n: int, rng: torch.Generator) -> Tensor | None:
        """Conditions for ``n`` images of sample grids and metrics (conditional generators);
        None for unconditional ones."""
        return None

    def generator(self) -> nn.Module:
        """The network that makes images (the sampler of the exported bundle)."""
        raise TrainingError(f"{type(self).__name__} does not define generator()")

    def generator_spec(self) -> dict:
        """JSON spec such that ``build_generator(family, spec)`` rebuilds the generator."""
        raise TrainingError(f"{type(self).__name__} does not define generator_spec()")

    def export_parts(self, generator: nn.Module) -> dict[str, tuple[str, dict, nn.Module]]:
        """The bundle parts by name: ``(part family, spec, network)``.

        ``generator`` is the network to export for the ``generator()`` part (its EMA copy when
        the run uses EMA). Families of several parts override this.
        """
        return {"generator": (self.family, self.generator_spec(), generator)}

    @classmethod
    def output_range_for(cls, settings) -> tuple[float, float]:
        """Range of the generator's output: (-1, 1) for tanh, (0, 1) for sigmoid heads.

        A class method: the pipeline fits the normalizer to it before the networks exist.
        """
        return (-1.0, 1.0)

    def output_range(self) -> tuple[float, float]:
        """Range of this recipe's generator output (:meth:`output_range_for`)."""
        return tuple(float(v) for v in self.output_range_for(self.settings))

    def on_epoch_end(self, epoch: int) -> None:
        """Called after each completed epoch (``epoch`` = epochs done so far)."""

    def make_batches(self, data, batch_size: int, seed: int) -> BatchSource | None:
        """A custom batch source, or None for the pipeline's default for :meth:`data_need`."""
        return None

    def freeze(self, g_layers: int = 0, d_blocks: int = 0) -> None:
        """Keep the first ``g_layers`` generator layers and ``d_blocks`` discriminator blocks
        fixed (``--freeze-g`` / ``--freeze-d``); families that support it override this."""
        raise ConfigError(
            f"--freeze-g/--freeze-d: the {self.name or self.family!r} model "
            "has no layers to freeze; drop these options"
        )

    def state_dict(self) -> dict:
        """JSON-safe recipe state beyond modules, optimisers and augmentations."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""

    # ------------------------------------------------------------------ the step
    def train_step(
        self, batch, step: int, rng: torch.Generator, shared_rng: torch.Generator | None = None
    ) -> dict[str, float]:
        """Run the phases due at ``step`` on ``batch``, in order; return their scalars.

        ``shared_rng`` (data-parallel runs): the generator of :meth:`StepContext.rows`."""
        out: dict[str, float] = {}
        with self.data_parallel():
            for phase in self.phases():
                if phase.due(step):
                    ctx = StepContext(
                        int(step),
                        rng,
                        phase,
                        rank=self.rank,
                        world_size=self.world_size,
                        shared_rng=shared_rng,
                    )
                    result = getattr(self, phase.name)(batch, ctx)
                    out.update({k: float(v) for k, v in (result or {}).items()})
        return out

    def wrap_data_parallel(self, wrap) -> None:
        """Wrap the networks of :attr:`DDP_NETWORKS` with ``wrap(network)`` (the trainer's
        DDP constructor); called once, after the networks are final (resume, freeze)."""
        self._ddp = getattr(self, "_ddp", {})
        self._ddp_params = getattr(self, "_ddp_params", set())
        for attr in self.DDP_NETWORKS:
            if attr in self._ddp:  # wrapped by an earlier fit() of this recipe
                continue
            net = getattr(self, attr)
            self._ddp[attr] = wrap(net)
            self._ddp_params.update(id(p) for p in net.parameters() if p.requires_grad)

    @contextlib.contextmanager
    def data_parallel(self):
        """Inside: the attributes of :attr:`DDP_NETWORKS` are their DDP wrappers."""
        if not getattr(self, "_ddp", None):  # plug-in recipes that skip Recipe.__init__
            yield
            return
        plain = {attr: getattr(self, attr) for attr in self._ddp}
        try:
            for attr, wrapped in self._ddp.items():
                setattr(self, attr, wrapped)
            yield
        finally:
            for attr, net in plain.items():
                setattr(self, attr, net)

    # ------------------------------------------------------------------ provided
    def setup(self, *, amp_dtype: torch.dtype | None = None, world_size: int = 1) -> None:
        """Called by the trainer: mixed precision dtype (None: off) and data-parallel size
        (the trainer sets :attr:`rank` beside it)."""
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

        Gradients are averaged over processes in a data-parallel run (by DDP during the
        backward pass for the networks of :attr:`DDP_NETWORKS`, here for the others), and
        scaled/unscaled when fp16 AMP is on.  ``params`` restricts the zeroing to a
        parameter list.
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

            average_gradients(
                p
                for group in opt.param_groups
                for p in group["params"]
                if id(p) not in getattr(self, "_ddp_params", ())
            )
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()

    def scaler_state(self) -> dict:
        """JSON-safe state of the fp16 gradient scalers (empty when not used)."""
        return {
            k: {
                kk: (float(vv) if isinstance(vv, float) else vv)
                for kk, vv in s.state_dict().items()
            }
            for k, s in self._scalers.items()
        }

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


class PairRecipe(Recipe):
    """A recipe with one generator ``G`` and one discriminator ``D``, optimised by ``opt_g``
    and ``opt_d``, whose generator spec is ``G.spec()``: the accessors the trainer needs."""

    def modules(self) -> dict[str, nn.Module]:
        return {"G": self.G, "D": self.D}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"G": self.opt_g, "D": self.opt_d}

    def generator(self) -> nn.Module:
        return self.G

    def generator_spec(self) -> dict:
        return self.G.spec()
