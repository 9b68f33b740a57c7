"""Prepared data sets: decode once, train many times.

``prepare(source, out_dir, **options)`` writes::

    OUT/
      images.npy      float32 N×C×H×W in physical units (memory-mapped when read back)
      manifest.json   counts, shape, bands, units, fitted normalizer, skipped files with
                      reasons, catalogue matching (unmatched ids/files), content fingerprint,
                      read options, galforge version
      meta.jsonl      one JSON object per image (file, id, catalogue values, truth)
      truth.csv       the truth catalogue, for simulated (builtin:galsim) sets
      truth.ecsv      the same with each column's unit (astropy QTable.read)

``load_images(OUT)`` reads it back; ``inspect(source)`` says what a read would give without
decoding every file.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from galforge.data.imageset import ReadReport
from galforge.data.prepared import (  # noqa: F401  (re-exported: read side of the format)
    FORMAT,
    FORMAT_VERSION,
    is_prepared,
    load_prepared,
    read_manifest,
)
from galforge.errors import ConfigError, DataError
from galforge.fileio import atomic_file, atomic_write_text, reserve_space
from galforge.jsonsafe import json_safe


def prepare(source, out_dir, *, normalizer=None, overwrite=False, **options) -> Path:
    """Read ``source`` (anything :func:`galforge.data.load_images` reads, with the same
    options) and write a prepared data set to ``out_dir``; return the manifest path.

    ``normalizer`` is a dict of :meth:`Normalizer.fit` keywords (default: the defaults,
    99.99 % clip, target (-1, 1), and the stretch of
    :func:`galforge.data.normalize.default_stretch`: asinh for physical units, linear for
    8/16-bit levels); the fitted normalizer is recorded in the manifest.
    A folder that is not empty is refused unless ``overwrite``; then the earlier prepared
    set is removed (after ``source`` was read) and replaced; a folder holding other files is
    always refused.
    """
    from galforge import outputs
    from galforge.data.loading import load_images, normalize_options

    opts = normalize_options(options)
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder")
    holds = "a prepared data set" if is_prepared(out) else "not a prepared data set"
    # refused before the source is read; the earlier set is removed only after it was read
    outputs.check_folder(out, overwrite=overwrite, holds=holds, command="data prepare")
    iset = load_images(source, **opts)
    with outputs.claim_folder(out, overwrite=overwrite, holds=holds, command="data prepare"):
        return _write_prepared(out, iset, source, opts, normalizer)


def _write_prepared(out: Path, iset, source, opts: dict, normalizer) -> Path:
    """Write the prepared set of ``iset`` into the claimed folder ``out``."""
    from galforge import __version__
    from galforge.data.normalize import Normalizer, default_stretch

    with atomic_file(out / "images.npy") as tmp:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=iset.images.shape)
        reserve_space(tmp)  # a full disk now, not a crash half-way through the copy
        step = 1024
        for i in range(0, len(iset), step):
            arr[i : i + step] = iset.images[i : i + step]
        arr.flush()
        del arr

    with atomic_file(out / "meta.jsonl") as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for m in iset.meta:
            fh.write(json.dumps(json_safe(m)) + "\n")

    norm_kw = dict(normalizer or {})
    if norm_kw.get("stretch") is None:
        norm_kw["stretch"] = default_stretch(iset.units)
    norm = Normalizer.fit(iset.images, **norm_kw)

    truth_file = None
    truth_keys = iset.extra.get("truth_keys")
    if truth_keys:
        truth_file = "truth.csv"
        with (
            atomic_file(out / truth_file) as tmp,
            open(tmp, "w", newline="", encoding="utf-8") as fh,
        ):
            w = csv.writer(fh)
            w.writerow(truth_keys)
            for m in iset.meta:
                w.writerow(["" if m.get(k) is None else m.get(k) for k in truth_keys])
        from galforge.data.tables import write_ecsv

        write_ecsv(
            out / "truth.ecsv",
            [{k: m.get(k) for k in truth_keys} for m in iset.meta],
            pixel_units=iset.units,
            units=iset.extra.get("truth_units"),
            meta={"source": str(source)},
        )

    rep = iset.report.to_dict()
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "galforge_version": __version__,
        "source": str(source),
        "count": len(iset),
        "counts": {
            "images": len(iset),
            "skipped": rep["n_skipped"],
            "nan_filled_images": rep["nan_filled_images"],
            "nan_pixels": rep["nan_pixels"],
            "catalog_rows_selected": (rep.get("catalog") or {}).get("n_selected"),
            "unmatched_ids": (rep.get("catalog") or {}).get("n_unmatched_ids"),
            "unmatched_files": (rep.get("catalog") or {}).get("n_unmatched_files"),
        },
        "shape": list(iset.shape[1:]),
        "dtype": "float32",
        "bands": list(iset.bands),
        "units": iset.units,
        "fingerprint": iset.fingerprint(),
        "normalizer": norm.to_dict(),
        "normalizer_options": json_safe(norm_kw),
        "n_skipped": rep["n_skipped"],
        "skipped": rep["skipped"],
        "warnings": rep.get("warnings", []),
        "nan_pixels": rep["nan_pixels"],
        "nan_filled_images": rep["nan_filled_images"],
        "catalog": rep.get("catalog"),
        "options": json_safe({k: v for k, v in opts.items() if k != "progress"}),
        "extra": json_safe({k: v for k, v in iset.extra.items()}),
        "files": {"images": "images.npy", "meta": "meta.jsonl", "truth": truth_file},
    }
    atomic_write_text(out / "manifest.json", json.dumps(json_safe(manifest), indent=2))
    return out / "manifest.json"


def inspect(source, **options) -> dict:
    """What :func:`load_images` would read from ``source``, without decoding every image.

    Returns a JSON-safe dict: ``kind``, ``source``, ``count``, ``shapes`` (``"C×H×W"`` →
    number of images), ``bands``, ``units``, ``files`` (number, and the first names),
    ``skipped`` (with reasons) and, for a catalogue, its matching summary.
    """
    from galforge.data.builtin import describe_spec
    from galforge.data.loading import normalize_options

    opts = normalize_options(options)
    src = str(source)
    if src.startswith("builtin:"):
        d = describe_spec(src)
        d["source"] = src
        d["shapes"] = {"×".join(map(str, d["shape"])): d["count"]}
        d["skipped"] = []
        return d
    path = Path(src).expanduser()
    if not path.exists():
        raise DataError(f"{src}: no such file or folder; check the path")
    if path.is_dir() and is_prepared(path):
        man = read_manifest(path)
        return {
            "kind": "prepared",
            "source": src,
            "count": man["count"],
            "shapes": {"×".join(map(str, man["shape"])): man["count"]},
            "shape": man["shape"],
            "bands": man["bands"],
            "units": man["units"],
            "fingerprint": man["fingerprint"],
            "skipped": man.get("skipped", []),
            "catalog": man.get("catalog"),
            "galforge_version": man.get("galforge_version"),
        }
    from galforge.data import readers

    report = ReadReport()
    if path.is_dir():
        if opts.get("catalog"):
            from galforge.data.catalog import match_catalog

            items, _ = match_catalog(
                path,
                opts["catalog"],
                where=opts.get("where"),
                id_column=opts.get("id_column"),
                template=opts.get("template"),
                bands=opts.get("bands"),
                catalog_columns=opts.get("catalog_columns"),
                report=report,
                recursive=bool(opts.get("recursive")),
            )
        else:
            files = readers.list_folder(path, report, recursive=bool(opts.get("recursive")))
            if opts.get("pattern"):
                items = readers.pattern_items(
                    files, path, opts["pattern"], opts.get("bands"), report
                )
            else:
                items = [readers.Item(key=p.name, paths=[p]) for p in files]
        kind = "folder"
    else:
        if readers.file_kind(path) is None:
            raise DataError(
                f"{path}: unsupported file type; supported: {', '.join(readers.SUPPORTED)}"
            )
        items = [readers.Item(key=path.name, paths=[path])]
        kind = "file"
    shapes: dict[str, int] = {}
    bands_seen: dict[tuple, int] = {}
    units_seen: dict[str, int] = {}
    count = 0
    for item in items:
        try:
            for desc in _peek_item(item, opts, report):
                n, shape, bands, units = desc
                key = "×".join(map(str, shape))
                shapes[key] = shapes.get(key, 0) + n
                bands_seen[bands] = bands_seen.get(bands, 0) + n
                units_seen[units] = units_seen.get(units, 0) + n
                count += n
        except DataError as exc:
            report.skip(*readers.skip_entry(item, exc))
    all_files = [str(p) for it in items for p in it.paths]
    out = {
        "kind": kind,
        "source": src,
        "count": count,
        "shapes": shapes,
        "bands": list(max(bands_seen, key=bands_seen.get)) if bands_seen else [],
        "band_sets": {",".join(k): v for k, v in bands_seen.items()},
        "units": max(units_seen, key=units_seen.get) if units_seen else None,
        "files": {"count": len(all_files), "first": all_files[:10]},
        "skipped": report.skipped,
        "n_skipped": len(report.skipped),
    }
    if report.catalog is not None:
        out["catalog"] = report.catalog
    if len(shapes) > 1 and not opts.get("size"):
        out["warning"] = "images of different sizes: pass --size N (resize) or --crop to read them"
    if len(bands_seen) > 1:
        # files with different bands: a set of one file per band, not images of one kind
        out["bands"] = []
        guess = None
        if kind == "folder" and not opts.get("pattern") and not opts.get("catalog"):
            guess = readers.guess_band_pattern([p for it in items for p in it.paths])
        if guess:
            out["pattern_guess"] = guess
            out["warning"] = (
                f"the files hold one band each ({', '.join(out['band_sets'])}); "
                f"they look like one file per band: pass --pattern '{guess}' to "
                "join them into multi-band images"
            )
        else:
            out["warning"] = (
                f"the files hold different bands ({', '.join(out['band_sets'])}); "
                "join one file per band with --pattern '{id}_{band}.fits' or "
                "select bands with --bands"
            )
    if report.warnings:
        out["warnings"] = list(report.warnings)
    return out


def _peek_item(item, opts, report):
    """(n_images, (C, H, W), bands, units) for an item, from headers where possible."""
    if len(item.paths) > 1 or item.band_names is not None:
        descs = [next(iter(_peek_file(p, opts, report))) for p in item.paths]
        _, shape, _, units = descs[0]
        yield 1, (len(item.paths),) + tuple(shape[1:]), tuple(item.band_names), units
        return
    yield from _peek_file(item.paths[0], opts, report)


def _peek_file(path: Path, opts, report):
    from galforge.data import readers

    kind = readers.file_kind(path)
    if kind == "raster" and not path.name.lower().endswith((".tif", ".tiff")):
        from PIL import Image, UnidentifiedImageError

        if path.stat().st_size == 0:
            raise DataError(f"{path}: empty file (0 bytes)")
        try:
            with Image.open(path) as im:
                w, h = im.size
                mode = im.mode
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"{path}: not a readable image ({exc})") from exc
        hdr = readers._png_header(path) if path.name.lower().endswith(".png") else None
        grey = mode in ("1", "L", "LA", "I", "F") or mode.startswith("I;16")
        sixteen = (hdr is not None and hdr[0] == 16) or mode.startswith("I;16")
        c = 1 if grey else 3
        yield (
            1,
            (c, h, w),
            readers.default_bands(c, rgb=True),
            "16-bit level" if sixteen else "8-bit level",
        )
        return
    if kind == "npy":
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        yield from _peek_array(path, arr.shape, arr.dtype, opts)
        return
    if kind == "hdf5":
        import h5py

        try:
            with h5py.File(path, "r") as fh:
                name, _ = readers.hdf5_dataset_name(fh, opts.get("dataset"), path)
                ds = fh[name]
                yield from _peek_array(path, ds.shape, ds.dtype, opts)
        except OSError as exc:
            raise DataError(f"{path}: not a readable HDF5 file ({exc})") from exc
        return
    # FITS, TIFF, npz: read the file (one image each for FITS/TIFF)
    kw = {k: opts.get(k) for k in ("dataset", "hdu", "band_axis", "layout")}
    n = 0
    first = None
    for raw in readers.read_file(path, **kw):
        for message in raw.warnings:
            report.warn(message)
        n += 1
        if first is None:
            first = raw
    if first is None:
        raise DataError(f"{path}: no image inside")
    yield n, first.data.shape, tuple(first.bands), first.units


def _peek_array(path, shape, dtype, opts):
    from galforge.data import readers

    lay = readers.infer_layout(shape, opts.get("layout"))
    n = int(shape[0]) if lay.startswith("N") else 1
    dims = dict(zip(lay, shape, strict=True))
    c = int(dims.get("C", 1))
    rgb = np.dtype(dtype) in (np.uint8, np.uint16) and c == 3
    yield (
        n,
        (c, int(dims["H"]), int(dims["W"])),
        readers.default_bands(c, rgb=rgb),
        readers._units_for_dtype(dtype),
    )
