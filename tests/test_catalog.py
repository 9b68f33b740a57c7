"""Catalogue selection: conditions, id/template matching, unmatched ids and files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from galforge.cli import main
from galforge.data import load_images
from galforge.data.catalog import Condition, parse_condition, parse_conditions, read_catalog
from galforge.errors import ConfigError, DataError


def test_parse_conditions():
    assert parse_condition("P_EL>0.8") == Condition("P_EL", ">", "0.8")
    assert parse_condition(" MERGER = 1 ") == Condition("MERGER", "==", "1")
    assert parse_condition("CLASS=='Sc'") == Condition("CLASS", "==", "Sc")
    assert [str(c) for c in parse_conditions(["P_EL>=0.5 and MERGER!=1"])] == [
        "P_EL>=0.5",
        "MERGER!=1",
    ]
    c = parse_condition("P_EL<0.5")
    assert c.test("0.2") and not c.test("0.7") and not c.test("") and not c.test("nan")
    with pytest.raises(ConfigError, match="COLUMN OP VALUE"):
        parse_condition("P_EL")


def test_read_catalog_tab_separated(tmp_path):
    p = tmp_path / "t.tsv"
    p.write_text("id\tP_EL\n1\t0.5\n2\t0.7\n")
    cols, rows = read_catalog(p)
    assert cols == ["id", "P_EL"] and rows[1] == {"id": "2", "P_EL": "0.7"}


def test_selection_and_matching(gz_folder):
    folder, cat, ids = gz_folder
    s = load_images(folder, catalog=cat, where=["P_EL>0.8"], id_column="OBJID", template="{id}.jpg")
    # rows 0, 2, 3, 5 pass; row 5 has no image
    assert [m["id"] for m in s.meta] == [str(ids[0]), str(ids[2]), str(ids[3])]
    assert [m["P_EL"] for m in s.meta] == [0.9, 0.85, 0.95]
    c = s.report.catalog
    assert c["n_rows"] == 6 and c["n_selected"] == 4 and c["n_matched"] == 3
    assert c["unmatched_ids"] == [str(ids[5])] and c["unmatched_files"] == ["999.jpg"]
    assert s.bands == ("R", "G", "B") and s.images.shape == (3, 3, 32, 32)

    both = load_images(folder, catalog=cat, where=["P_EL>0.8", "MERGER==1"], id_column="OBJID")
    assert [m["id"] for m in both.meta] == [str(ids[3])]  # template guessed as {id}.jpg


def test_missing_column_names_it_and_lists_columns(gz_folder):
    folder, cat, _ = gz_folder
    with pytest.raises(ConfigError) as exc:
        load_images(folder, catalog=cat, where=["P_SPIRAL>0.5"], id_column="OBJID")
    msg = str(exc.value)
    assert "P_SPIRAL" in msg and "OBJID, P_EL, P_CS, MERGER" in msg and str(cat) in msg
    with pytest.raises(ConfigError, match="dr8objid"):
        load_images(folder, catalog=cat, id_column="dr8objid")


def test_no_match_is_a_data_error(gz_folder):
    folder, cat, _ = gz_folder
    with pytest.raises(DataError, match="template"):
        load_images(folder, catalog=cat, id_column="OBJID", template="{id}.png")


def test_cli_prepare_with_catalog_writes_unmatched_in_manifest(gz_folder, tmp_path, capsys):
    folder, cat, ids = gz_folder
    out = tmp_path / "prep"
    code = main(
        [
            "data",
            "prepare",
            str(folder),
            "--out",
            str(out),
            "--catalog",
            str(cat),
            "--where",
            "P_EL>0.8",
            "--where",
            "MERGER==0",
            "--id-column",
            "OBJID",
            "--template",
            "{id}.jpg",
            "--size",
            "16",
        ]
    )
    assert code == 0
    man = json.loads((out / "manifest.json").read_text())
    assert man["count"] == 2 and man["shape"] == [3, 16, 16]
    assert man["catalog"]["unmatched_ids"] == [str(ids[5])]
    assert man["catalog"]["unmatched_files"] == ["999.jpg"]
    assert man["catalog"]["where"] == ["P_EL>0.8", "MERGER==0"]
    assert np.load(out / "images.npy").shape == (2, 3, 16, 16)

    code = main(
        [
            "data",
            "prepare",
            str(folder),
            "--out",
            str(tmp_path / "p2"),
            "--catalog",
            str(cat),
            "--where",
            "SPIRAL==1",
            "--id-column",
            "OBJID",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "SPIRAL" in err and "available columns" in err


def test_catalog_with_band_template(tmp_path, fits_band_folder):
    cat = tmp_path / "cat.csv"
    cat.write_text("name,mag\nobj0,18.1\nobj1,19.5\nobj2,17.0\nobj7,16.0\n")
    s = load_images(
        fits_band_folder, catalog=cat, where="mag<19", id_column="name", template="{id}_{band}.fits"
    )
    assert s.bands == ("g", "r", "z") and [m["id"] for m in s.meta] == ["obj0"]
    assert s.report.catalog["unmatched_ids"] == ["obj2", "obj7"]  # obj2 lacks z, obj7 all


def test_where_syntax_error_is_named(gz_folder, tmp_path, capsys):
    folder, cat, _ = gz_folder
    rc = main(
        [
            "data",
            "prepare",
            str(folder),
            "--catalog",
            str(cat),
            "--where",
            "MERGER===1",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "'===' is not an operator" in err and "MERGER==1" in err
