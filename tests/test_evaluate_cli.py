"""``galforge evaluate``: exit 0 with failing measures, exit 2 on bad input naming the path."""

from __future__ import annotations

import json

import numpy as np

from galforge.cli import main


def _stamps(n, seed, size=16):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    out = np.empty((n, 2, size, size), np.float32)
    for i in range(n):
        r = rng.uniform(1.5, 3)
        prof = np.exp(-0.5 * (x**2 + y**2) / r**2) * rng.uniform(20, 30)
        out[i] = prof + rng.normal(0, 1.0, (2, size, size))
    return out


FAST = ["--measures", "memorization,power_spectrum", "--no-progress", "--holdout-fraction", "0.25"]


def test_failing_measures_still_exit_zero(tmp_path, capsys):
    real = _stamps(40, 0)
    np.save(tmp_path / "real.npy", real)
    np.save(tmp_path / "fake.npy", real.copy())  # the same set: memorised
    out = tmp_path / "ev"
    code = main(
        [
            "evaluate",
            str(tmp_path / "real.npy"),
            str(tmp_path / "fake.npy"),
            "--out",
            str(out),
            *FAST,
        ]
    )
    text = capsys.readouterr().out
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    rows = {r["measure"]: r for r in metrics["summary"]}
    assert rows["memorisation NN ratio (L1)"]["passed"] is False
    assert "FAIL" in text and "report:" in text
    assert (out / "report.html").is_file()
    last = json.loads(text.strip().splitlines()[-1])
    assert last["measures"] == len(metrics["summary"])


def test_thresholds_from_the_command_line(tmp_path, capsys):
    real = _stamps(40, 0)
    np.save(tmp_path / "real.npy", real)
    np.save(tmp_path / "fake.npy", _stamps(40, 1))
    out = tmp_path / "ev"
    code = main(
        [
            "evaluate",
            str(tmp_path / "real.npy"),
            str(tmp_path / "fake.npy"),
            "--out",
            str(out),
            *FAST,
            "--threshold",
            "auc=0.99",
            "--threshold",
            "nn_ratio=0.01",
        ]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["thresholds"]["auc"] == 0.99 and metrics["thresholds"]["nn_ratio"] == 0.01
    assert all(r["passed"] for r in metrics["summary"])


def test_bad_input_exits_two_and_names_the_path(tmp_path, capsys):
    missing = tmp_path / "nowhere" / "real.npy"
    code = main(
        [
            "evaluate",
            str(missing),
            "builtin:galsim?n=4&size=16",
            "--out",
            str(tmp_path / "o"),
            "--no-progress",
        ]
    )
    assert code == 2
    assert str(missing) in capsys.readouterr().err
    np.save(tmp_path / "real.npy", _stamps(8, 0))
    code = main(
        [
            "evaluate",
            str(tmp_path / "real.npy"),
            str(tmp_path / "real.npy"),
            "--out",
            str(tmp_path / "o"),
            "--measures",
            "bogus",
        ]
    )
    assert code == 2
    assert "bogus" in capsys.readouterr().err
    code = main(
        [
            "evaluate",
            str(tmp_path / "real.npy"),
            str(tmp_path / "real.npy"),
            "--out",
            str(tmp_path / "o"),
            "--threshold",
            "auc",
        ]
    )
    assert code == 2
    assert "--threshold" in capsys.readouterr().err


def test_a_model_folder_as_real_is_refused(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text("{}")
    np.save(tmp_path / "fake.npy", _stamps(8, 0))
    code = main(
        [
            "evaluate",
            str(tmp_path / "run"),
            str(tmp_path / "fake.npy"),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2
    assert "REAL" in capsys.readouterr().err


def test_a_bundle_as_fake_is_sampled_with_n_and_seed(tmp_path, capsys):
    import torch

    from galforge.bundle import save_bundle
    from galforge.data.normalize import Normalizer
    from galforge.models.registry import build_generator

    spec = {"image_size": 64, "channels": 2, "latent_dim": 8, "width": 4}
    torch.manual_seed(0)
    gen = build_generator("dcgan", spec)
    real = np.stack([np.pad(s, ((0, 0), (24, 24), (24, 24))) for s in _stamps(24, 0)])
    real += np.random.default_rng(1).normal(0, 1.0, real.shape).astype(np.float32)
    save_bundle(
        tmp_path / "bundle",
        family="dcgan",
        spec=spec,
        state_dict=gen.state_dict(),
        normalizer=Normalizer.fit(real),
        bands=("band0", "band1"),
        units="adu",
        output_range=(-1.0, 1.0),
        config={},
        data_fingerprint="0" * 64,
    )
    np.save(tmp_path / "real.npy", real)
    out = tmp_path / "ev"
    code = main(
        [
            "evaluate",
            str(tmp_path / "real.npy"),
            str(tmp_path / "bundle"),
            "-n",
            "12",
            "--seed",
            "3",
            "--out",
            str(out),
            "--measures",
            "memorization",
            "--no-progress",
        ]
    )
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["fake"]["n"] == 12 and "seed=3" in metrics["fake"]["source"]
    assert metrics["fake"]["shape"] == [2, 64, 64]


def test_two_independent_real_sets_pass_at_n30(tmp_path, capsys):
    """Two independent draws of one population pass every measure that is cheap enough for
    the suite (benchmarks/evaluate_real_halves.py checks all of them at n = 500)."""
    out = tmp_path / "ev"
    code = main(
        [
            "evaluate",
            "builtin:galsim?n=30&size=32&seed=11",
            "builtin:galsim?n=30&size=32&seed=12",
            "--out",
            str(out),
            "--measures",
            "moments,photometry,colour,memorization,power_spectrum,fid",
            "--no-progress",
        ]
    )
    text = capsys.readouterr().out
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    failed = [r["measure"] for r in metrics["summary"] if not r["passed"]]
    assert failed == [], text
    for r in metrics["summary"]:
        assert r["n_real"] >= 20 and r["n_fake"] >= 20
        if r["group"] == "moments":
            assert r["failure_rate_real"] is not None and r["failure_rate_fake"] is not None
    html = (out / "report.html").read_text()
    assert "None" not in text and "None" not in html and "nan%" not in html
    # the summary table shows n and failure rates; Details are tables, not raw JSON
    summary = html.split("<h2>Summary</h2>")[1].split("</table>")[0]
    assert "<th>n real</th>" in summary and "<th>failure rate fake</th>" in summary
    details = html.split("<h2>Details</h2>")[1]
    assert "<pre>" not in html and "{" not in details.split("<h2>")[0]
    assert "Realism classifier" in details and "<table>" in details


def _fits_folder(path, n, seed, header):
    from astropy.io import fits

    path.mkdir()
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:32, :32] - 15.5
    for i in range(n):
        img = np.exp(-0.5 * (x**2 + y**2) / rng.uniform(1.5, 3) ** 2) * rng.uniform(40, 80)
        img = (img + rng.normal(0, 1.0, img.shape)).astype(np.float32)
        hdu = fits.PrimaryHDU(img)
        hdu.header["FILTER"] = "r"
        for k, v in header.items():
            hdu.header[k] = v
        hdu.writeto(path / f"g{i:03d}.fits")


def test_magnitudes_are_instrumental_unless_a_zero_point_is_known(tmp_path, capsys):
    np.save(tmp_path / "real.npy", _stamps(24, 0, size=32))
    np.save(tmp_path / "fake.npy", _stamps(24, 1, size=32))
    args = [
        str(tmp_path / "real.npy"),
        str(tmp_path / "fake.npy"),
        "--measures",
        "photometry",
        "--no-progress",
    ]
    assert main(["evaluate", *args, "--out", str(tmp_path / "inst")]) == 0
    text = capsys.readouterr().out
    head = (tmp_path / "inst" / "catalogue_photometry_real.csv").read_text().splitlines()[0]
    assert "mag_inst_band0" in head and "mag_band0" not in head
    metrics = json.loads((tmp_path / "inst" / "metrics.json").read_text())
    assert metrics["magnitudes"]["zeropoint"] is None
    assert metrics["magnitudes"]["system"] == "instrumental"
    assert "photometry mag_inst_band0 KS p" in {r["measure"] for r in metrics["summary"]}
    html = (tmp_path / "inst" / "report.html").read_text()
    assert "Magnitudes: instrumental" in html and "AB" not in html
    assert "magnitudes: instrumental" in text

    assert main(["evaluate", *args, "--out", str(tmp_path / "zp"), "--zeropoint", "25"]) == 0
    capsys.readouterr()
    head = (tmp_path / "zp" / "catalogue_photometry_real.csv").read_text().splitlines()[0]
    assert "mag_band0" in head and "mag_inst" not in head
    from astropy import units as u
    from astropy.table import QTable

    cat = QTable.read(tmp_path / "zp" / "catalogue_photometry_real.ecsv")  # the CSV, with units
    assert cat["mag_band0"].unit == u.mag and cat["x"].unit == u.pix
    assert cat["theta"].unit == u.rad and cat["flux_band0"].unit == u.adu  # npy: adu
    zp = json.loads((tmp_path / "zp" / "metrics.json").read_text())
    assert zp["magnitudes"] == {
        "zeropoint": 25.0,
        "system": "zero point 25",
        "source": "--zeropoint",
    }
    # the KS statistics do not depend on the zero point
    assert [r["value"] for r in zp["summary"]] == [r["value"] for r in metrics["summary"]]


def test_zero_point_from_the_fits_headers(tmp_path, capsys):
    _fits_folder(tmp_path / "real", 12, 0, {"MAGZP": 27.0})
    _fits_folder(tmp_path / "fake", 12, 1, {})
    out = tmp_path / "ev"
    code = main(
        [
            "evaluate",
            str(tmp_path / "real"),
            str(tmp_path / "fake"),
            "--out",
            str(out),
            "--measures",
            "photometry",
            "--no-progress",
        ]
    )
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["magnitudes"]["zeropoint"] == 27.0
    assert "MAGZP" in metrics["magnitudes"]["source"]
    rows = [r for r in metrics["results"]["photometry"]["comparison"]]
    assert rows == ["mag_r"]
    # images disagreeing on the zero point give instrumental magnitudes and say why
    _fits_folder(tmp_path / "mixed", 12, 2, {"MAGZP": 27.0})
    from astropy.io import fits

    with fits.open(tmp_path / "mixed" / "g000.fits", mode="update") as hl:
        hl[0].header["MAGZP"] = 26.0
    code = main(
        [
            "evaluate",
            str(tmp_path / "mixed"),
            str(tmp_path / "fake"),
            "--out",
            str(tmp_path / "ev2"),
            "--measures",
            "photometry",
            "--no-progress",
        ]
    )
    assert code == 0
    mixed = json.loads((tmp_path / "ev2" / "metrics.json").read_text())
    assert mixed["magnitudes"]["zeropoint"] is None
    assert "different zero points" in mixed["magnitudes"]["source"]


def test_cmd_without_fake_colours_says_so_instead_of_nan(tmp_path, capsys):
    np.save(tmp_path / "real.npy", _stamps(24, 0, size=32))
    np.save(tmp_path / "fake.npy", np.zeros((24, 2, 32, 32), np.float32))
    out = tmp_path / "ev"
    code = main(
        [
            "evaluate",
            str(tmp_path / "real.npy"),
            str(tmp_path / "fake.npy"),
            "--out",
            str(out),
            "--measures",
            "colour",
            "--no-progress",
        ]
    )
    text = capsys.readouterr().out
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    cmd = [r for r in metrics["summary"] if r["group"] == "colour"][0]
    assert cmd["passed"] is False and cmd["value"] is None and cmd["n_fake"] == 0
    assert "no fake object with finite colour" in cmd["note"]
    html = (out / "report.html").read_text()
    assert "nan" not in html.lower().replace("nanomag", "") and "None" not in html
    assert "no fake with a finite colour" in html
    assert "None" not in text and "nan" not in text.lower()
