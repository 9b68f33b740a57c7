"""Field validation: evaluate_fields, its statistics and `galforge evaluate --fields`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from galforge.evaluation import fieldstats
from galforge.evaluation.field_report import evaluate_fields

BANDS = ("R", "G", "B")
SIZE = 256


def positions(rng, n, size=SIZE, clustered=False, margin=8):
    if not clustered:
        return rng.uniform(margin, size - margin, (n, 2))
    parents = rng.uniform(margin + 10, size - margin - 10, (max(n // 10, 1), 2))
    kids = parents[rng.integers(0, len(parents), n)] + rng.normal(0, 5.0, (n, 2))
    return np.clip(kids, margin, size - margin)


def make_field(seed, *, n=90, dmag=0.0, sky=1.0, clustered=False, size=SIZE):
    """A 3-band field of round Gaussian sources (fluxes from a power law, ``dmag`` mag
    brighter than the default; fixed colours) at known positions on white noise of σ
    ``sky``; returns (field, truth columns)."""
    rng = np.random.default_rng(seed)
    xy = positions(rng, n, size, clustered)
    flux = 300.0 * (1.0 + rng.pareto(1.5, n)) * 10 ** (0.4 * dmag)
    sig = rng.uniform(1.2, 2.5, n)
    colours = np.array([1.0, 0.8, 0.6])
    yy, xx = np.mgrid[0:size, 0:size]
    img = np.zeros((3, size, size))
    for (x, y), f, s in zip(xy, flux, sig, strict=True):
        x0, x1 = int(max(x - 6 * s, 0)), int(min(x + 6 * s + 1, size))
        y0, y1 = int(max(y - 6 * s, 0)), int(min(y + 6 * s + 1, size))
        g = np.exp(-((xx[y0:y1, x0:x1] - x) ** 2 + (yy[y0:y1, x0:x1] - y) ** 2) / (2 * s * s))
        g *= f / (2 * np.pi * s * s)
        img[:, y0:y1, x0:x1] += colours[:, None, None] * g
    img += rng.normal(0, sky, img.shape)
    truth = {"id": np.arange(n, dtype=float), "x": xy[:, 0], "y": xy[:, 1]}
    for c, b in enumerate(BANDS):
        truth[f"flux_{b}"] = flux * colours[c]
    return img.astype(np.float32), truth


def rows_by_name(metrics):
    return {r["measure"]: r for r in metrics["summary"]}


@pytest.fixture(scope="module")
def base():
    return make_field(1)


@pytest.fixture(scope="module")
def same_process(base):
    return evaluate_fields(base[0], make_field(2)[0], BANDS, seed=0)


def test_same_process_passes_photometry_rows(same_process):
    rows = rows_by_name(same_process)
    for b in BANDS:
        assert rows[f"magnitude KS p ({b})"]["passed"]
        assert rows[f"median Δmag ({b})"]["passed"]
        assert rows[f"sky σ ratio ({b})"]["passed"]
    assert rows["colour KS p (R−G)"]["passed"] and rows["colour KS p (G−B)"]["passed"]
    assert rows["half-light radius KS p"]["passed"]
    assert rows["ellipticity KS p"]["passed"]
    assert rows["detections per Mpix (generated / real)"]["passed"]
    assert rows["w(θ): fraction of bins in the real 2σ band"]["passed"]
    for r in same_process["summary"]:
        assert {"measure", "value", "threshold", "passed", "rule", "n_real", "n_fake"} <= set(r)


def test_field_against_itself(base):
    m = evaluate_fields(base[0], base[0], BANDS, seed=0)
    rows = rows_by_name(m)
    for b in BANDS:
        assert rows[f"magnitude KS p ({b})"]["value"] == pytest.approx(1.0)
        assert rows[f"median Δmag ({b})"]["value"] == pytest.approx(0.0, abs=1e-9)
        assert rows[f"sky σ ratio ({b})"]["value"] == pytest.approx(1.0)
    assert m["density"]["ratio"] == 1.0


def test_brighter_sources_fail_magnitudes(base):
    bright = make_field(1, dmag=0.5)[0]
    rows = rows_by_name(evaluate_fields(base[0], bright, BANDS, seed=0))
    for b in BANDS:
        assert not rows[f"magnitude KS p ({b})"]["passed"]
        assert not rows[f"median Δmag ({b})"]["passed"]
        assert rows[f"median Δmag ({b})"]["value"] < -0.3


def test_noisier_sky_fails_sky_row():
    a = make_field(3, n=40)[0]
    b = make_field(4, n=40, sky=1.2)[0]
    rows = rows_by_name(evaluate_fields(a, b, BANDS, seed=0))
    for band in BANDS:
        r = rows[f"sky σ ratio ({band})"]
        assert not r["passed"]
        assert r["value"] == pytest.approx(1.2, abs=0.04)


def test_sky_sigma_and_correlation_length():
    rng = np.random.default_rng(0)
    white = rng.normal(0, 2.0, (1, 256, 256))
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(rng.normal(0, 1, (256, 256)), 2.0)[None]
    mask = np.zeros((256, 256), bool)
    sw = fieldstats.sky_statistics(white, ["a"], mask)["a"]
    ss = fieldstats.sky_statistics(smooth, ["a"], mask)["a"]
    assert sw["sigma"] == pytest.approx(2.0, rel=0.05)
    assert abs(sw["rho1"]) < 0.05
    assert sw["corr_length"] < 1.0
    assert ss["corr_length"] > 2.5 * sw["corr_length"]


def test_wtheta_separates_clustered_from_poisson():
    rng = np.random.default_rng(5)
    shape = (512, 512)
    pois = positions(rng, 400, 512)
    pois2 = positions(rng, 400, 512)
    clus = positions(rng, 400, 512, clustered=True)
    wp = fieldstats.angular_correlation(pois[:, 0], pois[:, 1], shape, seed=1)
    wp2 = fieldstats.angular_correlation(pois2[:, 0], pois2[:, 1], shape, seed=2)
    wc = fieldstats.angular_correlation(clus[:, 0], clus[:, 1], shape, seed=3)
    assert wp["error"] == "jackknife"
    assert wc["w"][0] > 5.0 and abs(wp["w"][0]) < 0.5
    assert fieldstats.compare_wtheta(wp, wp2)["fraction"] >= 0.75
    clustered = fieldstats.compare_wtheta(wp, wc)
    assert clustered["within"][:2] == [False, False]  # the small scales tell them apart
    assert clustered["fraction"] < 0.75  # the report's verdict fails


def test_truth_completeness_falls_for_faint_sources():
    rng = np.random.default_rng(7)
    size, n = 256, 120
    xy = rng.uniform(10, size - 10, (n, 2))
    mag = rng.uniform(-7.5, -2.0, n)  # instrumental: flux 1000 … 6
    flux = 10 ** (-0.4 * mag)
    yy, xx = np.mgrid[0:size, 0:size]
    img = rng.normal(0, 1.0, (1, size, size))
    for (x, y), f in zip(xy, flux, strict=True):
        img[0] += f / (2 * np.pi * 1.5**2) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 4.5)
    truth = {"x": xy[:, 0], "y": xy[:, 1], "mag_a": mag}
    from galforge.evaluation.photometry import measure_field

    found = measure_field(img, ["a"])
    fxy = np.array([[r["x"], r["y"]] for r in found])
    match = fieldstats.crossmatch(np.column_stack([truth["x"], truth["y"]]), fxy, 2.0)
    meas = np.array([r["mag_inst_a"] for r in found])
    curve = fieldstats.completeness(mag, match >= 0, np.where(match >= 0, meas[match], np.nan))
    comp = np.array([np.nan if c is None else c for c in curve["completeness"]])
    centres = np.array(curve["centres"])
    assert np.nanmin(comp[centres < -5.5]) >= 0.9
    assert np.nanmax(comp[centres > -3.0]) <= 0.5
    assert curve["mag_50"] is not None and -5.5 < curve["mag_50"] < -2.5
    bright = np.array(
        [
            d
            for c, d in zip(centres, curve["dmag_median"], strict=True)
            if c < -5.5 and d is not None
        ]
    )
    assert np.all(np.abs(bright) < 0.2)


def test_crossmatch_is_one_to_one():
    truth = np.array([[10.0, 10.0], [11.0, 10.0], [50.0, 50.0]])
    found = np.array([[10.2, 10.0], [80.0, 80.0]])
    assert fieldstats.crossmatch(truth, found, 2.0).tolist() == [0, -1, -1]


def _write_fits_cube(path, field):
    from astropy.io import fits

    hdr = fits.Header()
    hdr["BANDS"] = ",".join(BANDS)
    hdr["BUNIT"] = "adu"
    fits.PrimaryHDU(field, header=hdr).writeto(path)


def test_cli_writes_field_report(tmp_path, capsys, base):
    from galforge.cli import main

    real, fake = tmp_path / "real.fits", tmp_path / "fake.npy"
    _write_fits_cube(real, base[0])
    field, truth = make_field(2)
    np.save(fake, field)
    truth_csv = tmp_path / "truth.csv"
    keys = list(truth)
    lines = [",".join(keys)] + [
        ",".join(f"{truth[k][i]:.6g}" for k in keys) for i in range(len(truth["x"]))
    ]
    truth_csv.write_text("\n".join(lines) + "\n")
    out = tmp_path / "report"
    rc = main(
        [
            "evaluate",
            str(real),
            str(fake),
            "--fields",
            "--out",
            str(out),
            "--truth",
            str(truth_csv),
            "--threshold",
            "sky=0.1",
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0, text
    assert (out / "report.html").is_file()
    assert (out / "fields.png").is_file() and (out / "completeness.png").is_file()
    m = json.loads((out / "metrics.json").read_text())
    assert m["kind"] == "fields" and m["bands"] == list(BANDS)
    for key in (
        "summary",
        "density",
        "magnitudes",
        "colours",
        "shapes",
        "wtheta",
        "sky",
        "classifier",
        "truth",
        "settings",
        "figures",
    ):
        assert key in m, key
    assert m["settings"]["thresholds"]["sky"] == 0.1
    assert set(m["colours"]) == {"R-G", "G-B"}
    comp = m["truth"]["bands"]["R"]
    assert comp["n_true_total"] == len(truth["x"]) and comp["n_found_total"] > 0
    assert "rows pass" in text and "detections per Mpix" in text


def test_cli_bad_input_exits_2(tmp_path, capsys, base):
    from galforge.cli import main

    real, two = tmp_path / "real.fits", tmp_path / "two.npy"
    _write_fits_cube(real, base[0])
    np.save(two, base[0][:2])
    out = str(tmp_path / "o")
    assert main(["evaluate", str(real), str(two), "--fields", "--out", out]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "band" in err and "FAKE_FIELD" in err
    assert (
        main(["evaluate", str(real), str(tmp_path / "missing.fits"), "--fields", "--out", out]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missing.fits" in err
    assert (
        main(["evaluate", str(real), str(real), "--fields", "--out", out, "--threshold", "nope=1"])
        == 2
    )
    assert "nope" in capsys.readouterr().err


def test_load_field_reads_mef_and_tiles_a_model(tmp_path, base):
    from astropy.io import fits

    from galforge.cli.evaluate_fields import load_field
    from galforge.errors import ConfigError

    mef = tmp_path / "mef.fits"
    hdus = [fits.PrimaryHDU()]
    for c, b in enumerate(BANDS):
        h = fits.ImageHDU(base[0][c], name=b)
        h.header["FILTER"] = b
        hdus.append(h)
    fits.HDUList(hdus).writeto(mef)
    arr, bands, *_ = load_field(str(mef), "REAL_FIELD")
    assert arr.shape == (3, SIZE, SIZE) and bands == BANDS
    np.testing.assert_array_equal(arr, base[0])
    arr, bands, units, desc, _ = load_field(
        "pretrained:xdf-sgan", "FAKE_FIELD", shape=(3, 128, 160), seed=3, work=tmp_path
    )
    assert arr.shape == (3, 128, 160) and bands == BANDS and np.isfinite(arr).all()
    assert "seed 3" in desc and units
    with pytest.raises(ConfigError, match="REAL_FIELD"):
        load_field("pretrained:xdf-sgan", "REAL_FIELD")


def test_read_truth_fits_and_bad_catalogues(tmp_path):
    from astropy.table import Table

    from galforge.errors import DataError

    path = tmp_path / "t.truth.fits"
    Table(
        {"id": [1, 2], "x": [3.0, 4.0], "y": [5.0, 6.0], "flux_R": [10.0, 20.0], "name": ["a", "b"]}
    ).write(path)
    cols = fieldstats.read_truth(path)
    assert cols["x"].tolist() == [3.0, 4.0] and cols["flux_R"].tolist() == [10.0, 20.0]
    assert "name" not in cols
    bad = tmp_path / "bad.csv"
    bad.write_text("id,ra,dec\n1,2,3\n")
    with pytest.raises(DataError, match="no column x or y"):
        fieldstats.read_truth(bad)
    with pytest.raises(DataError, match="no such file"):
        fieldstats.read_truth(tmp_path / "none.csv")
