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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from galforge import fitsheader, interrupt, outputs
from galforge.errors import BundleError, ConfigError, DiskFullError, Interrupted, ModelError
from galforge.fileio import (
    atomic_file,
    atomic_write_json,
    is_disk_full,
    publish,
    reserve_space,
)
from galforge.generation import fieldio
from galforge.models.capabilities import SOURCES, WINDOWED, capabilities, require
from galforge.runfolder import RunFolder
from galforge.seeding import check_seed, derive_seed, field_chunk_generator

LATENT_CHUNK = 64
#: the zarr specification fields are written in by default, and the names of their axes
ZARR_FORMAT = 3
DIMENSIONS = ("band", "y", "x")
DEFAULT_TILE = 1024
COMPILE_MIN_TILES = 128
FORMATS = ("zarr", "fits", "npy")
#: smallest field side accepted by ``--size``, in pixels
MIN_SIDE = 16
_FITS_BLOCK = 2880


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


def _check_tile(tile: int, upscale: int) -> int:
    tile = int(tile)
    if tile < upscale or tile % upscale:
        raise ConfigError(
            f"--tile {tile}: the tile size must be a positive multiple of {upscale} (the "
            "generator's pixels per latent pixel)"
        )
    return tile


# ---------------------------------------------------------------------------- latent
class FieldLatent:
    """The conceptual latent ``[channels, h, w]`` of a field, drawn chunk by chunk."""

    def __init__(
        self, seed: int, latent_hw: tuple[int, int], channels: int = 50, chunk: int = LATENT_CHUNK
    ):
        self.seed = check_seed(seed)
        self.h, self.w = int(latent_hw[0]), int(latent_hw[1])
        self.channels = int(channels)
        self.chunk = int(chunk)

    def _chunk(self, i: int, j: int) -> torch.Tensor:
        rng = field_chunk_generator(self.seed, i, j)
        return torch.randn((self.channels, self.chunk, self.chunk), generator=rng)

    def window(self, y0: int, x0: int, h: int, w: int) -> torch.Tensor:
        """Latent pixels ``[y0, y0 + h) x [x0, x0 + w)``; zero outside the field."""
        out = torch.zeros((self.channels, h, w))
        ys, ye = max(y0, 0), min(y0 + h, self.h)
        xs, xe = max(x0, 0), min(x0 + w, self.w)
        if ys >= ye or xs >= xe:
            return out
        c = self.chunk
        for i in range(ys // c, (ye - 1) // c + 1):
            for j in range(xs // c, (xe - 1) // c + 1):
                block = self._chunk(i, j)
                cy0, cy1 = max(ys, i * c), min(ye, (i + 1) * c)
                cx0, cx1 = max(xs, j * c), min(xe, (j + 1) * c)
                out[:, cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = block[
                    :, cy0 - i * c : cy1 - i * c, cx0 - j * c : cx1 - j * c
                ]
        return out

    def whole(self) -> torch.Tensor:
        """The whole latent ``[1, channels, h, w]`` (for fields small enough to hold)."""
        return self.window(0, 0, self.h, self.w)[None]


def add_sky_noise(
    generator: nn.Module, y: torch.Tensor, seed: int, field_hw, y0: int, x0: int
) -> torch.Tensor:
    """Pixels ``y`` (model space, ``1×C×h×w``, at ``(y0, x0)`` of a field of ``field_hw``
    pixels) with the generator's learned sky noise added (unchanged for generators without).

    The unit noise is a field of its own, drawn chunk by chunk from ``seed`` like the
    latent, so a field rendered tile by tile equals the one rendered whole.
    """
    sky = getattr(generator, "sky", None)
    if sky is None:
        return y
    h, w = y.shape[-2:]
    noise = FieldLatent(derive_seed(seed, "sky-noise"), field_hw, sky.channels)
    eps = noise.window(y0 - 1, x0 - 1, h + 2, w + 2)[None].to(y.device, y.dtype)
    return sky(y, eps)


def ensemble_index(ty: int, tx: int, k: int, seed: int = 0) -> int:
    """Generator used by tile ``(ty, tx)`` in a ``k``-member self-ensemble (module docstring)."""
    return (ty + 2 * tx + seed) % k


# ---------------------------------------------------------------------------- outputs
def _fits_header(shape: tuple[int, int, int], meta: dict):
    from astropy.io import fits

    c, h, w = shape
    hdr = fits.Header()
    hdr["SIMPLE"] = True
    hdr["BITPIX"] = -32
    hdr["NAXIS"] = 3
    hdr["NAXIS1"] = w
    hdr["NAXIS2"] = h
    hdr["NAXIS3"] = c
    hdr["EXTEND"] = True
    fitsheader.unit_cards(hdr, meta.get("units"))
    fitsheader.band_cards(hdr, list(meta.get("bands", [])), filter_card=False)
    hdr["SEED"] = (int(meta.get("seed", 0)), "latent seed of the field")
    hdr["BUNDLE"] = (str(meta.get("bundle_id", "")), "galforge bundle id of the generator")
    hdr["TILE"] = (int(meta.get("tile", 0)), "tile size used to generate the field")
    hdr["ENSEMBLE"] = (int(meta.get("ensemble", 1)), "generators in the self-ensemble")
    hdr["ORIGIN"] = "galforge"
    fieldio.provenance_cards(hdr, meta)
    return hdr


class _Sink:
    """Where tiles go: the output file, opened lazily in every process that writes."""

    def __init__(self, path: Path, fmt: str, shape: tuple[int, int, int], tile: int):
        self.path, self.fmt, self.shape, self.tile = Path(path), fmt, shape, tile
        self.data_offset = 0

    def create(self, meta: dict) -> None:
        c, h, w = self.shape
        if self.fmt == "zarr":
            import zarr

            version = int(meta.get("zarr_format", ZARR_FORMAT))
            # zarr v3 names the dimensions in the array's metadata; v2 has no such field, so
            # the names go where xarray looks for them (the _ARRAY_DIMENSIONS attribute)
            names = {"dimension_names": DIMENSIONS} if version == 3 else {}
            arr = zarr.open_array(
                str(self.path),
                mode="w",
                shape=self.shape,
                chunks=(c, self.tile, self.tile),
                dtype="float32",
                fill_value=float("nan"),
                zarr_format=version,
                **names,
            )
            arr.attrs.update(meta)
            if version == 2:
                arr.attrs["_ARRAY_DIMENSIONS"] = list(DIMENSIONS)
        elif self.fmt == "npy":
            np.lib.format.open_memmap(self.path, mode="w+", dtype=np.float32, shape=self.shape)
            reserve_space(self.path)  # a full disk now, not a crash when a tile is written
            atomic_write_json(self.path.with_name(self.path.name + ".json"), meta)
        else:
            header = _fits_header(self.shape, meta).tostring().encode("ascii")
            nbytes = c * h * w * 4
            total = len(header) + -(-nbytes // _FITS_BLOCK) * _FITS_BLOCK
            with open(self.path, "wb") as fh:
                fh.write(header)
                fh.truncate(total)

    def open(self) -> None:
        if self.fmt == "fits":
            from astropy.io import fits

            with open(self.path, "rb") as fh:
                hdr = fits.Header.fromfile(fh)
                self.data_offset = fh.tell()
            if (hdr["NAXIS3"], hdr["NAXIS2"], hdr["NAXIS1"]) != self.shape:
                raise ConfigError(f"{self.path}: existing FITS has another shape; remove it")

    def write(self, y0: int, x0: int, data: np.ndarray) -> None:
        c, h, w = data.shape
        if self.fmt == "zarr":
            import zarr

            arr = zarr.open_array(str(self.path), mode="r+")
            arr[:, y0 : y0 + h, x0 : x0 + w] = data
        elif self.fmt == "npy":
            mm = np.load(self.path, mmap_mode="r+")
            mm[:, y0 : y0 + h, x0 : x0 + w] = data
            mm.flush()
            del mm
        else:
            _, fh_h, fh_w = self.shape
            big = np.ascontiguousarray(data.astype(">f4"))
            fd = os.open(self.path, os.O_WRONLY)
            try:
                for ci in range(c):
                    for r in range(h):
                        off = self.data_offset + ((ci * fh_h + y0 + r) * fh_w + x0) * 4
                        os.pwrite(fd, big[ci, r].tobytes(), off)
            finally:
                os.close(fd)

    def read(self, y0: int, y1: int) -> np.ndarray:
        """Rows ``[y0, y1)`` of every band, ``C x rows x W`` float32."""
        if self.fmt == "zarr":
            import zarr

            return np.asarray(zarr.open_array(str(self.path), mode="r")[:, y0:y1, :])
        if self.fmt == "npy":
            return np.array(np.load(self.path, mmap_mode="r")[:, y0:y1, :])
        c, h, w = self.shape
        mm = np.memmap(self.path, dtype=">f4", mode="r", offset=self.data_offset, shape=(c, h, w))
        return np.asarray(mm[:, y0:y1, :], dtype=np.float32)


def read_field(path) -> tuple[np.ndarray, dict]:
    """Read a whole field written by :func:`generate_field` -> ``(C x H x W array, metadata)``.

    Meant for fields that fit in memory (tests, small fields); large fields are better read
    lazily, e.g. with ``zarr.open_array`` or ``astropy.io.fits.open(memmap=True)``.
    """
    path = Path(path)
    if path.is_dir():
        import zarr

        arr = zarr.open_array(str(path), mode="r")
        return np.asarray(arr[...]), dict(arr.attrs)
    if path.suffix == ".npy":
        meta_path = path.with_name(path.name + ".json")
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        return np.load(path), meta
    from astropy.io import fits

    with fits.open(path, memmap=False) as hdul:
        # the primary HDU, or the image extension of a tile-compressed field
        hdu = next((h for h in hdul if h.is_image and h.data is not None), hdul[0])
        hdr = hdu.header
        data = np.asarray(hdu.data, dtype=np.float32)
        meta = {
            "bands": [b for b in str(hdr.get("BANDS", "")).split(",") if b],
            "units": fitsheader.units_from_header(hdr, default=""),
            "seed": hdr.get("SEED"),
            "bundle_id": hdr.get("BUNDLE", ""),
        }
    return data, meta


# ---------------------------------------------------------------------------- rendering
@dataclass
class FieldJob:
    """Everything a worker needs to render and write one tile (picklable)."""

    generators: list[nn.Module]
    normalizer: object | None
    size: tuple[int, int]
    tile: int
    seed: int
    out: Path
    fmt: str
    channels_last: bool = True
    compile: bool = False
    threads: int | None = None
    write_to: Path | None = None  # where tiles go while the field is made (None: out)
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_cache"] = {}
        return state

    @property
    def upscale(self) -> int:
        return int(self.generators[0].upscale)

    @property
    def latent_hw(self) -> tuple[int, int]:
        u = self.upscale
        return math.ceil(self.size[0] / u), math.ceil(self.size[1] / u)

    @property
    def grid(self) -> tuple[int, int]:
        return math.ceil(self.size[0] / self.tile), math.ceil(self.size[1] / self.tile)

    @property
    def progress_dir(self) -> Path:
        return self.out.with_name(self.out.name + ".progress")

    @property
    def staged(self) -> Path:
        """Where a FITS or npy field is made: inside the progress folder, moved to ``out``
        when every tile is written (a half-made field never sits under the final name)."""
        return self.progress_dir / self.out.name

    @property
    def write_path(self) -> Path:
        return self.write_to or self.out

    def marker(self, ty: int, tx: int) -> Path:
        return self.progress_dir / f"tile-{ty:05d}-{tx:05d}.done"

    def tiles(self) -> list[tuple[int, int]]:
        gy, gx = self.grid
        return [(ty, tx) for ty in range(gy) for tx in range(gx)]

    def tile_box(self, ty: int, tx: int) -> tuple[int, int, int, int]:
        y0, x0 = ty * self.tile, tx * self.tile
        return y0, x0, min(self.tile, self.size[0] - y0), min(self.tile, self.size[1] - x0)

    def sink(self) -> _Sink:
        if "sink" not in self._cache:
            c = self.generators[0].channels
            sink = _Sink(self.write_path, self.fmt, (c, *self.size), self.tile)
            sink.open()
            self._cache["sink"] = sink
        return self._cache["sink"]

    def _runner(self, index: int):
        """The (optionally compiled) tile function of generator ``index``, built once."""
        key = ("run", index)
        if key not in self._cache:
            g = self.generators[index]
            if self.channels_last:
                # in place, but as ordinary tensors: run inside inference_mode, the
                # conversion would leave the caller's model unusable with autograd
                with torch.inference_mode(False):
                    g = g.to(memory_format=torch.channels_last)
            fn = g.forward_window
            if self.compile:
                fn = torch.compile(fn, dynamic=False)
            self._cache[key] = fn
        return self._cache[key]

    def render(self, ty: int, tx: int) -> np.ndarray:
        """Tile ``(ty, tx)`` in physical units, ``C x h x w`` float32 (h, w clipped at edges)."""
        if self.threads and torch.get_num_threads() != self.threads:
            # the same intra-op thread count everywhere keeps the sums, hence the pixels,
            # identical whatever process or cluster worker renders the tile
            torch.set_num_threads(self.threads)
        y0, x0, h, w = self.tile_box(ty, tx)
        g = self.generators[0]
        if SOURCES in capabilities(g):
            # a field of sources: the generator draws any window from the seed (physical units)
            with torch.inference_mode():
                y = g.render_window(self.seed, y0, x0, h, w, self.size)
            return np.ascontiguousarray(y.cpu().numpy(), dtype=np.float32)
        plan = g.plan_window(self.tile)
        oy, ox = y0 // self.upscale, x0 // self.upscale
        latent = FieldLatent(self.seed, self.latent_hw, g.latent_channels)
        device = next(g.parameters()).device
        z = latent.window(
            oy + plan.latent_start, ox + plan.latent_start, plan.latent_size, plan.latent_size
        )[None].to(device)
        if self.channels_last:
            z = z.contiguous(memory_format=torch.channels_last)
        lh, lw = self.latent_hw
        interior = (
            oy + plan.latent_start >= 0
            and ox + plan.latent_start >= 0
            and oy + plan.latent_start + plan.latent_size <= lh
            and ox + plan.latent_start + plan.latent_size <= lw
            and self.tile * (ty + 1) <= self.size[0]
            and self.tile * (tx + 1) <= self.size[1]
        )
        masks = None
        if self.compile or not interior:
            # a compiled tile function always takes masks so that one graph serves every tile
            masks = g.window_masks(plan, (oy, ox), self.latent_hw, device=device)
        index = ensemble_index(ty, tx, len(self.generators), self.seed)
        with torch.inference_mode():
            y = self._runner(index)(z, plan, masks)
            y = add_sky_noise(
                self.generators[index], y[:, :, :h, :w].float(), self.seed, self.size, y0, x0
            )
            y = y.cpu().contiguous()
            if self.normalizer is not None:
                y = self.normalizer.inverse(y)
        y = y.numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
        return np.ascontiguousarray(y[0], dtype=np.float32)


def _run_tile(job: FieldJob, ty: int, tx: int) -> int:
    """Render, write and record one tile; returns its pixel count (0: skipped on a stop request)."""
    if interrupt.requested() is not None:
        return 0
    data = job.render(ty, tx)
    y0, x0, h, w = job.tile_box(ty, tx)
    job.sink().write(y0, x0, data)
    job.marker(ty, tx).touch()
    return h * w


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
    *,
    tile: int = DEFAULT_TILE,
    seed: int = 0,
    fmt: str | None = None,
    units: str = "",
    bundle_id: str = "",
    workers: int = 1,
    processes: bool = False,
    scheduler: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    compile: bool | str = "auto",
    channels_last: bool = True,
    progress: bool = True,
    fits_out=None,
    preview=None,
    preview_size: int = 1024,
    extra_meta: dict | None = None,
    threads: int | None = None,
    space_check: bool = True,
    zarr_format: int = ZARR_FORMAT,
) -> FieldResult:
    """Generate a ``size`` (``"HxW"``) field tile by tile and stream it to ``out``.

    ``generator`` is a generator with the ``windowed`` capability (eval mode) or a list of
    them for a self-ensemble (see the module docstring); ``normalizer`` maps the (0, 1) output back to
    physical units (``None``: model space).  ``fmt`` is ``"zarr"`` (default), ``"fits"`` or
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
    the names in the ``_ARRAY_DIMENSIONS`` attribute, as xarray reads them).  The ``OUT.progress/`` records are removed once the field is finished.
    """
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
    tile = _check_tile(tile, upscale)
    out = Path(out)
    if out.name in ("", ".."):
        out = Path(os.path.abspath(out))  # "." or "..": the folder's own name
    fmt = (fmt or _default_format(out)).lower()
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    fieldio.check_suffix(out, fmt)
    if int(zarr_format) not in (2, 3):
        raise ConfigError(
            f"--zarr-format {zarr_format}: choose 3 (zarr-python 3) or 2 (older clients)"
        )
    if fits_out is not None and fmt != "fits":
        fieldio.check_suffix(fits_out, "fits", "--fits")
    if preview is not None:
        fieldio.check_preview_suffix(preview)
    workers = int(workers)
    if workers < 1:
        raise ConfigError(f"--workers {workers}: give at least 1")
    seed = check_seed(seed)
    tile = min(tile, upscale * math.ceil(max(h, w) / upscale))
    if sources:
        compile = False  # no tile network to compile: sources are drawn one by one
    if compile == "auto":
        # compiling gains ~5-10 % per tile over the eager path on CPU but costs 15-60 s once:
        # worth it only for many large tiles
        n_tiles = math.ceil(h / tile) * math.ceil(w / tile)
        compile = n_tiles >= COMPILE_MIN_TILES and tile >= 512 and _compile_available()
    meta = {
        "bands": list(bands),
        "units": units,
        "seed": seed,
        "bundle_id": bundle_id,
        "size": [h, w],
        "tile": tile,
        "ensemble": len(generators),
        "format": fmt,
        "latent_chunk": LATENT_CHUNK,
        **({"zarr_format": int(zarr_format)} if fmt == "zarr" else {}),
        "generator": g0.spec(),
        "ensemble_pattern": "(ty + 2*tx + seed) mod K" if len(generators) > 1 else None,
    }
    meta.update(extra_meta or {})
    job = FieldJob(
        generators,
        normalizer,
        (h, w),
        tile,
        seed,
        out,
        fmt,
        channels_last=channels_last,
        compile=bool(compile),
        threads=int(threads) if threads else torch.get_num_threads(),
    )
    c = g0.channels
    staged = fmt in ("fits", "npy")
    # a finished field, or one begun before staging existed, stays where it is
    if staged and not (out.exists() and not job.staged.exists()):
        job.write_to = job.staged
    sink = _Sink(job.write_path, fmt, (c, h, w), tile)
    job_json = job.progress_dir / "job.json"
    fingerprint = {
        k: meta[k] for k in ("size", "tile", "seed", "bundle_id", "ensemble", "format", "generator")
    }
    meta["job_hash"] = fieldio.job_hash(fingerprint)
    finished = (
        resume
        and not job.progress_dir.exists()
        and fieldio.stored_job_hash(out, fmt) == meta["job_hash"]
    )
    if space_check and not finished:
        started = resume and job.write_path.exists() and job_json.exists()
        n_done = len(list(job.progress_dir.glob("*.done"))) if started else 0
        fieldio.check_space(
            out,
            (g0.channels, h, w),
            extra_copies=int(fits_out is not None and fmt != "fits"),
            todo_fraction=1.0 - n_done / (job.grid[0] * job.grid[1]),
            freed=fieldio.disk_usage(out) if overwrite and not started else 0,
        )
    for option, path in (("--fits", fits_out if fmt != "fits" else None), ("--preview", preview)):
        if path is not None:
            outputs.claim_entry(path, overwrite=overwrite, option=option)
    if sources:
        from galforge.generation.truth import truth_paths

        for path in truth_paths(out):  # the truth catalogue is written beside the pixels
            outputs.claim_entry(path, overwrite=overwrite, resume=resume, option="--out")
    # written with the field: its progress records and an npy field's .json
    extra = (job.progress_dir, *([out.with_name(out.name + ".json")] if fmt == "npy" else []))
    if finished:
        # a finished field (its progress records removed): nothing left to make
        outputs.claim_entry(out, resume=True, extra=extra)
    elif resume and job.write_path.exists() and job_json.exists():
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
            if resume and not overwrite:
                raise ConfigError(
                    f"--resume: {out} has no progress record ({job_json}) of a field started "
                    "by galforge; pass --overwrite to replace it"
                )
        outputs.claim_entry(out, overwrite=overwrite, extra=extra, hint="or --resume to finish it")
        job.write_to = job.staged if staged else None
        sink = _Sink(job.write_path, fmt, (c, h, w), tile)
        job.progress_dir.mkdir(parents=True, exist_ok=True)
        sink.create(meta)
        atomic_write_json(job_json, fingerprint)
    todo = [] if finished else [t for t in job.tiles() if not job.marker(*t).exists()]
    total_tiles = len(job.tiles())
    todo_pixels = sum(job.tile_box(*t)[2] * job.tile_box(*t)[3] for t in todo)

    t0 = time.perf_counter()
    if todo:
        try:
            _execute(job, todo, workers, processes, scheduler, progress, todo_pixels)
        except Exception as exc:
            if is_disk_full(exc):
                raise DiskFullError(
                    job.write_path,
                    "resume with the same command and --resume (the written tiles are kept)",
                ) from None
            if interrupt.requested() is None:
                raise
        _stop_if_interrupted(job)
    seconds = time.perf_counter() - t0
    result = FieldResult(
        out, (c, h, w), total_tiles, total_tiles - len(todo), seconds, tiles_pixels=todo_pixels
    )
    if job.write_path != out:  # every tile written: the field takes its name
        publish(job.write_path, out)
        if fmt == "npy":
            publish(job.write_path.with_name(out.name + ".json"), out.with_name(out.name + ".json"))
        job.write_to = None
        sink = _Sink(out, fmt, (c, h, w), tile)
    sink.open()
    if fits_out is not None and fmt != "fits":
        result.fits_path = write_fits_from(sink, Path(fits_out), meta)
    elif fits_out is not None:
        result.fits_path = out
    if preview is not None:
        result.preview_path = write_preview(sink, Path(preview), bands, units, preview_size)
    if sources:
        from galforge.generation.truth import write_truth

        result.truth_path, _, result.truth_rows = write_truth(
            g0, seed, (h, w), out, bands, tile=tile, pixel_scale=meta.get("pixel_scale")
        )
    outputs.remove_entry(job.progress_dir)  # finished: the tile records go
    return result


def _stop_if_interrupted(job: FieldJob) -> None:
    """SIGINT/SIGTERM (galforge.interrupt): the finished tiles are recorded; stop here."""
    signum = interrupt.requested()
    if signum is None:
        return
    done = sum(1 for t in job.tiles() if job.marker(*t).exists())
    raise Interrupted(
        f"interrupted with {done} of {len(job.tiles())} tiles of {job.out} "
        f"written (recorded in {job.progress_dir})",
        signum=signum,
    )


def _execute(job: FieldJob, todo, workers, processes, scheduler, progress, todo_pixels) -> None:
    import dask
    from tqdm.auto import tqdm

    # pixels with SI prefixes: the rate reads "Mpix/s", the remaining time is the ETA
    bar = tqdm(
        total=todo_pixels,
        unit="pix",
        unit_scale=True,  # a bar on a terminal only
        disable=None if progress else True,
        desc="field",
        dynamic_ncols=True,
        smoothing=0.1,
    )
    try:
        if job.compile and scheduler is None and not processes:
            # compile once here, on the first tile, so that worker threads share the graph
            first = todo[0]
            bar.update(_run_tile(job, *first))
            todo = todo[1:]
        tasks = [dask.delayed(_run_tile, pure=False)(job, ty, tx) for ty, tx in todo]
        if scheduler is not None:
            from distributed import Client, as_completed

            with Client(scheduler) as client:
                futures = client.compute(tasks)
                for fut in as_completed(futures):
                    bar.update(fut.result())
            return
        from dask.callbacks import Callback

        class _Progress(Callback):
            def _posttask(self, key, result, dsk, state, worker_id):
                if isinstance(result, int):
                    bar.update(result)

        if workers == 1 and not processes:
            sched, kwargs = "synchronous", {}
        else:
            sched = "processes" if processes else "threads"
            kwargs = {"num_workers": workers}
        with _Progress():
            dask.compute(*tasks, scheduler=sched, **kwargs)
    finally:
        bar.close()


# ---------------------------------------------------------------------------- extras
def write_fits_from(sink: _Sink, path: Path, meta: dict, rows: int | None = None) -> Path:
    """Stream a zarr/npy field into a FITS cube, a band of rows at a time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        fits_sink = _Sink(tmp, "fits", sink.shape, sink.tile)
        fits_sink.create(meta)
        fits_sink.open()
        rows = rows or sink.tile
        _, h, _ = sink.shape
        for y0 in range(0, h, rows):
            fits_sink.write(y0, 0, sink.read(y0, min(h, y0 + rows)))
    return path


def write_preview(sink: _Sink, path: Path, bands, units, max_side: int = 1024) -> Path:
    """RGB PNG of the field block-averaged so that its longer side is at most ``max_side``."""
    from PIL import Image

    from galforge.data.display import lupton_rgb, preview_png_info

    c, h, w = sink.shape
    f = max(1, math.ceil(max(h, w) / max_side))
    ph, pw = h // f, w // f
    if ph == 0 or pw == 0:
        raise ConfigError(f"preview: the field is too small for a {max_side} pixel preview")
    small = np.zeros((c, ph, pw), np.float32)
    step = max(f, (sink.tile // f) * f)
    for y0 in range(0, ph * f, step):
        y1 = min(ph * f, y0 + step)
        block = sink.read(y0, y1)[:, :, : pw * f]
        small[:, y0 // f : y1 // f] = block.reshape(c, (y1 - y0) // f, f, pw, f).mean(axis=(2, 4))
    rgb = lupton_rgb(small, list(bands), units)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(
            tmp, format="PNG", pnginfo=preview_png_info()
        )
    return path


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
    *,
    ensemble: int | None = None,
    realisations: int | None = None,
    device="auto",
    **options,
) -> list[FieldResult]:
    """Generate a field from a bundle or run folder (see :func:`generate_field`).

    ``ensemble=K`` uses the last K kept snapshots of the run as a self-ensemble;
    ``realisations=R`` writes R fields (``OUT`` with ``_r00``, ``_r01``, ... before the
    suffix), field ``r`` made by the r-th of the last R snapshots from the same latent.
    """
    from galforge.generation.sampling import load_bundle

    bundle = load_bundle(path, device=device)
    gen = bundle.generator
    if WINDOWED not in bundle.capabilities and SOURCES not in bundle.capabilities:
        raise ModelError(
            f"{path}: a {bundle.family!r} generator cannot make deep fields: it has neither "
            "the 'windowed' capability (fully convolutional generators such as sgan) nor "
            "'sources' (fields composed of sources such as deepfield)"
        )
    common = dict(units=bundle.units, bundle_id=bundle.bundle_id)
    common.update(options)
    scale = fieldio.bundle_pixel_scale(bundle)  # the training data's, for the FITS WCS
    common["extra_meta"] = {
        **(common.get("extra_meta") or {}),
        "pixel_scale": scale,
        "zeropoint": bundle.zeropoint,
        "model_created": bundle.created,
    }
    if ensemble and realisations:
        raise ConfigError("--ensemble and --realisations cannot be used together")
    count = ensemble or realisations
    if not count or count == 1:
        return [generate_field(gen, bundle.normalizer, bundle.bands, out, size, **common)]
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
    extra = {"snapshots": [s.name for s in snaps[-count:]]}
    if ensemble:
        common["extra_meta"].update(extra)
        return [generate_field(gens, bundle.normalizer, bundle.bands, out, size, **common)]
    results = []
    out = Path(out)
    for r, g in enumerate(gens):
        per = dict(common)
        per["extra_meta"] = {**common["extra_meta"], "snapshot": snaps[-count + r].name}
        for key in ("fits_out", "preview"):
            if per.get(key) is not None:
                per[key] = _numbered(Path(per[key]), r)
        results.append(
            generate_field(g, bundle.normalizer, bundle.bands, _numbered(out, r), size, **per)
        )
    return results


def _numbered(path: Path, r: int) -> Path:
    """``field.zarr`` -> ``field_r00.zarr`` (the r-th realisation)."""
    stem, dot, suffix = path.name.partition(".")
    return path.with_name(f"{stem}_r{r:02d}{dot}{suffix}")
