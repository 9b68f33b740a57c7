"""The generic training loop shared by every model recipe.

:class:`Trainer` runs a :class:`~galforge.training.recipe.Recipe` on model-space data and
writes the run folder (layout: :mod:`galforge.runfolder`): config, ``run.json``, export
weights, checkpoints and snapshots, sample grids, the JSON-lines log, loss curves, the best
checkpoint of an in-training metric, and the exported bundle.

A step is: learning-rate schedule, batch (a pure function of ``(seed, step)``), the recipe's
phases due at that step (draws from a generator seeded with ``(seed, step, rank)``; torch's
global generator seeded and forked around them), EMA, epoch hooks, then the cadenced parts:
log line, sample grid, checkpoint, snapshot, metric. Resuming from a checkpoint therefore
reproduces an uninterrupted run exactly (on the same device and thread count): modules,
optimisers, EMA, augmentation states, recipe state, metric best and RNG states are saved.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import galforge.training.distributed as ddp
from galforge import __version__, interrupt, outputs
from galforge.config import OutputConfig, TrainConfig
from galforge.errors import ConfigError, Interrupted, TrainingError
from galforge.fileio import atomic_write_bytes, atomic_write_json
from galforge.log import get_logger, interactive
from galforge.models.capabilities import NOISE, PHYSICAL, capabilities
from galforge.runfolder import CHECKPOINT_META, RunFolder, RunInfo
from galforge.seeding import global_scope, step_generator
from galforge.training.checkpoint import (
    find_checkpoint,
    pack_modules,
    pack_optimizers,
    read_checkpoint,
    read_newest_intact,
    unpack_modules,
    unpack_optimizers,
    write_checkpoint,
)
from galforge.training.ema import EMA_BN_IMAGES, GeneratorEMA
from galforge.training.logwindow import LogWindow, plot_losses, progress_line
from galforge.training.metrics import MetricHook
from galforge.training.pipeline import BatchSource, as_tensors, batch_source
from galforge.training.recipe import Recipe

log = get_logger("train")
#: the "TensorBoard is not installed" line is said once per process
_TENSORBOARD_NOTICE_SAID = False

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

__all__ = [
    "EMA_BN_IMAGES",
    "MetricHook",
    "Trainer",
    "plot_losses",
    "progress_line",
    "resolve_amp",
]


def __getattr__(name):
    # train_from_config lives in galforge.training.from_config (which imports this module)
    if name == "train_from_config":
        from galforge.training.from_config import train_from_config

        return train_from_config
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def resolve_amp(amp: bool, dtype: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``--amp`` (None when off); AMP is for CUDA only."""
    if not amp:
        return None
    if device.type != "cuda":
        raise ConfigError(
            "--amp needs a CUDA device (bfloat16/float16 are far slower than float32 on the "
            "CPU); drop --amp or use --device cuda"
        )
    if dtype not in AMP_DTYPES:
        raise ConfigError(f"train.amp_dtype={dtype!r} must be one of {', '.join(AMP_DTYPES)}")
    return AMP_DTYPES[dtype]


def _as_dataclass(value, cls):
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        return cls(**value)
    raise TypeError(f"expected {cls.__name__} or a dict, got {type(value).__name__}")


class Trainer:
    """Run a recipe on training data and write the run folder.

    Parameters
    ----------
    recipe: the model recipe (networks already on their device).
    data: model-space training data: an ``N×C×H×W`` float32 tensor/array, or ``{size: ...}``
        for recipes that need several sizes (:class:`galforge.training.pipeline.PairedStamps`).
    run_dir: the run folder (created).
    train_config: :class:`galforge.config.TrainConfig` (or a dict of its fields).
    normalizer: the fitted ``galforge.data.Normalizer``; sample grids are shown in physical
        units through its inverse and it is recorded in ``run.json``.
    bands, units, data_fingerprint: recorded in ``run.json`` for the bundle.
    config: the resolved run config (``RunConfig`` or dict) written to ``config.yaml``.
    model_name: the ``--model`` name.
    augment: ``{"flips": bool, "rot90": bool, "rotate": None|"constant"|"reflect"}`` for the
        default batch source.
    output: :class:`galforge.config.OutputConfig` (or dict).
    resume: continue from ``run_dir/checkpoints/latest``.
    metrics: :class:`MetricHook` objects run during training.
    """

    def __init__(
        self,
        recipe: Recipe,
        data,
        run_dir: str | Path,
        train_config=None,
        *,
        normalizer=None,
        bands=None,
        units: str = "adu",
        data_fingerprint: str = "",
        config: Any = None,
        model_name: str | None = None,
        augment: Mapping | None = None,
        output=None,
        resume: bool = False,
        dist_info: ddp.DistInfo | None = None,
        metrics: Sequence[MetricHook] = (),
        overwrite: bool = False,
    ):
        self.recipe = recipe
        self.data = as_tensors(data)
        self.run_dir = Path(run_dir)
        self.folder = RunFolder(self.run_dir)
        self.train = _as_dataclass(train_config, TrainConfig)
        self.output = _as_dataclass(output, OutputConfig)
        self.normalizer = normalizer
        self.bands = (
            tuple(bands) if bands is not None else tuple(f"band{i}" for i in range(recipe.channels))
        )
        self.units = units
        self.data_fingerprint = data_fingerprint
        self.config = config
        self.model_name = model_name or recipe.name or recipe.family
        self.augment = dict(augment or {"flips": True, "rot90": True, "rotate": None})
        self.resume = bool(resume)
        #: replace an earlier run's recorded files in run_dir (galforge.outputs)
        self.overwrite = bool(overwrite)
        self.owner = None  # the claimed, locked run folder while fit() runs (rank 0)
        self.dist = dist_info
        self.metrics = list(metrics)
        self.metric_best: dict[str, dict] = {}
        #: the run this one was initialised from (``--init``), recorded in run.json
        self.parent: dict | None = None
        #: the init model's generator EMA, the starting point of this run's EMA
        self.initial_ema: nn.Module | None = None
        self._ema: GeneratorEMA | None = None
        self.step = 0
        self.total = 0
        self.source: BatchSource | None = None
        self.fixed_latent: Tensor | None = None
        self.fixed_conditions: Tensor | None = None
        self.samples_written: list[Path] = []
        self.bundle_dir: Path | None = None
        self.export_note = ""
        self._last_plot = time.perf_counter()
        self._window = LogWindow()
        self.notes: list[str] = []  # said about the data; logged when the run starts
        self._tb = None  # the TensorBoard writer while fit() runs (rank 0)

    # ------------------------------------------------------------------ EMA
    @property
    def ema(self) -> nn.Module | None:
        """The EMA copy of the generator (None when ``train.ema`` is 0)."""
        return None if self._ema is None else self._ema.net

    # ------------------------------------------------------------------ paths
    @property
    def ckpt_dir(self) -> Path:
        return self.folder.checkpoints

    @property
    def latest_dir(self) -> Path:
        return self.folder.latest

    @property
    def log_path(self) -> Path:
        return self.folder.log

    def config_dict(self) -> dict:
        c = self.config
        if c is None:
            return {
                "train": dataclasses.asdict(self.train),
                "output": dataclasses.asdict(self.output),
                "model": {"name": self.model_name, **self.recipe.config},
            }
        if hasattr(c, "to_dict"):
            return c.to_dict()
        return copy.deepcopy(dict(c))

    # ------------------------------------------------------------------ main loop
    @outputs.owning
    def fit(self) -> dict:
        """Train up to ``train.steps`` (or ``train.epochs``) steps in total; return a summary."""
        start = self._begin()
        info = self.dist
        main = info.is_main
        tb = self._tb = self._tensorboard() if main else None
        bar = self._progress(self.total, start) if main else None
        self._window.begin = time.perf_counter()
        try:
            if start >= self.total and main:
                self._log_line({"step": start, "note": f"already at step {start} >= {self.total}"})
            for step in range(start, self.total):
                losses = self._train_step(step)
                done = self.step
                self._window.add(losses)
                if main and (done % self.train.log_every == 0 or done == self.total):
                    rec = self._log(done, tb, bar)
                    if bar is None:  # no terminal to draw a bar on: one line per interval
                        log.info(progress_line(rec, self.total, start))
                if bar is not None:
                    bar.update(1)
                self._cadence(done)
                if ddp.any_true(interrupt.requested() is not None, info) and done < self.total:
                    self._stop_interrupted()
            if start >= self.total:
                # nothing to train: make sure the exported weights exist
                self.save_checkpoint(self.latest_dir)
        finally:
            if bar is not None:
                bar.close()
            if tb is not None:
                tb.close()
            self._tb = None
        return self._finish()

    def _begin(self) -> int:
        """Set up device, recipe, batches, EMA, resume and the run folder; return the start step."""
        t = self.train
        recipe = self.recipe
        device = recipe.device
        if t.threads:
            torch.set_num_threads(int(t.threads))
        if self.dist is None:
            self.dist = ddp.init_distributed(device.type)
        info = self.dist
        recipe.setup(amp_dtype=resolve_amp(t.amp, t.amp_dtype, device), world_size=info.world_size)
        recipe.rank = info.rank
        source = recipe.make_batches(self.data, t.batch, t.seed)
        if source is None:
            source = batch_source(
                recipe.data_need(recipe.settings), self.data, t.batch, t.seed, augment=self.augment
            )
        self.source = source
        if t.steps is not None and t.epochs is not None:
            raise ConfigError(
                "give either --steps or --epochs (train.steps / train.epochs), not both"
            )
        if t.steps is None and t.epochs is None:
            raise ConfigError(
                "give the length of the run: --steps N or --epochs E (train.steps / train.epochs)"
            )
        self.total = int(t.steps) if t.steps is not None else int(t.epochs) * self.spe
        self.ema_decay = float(t.ema) if t.ema is not None else recipe.default_ema()
        if self.ema_decay > 0:
            start_from = self.initial_ema if self.initial_ema is not None else recipe.generator()
            self._ema = GeneratorEMA(start_from, self.ema_decay)
        start = 0
        if self.resume:
            if find_checkpoint(self.latest_dir) is None:
                raise TrainingError(
                    f"--resume: no checkpoint in {self.latest_dir}; start the run without "
                    "--resume (or point --out at the run folder)"
                )
            start = self._load_newest_intact()
            if start > self.total:
                length = (
                    f"--steps {t.steps}"
                    if t.steps is not None
                    else f"--epochs {t.epochs} ({self.total} steps)"
                )
                raise ConfigError(
                    f"--resume: {length} is below the run's step {start}; give "
                    f"a total of at least {start} steps to continue it"
                )
        elif find_checkpoint(self.latest_dir) is not None and not self.overwrite:
            raise TrainingError(
                f"{self.run_dir} already holds a run (checkpoints/latest): pass --resume to "
                "continue it or choose another --out"
            )
        if info.is_main:  # the run folder is this process's, locked, while it trains
            self.owner = outputs.claim_folder(
                self.run_dir, overwrite=self.overwrite, resume=self.resume, command="train"
            )
        if info.enabled:
            ddp.broadcast_modules(list(recipe.modules().values()))
            # after resume and EMA copy: the EMA keeps plain batch norms, checkpoints the
            # networks' own state dict names
            recipe.wrap_data_parallel(
                lambda net: ddp.wrap(
                    net,
                    device,
                    find_unused_parameters=recipe.DDP_FIND_UNUSED,
                    sync_bn=bool(getattr(t, "sync_bn", False)),
                )
            )
            wrapped = ", ".join(recipe.DDP_NETWORKS) or "none"
            self.notes.append(
                f"data-parallel on {info.world_size} processes: "
                f"DistributedDataParallel wraps {wrapped}"
            )
        elif getattr(t, "sync_bn", False) and info.is_main:
            self.notes.append("train.sync_bn=true does nothing in a single process")
        self.step = start
        if info.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.folder.samples.mkdir(exist_ok=True)
            self._write_config()
            self._truncate_log(start)
            self._write_run_json(start)
            for note in self.notes:
                self._log_line({"step": start, "note": note})
        zg = step_generator(t.seed, "fixed-latent")
        self.fixed_latent = recipe.sample_latent(t.n_samples, zg).to(device)
        cond = recipe.sample_conditions(t.n_samples, zg)
        self.fixed_conditions = None if cond is None else cond.to(device)
        return start

    @property
    def spe(self) -> int:
        """Steps per epoch."""
        return int(self.source.steps_per_epoch)

    def _train_step(self, step: int) -> dict[str, float]:
        """One optimisation step (schedules, batch, phases, EMA, epoch hooks)."""
        t, recipe, info = self.train, self.recipe, self.dist
        device = recipe.device
        epoch = step // self.spe
        if t.lr_schedule == "step":
            recipe.set_lr_factor(t.lr_gamma ** (epoch // t.lr_step_epochs))
        t0 = time.perf_counter()
        batch = _to_device(ddp_shard(self.source.batch(step), info), device)
        rng = step_generator(t.seed, step, info.rank, device=device)
        # StepContext.rows: seeded as a single process's rng, the same on every process
        shared = step_generator(t.seed, step, 0, device=device) if info.enabled else None
        t1 = time.perf_counter()
        with global_scope(t.seed, step, info.rank, "global", devices=[device]):
            losses = (
                recipe.train_step(batch, step, rng, shared)
                if shared is not None
                else recipe.train_step(batch, step, rng)
            )
        t2 = time.perf_counter()
        done = step + 1
        finite = all(math.isfinite(float(v)) for v in losses.values())
        if not ddp.all_finite(finite, info):
            self._non_finite(done, losses, info.is_main)
        if self._ema is not None:
            self._ema.update(recipe.generator(), done)
        self.step = done
        if done % self.spe == 0:
            recipe.on_epoch_end(done // self.spe)
        self._window.time(t1 - t0, t2 - t1, _batch_size(batch))
        return losses

    def _log(self, done: int, tb, bar) -> dict:
        """Write the log line of the steps since the last one (means), TensorBoard, bar;
        return the line's record."""
        means = self._window.loss_means()
        rec = self._window.record(done, self.spe, self.recipe, self.dist.world_size)
        self._log_line(rec)
        if tb is not None:
            for k, v in rec.items():
                if k != "step" and isinstance(v, (int, float)):
                    tb.add_scalar(k, v, done)
        if bar is not None:
            bar.set_postfix({k: f"{v:.3f}" for k, v in means.items()})
        return rec

    def _cadence(self, done: int) -> None:
        """Sample grids, checkpoints, snapshots and metrics due after step ``done``."""
        t = self.train
        main = self.dist.is_main
        last = done == self.total
        if main and (done % t.sample_every == 0 or last):
            self.write_samples(done)
        if done % t.checkpoint_every == 0 or last:
            self.save_checkpoint(self.latest_dir)
        snapshot_every = (
            t.snapshot_every if t.snapshot_every is not None else self.recipe.SNAPSHOT_EVERY
        )
        if snapshot_every and done % snapshot_every == 0:
            self.save_checkpoint(self.folder.snapshot(done))
        for hook in self.metrics:
            if done % int(hook.every) == 0 or last:
                self._run_metric(hook, done)

    def _run_metric(self, hook: MetricHook, done: int) -> None:
        """Compute one metric; keep the checkpoint when it is the best so far."""
        if not self.dist.is_main:
            return
        value = float(hook.fn(self))
        self._log_line({"step": done, f"metric_{hook.name}": value})
        best = self.metric_best.get(hook.name, {}).get("value")
        if hook.keep and math.isfinite(value) and hook.better(value, best):
            self.metric_best[hook.name] = {"value": value, "step": done, "mode": hook.mode}
            self.save_checkpoint(self.folder.best)
            atomic_write_json(
                self.folder.best / "best.json", {"metric": hook.name, **self.metric_best[hook.name]}
            )

    def _finish(self) -> dict:
        info = self.dist
        ddp.barrier(info)
        if info.is_main:
            self._plot()
            if self.output.export_bundle:
                self._export()
        summary = {
            "run_dir": str(self.run_dir),
            "step": self.step,
            "epoch": self.step // self.spe,
            "steps_per_epoch": self.spe,
            "samples": [str(p) for p in self.samples_written],
            "checkpoint": str(self.latest_dir),
            "config": str(self.folder.config_yaml),
            "log": str(self.log_path),
            "loss_plot": str(self.folder.loss_plot),
            "generator": str(self.folder.part_weights("generator")),
            "parts": {
                name: str(self.folder.part_weights(name))
                for name in self.recipe.export_parts(self.export_generator())
            },
            "bundle": str(self.bundle_dir) if self.bundle_dir else None,
            "export_note": self.export_note,
            "metric_best": dict(self.metric_best),
            "is_main": info.is_main,
            "world_size": info.world_size,
        }
        ddp.shutdown(info)
        return summary

    # ------------------------------------------------------------------ pieces
    def _stop_interrupted(self) -> None:
        """SIGINT/SIGTERM (galforge.interrupt): checkpoint the finished step and stop."""
        self.save_checkpoint(self.latest_dir)
        signum = interrupt.requested() or 2
        if self.dist is None or self.dist.is_main:
            self._log_line(
                {
                    "step": self.step,
                    "note": f"interrupted by {interrupt.signal_name(signum)}; checkpoint written",
                }
            )
        raise Interrupted(
            f"interrupted at step {self.step}; checkpoint written to {self.latest_dir}",
            signum=signum,
            step=self.step,
            checkpoint=str(self.latest_dir),
        )

    def export_generator(self) -> nn.Module:
        """The generator whose weights are exported (EMA copy when EMA is on).

        The EMA copy's batch-norm statistics are recomputed for its own weights before it is
        used (:func:`galforge.training.ema.recalibrate_batchnorm`; once per EMA step at most,
        from a generator of its own, so training draws are untouched)."""
        if self._ema is None:
            return self.recipe.generator()
        return self._ema.calibrated(self.recipe, self.train.batch, self.train.seed, self.step)

    def _non_finite(self, done: int, losses: dict, main: bool) -> None:
        bad = ", ".join(f"{k}={v}" for k, v in losses.items() if not math.isfinite(float(v)))
        kept = find_checkpoint(self.latest_dir)
        where = "no checkpoint was written yet"
        if kept is not None:
            try:
                last = json.loads((kept / CHECKPOINT_META).read_text()).get("step")
            except (OSError, json.JSONDecodeError):
                last = "?"
            where = f"the last good checkpoint (step {last}) is kept in {kept}"
        if main:
            self._log_line({"step": done, "error": f"non-finite loss: {bad or 'nan'}"})
        raise TrainingError(
            f"non-finite loss at step {done} ({bad or 'nan in another process'}): training "
            f"stopped; {where}. Lower model.lr, check the data for NaN/inf, or enable "
            "label smoothing, then --resume"
        )

    def _tensor_state(self) -> tuple[dict, dict]:
        recipe = self.recipe
        tensors = pack_modules(recipe.modules())
        if self.ema is not None:  # with the batch-norm statistics of its own weights
            tensors.update({f"ema.{k}": v for k, v in self.export_generator().state_dict().items()})
        opt_tensors, opt_meta = pack_optimizers(recipe.optimizers())
        tensors.update(opt_tensors)
        t = self.train
        meta = {
            "step": self.step,
            "epoch": self.step // self.spe,
            "steps_per_epoch": self.spe,
            "seed": t.seed,
            "batch": t.batch,
            "model": self.model_name,
            "family": recipe.family,
            "optimizers": opt_meta,
            "schedule": {
                "kind": t.lr_schedule,
                "step_epochs": t.lr_step_epochs,
                "gamma": t.lr_gamma,
                "learning_rates": recipe.learning_rates(),
            },
            "recipe": recipe.state_dict(),
            "augment": {k: a.state_dict() for k, a in recipe.augmentations().items()},
            "metric_best": self.metric_best,
            "scalers": recipe.scaler_state(),
            "ema": {"decay": self.ema_decay, "on": self.ema is not None},
            "config": self.config_dict(),
            "galforge_version": __version__,
            "world_size": self.dist.world_size if self.dist else 1,
        }
        return tensors, meta

    def save_checkpoint(self, ckpt_dir: Path, spe: int | None = None) -> None:
        """Write a checkpoint, the export weights and ``run.json`` (rank 0 only)."""
        if self.dist is not None and not self.dist.is_main:
            return
        tensors, meta = self._tensor_state()
        write_checkpoint(ckpt_dir, tensors, meta)
        parts = self.recipe.export_parts(self.export_generator())
        self.folder.write_weights({name: net.state_dict() for name, (_, _, net) in parts.items()})
        self._write_run_json(self.step)
        if self.output.loss_plot and time.perf_counter() - self._last_plot > 60.0:
            self._plot()
        if self.owner is not None:
            self.owner.record()  # a killed run's files stay galforge's up to here

    def _load_newest_intact(self) -> int:
        """Resume from ``checkpoints/latest``, or (said in one line) from the newest intact
        kept checkpoint (best, snapshots) when it is corrupt."""
        folder = self.folder
        candidates = [self.latest_dir, folder.best, *reversed(folder.snapshots())]
        ckpt, tensors, meta, problems = read_newest_intact(candidates)
        if problems:
            damage = problems[0].removesuffix("; restore the folder")
            note = (
                f"{damage}; resuming from the newest intact checkpoint {ckpt} (step {meta['step']})"
            )
            print(f"note: {note}", file=sys.stderr, flush=True)
            self.notes.append(note)
        return self._load(ckpt, (tensors, meta))

    def _load(self, ckpt: Path, loaded: tuple[dict, dict] | None = None) -> int:
        tensors, meta = loaded if loaded is not None else read_checkpoint(ckpt)
        t = self.train
        if int(meta.get("seed", t.seed)) != int(t.seed):
            raise TrainingError(
                f"--resume: the run in {self.run_dir} was started with seed {meta['seed']}, "
                f"not {t.seed}; resume with --seed {meta['seed']}"
            )
        unpack_modules(self.recipe.modules(), tensors)
        if self._ema is not None:
            self._ema.load(tensors, self.recipe.generator())
        unpack_optimizers(self.recipe.optimizers(), tensors, meta.get("optimizers", {}))
        self.recipe.load_state_dict(meta.get("recipe", {}))
        augment = meta.get("augment", {})
        for name, aug in self.recipe.augmentations().items():
            if name in augment:
                aug.load_state_dict(augment[name])
        self.metric_best = dict(meta.get("metric_best", {}))
        self.recipe.load_scaler_state(meta.get("scalers", {}))
        return int(meta["step"])

    def _write_config(self) -> None:
        import yaml

        text = yaml.safe_dump(self.config_dict(), sort_keys=False, default_flow_style=False)
        atomic_write_bytes(self.folder.config_yaml, text.encode())

    def _write_run_json(self, step: int) -> None:
        norm = self.normalizer.to_dict() if self.normalizer is not None else None
        parts = self.recipe.export_parts(self.export_generator())
        info = RunInfo(
            family=self.recipe.family,
            parts={
                name: {"family": fam, "spec": spec, "module": type(net).__module__}
                for name, (fam, spec, net) in parts.items()
            },
            bands=list(self.bands),
            units=self.units,
            normalizer=norm,
            output_range=list(self.recipe.output_range()),
            data_fingerprint=self.data_fingerprint,
            model=self.model_name,
            module=type(self.recipe).__module__,
            step=int(step),
            epoch=int(step // self.spe),
            steps_per_epoch=self.spe,
            ema=self.ema is not None,
            hyperparameters=dict(self.recipe.config),
            config=self.config_dict(),
            parent=self.parent,
        )
        self.folder.write_info(info)

    def _truncate_log(self, step: int) -> None:
        """Drop log lines written after the checkpoint we resume from."""
        if not self.log_path.is_file():
            return
        keep = []
        for line in self.log_path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if int(rec.get("step", 0)) <= step and "error" not in rec:
                keep.append(line)
        atomic_write_bytes(self.log_path, ("\n".join(keep) + "\n" if keep else "").encode())

    def _log_line(self, rec: dict) -> None:
        with open(self.log_path, "a") as fh:
            fh.write(json.dumps(rec) + "\n")

    def generate_fixed(self) -> np.ndarray:
        """The fixed-latent samples of the export generator, in model space (float32; in
        physical units for a generator with the ``physical`` capability)."""
        gen = self.export_generator()
        was = gen.training
        gen.eval()
        try:
            with torch.no_grad():
                args = () if self.fixed_conditions is None else (self.fixed_conditions,)
                out = gen(self.fixed_latent, *args).float().cpu().numpy()
        finally:
            gen.train(was)
        return out

    def sample_physical(self, n: int, seed: int = 0) -> np.ndarray:
        """``n`` samples of the export generator in physical units (for metric hooks); a
        generator with noise inputs gets fresh maps per sample (not its stored ones)."""
        gen = self.export_generator()
        rng = step_generator(seed, "metric-samples", device=self.recipe.device)
        was = gen.training
        gen.eval()
        try:
            with torch.no_grad():
                z = self.recipe.sample_latent(int(n), rng).to(self.recipe.device)
                cond = self.recipe.sample_conditions(int(n), rng)
                args = () if cond is None else (cond.to(self.recipe.device),)
                kw = {}
                if NOISE in capabilities(gen):  # each sample its own noise maps
                    kw["noise"] = [
                        torch.randn((int(n), 1, *s), generator=rng, device=self.recipe.device)
                        for s in gen.noise_shapes()
                    ]
                out = gen(z, *args, **kw).float()
                if PHYSICAL in capabilities(gen):  # already in physical units
                    return out.cpu().numpy()
                lo, hi = self.recipe.output_range()
                out = out.clamp(lo, hi).cpu().numpy()
        finally:
            gen.train(was)
        if self.normalizer is not None:
            out = np.asarray(self.normalizer.inverse(out), dtype=np.float32)
        return out

    def write_samples(self, step: int) -> Path:
        """Write ``samples/step-XXXXXXXX.png`` from the fixed latents, in physical units."""
        from galforge.data.display import save_grid

        imgs = self.generate_fixed()
        if self.normalizer is not None and PHYSICAL not in capabilities(self.export_generator()):
            imgs = np.asarray(self.normalizer.inverse(imgs), dtype=np.float32)
        path = self.folder.sample_grid(step)
        save_grid(path, imgs, self.bands, units=self.units)
        self.samples_written.append(path)
        if self._tb is not None:  # the same grid, as TensorBoard shows images
            from PIL import Image

            with Image.open(path) as im:
                grid = np.asarray(im.convert("RGB"))
            self._tb.add_image("samples", grid, step, dataformats="HWC")
        return path

    def _plot(self) -> None:
        if self.output.loss_plot:
            plot_losses(self.log_path, self.folder.loss_plot)
            self._last_plot = time.perf_counter()

    def _tensorboard(self):
        # optional dependency: used when installed (or already imported), never required
        if not self.output.tensorboard:
            return None
        available = (
            "torch.utils.tensorboard" in sys.modules
            or importlib.util.find_spec("tensorboard") is not None
        )
        if not available:
            global _TENSORBOARD_NOTICE_SAID
            if not _TENSORBOARD_NOTICE_SAID:
                log.info(
                    "TensorBoard is not installed: no TensorBoard logs (log.jsonl and "
                    "loss.png are written); pip install tensorboard, or "
                    "--set output.tensorboard=false to silence this"
                )
                _TENSORBOARD_NOTICE_SAID = True
            return None
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(self.folder.tensorboard))

    def _progress(self, total: int, start: int):
        """A progress bar on a terminal; None when off or when output is redirected (then
        :meth:`fit` logs one line per log interval)."""
        if not self.train.progress or not interactive():
            return None
        from tqdm import tqdm

        return tqdm(
            total=total,
            initial=start,
            unit="step",
            dynamic_ncols=True,
            desc=f"train {self.model_name}",
        )

    def _export(self) -> None:
        self.bundle_dir = self.folder.export()


def _to_device(batch, device):
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch.to(device, non_blocking=True)


def ddp_shard(batch, info):
    """This process's share of a batch (a tensor or a dict of tensors)."""
    if isinstance(batch, Mapping):
        return {k: ddp_shard(v, info) for k, v in batch.items()}
    return ddp.shard(batch, info)


def _batch_size(batch) -> int:
    if isinstance(batch, Mapping):
        return _batch_size(next(iter(batch.values())))
    return int(batch.shape[0])
