"""Readers for galaxy images as they come: PNG/JPEG/TIFF, FITS, HDF5 and NumPy files.

Each file reader yields :class:`RawImage` objects (float32 ``C×H×W`` + band names + units +
metadata); :func:`read_source` turns a folder or a file into an :class:`ImageSet`, applying
the non-finite pixel policy, the optional centre crop and resize, band selection, and the
consistency checks (one size, one band count, one unit).

Policy: a problem with one file of a folder (corrupt, empty, all-NaN, unreadable) skips that
file and records the reason in the :class:`ReadReport`; a problem with the whole input
(unknown path, empty folder, no readable image, mixed sizes without resize, different band
counts) raises :class:`galforge.errors.DataError` naming the file(s) and the fix.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# The file readers live beside this module, one per format; their names are re-exported here
# (the module's public API before the split).
from galforge.data.arrays import (  # noqa: F401
    hdf5_dataset_name,
    infer_layout,
    read_hdf5,
    read_numpy,
)
from galforge.data.display import is_preview_png
from galforge.data.fitsfiles import (  # noqa: F401
    BAD_MASK_PLANES,
    bad_pixels,
    header_pixel_scale,
    plane_role,
    read_fits,
)
from galforge.data.imageset import ImageSet, ReadReport
from galforge.data.nonfinite import _Rejected, apply_nan_policy, background_median  # noqa: F401
from galforge.data.png16 import decode_png16  # noqa: F401
from galforge.data.png16 import png_header as _png_header  # noqa: F401
from galforge.data.raster import read_raster
from galforge.data.rawimage import (  # noqa: F401
    FITS_EXT,
    HDF5_EXT,
    LAYOUTS,
    NAN_POLICIES,
    NPY_EXT,
    NPZ_EXT,
    RASTER_EXT,
    SUPPORTED,
    RawImage,
    _units_for_dtype,
    band_sort_key,
    default_bands,
    file_kind,
    natural_key,
)
from galforge.errors import ConfigError, DataError


def read_file(
    path, *, dataset=None, hdu=None, band_axis=None, layout=None, limit=None
) -> Iterator[RawImage]:
    """Yield the images of one file, chosen by its extension. Raises DataError for a file
    that cannot be read or has an unsupported extension."""
    path = Path(path)
    kind = file_kind(path)
    if kind == "raster":
        return read_raster(path)
    if kind == "fits":
        return read_fits(path, hdu=hdu, band_axis=band_axis)
    if kind == "hdf5":
        return read_hdf5(path, dataset=dataset, layout=layout, limit=limit)
    if kind in ("npy", "npz"):
        return read_numpy(path, dataset=dataset, layout=layout, limit=limit)
    raise DataError(f"{path}: unsupported file type; supported extensions: {', '.join(SUPPORTED)}")


# ------------------------------------------------------------------------------ sources


def compile_template(template: str) -> re.Pattern:
    """Regex for a filename template with ``{name}`` placeholders (``{id}_{band}.fits``)."""
    parts = re.split(r"\{(\w+)\}", template)
    rx = []
    seen = set()
    for k, part in enumerate(parts):
        if k % 2 == 0:
            rx.append(re.escape(part))
        else:
            if part in seen:
                rx.append(f"(?P={part})")
            else:
                seen.add(part)
                rx.append(f"(?P<{part}>[^/]+?)" if part != "band" else "(?P<band>[^/_.]+?)")
    return re.compile("".join(rx) + r"\Z")


@dataclass
class Item:
    """One image to read: a single file, or one file per band joined by a pattern."""

    key: str
    paths: list[Path]
    band_names: tuple[str, ...] | None = None
    meta: dict = field(default_factory=dict)


def list_folder(folder: Path, report: ReadReport, recursive: bool = False) -> list[Path]:
    """Image files of a folder (natural order); other entries are recorded as skipped."""
    entries = sorted(
        folder.rglob("*") if recursive else folder.iterdir(), key=lambda p: natural_key(str(p))
    )
    if not entries:
        raise DataError(f"{folder}: the folder is empty; point to a folder with images")
    files, others = [], []
    for p in entries:
        if p.is_dir():
            if not recursive:
                report.skip(p, "sub-folder (not read; pass recursive=True to read sub-folders)")
            continue
        if file_kind(p) is None:
            others.append(p)
            report.skip(p, f"not an image file (extension {''.join(p.suffixes) or 'none'})")
            continue
        if p.name.lower().endswith(".png") and is_preview_png(p):
            others.append(p)
            report.skip(p, "a galforge grid/preview picture, not data")
            continue
        files.append(p)
    if not files:
        names = ", ".join(p.name for p in others[:8]) + (" ..." if len(others) > 8 else "")
        raise DataError(
            f"{folder}: no image files in the folder (found: {names or 'only sub-folders'}); "
            f"supported extensions: {', '.join(SUPPORTED)}"
        )
    return files


def guess_band_pattern(files: list[Path]) -> str | None:
    """A ``{id}<sep>{band}<ext>`` pattern the file names follow when a folder holds one file
    per band (``obj1_g.fits``, ``obj1_r.fits``, ...), or None.

    The names must all match, give 2 to 12 distinct bands and ids with more than one band.
    """
    if len(files) < 2:
        return None
    exts = {
        "".join(p.suffixes[-2:]) if p.name.lower().endswith((".gz", ".fz")) else p.suffix
        for p in files
    }
    if len(exts) != 1:
        return None
    ext = exts.pop()
    for sep in ("_", "-", "."):
        pattern = "{id}" + sep + "{band}" + ext
        rx = compile_template(pattern)
        groups: dict[str, set] = {}
        for p in files:
            m = rx.match(p.name)
            if not m:
                break
            groups.setdefault(m.group("id"), set()).add(m.group("band"))
        else:
            bands = set().union(*groups.values())
            multi = sum(len(b) > 1 for b in groups.values())
            if 2 <= len(bands) <= 12 and multi >= max(1, len(groups) // 2):
                return pattern
    return None


def pattern_items(
    files: list[Path], folder: Path, pattern: str, bands, report: ReadReport
) -> list[Item]:
    """Group one-file-per-band files by the ``{id}`` of ``pattern`` (needs ``{band}``)."""
    from galforge.data.builtin import parse_bands

    if "{band}" not in pattern:
        raise ConfigError(
            f"pattern {pattern!r} must contain {{band}} (e.g. '{{id}}_{{band}}.fits')"
        )
    rx = compile_template(pattern)
    groups: dict[str, dict[str, Path]] = {}
    for p in files:
        rel = p.relative_to(folder).as_posix()
        m = rx.match(rel) or rx.match(p.name)
        if not m:
            report.skip(p, f"file name does not match pattern {pattern!r}")
            continue
        gd = m.groupdict()
        band = gd.pop("band")
        key = "|".join(f"{v}" for _, v in sorted(gd.items())) or "0"
        groups.setdefault(key, {})[band] = p
    if not groups:
        raise DataError(f"{folder}: no file name matches pattern {pattern!r}")
    wanted = (
        parse_bands(bands)
        if bands
        else tuple(sorted({b for g in groups.values() for b in g}, key=band_sort_key))
    )
    items = []
    for key in sorted(groups, key=natural_key):
        g = groups[key]
        missing = [b for b in wanted if b not in g]
        if missing:
            report.skip(
                folder / key,
                f"id {key!r}: missing band file(s) for {missing} (pattern {pattern!r})",
            )
            continue
        items.append(
            Item(key=key, paths=[g[b] for b in wanted], band_names=tuple(wanted), meta={"id": key})
        )
    if not items:
        raise DataError(
            f"{folder}: no id has a file for every band {list(wanted)} with pattern {pattern!r}"
        )
    return items


def _iter_item(item: Item, opts: dict) -> Iterator[RawImage]:
    kw = {k: opts.get(k) for k in ("dataset", "hdu", "band_axis", "layout")}
    if len(item.paths) == 1 and item.band_names is None:
        for raw in read_file(item.paths[0], limit=opts.get("limit"), **kw):
            raw.meta.update(item.meta)
            yield raw
        return
    planes, units = [], None
    for p, b in zip(item.paths, item.band_names, strict=True):
        imgs = list(read_file(p, **kw))
        if len(imgs) != 1 or imgs[0].data.shape[0] != 1:
            got = imgs[0].data.shape[0] if len(imgs) == 1 else f"{len(imgs)} images"
            raise DataError(
                f"{p}: band file for {b!r} must hold one single-band image, found {got} bands"
            )
        planes.append(imgs[0].data[0])
        units = units or imgs[0].units
    shapes = {pl.shape for pl in planes}
    if len(shapes) != 1:
        raise DataError(
            f"band files of {item.key!r} have different sizes ({', '.join(f'{p.name} {pl.shape}' for p, pl in zip(item.paths, planes, strict=True))})"
        )
    meta = {"file": str(item.paths[0]), "files": [str(p) for p in item.paths]}
    meta.update(item.meta)
    yield RawImage(
        np.stack(planes), tuple(item.band_names), units or "adu", meta, str(item.paths[0])
    )


def collect(
    items: list[Item], opts: dict, report: ReadReport, source: str, single: bool
) -> ImageSet:
    """Read ``items`` into an ImageSet with the set-level policies (see module docstring)."""
    policy = opts.get("nan_policy") or "fill"
    if policy not in NAN_POLICIES:
        raise ConfigError(f"nan_policy must be 'fill' or 'reject', got {policy!r}")
    strict = bool(opts.get("strict"))
    limit = opts.get("limit")
    crop, size = opts.get("crop"), opts.get("size")
    method = opts.get("resize_method") or "nearest"
    arrays, metas, weights = [], [], []
    stats = {"resized": 0, "from": {}}
    first = None
    progress = task = None
    if opts.get("progress") and len(items) > 1:
        from rich.progress import Progress

        progress = Progress(transient=True)
        progress.start()
        task = progress.add_task(f"reading {source}", total=len(items))
    try:
        first = _collect_items(
            items,
            opts,
            report,
            single,
            policy,
            strict,
            limit,
            crop,
            size,
            method,
            arrays,
            metas,
            progress,
            task,
            weights,
            stats,
        )
    finally:
        if progress is not None:
            progress.stop()
    if not arrays:
        reasons = "; ".join(f"{Path(s['path']).name}: {s['reason']}" for s in report.skipped[:5])
        raise DataError(
            f"{source}: no image could be read ({len(report.skipped)} skipped"
            + (f": {reasons}" if reasons else "")
            + ")"
        )
    images = np.stack(arrays).astype(np.float32, copy=False)
    bands = first[1]
    report.n_read = len(arrays)
    extra = set_level_extra(metas, stats, size, method)
    stack = None
    if all(w is not None for w in weights):
        stack = np.stack(weights).astype(np.float32, copy=False)
    elif any(w is not None for w in weights):
        report.warn(
            f"{source}: only {sum(w is not None for w in weights)} of {len(weights)} "
            "images have a variance plane; the weights were dropped"
        )
    iset = ImageSet(
        images=images,
        bands=bands,
        meta=metas,
        units=first[2],
        report=report,
        source=source,
        extra=extra,
        weights=stack,
    )
    return select_bands(iset, opts.get("bands"))


def set_level_extra(metas: list[dict], stats: dict, size, method) -> dict:
    """``extra`` of a read set: the common ``pixel_scale`` (arcsec/pixel, after any resize),
    the common ``zeropoint`` (FITS ``MAGZP``/``ZEROPT``) and, when images were resized on
    reading, what the resize did."""
    extra: dict = {}
    scales = [m.get("pixel_scale") for m in metas]
    if scales and all(isinstance(v, (int, float)) for v in scales):
        if max(scales) - min(scales) <= 1e-6 * max(abs(max(scales)), 1e-12):
            extra["pixel_scale"] = float(scales[0])
    zps = [m.get("magzp", m.get("zeropt")) for m in metas]
    if zps and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in zps):
        if max(zps) - min(zps) <= 1e-6:
            extra["zeropoint"] = float(zps[0])  # one zero point (FITS MAGZP/ZEROPT) for all
    if stats.get("resized"):
        h, w = (int(size), int(size)) if np.isscalar(size) else (int(v) for v in size)
        extra["resize"] = {
            "images": int(stats["resized"]),
            "from": dict(stats["from"]),
            "to": [h, w],
            "method": method,
        }
    return extra


def skip_entry(item: Item, exc: Exception) -> tuple[str, str]:
    """(path, reason) recording an unreadable item: the file the message names (or the
    item's first file), and the message without that leading path."""
    msg = str(exc)
    for p in item.paths:
        if msg.startswith(f"{p}: "):
            reason = strip_path(msg, p)
            if len(item.paths) > 1:
                reason = f"{reason} (id {item.key!r} skipped)"
            return str(p), reason
    return str(item.paths[0]), msg


def strip_path(message: str, path) -> str:
    """The reason part of a ``"PATH: reason"`` message (the path is recorded beside it)."""
    prefix = f"{path}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


class _SetLevelError(DataError):
    """A problem of the input as a whole (never turned into a skip)."""


class SizeMismatch(_SetLevelError):
    """Images of one input with different sizes; ``detail`` says which, without the fix
    (the option to pass depends on the command)."""

    def __init__(self, message: str, detail: str = ""):
        super().__init__(message)
        self.detail = detail or message


class _BandMismatch(_SetLevelError):
    """Files of one folder with different band names."""


def _is_set_level(exc: Exception) -> bool:
    return isinstance(exc, _SetLevelError)


def _collect_items(
    items,
    opts,
    report,
    single,
    policy,
    strict,
    limit,
    crop,
    size,
    method,
    arrays,
    metas,
    progress,
    task,
    weights,
    stats,
):
    """The reading loop of :func:`collect`; appends to ``arrays``/``metas`` and returns the
    (label, bands, units, shape) of the first image kept."""
    from galforge.data import transforms

    first = None  # (label, bands, units, shape)
    for item in items:
        if progress is not None:
            progress.advance(task)
        if limit is not None and len(arrays) >= int(limit):
            break
        try:
            for raw in _iter_item(item, opts):
                if limit is not None and len(arrays) >= int(limit):
                    break
                for message in raw.warnings:
                    report.warn(message)
                try:
                    data, nbad = apply_nan_policy(raw.data, policy, raw.label)
                except _Rejected as rej:
                    if single and not raw.label.endswith("]"):
                        raise DataError(
                            f"{raw.label}: {rej.reason}; the image cannot be used"
                        ) from None
                    report.skip(raw.label, rej.reason, nan_pixels=rej.nan_pixels)
                    continue
                if nbad:
                    report.nan_pixels += nbad
                    report.nan_filled_images += 1
                    raw.meta["nan_filled"] = nbad
                weight = raw.weight
                if crop is not None:
                    data = _crop(data, crop)
                    weight = None if weight is None else _crop(weight, crop)
                if size is not None:
                    hc, wc = data.shape[-2:]
                    data = transforms.resize(data, size, method)
                    if weight is not None:
                        weight = np.maximum(transforms.resize(weight, size, method), 0.0)
                    if data.shape[-2:] != (hc, wc):
                        key = f"{hc}×{wc}"
                        stats["resized"] += 1
                        stats["from"][key] = stats["from"].get(key, 0) + 1
                        if isinstance(raw.meta.get("pixel_scale"), float):
                            raw.meta["pixel_scale"] *= float(
                                np.sqrt(hc * wc / (data.shape[-2] * data.shape[-1]))
                            )
                if first is None:
                    first = (raw.label, raw.bands, raw.units, data.shape)
                else:
                    _check_consistent(first, raw, data, crop, size)
                arrays.append(data)
                metas.append(raw.meta)
                weights.append(weight)
        except DataError as exc:
            if single or strict or _is_set_level(exc):
                raise
            report.skip(*skip_entry(item, exc))
    return first


def _crop(data: np.ndarray, crop):
    from galforge.data import transforms

    if isinstance(crop, float) and crop <= 1.0:
        return transforms.center_crop(data, fraction=crop)
    if isinstance(crop, (int, np.integer)) or (isinstance(crop, float) and crop > 1):
        return transforms.center_crop(data, pixels=int(crop))
    return transforms.center_crop(data, pixels=crop)


def _check_consistent(first, raw: RawImage, data: np.ndarray, crop, size) -> None:
    label0, bands0, units0, shape0 = first
    if data.shape[0] != shape0[0]:
        raise _SetLevelError(
            f"{raw.label} has {data.shape[0]} band(s) {raw.bands} but {label0} has {shape0[0]} "
            f"{bands0}; every file must have the same bands (select them with bands=/--bands or "
            "split the folder)"
        )
    if data.shape[1:] != shape0[1:]:
        detail = (
            f"images of different sizes: {raw.label} is {data.shape[1]}×{data.shape[2]} "
            f"but {label0} is {shape0[1]}×{shape0[2]}"
        )
        raise SizeMismatch(
            f"{detail}; pass resize=/--size N (with --resize-method) or crop=/--crop to bring "
            "every image to one size",
            detail=detail,
        )
    if raw.bands != bands0 and not all(b.startswith(("band", "grey")) for b in raw.bands + bands0):
        raise _BandMismatch(
            f"{raw.label} has bands {raw.bands} but {label0} has {bands0}; to join one file per "
            "band use pattern=/--pattern '{id}_{band}.fits'"
        )
    if raw.units != units0:
        raise _SetLevelError(
            f"{raw.label} is in units {raw.units!r} but {label0} in {units0!r}; read them separately"
        )


def select_bands(iset: ImageSet, bands) -> ImageSet:
    """Select/reorder bands by name, or rename them when ``bands`` has as many new names."""
    if not bands:
        return iset
    from galforge.data.builtin import parse_bands

    want = parse_bands(bands)
    if all(b in iset.bands for b in want):
        idx = [iset.bands.index(b) for b in want]
        if idx == list(range(len(iset.bands))):
            return iset
        return ImageSet(
            images=np.ascontiguousarray(iset.images[:, idx]),
            bands=want,
            meta=iset.meta,
            units=iset.units,
            report=iset.report,
            source=iset.source,
            extra=iset.extra,
            weights=None if iset.weights is None else np.ascontiguousarray(iset.weights[:, idx]),
        )
    if len(want) == len(iset.bands):
        iset.bands = want
        return iset
    raise ConfigError(
        f"bands {list(want)} not found in {iset.source} (its bands: {list(iset.bands)}); give "
        f"names among those to select, or {len(iset.bands)} names to rename"
    )


def read_source(source, **opts) -> ImageSet:
    """Read a folder or a single file (see :func:`galforge.data.load_images` for options)."""
    path = Path(source).expanduser()
    report = ReadReport()
    if not path.exists():
        raise DataError(f"{source}: no such file or folder; check the path")
    if path.is_dir():
        files = list_folder(path, report, recursive=bool(opts.get("recursive")))
        if opts.get("pattern"):
            items = pattern_items(files, path, opts["pattern"], opts.get("bands"), report)
        else:
            items = [Item(key=p.name, paths=[p]) for p in files]
        try:
            return collect(items, opts, report, str(source), single=False)
        except _BandMismatch as exc:
            guess = None if opts.get("pattern") else guess_band_pattern(files)
            if guess is None:
                raise
            raise DataError(
                f"{source}: the files hold one band each ({exc.args[0].split(';')[0]}); they "
                f"look like one file per band: join them with --pattern '{guess}' (train: "
                f"--set data.options.pattern='{guess}'; Python: pattern=)"
            ) from None
    if file_kind(path) is None:
        raise DataError(
            f"{path}: unsupported file type; supported extensions: {', '.join(SUPPORTED)}"
        )
    return collect([Item(key=path.name, paths=[path])], opts, report, str(source), single=True)
