"""The generic training loop shared by every model recipe.

:class:`Trainer` runs a :class:`~galforge.training.recipe.Recipe` on a stack of images in
model space and writes the run folder::

    RUN/config.yaml                resolved config
    RUN/run.json                   what the bundle export needs (family, spec, bands, units,
                                   normalizer, output range, data fingerprint, step, epoch)
    RUN/checkpoints/latest/        state.safetensors + state.json, every k steps and at the end
    RUN/checkpoints/step-XXXXXXXX/ kept snapshots (train.snapshot_every)
    RUN/generator.safetensors      weights to export (the EMA generator when EMA is on)
    RUN/samples/step-XXXXXXXX.png  fixed-latent sample grids, in physical units
    RUN/log.jsonl                  one JSON object per logged step (losses, timings, lr)
    RUN/loss.png                   loss curves
    RUN/bundle/                    exported bundle (galforge.bundle.export_run)

Batches and every random draw of a step derive from ``(seed, step)``, so resuming from a
checkpoint reproduces an uninterrupted run exactly (on the same device and thread count).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from galforge import __version__, interrupt
from galforge.config import OutputConfig, TrainConfig
from galforge.errors import ConfigError, Interrupted, TrainingError
from galforge.fileio import atomic_write_bytes, atomic_write_json
from galforge.training import distributed as ddp
from galforge.training.checkpoint import (
    find_checkpoint,
    pack_modules,
    pack_optimizers,
    read_checkpoint,
    rng_state,
    save_tensors_atomic,
    set_rng_state,
    unpack_modules,
    unpack_optimizers,
    write_checkpoint,
)
from galforge.training.recipe import BatchSource, Recipe, StampBatches, derive_seed

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` checks that CUDA is there."""
    name = (name or "auto").strip()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"--device {name}: CUDA is not available on this machine; use --device cpu "
                "or --device auto"
            )
        if name == "cuda":
            return torch.device("cuda", local_rank)
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"--device {name!r} is not one of auto, cpu, cuda, cuda:N")


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


def plot_losses(log_path: str | Path, png_path: str | Path) -> Path | None:
    """Draw the loss curves of a ``log.jsonl`` into a PNG (no global matplotlib state)."""
    log_path, png_path = Path(log_path), Path(png_path)
    if not log_path.is_file():
        return None
    rows = []
    for line in log_path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    rows = [r for r in rows if "step" in r and "error" not in r]
    keys = sorted({k for r in rows for k in r if k.startswith("loss")})
    if not rows or not keys:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for k in keys:
        pts = [(r["step"], r[k]) for r in rows if isinstance(r.get(k), (int, float))]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, label=k, lw=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(png_path, buf.getvalue())


class Trainer:
    """Run a recipe on training data and write the run folder.

    Parameters
    ----------
    recipe: the model recipe (networks already on their device).
    data: ``N×C×H×W`` float32 images in model space (tensor or array).
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
    """

    def __init__(self, recipe: Recipe, data, run_dir: str | Path, train_config=None, *,
                 normalizer=None, bands=None, units: str = "adu", data_fingerprint: str = "",
                 config: Any = None, model_name: str | None = None,
                 augment: Mapping | None = None, output=None, resume: bool = False,
                 dist_info: ddp.DistInfo | None = None):
        self.recipe = recipe
        if isinstance(data, np.ndarray):
            data = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
        self.data = data
        self.run_dir = Path(run_dir)
        self.train = _as_dataclass(train_config, TrainConfig)
        self.output = _as_dataclass(output, OutputConfig)
        self.normalizer = normalizer
        self.bands = tuple(bands) if bands is not None else tuple(
            f"band{i}" for i in range(recipe.channels))
        self.units = units
        self.data_fingerprint = data_fingerprint
        self.config = config
        self.model_name = model_name or recipe.name or recipe.family
        self.augment = dict(augment or {"flips": True, "rot90": True, "rotate": None})
        self.resume = bool(resume)
        self.dist = dist_info
        #: the run this one was initialised from (``--init``), recorded in run.json
        self.parent: dict | None = None
        #: the init model's generator EMA, the starting point of this run's EMA
        self.initial_ema: nn.Module | None = None
        self.ema: nn.Module | None = None
        self.step = 0
        self.source: BatchSource | None = None
        self.fixed_latent: Tensor | None = None
        self.samples_written: list[Path] = []
        self.bundle_dir: Path | None = None
        self.export_note = ""
        self._last_plot = time.perf_counter()
        self.notes: list[str] = []  # said about the data; logged when the run starts

    # ------------------------------------------------------------------ paths
    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def latest_dir(self) -> Path:
        return self.ckpt_dir / "latest"

    @property
    def log_path(self) -> Path:
        return self.run_dir / "log.jsonl"

    def config_dict(self) -> dict:
        c = self.config
        if c is None:
            return {"train": dataclasses.asdict(self.train),
                    "output": dataclasses.asdict(self.output),
                    "model": {"name": self.model_name, **self.recipe.config}}
        if hasattr(c, "to_dict"):
            return c.to_dict()
        return copy.deepcopy(dict(c))

    # ------------------------------------------------------------------ main loop
    def fit(self) -> dict:
        """Train up to ``train.steps`` (or ``train.epochs``) steps in total; return a summary."""
        t = self.train
        recipe = self.recipe
        device = recipe.device
        if t.threads:
            torch.set_num_threads(int(t.threads))
        if self.dist is None:
            self.dist = ddp.init_distributed(device.type)
        info = self.dist
        snapshot_every = (t.snapshot_every if t.snapshot_every is not None
                          else recipe.SNAPSHOT_EVERY)
        recipe.setup(amp_dtype=resolve_amp(t.amp, t.amp_dtype, device),
                     world_size=info.world_size)

        source = recipe.make_batches(self.data, t.batch, t.seed)
        if source is None:
            source = StampBatches(self.data, t.batch, t.seed, **self.augment)
        self.source = source
        spe = int(source.steps_per_epoch)
        if t.steps is not None and t.epochs is not None:
            raise ConfigError("give either --steps or --epochs (train.steps / train.epochs), "
                              "not both")
        if t.steps is None and t.epochs is None:
            raise ConfigError("give the length of the run: --steps N or --epochs E "
                              "(train.steps / train.epochs)")
        total = int(t.steps) if t.steps is not None else int(t.epochs) * spe

        gen = recipe.generator()
        self.ema_decay = float(t.ema) if t.ema is not None else recipe.default_ema()
        if self.ema_decay > 0:
            start_from = self.initial_ema if self.initial_ema is not None else gen
            self.ema = copy.deepcopy(start_from).eval()
            for p in self.ema.parameters():
                p.requires_grad_(False)

        start = 0
        if self.resume:
            if find_checkpoint(self.latest_dir) is None:
                raise TrainingError(
                    f"--resume: no checkpoint in {self.latest_dir}; start the run without "
                    "--resume (or point --out at the run folder)"
                )
            start = self._load(self.latest_dir)
        elif find_checkpoint(self.latest_dir) is not None:
            raise TrainingError(
                f"{self.run_dir} already holds a run (checkpoints/latest): pass --resume to "
                "continue it or choose another --out"
            )
        if info.enabled:
            ddp.broadcast_modules(list(recipe.modules().values()))
        self.step = start

        main = info.is_main
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "samples").mkdir(exist_ok=True)
            self._write_config()
            self._truncate_log(start)
            self._write_run_json(start, spe)
            for note in self.notes:
                self._log_line({"step": start, "note": note})
        zg = torch.Generator(device="cpu").manual_seed(derive_seed(t.seed, "fixed-latent"))
        self.fixed_latent = recipe.sample_latent(t.n_samples, zg).to(device)

        tb = self._tensorboard() if main else None
        bar = self._progress(total, start) if main else None
        window: dict[str, float] = {}
        n_window = 0
        t_data = t_step = 0.0
        t_begin = time.perf_counter()
        try:
            if start >= total and main:
                self._log_line({"step": start, "note": f"already at step {start} >= {total}"})
            for step in range(start, total):
                epoch = step // spe
                if t.lr_schedule == "step":
                    recipe.set_lr_factor(t.lr_gamma ** (epoch // t.lr_step_epochs))
                t0 = time.perf_counter()
                real = ddp.shard(source.batch(step), info).to(device, non_blocking=True)
                rng = torch.Generator(device=device)
                rng.manual_seed(derive_seed(t.seed, step, info.rank))
                torch.manual_seed(derive_seed(t.seed, step, info.rank, "global"))
                t1 = time.perf_counter()
                losses = recipe.train_step(real, step, rng)
                t2 = time.perf_counter()
                done = step + 1
                finite = all(math.isfinite(float(v)) for v in losses.values())
                if not ddp.all_finite(finite, info):
                    self._non_finite(done, losses, main)
                if self.ema is not None:
                    self._update_ema(gen, done)
                self.step = done
                if done % spe == 0:
                    recipe.on_epoch_end(done // spe)
                t_data += t1 - t0
                t_step += t2 - t1
                n_window += 1
                for k, v in losses.items():
                    window[k] = window.get(k, 0.0) + float(v)
                if main and (done % t.log_every == 0 or done == total):
                    rec = {"step": done, "epoch": round(done / spe, 4)}
                    rec.update({k: v / n_window for k, v in window.items()})
                    rec.update({f"lr_{k}": v for k, v in recipe.learning_rates().items()})
                    rec["time_step_s"] = t_step / n_window
                    rec["time_data_s"] = t_data / n_window
                    rec["images_per_s"] = (real.shape[0] * info.world_size * n_window
                                           / max(t_step + t_data, 1e-9))
                    rec["elapsed_s"] = time.perf_counter() - t_begin
                    self._log_line(rec)
                    if tb is not None:
                        for k, v in rec.items():
                            if k not in ("step",) and isinstance(v, (int, float)):
                                tb.add_scalar(k, v, done)
                    if bar is not None:
                        bar.set_postfix({k: f"{v / n_window:.3f}" for k, v in window.items()
                                         if k.startswith("loss")})
                    window, n_window, t_data, t_step = {}, 0, 0.0, 0.0
                if bar is not None:
                    bar.update(1)
                if main and (done % t.sample_every == 0 or done == total):
                    self.write_samples(done)
                if done % t.checkpoint_every == 0 or done == total:
                    self.save_checkpoint(self.latest_dir, spe)
                if snapshot_every and done % snapshot_every == 0:
                    self.save_checkpoint(self.ckpt_dir / f"step-{done:08d}", spe)
                if ddp.any_true(interrupt.requested() is not None, info) and done < total:
                    self._stop_interrupted(spe)
            if start >= total:
                # nothing to train: make sure the exported weights exist
                self.save_checkpoint(self.latest_dir, spe)
        finally:
            if bar is not None:
                bar.close()
            if tb is not None:
                tb.close()
        ddp.barrier(info)
        if main:
            self._plot()
            if self.output.export_bundle:
                self._export()
        summary = {
            "run_dir": str(self.run_dir), "step": self.step, "epoch": self.step // spe,
            "steps_per_epoch": spe, "samples": [str(p) for p in self.samples_written],
            "checkpoint": str(self.latest_dir), "config": str(self.run_dir / "config.yaml"),
            "log": str(self.log_path), "loss_plot": str(self.run_dir / "loss.png"),
            "generator": str(self.run_dir / "generator.safetensors"),
            "bundle": str(self.bundle_dir) if self.bundle_dir else None,
            "export_note": self.export_note,
            "is_main": info.is_main,
            "world_size": info.world_size,
        }
        ddp.shutdown(info)
        return summary

    # ------------------------------------------------------------------ pieces
    def _stop_interrupted(self, spe: int) -> None:
        """SIGINT/SIGTERM (galforge.interrupt): checkpoint the finished step and stop."""
        self.save_checkpoint(self.latest_dir, spe)
        signum = interrupt.requested() or 2
        if self.dist is None or self.dist.is_main:
            self._log_line({"step": self.step, "note": f"interrupted by "
                            f"{interrupt.signal_name(signum)}; checkpoint written"})
        raise Interrupted(f"interrupted at step {self.step}; checkpoint written to "
                          f"{self.latest_dir}", signum=signum, step=self.step,
                          checkpoint=str(self.latest_dir))

    def _update_ema(self, gen: nn.Module, done: int) -> None:
        """EMA step after ``done`` optimisation steps, with a warm-up: the decay is
        ``min(decay, (1 + done) / (10 + done))``, so the random initial weights are forgotten
        within the first few hundred steps instead of lingering for ``1 / (1 - decay)``."""
        decay = min(self.ema_decay, (1.0 + done) / (10.0 + done))
        with torch.no_grad():
            e_params = list(self.ema.parameters())
            g_params = [p.detach() for p in gen.parameters()]
            torch._foreach_lerp_(e_params, g_params, 1.0 - decay)
            for eb, gb in zip(self.ema.buffers(), gen.buffers(), strict=True):
                eb.copy_(gb)

    def export_generator(self) -> nn.Module:
        """The generator whose weights are exported (EMA copy when EMA is on)."""
        return self.ema if self.ema is not None else self.recipe.generator()

    def _non_finite(self, done: int, losses: dict, main: bool) -> None:
        bad = ", ".join(f"{k}={v}" for k, v in losses.items() if not math.isfinite(float(v)))
        kept = find_checkpoint(self.latest_dir)
        where = "no checkpoint was written yet"
        if kept is not None:
            try:
                last = json.loads((kept / "state.json").read_text()).get("step")
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
        if self.ema is not None:
            tensors.update({f"ema.{k}": v for k, v in self.ema.state_dict().items()})
        opt_tensors, opt_meta = pack_optimizers(recipe.optimizers())
        tensors.update(opt_tensors)
        rng_tensors, rng_meta = rng_state()
        tensors.update(rng_tensors)
        t = self.train
        meta = {
            "step": self.step,
            "epoch": self.step // self.source.steps_per_epoch,
            "steps_per_epoch": self.source.steps_per_epoch,
            "seed": t.seed,
            "batch": t.batch,
            "model": self.model_name,
            "family": recipe.family,
            "optimizers": opt_meta,
            "rng": rng_meta,
            "schedule": {"kind": t.lr_schedule, "step_epochs": t.lr_step_epochs,
                         "gamma": t.lr_gamma, "learning_rates": recipe.learning_rates()},
            "recipe": recipe.state_dict(),
            "scalers": recipe.scaler_state(),
            "ema": {"decay": self.ema_decay, "on": self.ema is not None},
            "config": self.config_dict(),
            "galforge_version": __version__,
            "world_size": self.dist.world_size if self.dist else 1,
        }
        return tensors, meta

    def save_checkpoint(self, ckpt_dir: Path, spe: int) -> None:
        """Write a checkpoint, ``generator.safetensors`` and ``run.json`` (rank 0 only)."""
        if self.dist is not None and not self.dist.is_main:
            return
        tensors, meta = self._tensor_state()
        write_checkpoint(ckpt_dir, tensors, meta)
        gen = self.export_generator()
        save_tensors_atomic(self.run_dir / "generator.safetensors", gen.state_dict())
        self._write_run_json(self.step, spe)
        if self.output.loss_plot and time.perf_counter() - self._last_plot > 60.0:
            self._plot()

    def _load(self, ckpt: Path) -> int:
        tensors, meta = read_checkpoint(ckpt)
        t = self.train
        if int(meta.get("seed", t.seed)) != int(t.seed):
            raise TrainingError(
                f"--resume: the run in {self.run_dir} was started with seed {meta['seed']}, "
                f"not {t.seed}; resume with --seed {meta['seed']}"
            )
        unpack_modules(self.recipe.modules(), tensors)
        if self.ema is not None:
            sd = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
            if sd:
                self.ema.load_state_dict(sd)
            else:
                self.ema.load_state_dict(self.recipe.generator().state_dict())
        unpack_optimizers(self.recipe.optimizers(), tensors, meta.get("optimizers", {}))
        self.recipe.load_state_dict(meta.get("recipe", {}))
        self.recipe.load_scaler_state(meta.get("scalers", {}))
        set_rng_state(tensors, meta.get("rng", {}))
        return int(meta["step"])

    def _write_config(self) -> None:
        import yaml

        text = yaml.safe_dump(self.config_dict(), sort_keys=False, default_flow_style=False)
        atomic_write_bytes(self.run_dir / "config.yaml", text.encode())

    def _write_run_json(self, step: int, spe: int) -> None:
        norm = self.normalizer.to_dict() if self.normalizer is not None else None
        gen = self.export_generator()
        info = {
            "family": self.recipe.family,
            "model": self.model_name,
            "spec": self.recipe.generator_spec(),
            "bands": list(self.bands),
            "units": self.units,
            "normalizer": norm,
            "output_range": list(self.recipe.output_range()),
            "data_fingerprint": self.data_fingerprint,
            "galforge_version": __version__,
            "export_module": type(gen).__module__,
            "step": int(step),
            "epoch": int(step // spe),
            "steps_per_epoch": int(spe),
            "ema": self.ema is not None,
            "hyperparameters": dict(self.recipe.config),
            "config": self.config_dict(),
        }
        if self.parent:
            info["parent"] = self.parent
        atomic_write_json(self.run_dir / "run.json", info)

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
        """The fixed-latent samples of the export generator, in model space (float32)."""
        gen = self.export_generator()
        was = gen.training
        gen.eval()
        try:
            with torch.no_grad():
                out = gen(self.fixed_latent).float().cpu().numpy()
        finally:
            gen.train(was)
        return out

    def write_samples(self, step: int) -> Path:
        """Write ``samples/step-XXXXXXXX.png`` from the fixed latents, in physical units."""
        from galforge.data.display import save_grid

        imgs = self.generate_fixed()
        if self.normalizer is not None:
            imgs = np.asarray(self.normalizer.inverse(imgs), dtype=np.float32)
        path = self.run_dir / "samples" / f"step-{step:08d}.png"
        save_grid(path, imgs, self.bands, units=self.units)
        self.samples_written.append(path)
        return path

    def _plot(self) -> None:
        if self.output.loss_plot:
            plot_losses(self.log_path, self.run_dir / "loss.png")
            self._last_plot = time.perf_counter()

    def _tensorboard(self):
        if not self.output.tensorboard:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:  # tensorboard is optional
            return None
        return SummaryWriter(str(self.run_dir / "tensorboard"))

    def _progress(self, total: int, start: int):
        if not self.train.progress:
            return None
        from tqdm import tqdm

        return tqdm(total=total, initial=start, unit="step", dynamic_ncols=True,
                    desc=f"train {self.model_name}")

    def _export(self) -> None:
        try:
            from galforge.bundle import export_run
        except ImportError as exc:
            self.export_note = f"bundle not exported: galforge.bundle is unavailable ({exc})"
            return
        out = export_run(self.run_dir)
        self.bundle_dir = Path(out) if out is not None else self.run_dir / "bundle"


# ----------------------------------------------------------------------------- from a config


def load_training_data(cfg, image_size: int | None):
    """Read ``cfg.data.source`` at the model's image size; return ``(ImageSet, images)``.

    See :func:`galforge.training.datasource.load_training_data` (the one crop/resize route;
    what was done is recorded in ``cfg.data``).
    """
    from galforge.training.datasource import load_training_data as load

    data = load(cfg, image_size)
    return data.iset, data.images


def train_from_config(cfg, *, resume: bool = False, dist_info: ddp.DistInfo | None = None) -> dict:
    """Train the model of a resolved :class:`galforge.config.RunConfig`; return the summary.

    Reads the data, resizes it to the model's size, fits the normalizer (or reuses the one
    of a prepared data set, or of the run when resuming), builds the recipe and runs the
    :class:`Trainer` into ``cfg.output.out``.
    """
    from galforge.data.normalize import Normalizer
    from galforge.training import datasource
    from galforge.training.recipes import get_recipe

    recipe_cls = get_recipe(cfg.model.name)
    run_dir = Path(cfg.output.out)
    params = dict(cfg.model.params)
    data = datasource.load_training_data(cfg, recipe_cls.image_size_for(params))
    iset, imgs = data.iset, data.images
    if dist_info is None:
        dist_info = ddp.init_distributed(
            "cuda" if cfg.train.device.startswith("cuda")
            or (cfg.train.device == "auto" and torch.cuda.is_available()) else "cpu")
    device = resolve_device(cfg.train.device, dist_info.local_rank)
    size = recipe_cls.image_size_for(params)
    recipe = recipe_cls(params, channels=imgs.shape[1], image_size=size, device=device,
                        seed=cfg.train.seed)
    fingerprint = iset.fingerprint()
    normalizer = None
    if resume and (run_dir / "run.json").is_file():
        info = json.loads((run_dir / "run.json").read_text())
        if info.get("data_fingerprint") and info["data_fingerprint"] != fingerprint:
            raise TrainingError(
                f"--resume: the data {cfg.data.source} differ from the data the run in {run_dir} "
                "was trained on (fingerprint mismatch); resume with the same DATA"
            )
        if info.get("normalizer"):
            normalizer = Normalizer.from_dict(info["normalizer"])
    normalizer, note = datasource.resolve_normalizer(cfg, data, recipe.output_range(),
                                                     resumed=normalizer)
    notes = data.notes + ([note] if note else [])
    if (dist_info is None or dist_info.is_main) and notes:
        print("\n".join(f"note: {n}" for n in notes), file=sys.stderr, flush=True)
    model_space = np.asarray(normalizer.forward(imgs), dtype=np.float32)
    if not np.all(np.isfinite(model_space)):
        raise TrainingError(
            f"the training data {cfg.data.source} contain non-finite values after normalisation;"
            " read them with nan_policy fill or reject (data.options.nan_policy)"
        )
    parent, init_ema = None, None
    if cfg.train.init and not resume:
        from galforge.training.init import initialise_from

        parent, init_ema = initialise_from(recipe, cfg.train.init, iset.bands,
                                           cfg.train.band_map)
    elif cfg.train.band_map and not cfg.train.init:
        raise ConfigError("--band-map maps the data's bands onto an --init model's: give --init")
    trainer = Trainer(
        recipe, model_space, run_dir, cfg.train, normalizer=normalizer, bands=iset.bands,
        units=iset.units, data_fingerprint=fingerprint, config=cfg, model_name=cfg.model.name,
        augment={"flips": cfg.data.flips, "rot90": cfg.data.rot90, "rotate": cfg.data.rotate},
        output=cfg.output, resume=resume, dist_info=dist_info,
    )
    if parent is not None:
        trainer.parent, trainer.initial_ema = parent, init_ema
    elif resume and (run_dir / "run.json").is_file():
        trainer.parent = json.loads((run_dir / "run.json").read_text()).get("parent")
    trainer.notes = notes
    summary = trainer.fit()
    summary["n_images"] = int(imgs.shape[0])
    summary["image_shape"] = list(imgs.shape[1:])
    summary["bands"] = list(iset.bands)
    summary["units"] = iset.units
    return summary
