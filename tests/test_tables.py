"""Catalogues with units: ECSV beside every CSV catalogue, units that round-trip."""

from __future__ import annotations

import math

import pytest
from astropy import units as u
from astropy.table import QTable

from galforge.data.tables import column_unit, to_qtable, write_ecsv
from galforge.evaluation.figures import write_csv

ROWS = [
    {
        "image": 0,
        "id": 1,
        "x": 3.5,
        "y": 4.25,
        "theta": 0.5,
        "pa_deg": 28.6,
        "half_light_radius": 2.0,
        "hlr_arcsec": 0.4,
        "flux_r": 120.0,
        "mag_r": 19.8,
        "magerr_r": 0.02,
        "flag": 0,
        "band": "r",
    },
    {
        "image": 1,
        "id": 1,
        "x": 7.0,
        "y": 1.0,
        "theta": -1.0,
        "pa_deg": None,
        "half_light_radius": 1.5,
        "hlr_arcsec": 0.3,
        "flux_r": 80.0,
        "mag_r": 20.2,
        "magerr_r": 0.05,
        "flag": 2,
        "band": "r",
    },
]


def test_column_units_follow_the_names():
    assert column_unit("x") == u.pix and column_unit("half_light_radius") == u.pix
    assert column_unit("theta") == u.rad and column_unit("pa_deg_outer") == u.deg
    assert column_unit("hlr_arcsec") == u.arcsec and column_unit("mag_inst_g") == u.mag
    assert column_unit("flux_g", "counts") == u.count and column_unit("flux_g") is None
    assert column_unit("flux_g", "nanomaggy") == u.nanomaggy
    assert column_unit("flux_g", "8-bit level") == u.adu
    assert column_unit("flag") is None and column_unit("gini") is None


def test_ecsv_units_round_trip_through_qtable(tmp_path):
    path = write_ecsv(
        tmp_path / "cat.ecsv",
        ROWS,
        pixel_units="counts",
        units={"hlr_arcsec": "arcsec"},
        meta={"seed": 3},
    )
    table = QTable.read(path)
    assert table["x"].unit == u.pix and table["theta"].unit == u.rad
    assert table["pa_deg"].unit == u.deg and math.isnan(table["pa_deg"][1].value)
    assert table["hlr_arcsec"].unit == u.arcsec and table["mag_r"].unit == u.mag
    assert table["flux_r"].unit == u.count and table["flux_r"][0] == 120.0 * u.count
    assert table["flag"].dtype.kind == "i" and table["flag"].unit is None
    assert list(table["band"]) == ["r", "r"] and table.meta["seed"] == 3
    assert table["theta"][0].to(u.deg).value == pytest.approx(math.degrees(0.5))


def test_write_csv_writes_the_ecsv_beside_it(tmp_path):
    write_csv(tmp_path / "catalogue_photometry_real.csv", ROWS, units="nanomaggy")
    assert (tmp_path / "catalogue_photometry_real.csv").read_text().startswith("image,id,x")
    table = QTable.read(tmp_path / "catalogue_photometry_real.ecsv")
    assert len(table) == 2 and table["flux_r"].unit == u.nanomaggy
    write_csv(tmp_path / "plain.csv", ROWS, ecsv=False)
    assert not (tmp_path / "plain.ecsv").exists()


def test_empty_catalogue_is_still_a_table(tmp_path):
    assert len(to_qtable([])) == 0
    write_csv(tmp_path / "none.csv", [])
    assert len(QTable.read(tmp_path / "none.ecsv")) == 0
