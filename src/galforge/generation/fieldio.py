"""Checks and records around the files of a deep field (see :mod:`galforge.generation.field`).

* :func:`check_suffix` — an output whose name does not match its format is refused
  (``--out f.png`` would otherwise be a zarr folder named ``f.png``);
* :func:`field_bytes` / :func:`check_space` — the size of a field on disk is estimated
  before the first tile and refused when the disk has less free space (a flag forces it);
* :func:`job_hash` / :func:`stored_job_hash` — a short hash of the settings a field was made
  with, kept in the output itself, so that ``--resume`` on a finished field (whose
  ``OUT.progress/`` records were removed) is recognised;
* :func:`provenance_cards` — the FITS cards that say what a field file is (creator,
  synthetic, pixel scale or no WCS), as in the galaxy files of ``galforge generate``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from galforge import __version__, fitsheader
from galforge.errors import ConfigError

SUFFIXES = {
    "fits": (".fits", ".fit", ".fts"),
    "npy": (".npy",),
    "zarr": (".zarr", ""),
}
FITS_BLOCK = 2880


def _suffix(path: Path) -> str:
    return path.suffix.lower()


def check_suffix(path, fmt: str, option: str = "--out") -> None:
    """ConfigError when ``path``'s extension does not fit ``fmt`` (zarr: ``.zarr`` or none)."""
    path = Path(path)
    suffix = _suffix(path)
    if suffix in SUFFIXES[fmt]:
        return
    wanted = " or ".join(s or "no extension" for s in SUFFIXES[fmt])
    raise ConfigError(
        f"{option} {path}: the extension {suffix or '(none)'!r} does not match the {fmt} "
        f"format (use {wanted}; .zarr, .fits and .npy choose the format)"
    )


def check_preview_suffix(path, option: str = "--preview") -> None:
    if _suffix(Path(path)) != ".png":
        raise ConfigError(f"{option} {path}: the preview is a PNG image; give a .png file name")


def field_bytes(shape: tuple[int, int, int]) -> int:
    """Bytes of an uncompressed float32 ``C x H x W`` field (FITS rounded to 2880 blocks)."""
    c, h, w = (int(v) for v in shape)
    n = c * h * w * 4
    return -(-n // FITS_BLOCK) * FITS_BLOCK + FITS_BLOCK


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} PB"


def _existing_folder(path: Path) -> Path:
    probe = path.expanduser().absolute()
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return probe if probe.is_dir() else probe.parent


def disk_usage(path: Path) -> int:
    """Bytes ``path`` (a file or a folder tree) holds on disk now."""
    path = Path(path)
    if not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_blocks * 512
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                continue
    return total


def check_space(
    out, shape, *, extra_copies: int = 0, todo_fraction: float = 1.0, freed: int = 0
) -> int:
    """Refuse (ConfigError) a field whose estimated size exceeds the free disk space.

    ``extra_copies``: further files of the same size (a ``--fits`` copy of a zarr field);
    ``todo_fraction``: the part still to write (a resumed field); ``freed``: bytes an
    ``--overwrite`` will remove first.  Returns the estimate in bytes.
    """
    out = Path(out)
    one = field_bytes(shape)
    need = int(one * todo_fraction) + one * int(extra_copies)
    folder = _existing_folder(out)
    free = shutil.disk_usage(folder).free + int(freed)
    if need > free:
        c, h, w = shape
        copies = f" plus {extra_copies} FITS copy" if extra_copies else ""
        raise ConfigError(
            f"--out {out}: a {c}x{h}x{w} float32 field{copies} needs about "
            f"{human_bytes(need)} but {folder} has {human_bytes(free)} free; choose a smaller "
            "--size or another disk, or pass --no-space-check to write it anyway"
        )
    return need


def job_hash(fingerprint: dict) -> str:
    """A short hash of a field's settings (size, tile, seed, bundle, ensemble, format, model)."""
    text = json.dumps(fingerprint, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stored_job_hash(out, fmt: str) -> str | None:
    """The settings hash recorded in a finished field's own metadata, or None."""
    out = Path(out)
    if not out.exists():
        return None
    try:
        if fmt == "zarr":
            import zarr

            return zarr.open_array(str(out), mode="r").attrs.get("job_hash")
        if fmt == "npy":
            meta = out.with_name(out.name + ".json")
            return json.loads(meta.read_text()).get("job_hash") if meta.is_file() else None
        from astropy.io import fits

        with open(out, "rb") as fh:
            found = fits.Header.fromfile(fh).get("JOBHASH")
        if found is None:  # a tile-compressed field: the cards are in its image extension
            with fits.open(out) as hdul:
                found = next((h.header["JOBHASH"] for h in hdul if "JOBHASH" in h.header), None)
        return found
    except Exception:  # not a field galforge wrote: no record
        return None


#: ``--fits-compression`` choices: none, lossless GZIP_2, RICE_1 (quantised: lossy for floats)
FITS_COMPRESSIONS = ("none", "gzip2", "rice")


def compress_fits(path, method: str, *, quantize_level: float = 16.0) -> Path:
    """Rewrite the field FITS at ``path`` (a primary-HDU cube) as a tile-compressed FITS, in
    place and atomically: an empty primary HDU, then the image as a ``CompImageHDU`` with every
    card of the original (tiles of one row of one band).

    ``gzip2``: GZIP_2 (bytes shuffled, then gzip) with no quantisation: lossless, the pixels
    read back bit for bit (smaller by a sixth on noisy float fields). ``rice``: RICE_1
    on float pixels quantised first: each tile is scaled to integers with a step of the tile's
    noise sigma / ``quantize_level`` (16: 1/16 of the noise) with subtractive dithering seeded
    from the data, so the loss is far below the noise but the pixels are not the same (files
    about 3 times smaller on a 512x512 sgan field, GZIP_2 17 %). ``none`` leaves the file as it is.
    """
    from astropy.io import fits

    from galforge.fileio import atomic_file

    method = str(method).lower()
    if method not in FITS_COMPRESSIONS:
        raise ConfigError(
            f"--fits-compression {method!r}: use one of {', '.join(FITS_COMPRESSIONS)}"
        )
    path = Path(path)
    if method == "none":
        return path
    if method == "gzip2":
        options = {"compression_type": "GZIP_2", "quantize_level": 0.0}
        note = "GZIP_2 tile compression, lossless (no quantisation)"
    else:
        options = {
            "compression_type": "RICE_1",
            "quantize_level": float(quantize_level),
            "quantize_method": 1,
            "dither_seed": -1,
        }
        note = (
            f"RICE_1 tile compression of pixels quantised to noise/{quantize_level:g} "
            "(subtractive dither): lossy below the noise"
        )
    with fits.open(path, memmap=True) as hdul:
        header = hdul[0].header.copy()
        data = hdul[0].data
        for key in ("SIMPLE", "EXTEND"):
            header.remove(key, ignore_missing=True)
        header.add_comment(f"Stored with {note}.")
        image = fits.CompImageHDU(data=data, header=header, **options)
        primary = fits.PrimaryHDU()
        primary.header["CREATOR"] = (
            header.get("CREATOR", f"galforge {__version__}"),
            "software version that wrote this file",
        )
        fitsheader.date_cards(primary.header)
        primary.header.add_comment("The field is the tile-compressed image in extension 1.")
        with atomic_file(path) as tmp:
            fits.HDUList([primary, image]).writeto(tmp)
    return path


def bundle_pixel_scale(bundle) -> float | None:
    """The pixel scale (arcsec/pixel) of a bundle's training images, from the run's config
    (``data.pixel_scale``, found in the data's WCS or set by the user), or None."""
    data = (getattr(bundle, "config", None) or {}).get("data") or {}
    scale = data.get("pixel_scale") if isinstance(data, dict) else None
    return float(scale) if isinstance(scale, (int, float)) and scale > 0 else None


def provenance_cards(hdr, meta: dict) -> None:
    """Add the cards saying what the field is to a FITS header (in place)."""
    hdr["CREATOR"] = (f"galforge {__version__}", "software version that wrote this file")
    hdr["OBJECT"] = ("synthetic deep field", "not a real observation")
    if meta.get("job_hash"):
        hdr["JOBHASH"] = (str(meta["job_hash"]), "hash of the field settings (for --resume)")
    fitsheader.date_cards(hdr, meta.get("model_created"))
    fitsheader.zeropoint_card(hdr, meta.get("zeropoint"))
    hdr.add_comment(
        "SYNTHETIC IMAGE: a deep field generated by a GAN with galforge; not an observation."
    )
    hdr.add_comment("Pixel values are in the units of the training data (BUNIT).")
    fitsheader.wcs_cards(hdr, int(hdr["NAXIS2"]), int(hdr["NAXIS1"]), meta.get("pixel_scale"))
    if int(hdr.get("NAXIS3", 1)) > 1:
        hdr.add_comment("The third axis (NAXIS3) runs over the bands listed in BANDS.")
