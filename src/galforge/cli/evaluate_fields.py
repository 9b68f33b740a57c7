"""``galforge evaluate REAL_FIELD FAKE_FIELD --fields --out DIR``: the field report.

Reads the two fields (FITS cube or one HDU per band, zarr, npy, ``builtin:hdf``, or -- for
FAKE_FIELD -- a run/bundle/``pretrained:NAME`` of a field model, tiled into a field of the
real field's size with ``--seed``) and hands the arrays to
:func:`galforge.evaluation.field_report.evaluate_fields`.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import typer

from galforge.errors import ConfigError, DataError

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fz")


def _is_zarr(p: Path) -> bool:
    return p.is_dir() and any((p / n).exists() for n in (".zarray", "zarr.json"))


def _from_model(source: str, shape, seed: int, device: str, work: Path):
    from galforge.generation.field import field_from_bundle, read_field

    _, h, w = shape
    out = work / "field.npy"
    field_from_bundle(
        source,
        out,
        f"{h}x{w}",
        seed=seed,
        device=device,
        overwrite=True,
        compile=False,
        progress=False,
    )
    arr, meta = read_field(out)
    truth = next(
        (
            p
            for p in (
                work / "field.truth.fits",
                work / "field.truth.csv",
                work / "field.npy.truth.fits",
                work / "field.npy.truth.csv",
            )
            if p.is_file()
        ),
        None,
    )
    bands = tuple(meta.get("bands") or ())
    return (
        np.asarray(arr, dtype=np.float32),
        bands,
        str(meta.get("units") or ""),
        f"{source} (tiled {h}×{w}, seed {seed})",
        truth,
    )


def load_field(
    source: str,
    what: str,
    *,
    shape=None,
    seed: int = 0,
    device: str = "auto",
    work: Path | None = None,
):
    """``(C×H×W array, bands, units, description, truth path or None)`` of REAL_FIELD or
    FAKE_FIELD; raises :class:`DataError`/:class:`ConfigError` naming ``what``."""
    from galforge.cli.evaluate_cmd import _is_model_folder

    if _is_model_folder(source):
        if what == "REAL_FIELD":
            raise ConfigError(
                f"REAL_FIELD {source} is a model (run/bundle) folder; REAL_FIELD "
                "must be a field (FITS, zarr, npy or builtin:hdf)"
            )
        return _from_model(source, shape, seed, device, work)
    p = Path(source).expanduser()
    if not source.startswith("builtin:") and not p.exists():
        raise DataError(
            f"{what} {source}: no such file or folder; pass a field as FITS, "
            "zarr, npy, builtin:hdf, or a run/bundle/pretrained:NAME to tile"
        )
    if _is_zarr(p) or p.suffix.lower() == ".npy":
        from galforge.generation.field import read_field

        try:
            arr, meta = read_field(p)
        except (OSError, ValueError) as exc:
            raise DataError(f"{what} {source}: unreadable field ({exc})") from exc
        arr = np.asarray(arr, dtype=np.float32)
        if arr.ndim == 2:
            arr = arr[None]
        bands = tuple(meta.get("bands") or ())
        return arr, bands, str(meta.get("units") or ""), source, None
    if p.suffix.lower() in FITS_SUFFIXES:
        from galforge.data.readers import read_fits

        raw = next(iter(read_fits(p)))
        return (np.asarray(raw.data, dtype=np.float32), tuple(raw.bands), raw.units, source, None)
    from galforge.data import load_images

    try:
        s = load_images(source)
    except (DataError, ConfigError) as exc:
        msg = str(exc) if source in str(exc) else f"{what} {source}: {exc}"
        raise type(exc)(msg) from exc
    if len(s.images) != 1:
        raise DataError(
            f"{what} {source}: holds {len(s.images)} images; a field is one image "
            "(use evaluate without --fields for sets of stamps)"
        )
    return (np.asarray(s.images[0], dtype=np.float32), tuple(s.bands), s.units, source, None)


def parse_field_thresholds(items) -> dict:
    from galforge.evaluation.field_report import FIELD_THRESHOLDS

    out = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep:
            raise ConfigError(f"--threshold {item!r}: use NAME=VALUE, e.g. --threshold sky=0.1")
        if name not in FIELD_THRESHOLDS:
            raise ConfigError(
                f"--threshold {name}: unknown with --fields; choose from "
                f"{', '.join(FIELD_THRESHOLDS)}"
            )
        try:
            out[name] = float(value)
        except ValueError as exc:
            raise ConfigError(f"--threshold {item!r}: {value!r} is not a number") from exc
    return out


def run(
    real: str,
    fake: str,
    out: Path,
    *,
    truth: Path | None,
    match_radius: float,
    seed: int,
    zeropoint: float | None,
    detect_thresh: float,
    minarea: int,
    threshold,
    device: str,
):
    """Evaluate FAKE_FIELD against REAL_FIELD and print the summary (the CLI's work)."""
    from galforge.evaluation.field_report import evaluate_fields, format_summary
    from galforge.evaluation.fieldstats import read_truth

    if not match_radius > 0:
        raise ConfigError(f"--match-radius {match_radius}: give a positive radius in pixels")
    thresholds = parse_field_thresholds(threshold)
    truth_cols = read_truth(truth) if truth is not None else None
    r_arr, r_bands, units, r_desc, _ = load_field(real, "REAL_FIELD")
    if r_arr.ndim != 3:
        raise DataError(f"REAL_FIELD {real}: expected one C×H×W field, got shape {r_arr.shape}")
    if not r_bands:
        from galforge.data.readers import default_bands

        r_bands = default_bands(r_arr.shape[0])
    with tempfile.TemporaryDirectory(prefix="galforge-field-") as tmp:
        f_arr, f_bands, f_units, f_desc, f_truth = load_field(
            fake, "FAKE_FIELD", shape=r_arr.shape, seed=seed, device=device, work=Path(tmp)
        )
        if f_arr.ndim != 3 or f_arr.shape[0] != r_arr.shape[0]:
            raise DataError(
                f"FAKE_FIELD {fake}: {f_arr.shape[0] if f_arr.ndim == 3 else '?'} band(s) "
                f"{f_bands} but REAL_FIELD {real} has {r_arr.shape[0]} {r_bands}; compare "
                "fields with the same bands"
            )
        if truth_cols is None and f_truth is not None:
            truth_cols = read_truth(f_truth)
            truth = f"{f_desc} truth catalogue"
    notes = []
    if (
        f_bands
        and tuple(f_bands) != tuple(r_bands)
        and not all(b.startswith("band") for b in f_bands)
    ):
        notes.append(
            f"bands of FAKE_FIELD {f_bands} differ in name from REAL_FIELD's "
            f"{r_bands}; compared in order"
        )
    if f_units and units and f_units != units:
        notes.append(f"units differ: REAL_FIELD {units!r}, FAKE_FIELD {f_units!r}")
    metrics = evaluate_fields(
        r_arr,
        f_arr,
        r_bands,
        out,
        units=units,
        real_source=r_desc,
        fake_source=f_desc,
        truth=truth_cols,
        match_radius=match_radius,
        thresholds=thresholds,
        seed=seed,
        zeropoint=zeropoint,
        thresh=detect_thresh,
        minarea=minarea,
        notes=notes,
    )
    typer.echo(format_summary(metrics))
    for note in metrics.get("notes", []):
        typer.echo(f"note: {note}")
    if metrics.get("truth"):
        for b, cu in metrics["truth"]["bands"].items():
            typer.echo(
                f"truth {b}: 90 % complete to {cu['mag_90']}, 50 % to {cu['mag_50']} ({truth})"
            )
    typer.echo(f"{metrics['passed']}/{metrics['n_rows']} rows pass")
    typer.echo(f"report: {Path(out) / 'report.html'}")
    typer.echo(
        json.dumps(
            {
                "report": str(Path(out) / "report.html"),
                "passed": metrics["passed"],
                "measures": metrics["n_rows"],
            }
        )
    )
