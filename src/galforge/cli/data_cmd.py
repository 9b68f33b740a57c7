"""``galforge data prepare|inspect``: turn images into a prepared data set, or look first."""

from __future__ import annotations

import json

import typer

from galforge.errors import ConfigError
from galforge.fileio import check_output_path

data_app = typer.Typer(
    name="data",
    help="Prepare galaxy images for training, or inspect what would be read.",
    no_args_is_help=True,
    add_completion=False,
)


def _read_options(
    where,
    catalog,
    id_column,
    template,
    crop,
    size,
    resize_method,
    nan_policy,
    bands,
    pattern,
    dataset,
    hdu,
    limit,
    recursive,
    strict,
) -> dict:
    from galforge.data.transforms import parse_crop

    crop_v = None if crop is None else parse_crop(crop, "--crop")
    if (where or id_column or template) and not catalog and not pattern:
        raise ConfigError("--where/--id-column/--template need --catalog CSV")
    band_list = None
    if bands:
        band_list = [b for item in bands for b in item.replace(",", " ").split() if b]
    hdu_v = None
    if hdu is not None:
        hdu_v = int(hdu) if hdu.lstrip("-").isdigit() else hdu
    opts = {
        "where": list(where) if where else None,
        "catalog": catalog,
        "id_column": id_column,
        "template": template,
        "crop": crop_v,
        "size": size,
        "resize_method": resize_method,
        "nan_policy": nan_policy,
        "bands": band_list,
        "pattern": pattern,
        "dataset": dataset,
        "hdu": hdu_v,
        "limit": limit,
        "recursive": recursive or None,
        "strict": strict or None,
    }
    return {k: v for k, v in opts.items() if v is not None}


_WHERE = typer.Option(
    None, "--where", help="Catalogue condition, e.g. 'P_EL>0.8' (repeatable; all must hold)."
)
_CATALOG = typer.Option(None, "--catalog", help="CSV catalogue selecting the images.")
_IDCOL = typer.Option(None, "--id-column", help="Catalogue column holding the image id.")
_TEMPLATE = typer.Option(
    None, "--template", help="File name of an id, e.g. '{id}.jpg' or '{id}_{band}.fits'."
)
_CROP = typer.Option(
    None, "--crop", help="Centre crop: fraction of the side (0.5) or pixels (128)."
)
_SIZE = typer.Option(None, "--size", "--resize", help="Resize every image to SIZE×SIZE pixels.")
_METHOD = typer.Option("nearest", "--resize-method", help="nearest (default), bicubic or area.")
_NAN = typer.Option(
    "fill", "--nan-policy", help="NaN/inf pixels: fill (background median) or reject the image."
)
_BANDS = typer.Option(
    None, "--bands", help="Bands to keep/reorder, or new names (repeatable or comma separated)."
)
_PATTERN = typer.Option(None, "--pattern", help="Join one file per band, e.g. '{id}_{band}.fits'.")
_DATASET = typer.Option(None, "--dataset", help="HDF5/npz array name (default: images).")
_HDU = typer.Option(None, "--hdu", help="FITS HDU to read (index or EXTNAME).")
_LIMIT = typer.Option(None, "--limit", help="Read at most this many images.")
_RECURSIVE = typer.Option(False, "--recursive", help="Read sub-folders too.")
_STRICT = typer.Option(
    False, "--strict", help="Stop at the first unreadable file instead of skipping it."
)


@data_app.command("prepare")
def prepare_cmd(
    source: str = typer.Argument(..., help="Folder, file, prepared set or builtin: spec."),
    out: str = typer.Option(..., "--out", "-o", help="Folder to write the prepared data set to."),
    where: list[str] = _WHERE,
    catalog: str = _CATALOG,
    id_column: str = _IDCOL,
    template: str = _TEMPLATE,
    crop: str = _CROP,
    size: int = _SIZE,
    resize_method: str = _METHOD,
    nan_policy: str = _NAN,
    bands: list[str] = _BANDS,
    pattern: str = _PATTERN,
    dataset: str = _DATASET,
    hdu: str = _HDU,
    limit: int = _LIMIT,
    recursive: bool = _RECURSIVE,
    strict: bool = _STRICT,
    clip_percentile: float = typer.Option(
        99.99, "--clip-percentile", help="Normalizer clip percentile."
    ),
    stretch: str = typer.Option(
        None,
        "--stretch",
        help="Normalizer stretch: linear or asinh (default: asinh for "
        "physical units such as counts or nanomaggies, linear for 8/16-bit images).",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace a prepared data set already in --out."
    ),
) -> None:
    """Read SOURCE once and write images.npy + manifest.json (+ meta.jsonl, truth.csv)."""
    from rich.console import Console

    from galforge.data.datasets import prepare, read_manifest

    opts = _read_options(
        where,
        catalog,
        id_column,
        template,
        crop,
        size,
        resize_method,
        nan_policy,
        bands,
        pattern,
        dataset,
        hdu,
        limit,
        recursive,
        strict,
    )
    if stretch not in (None, "linear", "asinh"):
        raise ConfigError(f"--stretch {stretch!r}: use linear or asinh")
    check_output_path(out, "--out")
    console = Console(stderr=True)
    norm = {"clip_percentile": clip_percentile, "stretch": stretch}
    if str(source).startswith("builtin:"):
        with console.status(f"making {source} ..."):
            manifest_path = prepare(source, out, normalizer=norm, overwrite=overwrite, **opts)
    else:
        manifest_path = prepare(
            source, out, normalizer=norm, progress=True, overwrite=overwrite, **opts
        )
    console = Console()
    man = read_manifest(manifest_path.parent)
    c, h, w = man["shape"]
    console.print(
        f"[bold green]prepared[/] {man['count']} images of {c}×{h}×{w} "
        f"(bands {', '.join(man['bands'])}; units {man['units']}; "
        f"{man['normalizer'].get('stretch', 'linear')} stretch) → {manifest_path.parent}"
    )
    if man["n_skipped"]:
        console.print(f"[yellow]skipped {man['n_skipped']}[/] (reasons in manifest.json):")
        for s in man["skipped"][:10]:
            console.print(f"  {s['path']}: {s['reason']}")
        if man["n_skipped"] > 10:
            console.print(f"  ... and {man['n_skipped'] - 10} more")
    if man["nan_pixels"]:
        console.print(
            f"filled {man['nan_pixels']} NaN/inf pixels in {man['nan_filled_images']} images"
        )
    for message in man.get("warnings") or []:
        console.print(f"[yellow]warning:[/] {message}", soft_wrap=True)
    cat = man.get("catalog")
    if cat:
        console.print(
            f"catalogue: {cat['n_selected']} of {cat['n_rows']} rows selected, {cat['n_matched']} "
            f"matched; {cat['n_unmatched_ids']} ids without a file, {cat['n_unmatched_files']} "
            "files without a row"
        )
    if man["files"].get("truth"):
        console.print(f"truth catalogue: {manifest_path.parent / man['files']['truth']}")
    console.print(f"fingerprint {man['fingerprint'][:16]}…")


@data_app.command("inspect")
def inspect_cmd(
    path: str = typer.Argument(..., help="Folder, file, prepared set or builtin: spec."),
    where: list[str] = _WHERE,
    catalog: str = _CATALOG,
    id_column: str = _IDCOL,
    template: str = _TEMPLATE,
    bands: list[str] = _BANDS,
    pattern: str = _PATTERN,
    dataset: str = _DATASET,
    hdu: str = _HDU,
    recursive: bool = _RECURSIVE,
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Print what would be read from PATH: counts, shapes, bands, units, skipped files."""
    from rich.console import Console
    from rich.table import Table

    from galforge.data.datasets import inspect

    opts = _read_options(
        where,
        catalog,
        id_column,
        template,
        None,
        None,
        None,
        None,
        bands,
        pattern,
        dataset,
        hdu,
        None,
        recursive,
        None,
    )
    info = inspect(path, **opts)
    if as_json:
        typer.echo(json.dumps(info, indent=2, default=str))
        return
    console = Console()
    table = Table(title=f"galforge data inspect {path}", show_header=False)
    table.add_row("kind", str(info.get("kind")))
    if info.get("description"):
        table.add_row("description", str(info["description"]))
    table.add_row("images", str(info.get("count")))
    table.add_row(
        "shapes (C×H×W)", ", ".join(f"{k}: {v}" for k, v in info.get("shapes", {}).items())
    )
    band_sets = info.get("band_sets") or {}
    if len(band_sets) > 1:
        table.add_row(
            "bands", "mixed: " + ", ".join(f"{k} ({v} files)" for k, v in band_sets.items())
        )
    else:
        table.add_row("bands", ", ".join(map(str, info.get("bands") or [])))
    table.add_row("units", str(info.get("units")))
    if "files" in info:
        table.add_row("files", str(info["files"]["count"]))
    table.add_row("skipped", str(len(info.get("skipped") or [])))
    cat = info.get("catalog")
    if cat:
        table.add_row(
            "catalogue",
            f"{cat['n_selected']}/{cat['n_rows']} rows selected, {cat['n_matched']} matched, "
            f"{cat['n_unmatched_ids']} unmatched ids, {cat['n_unmatched_files']} unmatched files",
        )
    console.print(table)
    for s in (info.get("skipped") or [])[:20]:
        console.print(f"  skipped {s['path']}: {s['reason']}")
    for message in [info["warning"]] if info.get("warning") else []:
        console.print(f"[yellow]warning:[/] {message}", soft_wrap=True)
    for message in info.get("warnings") or []:
        console.print(f"[yellow]warning:[/] {message}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add the ``data`` command group to the galforge app."""
    app.add_typer(data_app, name="data")
