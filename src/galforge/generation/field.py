"""Deep fields of any size from a generator with the ``windowed`` capability.

Any generator that declares the ``windowed`` capability (:mod:`galforge.models.capabilities`:
e.g. the fully convolutional Spatial GAN) makes fields; nothing here depends on its family.

How a field is made
-------------------
* **One conceptual latent.**  A field of ``H x W`` pixels has the latent
  ``[latent_channels, ceil(H/u), ceil(W/u)]`` (``u`` the generator's ``upscale``).  It is
  never held whole: it is cut into fixed chunks of ``LATENT_CHUNK x LATENT_CHUNK`` latent
  pixels and chunk ``(i, j)`` is drawn from its own generator
  (:func:`galforge.seeding.field_chunk_generator`).  Any window can be drawn on
  its own, and the values do not depend on the tile size, the worker count or the field size.
* **Seamless tiles.**  Each output tile of ``tile x tile`` pixels is computed from its latent
  window plus a margin that covers the generator's receptive field (its ``plan_window``);
  each layer's output is cropped to what the next layers need and positions outside the
  field are zeroed (its ``window_masks``), so a tile equals the matching part
  of a one-shot pass over the whole latent, edges included.  There are no seams.
* **Bounded memory.**  Tiles stream to a chunked zarr array (default), a FITS file written
  section by section, or a memory-mapped ``.npy``; memory depends on the tile, not the field.
* **Parallel, distributed, resumable.**  Tiles are Dask tasks (threads or processes locally,
  a ``dask.distributed`` cluster with ``scheduler=ADDRESS``).  Every tile runs with the same
  torch thread count, so the pixels are bit-identical whatever the worker count.  A finished
  tile is recorded in ``OUT.progress/`` after its pixels are written; ``resume=True`` skips
  recorded tiles.  The records are removed when the field is finished; the settings hash
  kept in the output (:mod:`galforge.generation.fieldio`) then marks it as finished.
* **Speed.**  On CPU the tile path runs in channels-last layout and lets every transposed
  convolution crop itself through its (symmetric) padding, so no layer copies a crop; the
  field is bounded by the convolutions.  ``torch.compile`` adds a few per cent for a one-off
  warm-up and is used for very large fields only (``compile="auto"``).
* **Self-ensemble.**  With several generators (snapshots of one training run), tile
  ``(ty, tx)`` uses generator ``(ty + 2 tx + seed) mod K``.  Each row of tiles is a cyclic
  shift of the previous one, so every snapshot is used equally often; for ``K >= 4`` no two
  tiles sharing an edge or a corner use the same snapshot, which spreads any one snapshot's
  quirks evenly instead of in blocks (Smith & Geach combined their 21 snapshots in the same
  spirit).  The pattern is deterministic, so the field is reproducible; it is tied to the tile
  grid, so ensemble fields depend on ``tile``.  The shared latent keeps large-scale structure
  continuous across tile edges.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

import numpy as np
import torch
from torch import nn

from galforge import interrupt, outputs
from galforge.errors import BundleError, ConfigError, DiskFullError, ModelError
from galforge.fileio import atomic_write_json, is_disk_full, publish
from galforge.generation import fieldio
from galforge.generation.fieldjob import FieldJob, execute_tiles, stop_if_interrupted
from galforge.generation.fieldlatent import (
    LATENT_CHUNK,
    FieldLatent,
    add_sky_noise,
    ensemble_index,
)
from galforge.generation.fieldsink import (
    DIMENSIONS,
    ZARR_FORMAT,
    FieldSink,
    read_field,
    write_fits_from,
    write_preview,
)
from galforge.models.capabilities import SOURCES, WINDOWED, capabilities, require
from galforge.options import Options
from galforge.runfolder import RunFolder
from galforge.seeding import check_seed

__all__ = [
    "DIMENSIONS",
    "LATENT_CHUNK",
    "ZARR_FORMAT",
    "FieldJob",
    "FieldLatent",
    "FieldOptions",
    "FieldResult",
    "FieldSink",
    "add_sky_noise",
    "ensemble_index",
    "field_from_bundle",
    "generate_field",
    "load_snapshot_generator",
    "parse_size",
    "read_field",
    "render_one_shot",
    "snapshot_dirs",
    "write_fits_from",
    "write_preview",
]

DEFAULT_TILE = 1024
COMPILE_MIN_TILES = 128
#: the formats a field is written in
Format = Literal["zarr", "fits", "npy"]
FORMATS: tuple[str, ...] = get_args(Format)
#: smallest field side accepted by ``--size``, in pixels
MIN_SIDE = 16


# ---------------------------------------------------------------------------- arguments
def parse_size(text: str | Sequence[int], option: str = "--size") -> tuple[int, int]:
    """``"HxW"`` (or ``"N"`` for a square, or a pair) -> ``(H, W)`` in pixels."""
    if isinstance(text, str):
        parts = text.lower().replace("×", "x").split("x")
        try:
            values = [int(p) for p in parts]
        except ValueError:
            raise ConfigError(f"{option} {text!r} is not HxW in pixels (e.g. 4096x4096)") from None
    else:
        values = [int(v) for v in text]
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < MIN_SIDE:
        raise ConfigError(
            f"{option} {text!r}: give HxW with both sides at least {MIN_SIDE} pixels "
            "(e.g. 4096x4096)"
        )
    return values[0], values[1]


@dataclass(frozen=True)
class FieldOptions(Options):
    """How :func:`generate_field` makes and writes a field (its docstring says what each
    option does).  ``fmt`` is lower-cased (``None``/``""``: from the suffix of the output);
    choices, ``workers`` and ``seed`` are checked when the object is made."""

    CALLER: ClassVar[str] = "generate_field"

    tile: int = field(default=DEFAULT_TILE, metadata={"option": "--tile"})
    seed: int = field(default=0, metadata={"option": "--seed"})
    fmt: Format | None = field(default=None, metadata={"option": "--format"})
    units: str = ""
    bundle_id: str = ""
    workers: int = field(default=1, metadata={"option": "--workers"})
    processes: bool = False
    scheduler: str | None = None
    resume: bool = False
    overwrite: bool = False
    compile: bool | Literal["auto"] = "auto"
    channels_last: bool = True
    progress: bool = True
    fits_out: str | os.PathLike | None = None
    preview: str | os.PathLike | None = None
    preview_size: int = 1024
    extra_meta: dict | None = None
    threads: int | None = None
    space_check: bool = True
    zarr_format: Literal[2, 3] = field(
        default=ZARR_FORMAT,
        metadata={"option": "--zarr-format", "choices": "3 (zarr-python 3) or 2 (older clients)"},
    )

    def __post_init__(self) -> None:
        if isinstance(self.fmt, str):
            self._set("fmt", self.fmt.lower() or None)
        zf = self.zarr_format
        if isinstance(zf, (str, float)) and not isinstance(zf, bool):
            try:  # "3" or 3.0 as 3, as before
                if int(zf) == float(zf):
                    self._set("zarr_format", int(zf))
            except ValueError:
                pass
        super().__post_init__()
        if int(self.workers) < 1:
            raise ConfigError(f"--workers {self.workers}: give at least 1")
        self._set("workers", int(self.workers))
        self._set("seed", check_seed(self.seed))


def _check_tile(tile: int, upscale: int) -> int:
    tile = int(tile)
    if tile < upscale or tile % upscale:
        raise ConfigError(
            f"--tile {tile}: the tile size must be a positive multiple of {upscale} (the "
            "generator's pixels per latent pixel)"
        )
    return tile


# ---------------------------------------------------------------------------- driver
@dataclass
class FieldResult:
    """What :func:`generate_field` did."""

    path: Path
    shape: tuple[int, int, int]
    tiles_total: int
    tiles_done: int
    seconds: float
    fits_path: Path | None = None
    preview_path: Path | None = None
    #: the truth catalogue (``<out>.truth.csv``; ``.truth.fits`` beside it) of a field of sources
    truth_path: Path | None = None
    truth_rows: int = 0

    @property
    def mpix_per_s(self) -> float:
        return 0.0 if self.seconds <= 0 else self.tiles_pixels / self.seconds / 1e6

    tiles_pixels: int = 0


def _default_format(out: Path) -> str:
    s = out.name.lower()
    if s.endswith((".fits", ".fit", ".fits.fz")):
        return "fits"
    if s.endswith(".npy"):
        return "npy"
    return "zarr"


def _compile_available() -> bool:
    return shutil.which(os.environ.get("CXX", "g++")) is not None or shutil.which("cc") is not None


@outputs.owning
def generate_field(
    generator: nn.Module | Sequence[nn.Module],
    normalizer,
    bands: Sequence[str],
    out,
    size,
    options: FieldOptions | Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> FieldResult:
    """Generate a ``size`` (``"HxW"``) field tile by tile and stream it to ``out``.

    ``generator`` is a generator with the ``windowed`` capability (eval mode) or a list of
    them for a self-ensemble (see the module docstring); ``normalizer`` maps the (0, 1) output
    back to physical units (``None``: model space).  The settings below are a
    :class:`FieldOptions` (``options``) or its keywords, laid over it when both are given.
    ``fmt`` is ``"zarr"`` (default), ``"fits"`` or
    ``"npy"`` (guessed from the suffix of ``out`` when omitted).  ``workers`` tiles run at once
    as Dask tasks (threads, or processes with ``processes=True``); ``scheduler`` is the address
    of a ``dask.distributed`` scheduler (``out`` must then be on storage the workers share).
    ``resume=True`` keeps the tiles already recorded as finished.  ``compile``: compile the
    tile function with ``torch.compile`` (one static shape serves every tile); ``"auto"``
    compiles when the field has at least ``COMPILE_MIN_TILES`` tiles of 512 pixels or more and
    a C compiler exists.
    ``fits_out`` additionally writes a FITS cube (streamed from the zarr/npy output);
    ``preview`` writes an RGB PNG of the field block-averaged to at most ``preview_size``
    pixels a side.  ``threads``: torch intra-op threads used for every tile, in every
    process and on every cluster worker (default: this process's count); convolution sums
    depend on it, so fixing it is what keeps the output bit-identical whatever
    ``workers``/``processes``/``scheduler`` are.
    ``space_check``: refuse a field larger than the free disk space (estimated before the
    first tile).  ``zarr_format``: the zarr specification a zarr field is written in, 3 (the
    default; its metadata names the dimensions band, y, x) or 2 (readable by zarr-python 2;
    the names in the ``_ARRAY_DIMENSIONS`` attribute, as xarray reads them).  The
    ``OUT.progress/`` records are removed once the field is finished.
    """
    o = FieldOptions.build(options, **kwargs)
    generators = list(generator) if isinstance(generator, (list, tuple)) else [generator]
    if not generators:
        raise ModelError("generate_field: no generator given")
    sources = SOURCES in capabilities(generators[0])
    for g in generators:
        if not sources:
            require(g, WINDOWED, "a deep field")
        g.eval()
    g0 = generators[0]
    for g in generators[1:]:
        if g.spec() != g0.spec():
            raise ModelError("generate_field: ensemble generators must share one architecture")
    bands = tuple(bands)
    if len(bands) != g0.channels:
        raise ModelError(
            f"generate_field: {len(bands)} band names for a {g0.channels}-band generator"
        )
    h, w = parse_size(size)
    upscale = int(g0.upscale)
    tile = _check_tile(o.tile, upscale)
    out = Path(out)
    if out.name in ("", ".."):
        out = Path(os.path.abspath(out))  # "." or "..": the folder's own name
    fmt = o.fmt or _default_format(out)
    fieldio.check_suffix(out, fmt)
    if o.fits_out is not None and fmt != "fits":
        fieldio.check_suffix(o.fits_out, "fits", "--fits")
    if o.preview is not None:
        fieldio.check_preview_suffix(o.preview)
    seed = o.seed
    tile = min(tile, upscale * math.ceil(max(h, w) / upscale))
    compile = False if sources else o.compile  # sources are drawn one by one: nothing to compile
    if compile == "auto":
        # compiling gains ~5-10 % per tile over the eager path on CPU but costs 15-60 s once:
        # worth it only for many large tiles
        n_tiles = math.ceil(h / tile) * math.ceil(w / tile)
        compile = n_tiles >= COMPILE_MIN_TILES and tile >= 512 and _compile_available()
    meta = {
        "bands": list(bands),
        "units": o.units,
        "seed": seed,
        "bundle_id": o.bundle_id,
        "size": [h, w],
        "tile": tile,
        "ensemble": len(generators),
        "format": fmt,
        "latent_chunk": LATENT_CHUNK,
        **({"zarr_format": int(o.zarr_format)} if fmt == "zarr" else {}),
        "generator": g0.spec(),
        "ensemble_pattern": "(ty + 2*tx + seed) mod K" if len(generators) > 1 else None,
    }
    meta.update(o.extra_meta or {})
    job = FieldJob(
        generators,
        normalizer,
        (h, w),
        tile,
        seed,
        out,
        fmt,
        channels_last=o.channels_last,
        compile=bool(compile),
        threads=int(o.threads) if o.threads else torch.get_num_threads(),
    )
    c = g0.channels
    staged = fmt in ("fits", "npy")
    # a finished field, or one begun before staging existed, stays where it is
    if staged and not (out.exists() and not job.staged.exists()):
        job.write_to = job.staged
    sink = FieldSink(job.write_path, fmt, (c, h, w), tile)
    job_json = job.progress_dir / "job.json"
    fingerprint = {
        k: meta[k] for k in ("size", "tile", "seed", "bundle_id", "ensemble", "format", "generator")
    }
    meta["job_hash"] = fieldio.job_hash(fingerprint)
    finished = (
        o.resume
        and not job.progress_dir.exists()
        and fieldio.stored_job_hash(out, fmt) == meta["job_hash"]
    )
    if o.space_check and not finished:
        started = o.resume and job.write_path.exists() and job_json.exists()
        n_done = len(list(job.progress_dir.glob("*.done"))) if started else 0
        fieldio.check_space(
            out,
            (g0.channels, h, w),
            extra_copies=int(o.fits_out is not None and fmt != "fits"),
            todo_fraction=1.0 - n_done / (job.grid[0] * job.grid[1]),
            freed=fieldio.disk_usage(out) if o.overwrite and not started else 0,
        )
    for option, path in (
        ("--fits", o.fits_out if fmt != "fits" else None),
        ("--preview", o.preview),
    ):
        if path is not None:
            outputs.claim_entry(path, overwrite=o.overwrite, option=option)
    if sources:
        from galforge.generation.truth import truth_paths

        for path in truth_paths(out):  # the truth catalogue is written beside the pixels
            outputs.claim_entry(path, overwrite=o.overwrite, resume=o.resume, option="--out")
    # written with the field: its progress records and an npy field's .json
    extra = (job.progress_dir, *([out.with_name(out.name + ".json")] if fmt == "npy" else []))
    if finished:
        # a finished field (its progress records removed): nothing left to make
        outputs.claim_entry(out, resume=True, extra=extra)
    elif o.resume and job.write_path.exists() and job_json.exists():
        outputs.claim_entry(
            out,
            resume=True,
            extra=extra,
            hint="or drop --resume and pass --overwrite to start again",
        )
        previous = json.loads(job_json.read_text())
        if previous != fingerprint:
            changed = sorted(k for k in fingerprint if previous.get(k) != fingerprint[k])
            raise ConfigError(
                f"--resume: {out} was started with other settings ({', '.join(changed)}); "
                "use the same options, or drop --resume and pass --overwrite to start again"
            )
    else:
        if out.exists() or job.progress_dir.exists():
            if o.resume and not o.overwrite:
                raise ConfigError(
                    f"--resume: {out} has no progress record ({job_json}) of a field started "
                    "by galforge; pass --overwrite to replace it"
                )
        outputs.claim_entry(
            out, overwrite=o.overwrite, extra=extra, hint="or --resume to finish it"
        )
        job.write_to = job.staged if staged else None
        sink = FieldSink(job.write_path, fmt, (c, h, w), tile)
        job.progress_dir.mkdir(parents=True, exist_ok=True)
        sink.create(meta)
        atomic_write_json(job_json, fingerprint)
    todo = [] if finished else [t for t in job.tiles() if not job.marker(*t).exists()]
    total_tiles = len(job.tiles())
    todo_pixels = sum(job.tile_box(*t)[2] * job.tile_box(*t)[3] for t in todo)

    t0 = time.perf_counter()
    if todo:
        try:
            execute_tiles(job, todo, o.workers, o.processes, o.scheduler, o.progress, todo_pixels)
        except Exception as exc:
            if is_disk_full(exc):
                raise DiskFullError(
                    job.write_path,
                    "resume with the same command and --resume (the written tiles are kept)",
                ) from None
            if interrupt.requested() is None:
                raise
        stop_if_interrupted(job)
    seconds = time.perf_counter() - t0
    result = FieldResult(
        out, (c, h, w), total_tiles, total_tiles - len(todo), seconds, tiles_pixels=todo_pixels
    )
    if job.write_path != out:  # every tile written: the field takes its name
        publish(job.write_path, out)
        if fmt == "npy":
            publish(job.write_path.with_name(out.name + ".json"), out.with_name(out.name + ".json"))
        job.write_to = None
        sink = FieldSink(out, fmt, (c, h, w), tile)
    sink.open()
    if o.fits_out is not None and fmt != "fits":
        result.fits_path = write_fits_from(sink, Path(o.fits_out), meta)
    elif o.fits_out is not None:
        result.fits_path = out
    if o.preview is not None:
        result.preview_path = write_preview(sink, Path(o.preview), bands, o.units, o.preview_size)
    if sources:
        from galforge.generation.truth import write_truth

        result.truth_path, _, result.truth_rows = write_truth(
            g0, seed, (h, w), out, bands, tile=tile, pixel_scale=meta.get("pixel_scale")
        )
    outputs.remove_entry(job.progress_dir)  # finished: the tile records go
    return result


def render_one_shot(generator: nn.Module, normalizer, size, seed: int = 0) -> np.ndarray:
    """The whole field in one pass over the whole latent (for small fields and checks)."""
    h, w = parse_size(size)
    if SOURCES in capabilities(generator):
        with torch.inference_mode():
            return generator.render_window(seed, 0, 0, h, w, (h, w)).cpu().numpy()
    require(generator, WINDOWED, "a deep field")
    u = int(generator.upscale)
    latent = FieldLatent(seed, (math.ceil(h / u), math.ceil(w / u)), generator.latent_channels)
    device = next(generator.parameters()).device
    with torch.inference_mode():
        y = generator(latent.whole().to(device))[:, :, :h, :w].float()
        y = add_sky_noise(generator, y, seed, (h, w), 0, 0).cpu()
        if normalizer is not None:
            y = normalizer.inverse(y)
    y = y.numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    return np.asarray(y[0], dtype=np.float32)


# ---------------------------------------------------------------------------- bundles / runs
def snapshot_dirs(run_dir) -> list[Path]:
    """Kept snapshots ``RUN/checkpoints/step-XXXXXXXX`` of a run, oldest first."""
    return RunFolder(run_dir).snapshots()


def load_snapshot_generator(snapshot: Path, template: nn.Module) -> nn.Module:
    """A copy of ``template`` with the generator weights of one kept snapshot."""
    import copy

    run = RunFolder(Path(snapshot).parent.parent)
    state = run.snapshot_weights(Path(snapshot), template.state_dict())
    g = copy.deepcopy(template)
    g.load_state_dict(state)
    return g.eval()


def field_from_bundle(
    path,
    out,
    size,
    options: FieldOptions | Mapping[str, Any] | None = None,
    *,
    ensemble: int | None = None,
    realisations: int | None = None,
    device="auto",
    **kwargs: Any,
) -> list[FieldResult]:
    """Generate a field from a bundle or run folder (see :func:`generate_field`; its options
    as a :class:`FieldOptions` or keywords).

    ``ensemble=K`` uses the last K kept snapshots of the run as a self-ensemble;
    ``realisations=R`` writes R fields (``OUT`` with ``_r00``, ``_r01``, ... before the
    suffix), field ``r`` made by the r-th of the last R snapshots from the same latent.
    ``units`` and ``bundle_id`` default to the bundle's.
    """
    from galforge.generation.sampling import load_bundle

    given = FieldOptions.build(options, **kwargs)
    bundle = load_bundle(path, device=device)
    gen = bundle.generator
    if WINDOWED not in bundle.capabilities and SOURCES not in bundle.capabilities:
        raise ModelError(
            f"{path}: a {bundle.family!r} generator cannot make deep fields: it has neither "
            "the 'windowed' capability (fully convolutional generators such as sgan) nor "
            "'sources' (fields composed of sources such as deepfield)"
        )
    scale = fieldio.bundle_pixel_scale(bundle)  # the training data's, for the FITS WCS
    o = given.replace(
        units=given.units or bundle.units,
        bundle_id=given.bundle_id or bundle.bundle_id,
        extra_meta={
            **(given.extra_meta or {}),
            "pixel_scale": scale,
            "zeropoint": bundle.zeropoint,
            "model_created": bundle.created,
        },
    )
    if ensemble and realisations:
        raise ConfigError("--ensemble and --realisations cannot be used together")
    count = ensemble or realisations
    if not count or count == 1:
        return [generate_field(gen, bundle.normalizer, bundle.bands, out, size, o)]
    run_dir = Path(path)
    if (run_dir / "bundle.json").exists() and not RunFolder(run_dir).checkpoints.exists():
        run_dir = run_dir.parent
    snaps = RunFolder(run_dir).snapshots()
    if len(snaps) < count:
        raise BundleError(
            f"{path}: {'--ensemble' if ensemble else '--realisations'} {count} needs {count} "
            f"kept snapshots in {RunFolder(run_dir).checkpoints}, found {len(snaps)}; train with a "
            "snapshot cadence (--set train.snapshot_every=K) or ask for fewer"
        )
    gens = [load_snapshot_generator(s, gen) for s in snaps[-count:]]
    if ensemble:
        o = o.replace(extra_meta={**o.extra_meta, "snapshots": [s.name for s in snaps[-count:]]})
        return [generate_field(gens, bundle.normalizer, bundle.bands, out, size, o)]
    results = []
    out = Path(out)
    for r, g in enumerate(gens):
        per = o.replace(
            extra_meta={**o.extra_meta, "snapshot": snaps[-count + r].name},
            fits_out=None if o.fits_out is None else _numbered(Path(o.fits_out), r),
            preview=None if o.preview is None else _numbered(Path(o.preview), r),
        )
        results.append(
            generate_field(g, bundle.normalizer, bundle.bands, _numbered(out, r), size, per)
        )
    return results


def _numbered(path: Path, r: int) -> Path:
    """``field.zarr`` -> ``field_r00.zarr`` (the r-th realisation)."""
    stem, dot, suffix = path.name.partition(".")
    return path.with_name(f"{stem}_r{r:02d}{dot}{suffix}")
