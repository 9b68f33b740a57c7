"""Catalogue selection: pick the images of a folder through a CSV table.

A Galaxy Zoo table is the model case: filter rows with conditions (``"P_EL>0.8"``,
``"MERGER==1"``; several conditions must all hold), then find each selected row's file in
the folder through an id column and a filename template (``"{id}.jpg"``; any column can be
used as ``{COLUMN}``, and ``{band}`` joins one file per band). Selected ids without a file
and files that belong to no catalogue row are counted and listed in the read report
(``report.catalog``) and in a prepared set's manifest.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path

from galforge.data.imageset import ImageSet, ReadReport
from galforge.errors import ConfigError, DataError

_OPS = ("==", "!=", ">=", "<=", ">", "<", "=")
_COND_RX = re.compile(r"^\s*([^<>=!\s]+)\s*(==|!=|>=|<=|>|<|=)\s*(.*?)\s*$")
_ID_GUESSES = (
    "id",
    "ID",
    "Id",
    "objid",
    "OBJID",
    "dr7objid",
    "DR7OBJID",
    "asset_id",
    "GalaxyID",
    "name",
    "NAME",
)


def _num(text):
    try:
        v = float(text)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


@dataclass(frozen=True)
class Condition:
    """One row filter: ``column op value`` with op in ==, !=, >=, <=, >, < (= means ==)."""

    column: str
    op: str
    value: str

    def __str__(self) -> str:
        return f"{self.column}{self.op}{self.value}"

    def test(self, cell) -> bool:
        cell = "" if cell is None else str(cell).strip()
        a, b = _num(cell), _num(self.value)
        if a is not None and b is not None:
            left, right = a, b
        elif self.op in ("==", "!="):
            left, right = cell, self.value
        else:
            return False
        if self.op == "==":
            return left == right
        if self.op == "!=":
            return left != right
        if self.op == ">=":
            return left >= right
        if self.op == "<=":
            return left <= right
        if self.op == ">":
            return left > right
        return left < right


def parse_condition(text: str) -> Condition:
    """Parse ``"P_EL>0.8"``, ``"MERGER == 1"``, ``"CLASS=='spiral'"`` into a Condition."""
    m = _COND_RX.match(str(text))
    if not m or not m.group(3):
        raise ConfigError(
            f"--where {text!r}: expected COLUMN OP VALUE with OP one of ==, !=, >=, <=, >, < "
            "(e.g. 'P_EL>0.8')"
        )
    col, op, val = m.groups()
    if val[0] in "=<>!":
        bad = op + re.match(r"[=<>!]+", val).group(0)
        raise ConfigError(
            f"--where {text!r}: {bad!r} is not an operator; use one of ==, !=, >=, <=, >, < "
            f"(e.g. '{col}{op if op != '=' else '=='}{val.lstrip('=<>!') or 1}')"
        )
    if op == "=":
        op = "=="
    if len(val) >= 2 and val[0] == val[-1] and val[0] in "'\"":
        val = val[1:-1]
    return Condition(col, op, val)


def parse_conditions(where) -> list[Condition]:
    """A list of conditions (strings may hold several joined by `` and ``/``&&``)."""
    if where is None:
        return []
    if isinstance(where, str):
        where = [where]
    out = []
    for w in where:
        for part in re.split(r"\s+(?:and|AND)\s+|\s*&&\s*", str(w)):
            if part.strip():
                out.append(parse_condition(part))
    return out


def read_catalog(path) -> tuple[list[str], list[dict]]:
    """Read a CSV (comma, tab or semicolon separated; a header row first) as column names
    and one dict per row (values are stripped strings)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"catalogue {path}: no such file; give the CSV path with --catalog")
    try:
        text = path.read_text(encoding="utf-8-sig", errors="replace")
    except OSError as exc:
        raise DataError(f"catalogue {path}: cannot read ({exc})") from exc
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise DataError(f"catalogue {path}: the file is empty; it needs a header row and data rows")
    head = lines[0]
    delim = max([",", "\t", ";"], key=head.count)
    if head.count(delim) == 0:
        delim = ","
    reader = csv.reader(lines, delimiter=delim)
    header = [h.strip() for h in next(reader)]
    if not any(header):
        raise DataError(f"catalogue {path}: empty header row")
    rows = []
    for k, rec in enumerate(reader, start=2):
        if len(rec) != len(header):
            raise DataError(
                f"catalogue {path}: row {k} has {len(rec)} fields but the header has {len(header)}"
            )
        rows.append({h: v.strip() for h, v in zip(header, rec, strict=True)})
    return header, rows


def _require_column(col: str, columns: list[str], path, what: str) -> None:
    if col not in columns:
        shown = ", ".join(columns[:40]) + (" ..." if len(columns) > 40 else "")
        raise ConfigError(
            f"catalogue {path}: no column {col!r} ({what}); available columns: {shown}"
        )


def select_rows(
    rows: list[dict], columns: list[str], conditions: list[Condition], path
) -> list[dict]:
    """Rows for which every condition holds (missing column → ConfigError naming it)."""
    for c in conditions:
        _require_column(c.column, columns, path, f"used in --where {str(c)!r}")
    return [r for r in rows if all(c.test(r.get(c.column)) for c in conditions)]


def guess_id_column(columns: list[str], path) -> str:
    for g in _ID_GUESSES:
        if g in columns:
            return g
    raise ConfigError(
        f"catalogue {path}: give the id column with id_column=/--id-column; columns: "
        + ", ".join(columns[:40])
    )


def _guess_template(files: list[Path]) -> str:
    from collections import Counter

    exts = Counter(
        "".join(p.suffixes[-2:]) if p.name.lower().endswith(".gz") else p.suffix for p in files
    )
    return "{id}" + exts.most_common(1)[0][0]


def _fmt(template: str, ctx: dict, path) -> str:
    try:
        return template.format_map(ctx)
    except KeyError as exc:
        raise ConfigError(
            f"template {template!r}: placeholder {{{exc.args[0]}}} is neither id, band nor a "
            f"column of catalogue {path}"
        ) from None
    except (ValueError, IndexError) as exc:
        raise ConfigError(f"template {template!r}: {exc}") from None


def _value(text: str):
    v = _num(text)
    if v is None:
        return text
    return int(v) if v.is_integer() and re.fullmatch(r"[-+]?\d+", text) and abs(v) < 2**53 else v


def match_catalog(
    folder,
    catalog,
    *,
    where=None,
    id_column=None,
    template=None,
    bands=None,
    catalog_columns=None,
    report: ReadReport | None = None,
    recursive=False,
):
    """Select catalogue rows and find their files in ``folder``.

    Returns ``(items, summary)``: the readable items (one per matched row) and a JSON-safe
    summary with ``n_rows``, ``n_selected``, ``n_matched``, ``unmatched_ids`` (selected rows
    without a file) and ``unmatched_files`` (image files of no catalogue row).
    """
    from galforge.data.builtin import parse_bands
    from galforge.data.readers import Item, compile_template, list_folder

    folder = Path(folder).expanduser()
    report = report if report is not None else ReadReport()
    if not folder.exists():
        raise DataError(f"{folder}: no such folder (the images the catalogue {catalog} refers to)")
    if not folder.is_dir():
        raise DataError(f"{folder}: with --catalog the source must be the folder of images")
    columns, rows = read_catalog(catalog)
    conditions = parse_conditions(where)
    id_column = id_column or guess_id_column(columns, catalog)
    _require_column(id_column, columns, catalog, "the id column")
    extra_cols = list(catalog_columns or [])
    for c in extra_cols:
        _require_column(c, columns, catalog, "asked for with catalog_columns")
    selected = select_rows(rows, columns, conditions, catalog)

    files = list_folder(folder, report, recursive=recursive)
    by_name = {p.relative_to(folder).as_posix(): p for p in files}
    template = template or _guess_template(files)
    band_list = None
    if "{band}" in template:
        if bands:
            band_list = parse_bands(bands)
        else:
            from galforge.data.readers import band_sort_key

            rx = compile_template(template)
            found = {m.group("band") for n in by_name if (m := rx.match(n))}
            if not found:
                raise DataError(f"{folder}: no file name matches template {template!r}")
            band_list = tuple(sorted(found, key=band_sort_key))

    def names_for(row):
        ctx = dict(row)
        ctx["id"] = row[id_column]
        if band_list is None:
            return [_fmt(template, ctx, catalog)]
        return [_fmt(template, {**ctx, "band": b}, catalog) for b in band_list]

    expected_all = set()
    for r in rows:
        expected_all.update(names_for(r))
    items, unmatched_ids, seen = [], [], set()
    keep_cols = [c.column for c in conditions] + extra_cols
    for r in selected:
        rid = r[id_column]
        if rid in seen:
            report.skip(catalog, f"duplicate catalogue id {rid!r} (row used once)")
            continue
        seen.add(rid)
        names = names_for(r)
        missing = [n for n in names if n not in by_name]
        if missing:
            unmatched_ids.append(rid)
            continue
        meta = {"id": rid}
        for c in keep_cols:
            meta[c] = _value(r.get(c, ""))
        if band_list is None:
            items.append(Item(key=rid, paths=[by_name[names[0]]], meta=meta))
        else:
            items.append(
                Item(key=rid, paths=[by_name[n] for n in names], band_names=band_list, meta=meta)
            )
    unmatched_files = sorted((n for n in by_name if n not in expected_all), key=str)
    summary = {
        "path": str(catalog),
        "where": [str(c) for c in conditions],
        "id_column": id_column,
        "template": template,
        "n_rows": len(rows),
        "n_selected": len(selected),
        "n_matched": len(items),
        "n_unmatched_ids": len(unmatched_ids),
        "unmatched_ids": unmatched_ids,
        "n_unmatched_files": len(unmatched_files),
        "unmatched_files": unmatched_files,
    }
    if band_list is not None:
        summary["bands"] = list(band_list)
    report.catalog = summary
    return items, summary


def load_with_catalog(folder, **opts) -> ImageSet:
    """``load_images(folder, catalog=..., where=..., id_column=..., template=...)``."""
    from galforge.data.readers import collect

    report = ReadReport()
    items, summary = match_catalog(
        folder,
        opts["catalog"],
        where=opts.get("where"),
        id_column=opts.get("id_column"),
        template=opts.get("template"),
        bands=opts.get("bands"),
        catalog_columns=opts.get("catalog_columns"),
        report=report,
        recursive=bool(opts.get("recursive")),
    )
    if not items:
        raise DataError(
            f"catalogue {opts['catalog']}: no selected row has a file in {folder} "
            f"({summary['n_selected']} of {summary['n_rows']} rows selected by "
            f"{summary['where'] or 'no condition'}; template {summary['template']!r}, "
            f"e.g. unmatched ids {summary['unmatched_ids'][:3]}); check --where, --id-column and --template"
        )
    return collect(items, opts, report, str(folder), single=False)
