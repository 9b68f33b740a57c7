"""Colour views of multi-band images: asinh (Lupton) stretch, sample grids, PNG output.

Images are ``C×H×W`` (one image) or ``N×C×H×W`` (a set) arrays in physical units, with one
band name per channel. They are mapped to three display channels (R, G, B) as follows:

* 1 band: grey (the band goes into all three display channels);
* 2 bands: the bluer band is B, the redder band is R, and G is their mean;
* 3 bands: the reddest band is R, the middle one G, the bluest B. Known filter names
  (``u g r i z y``, ``U B V R I J H K``, HST/JWST ``F606W``-style names, GALEX ``FUV NUV``,
  WISE ``W1..W4``) are sorted by wavelength; otherwise the bands are taken to be ordered
  blue to red, as in ``("g", "r", "i")``;
* 4 or more bands: ``g, r, i`` when all three are present, otherwise the bluest, the middle
  and the reddest band;
* bands named ``R``, ``G``, ``B`` (a colour composite such as a JPEG): used as they are.

Two stretches exist. ``"lupton"`` is the asinh colour stretch of Lupton et al. (2004, PASP
116, 133): the intensity ``I`` (mean of the three background-subtracted channels) is mapped
through ``asinh(Q I / stretch) / Q`` and each channel is scaled by the same factor, so
colours are preserved while faint structure is lifted. ``"linear"`` maps a fixed range
(e.g. 0..255 for 8-bit data) straight to display levels, so data that already are 8-bit
RGB levels look exactly like the original picture. ``"auto"`` (the default) picks linear
for colour composites and for data in 8/16-bit levels, Lupton otherwise.

A :class:`DisplayStretch` is fitted once on a whole set (:func:`fit_stretch`) and applied to
every image, so the images of a grid are shown on the same scale and can be compared.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from galforge.errors import DataError
from galforge.fileio import atomic_write_bytes

__all__ = [
    "DisplayStretch",
    "band_wavelength",
    "channel_mixing",
    "fit_stretch",
    "lupton_rgb",
    "make_grid",
    "save_grid",
    "to_rgb",
]

# Approximate effective wavelengths in nanometres of common filter names.
_WAVELENGTH_NM = {
    "FUV": 152.0,
    "NUV": 231.0,
    "u": 355.0,
    "g": 477.0,
    "r": 623.0,
    "i": 763.0,
    "z": 913.0,
    "y": 1004.0,
    "U": 365.0,
    "B": 445.0,
    "V": 551.0,
    "R": 658.0,
    "I": 806.0,
    "Z": 900.0,
    "Y": 1020.0,
    "J": 1250.0,
    "H": 1650.0,
    "K": 2200.0,
    "Ks": 2150.0,
    "W1": 3400.0,
    "W2": 4600.0,
    "W3": 12000.0,
    "W4": 22000.0,
}
_FILTER_RE = re.compile(r"^F(\d{3,4})(W|M|N|LP|X|W2)?$", re.IGNORECASE)

#: Display pixels a grid tile is enlarged to at least (nearest-neighbour, integer factor).
MIN_TILE_PIXELS = 64


def band_wavelength(name: str) -> float | None:
    """Approximate wavelength in nm of a filter name, or ``None`` when it is not recognised.

    HST/JWST names give their number: ``F606W`` -> 606 nm; three-digit numbers below 200
    are in units of 10 nm (``F125W`` -> 1250 nm, ``F090W`` -> 900 nm).
    """
    key = str(name).strip()
    for candidate in (key, key.split("_")[-1], key.split("-")[-1]):
        if candidate in _WAVELENGTH_NM:
            return _WAVELENGTH_NM[candidate]
        match = _FILTER_RE.match(candidate)
        if match:
            number = float(match.group(1))
            return number * 10.0 if number < 200 else number
    return None


def _is_rgb_composite(bands: Sequence[str]) -> bool:
    return len(bands) == 3 and sorted(str(b).strip().upper() for b in bands) == ["B", "G", "R"]


def channel_mixing(bands: Sequence[str]) -> np.ndarray:
    """The 3×C matrix that turns C bands into display R, G, B (rows), as the module describes."""
    bands = [str(b) for b in bands]
    n = len(bands)
    if n == 0:
        raise DataError("display: no band names given; pass one name per image channel")
    mix = np.zeros((3, n), dtype=np.float64)
    if _is_rgb_composite(bands):
        upper = [b.strip().upper() for b in bands]
        for row, name in enumerate(("R", "G", "B")):
            mix[row, upper.index(name)] = 1.0
        return mix
    if n == 1:
        mix[:, 0] = 1.0
        return mix
    order = list(range(n))  # blue -> red
    waves = [band_wavelength(b) for b in bands]
    if all(w is not None for w in waves):
        order = sorted(range(n), key=lambda k: (waves[k], k))
    if n == 2:
        blue, red = order
        mix[0, red] = 1.0
        mix[1, blue] = mix[1, red] = 0.5
        mix[2, blue] = 1.0
        return mix
    if n == 3:
        chosen = order
    else:
        lower = [b.strip() for b in bands]
        if all(x in lower for x in ("g", "r", "i")):
            chosen = [lower.index("g"), lower.index("r"), lower.index("i")]
        else:
            chosen = [order[0], order[n // 2], order[-1]]
    blue, mid, red = chosen
    mix[0, red] = 1.0
    mix[1, mid] = 1.0
    mix[2, blue] = 1.0
    return mix


@dataclass
class DisplayStretch:
    """A fitted mapping from physical images to 8-bit RGB, shared by every image of a set.

    ``mode`` is ``"lupton"`` or ``"linear"``; ``mixing`` is the 3×C band-to-RGB matrix;
    ``black`` the per display channel level shown as black; for ``"linear"``, ``white`` is
    the level shown as full brightness; for ``"lupton"``, ``q`` and ``softening`` are the
    ``Q`` and ``stretch`` of Lupton et al. and ``scale`` makes the bright reference
    intensity (``white``) reach full brightness.
    """

    mode: str
    mixing: np.ndarray
    black: np.ndarray
    white: float
    q: float = 8.0
    softening: float = 1.0
    scale: float = 1.0
    bands: tuple[str, ...] = field(default_factory=tuple)

    def apply(self, images: np.ndarray) -> np.ndarray:
        """Map ``N×C×H×W`` (or ``C×H×W``) images to uint8 ``N×H×W×3`` (or ``H×W×3``)."""
        arr = np.asarray(images)
        single = arr.ndim == 3
        if single:
            arr = arr[None]
        if arr.ndim != 4 or arr.shape[1] != self.mixing.shape[1]:
            raise DataError(
                f"display: images of shape {tuple(np.shape(images))} do not match the "
                f"{self.mixing.shape[1]} bands {self.bands}; pass C×H×W or N×C×H×W arrays"
            )
        out = np.empty((arr.shape[0], arr.shape[2], arr.shape[3], 3), dtype=np.uint8)
        for k in range(arr.shape[0]):  # one image at a time keeps memory small
            rgb = _mix(arr[k : k + 1], self.mixing)[0]
            rgb = rgb - self.black[:, None, None]
            if self.mode == "linear":
                span = max(self.white, 1e-30)
                levels = np.clip(rgb / span, 0.0, 1.0)
            else:
                levels = _lupton_levels(rgb, self.q, self.softening, self.scale)
            out[k] = np.round(levels * 255.0).astype(np.uint8).transpose(1, 2, 0)
        return out[0] if single else out


def _mix(images: np.ndarray, mixing: np.ndarray) -> np.ndarray:
    data = np.nan_to_num(np.asarray(images, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    return np.einsum("rc,nchw->nrhw", mixing, data)


def _lupton_levels(rgb: np.ndarray, q: float, softening: float, scale: float) -> np.ndarray:
    positive = np.maximum(rgb, 0.0)
    intensity = positive.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.arcsinh(q * intensity / softening) / q * scale / intensity
    factor = np.where(intensity > 0, factor, scale / softening)
    levels = positive * factor[None]
    peak = levels.max(axis=0)
    levels = np.where(peak[None] > 1.0, levels / np.maximum(peak[None], 1e-30), levels)
    return np.clip(levels, 0.0, 1.0)


def _level_range(units: str | None) -> float | None:
    text = (units or "").lower()
    if "16-bit" in text or "16 bit" in text:
        return 65535.0
    if "8-bit" in text or "8 bit" in text:
        return 255.0
    return None


def _sample_pixels(mixed: np.ndarray, limit: int = 4_000_000) -> np.ndarray:
    """Every k-th image so that fitting a stretch on a huge set stays cheap (deterministic)."""
    per_image = int(np.prod(mixed.shape[1:]))
    step = max(1, math.ceil(mixed.shape[0] * per_image / limit))
    return mixed[::step]


def fit_stretch(
    images: np.ndarray,
    bands: Sequence[str],
    units: str | None = None,
    *,
    mode: str = "auto",
    q: float = 8.0,
    softening: float | None = None,
    white_percentile: float = 99.5,
    black: Sequence[float] | None = None,
) -> DisplayStretch:
    """Fit one display stretch on a set of images (``N×C×H×W`` or ``C×H×W``).

    ``mode``: ``"auto"``, ``"lupton"`` or ``"linear"`` (see the module notes). For Lupton,
    the black level of each display channel is the median of the images' border pixels
    (the sky of a stamp), the intensity at ``white_percentile`` of the set is shown at full
    brightness, and ``softening`` (the ``stretch`` of Lupton et al.) defaults to half of
    that intensity. For linear, 8-bit data (units mentioning ``8-bit``) span 0..255, 16-bit
    data 0..65535; other data their ``[0, 1]``, ``[0, 255]`` or ``[0, 65535]`` range when
    they fit in it, and otherwise their 0.5..99.5 percentiles.
    """
    bands = tuple(str(b) for b in bands)
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[0] == 0:
        raise DataError(
            f"display: expected C×H×W or N×C×H×W images, got shape {tuple(np.shape(images))}"
        )
    if arr.shape[1] != len(bands):
        raise DataError(
            f"display: images have {arr.shape[1]} channels but {len(bands)} band names "
            f"{bands} were given; pass one band name per channel"
        )
    if mode not in ("auto", "lupton", "linear"):
        raise DataError(f"display: unknown stretch mode {mode!r}; use auto, lupton or linear")
    mixing = channel_mixing(bands)
    mixed = _mix(_sample_pixels(arr), mixing)
    level_max = _level_range(units)
    if mode == "auto":
        mode = "linear" if (level_max is not None or _is_rgb_composite(bands)) else "lupton"
    if mode == "linear":
        if black is not None:
            lo = float(np.min(black))
            hi = float(np.nanmax(mixed))
        elif level_max is not None:
            lo, hi = 0.0, level_max
        else:
            dmin, dmax = float(np.min(mixed)), float(np.max(mixed))
            lo, hi = 0.0, None
            for top in (1.0, 255.0, 65535.0):
                if dmin >= -1e-6 * top and dmax <= top * (1 + 1e-6):
                    hi = top
                    break
            if hi is None:
                lo, hi = (float(v) for v in np.percentile(mixed, [0.5, 99.5]))
        white = max(hi - lo, 1e-30)
        return DisplayStretch("linear", mixing, np.full(3, lo), white, bands=bands)
    if black is not None:
        black_levels = np.broadcast_to(np.asarray(black, dtype=np.float64), (3,)).copy()
    else:
        h, w = mixed.shape[2], mixed.shape[3]
        bh, bw = max(1, h // 8), max(1, w // 8)
        border = np.concatenate(
            [
                mixed[:, :, :bh, :].reshape(mixed.shape[0], 3, -1),
                mixed[:, :, -bh:, :].reshape(mixed.shape[0], 3, -1),
                mixed[:, :, :, :bw].reshape(mixed.shape[0], 3, -1),
                mixed[:, :, :, -bw:].reshape(mixed.shape[0], 3, -1),
            ],
            axis=2,
        )
        black_levels = np.median(border.transpose(1, 0, 2).reshape(3, -1), axis=1)
    intensity = np.maximum(mixed - black_levels[None, :, None, None], 0.0).mean(axis=1)
    white = float(np.percentile(intensity, white_percentile))
    if not white > 0:
        white = float(intensity.max())
    if not white > 0:
        white = 1.0
    soft = float(softening) if softening is not None else white / 2.0
    scale = q / math.asinh(q * white / soft)
    return DisplayStretch(
        "lupton", mixing, black_levels, white, q=float(q), softening=soft, scale=scale, bands=bands
    )


def to_rgb(
    images: np.ndarray,
    bands: Sequence[str],
    units: str | None = None,
    *,
    stretch: DisplayStretch | None = None,
    **options,
) -> np.ndarray:
    """uint8 ``N×H×W×3`` views of ``N×C×H×W`` images with one stretch fitted on the whole set."""
    if stretch is None:
        stretch = fit_stretch(images, bands, units, **options)
    return stretch.apply(np.asarray(images) if np.ndim(images) == 4 else np.asarray(images)[None])


def lupton_rgb(
    image_chw: np.ndarray,
    bands: Sequence[str],
    units: str | None = None,
    *,
    stretch: DisplayStretch | None = None,
    **options,
) -> np.ndarray:
    """uint8 ``H×W×3`` colour view of one ``C×H×W`` image (asinh/Lupton unless ``mode``).

    Pass ``stretch`` (from :func:`fit_stretch` on a whole set) to show several images on the
    same scale; otherwise a stretch is fitted on this image alone with ``options``
    (``mode``, ``q``, ``softening``, ``white_percentile``, ``black``).
    """
    arr = np.asarray(image_chw)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise DataError(
            f"lupton_rgb: expected a C×H×W image, got shape {tuple(np.shape(image_chw))}"
        )
    if stretch is None:
        stretch = fit_stretch(arr, bands, units, **options)
    return stretch.apply(arr)


def make_grid(
    images_nchw: np.ndarray, nrow: int | None = None, *, pad: int = 2, pad_value=0
) -> np.ndarray:
    """Tile ``N×C×H×W`` images into one ``C×H'×W'`` array, ``nrow`` images per row.

    ``nrow`` defaults to ``ceil(sqrt(N))``; ``pad`` pixels of ``pad_value`` separate the
    tiles and frame the grid. The dtype of the input is kept.
    """
    arr = np.asarray(images_nchw)
    if arr.ndim != 4 or arr.shape[0] == 0:
        raise DataError(f"make_grid: expected N×C×H×W images, got shape {arr.shape}")
    n, c, h, w = arr.shape
    ncol = int(nrow) if nrow else math.ceil(math.sqrt(n))
    if ncol < 1:
        raise DataError(f"make_grid: nrow must be at least 1, got {nrow}")
    ncol = min(ncol, n)
    rows = math.ceil(n / ncol)
    grid = np.full((c, rows * (h + pad) + pad, ncol * (w + pad) + pad), pad_value, dtype=arr.dtype)
    for k in range(n):
        r, col = divmod(k, ncol)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[:, y : y + h, x : x + w] = arr[k]
    return grid


def save_grid(
    path,
    images_nchw: np.ndarray,
    bands: Sequence[str],
    nrow: int | None = None,
    title: str | None = None,
    *,
    units: str | None = None,
    stretch: DisplayStretch | None = None,
    pad: int = 2,
    min_tile: int = MIN_TILE_PIXELS,
    **options,
) -> Path:
    """Write a PNG grid of ``N×C×H×W`` images shown with one stretch fitted on them all.

    Tiles smaller than ``min_tile`` pixels are enlarged by an integer factor (nearest
    neighbour, so pixels stay visible as pixels). ``title`` is written above the grid.
    The file is written atomically; its path is returned.
    """
    path = Path(path)
    arr = _as_nchw(images_nchw, path)
    if stretch is None:
        stretch = fit_stretch(arr, bands, units, **options)
    picture = _grid_picture(arr, stretch, nrow, title, pad, min_tile)
    return _write_picture(path, picture)


def save_side_by_side(
    path,
    panels: dict[str, np.ndarray],
    bands: Sequence[str],
    nrow: int | None = None,
    *,
    units: str | None = None,
    gap: int = 12,
    pad: int = 2,
    min_tile: int = MIN_TILE_PIXELS,
    **options,
) -> Path:
    """Write grids of several image sets side by side, titled, on one display stretch.

    ``panels`` maps a title (``"real"``, ``"generated"``) to ``N×C×H×W`` images in the same
    units; the stretch is fitted on the first panel and applied to all, so brightness and
    colour compare directly.
    """
    path = Path(path)
    if not panels:
        raise DataError(f"save_side_by_side: no image sets to draw into {path}")
    arrays = {t: _as_nchw(a, path) for t, a in panels.items()}
    stretch = fit_stretch(next(iter(arrays.values())), bands, units, **options)
    pictures = [_grid_picture(a, stretch, nrow, t, pad, min_tile) for t, a in arrays.items()]
    width = sum(p.width for p in pictures) + gap * (len(pictures) - 1)
    canvas = Image.new("RGB", (width, max(p.height for p in pictures)), (0, 0, 0))
    x = 0
    for p in pictures:
        canvas.paste(p, (x, 0))
        x += p.width + gap
    return _write_picture(path, canvas)


def _as_nchw(images, path) -> np.ndarray:
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[:, None]
    if arr.ndim != 4 or arr.shape[0] == 0:
        raise DataError(f"expected N×C×H×W images for {path}, got shape {np.shape(images)}")
    return arr


def _grid_picture(
    arr: np.ndarray, stretch: DisplayStretch, nrow, title, pad: int, min_tile: int
) -> Image.Image:
    rgb = stretch.apply(arr).transpose(0, 3, 1, 2)  # N×3×H×W uint8
    factor = max(1, math.ceil(min_tile / max(1, min(arr.shape[2], arr.shape[3]))))
    if factor > 1:
        rgb = rgb.repeat(factor, axis=2).repeat(factor, axis=3)
    grid = make_grid(rgb, nrow, pad=pad, pad_value=0).transpose(1, 2, 0)
    picture = Image.fromarray(np.ascontiguousarray(grid), mode="RGB")
    if title:
        font = ImageFont.load_default()
        probe = ImageDraw.Draw(picture)
        left, top, right, bottom = probe.textbbox((0, 0), title, font=font)
        bar = bottom - top + 8
        width = max(picture.width, right - left + 8)
        canvas = Image.new("RGB", (width, picture.height + bar), (0, 0, 0))
        canvas.paste(picture, (0, bar))
        ImageDraw.Draw(canvas).text((4, 4 - top), title, fill=(255, 255, 255), font=font)
        picture = canvas
    return picture


def _write_picture(path: Path, picture: Image.Image) -> Path:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", pnginfo=preview_png_info("grid"))
    atomic_write_bytes(path, buffer.getvalue(), fsync=False)
    return path


#: PNG text key marking a picture galforge made to be looked at (a grid, a preview), so that
#: readers never take it for data.
PREVIEW_KEY = "galforge-preview"


def preview_png_info(kind: str = "preview"):
    """``pnginfo`` for :meth:`PIL.Image.Image.save` marking a PNG as a galforge preview."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text(PREVIEW_KEY, str(kind))
    info.add_text("Software", "galforge")
    return info


def is_preview_png(path) -> bool:
    """True for a PNG galforge wrote as a grid or preview (see :data:`PREVIEW_KEY`).

    Reads the chunks before the image data only.
    """
    import struct

    try:
        with open(path, "rb") as fh:
            if fh.read(8) != b"\x89PNG\r\n\x1a\n":
                return False
            while True:
                head = fh.read(8)
                if len(head) < 8:
                    return False
                length, ctype = struct.unpack(">I4s", head)
                if ctype in (b"IDAT", b"IEND"):
                    return False
                body = fh.read(length)
                fh.seek(4, 1)  # CRC
                if ctype == b"tEXt" and body.split(b"\0", 1)[0] == PREVIEW_KEY.encode():
                    return True
    except OSError:
        return False
