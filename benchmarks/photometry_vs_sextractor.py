"""galforge photometry against SExtractor on the Hubble XDF field bundled with scikit-image.

Runs Debian's SExtractor (``apt-get install source-extractor``; binary ``source-extractor``
or ``sex``) and :func:`galforge.evaluation.photometry.detect_and_measure` with the same
settings (5 px ≥ 5σ, default 3×3 filter, 32 deblending thresholds, contrast 0.005, 64-px
background mesh, Kron apertures 2.5/3.5 with neighbours blanked) on the band-merged
(pixel-mean) image, and — in SExtractor's dual-image mode, detecting on the same merged
image — in every band. Sources are matched within ``--radius`` pixels (2 by default).

Prints a table, then one JSON line with ``matched_fraction`` (SExtractor sources with a
galforge counterpart) and ``median_abs_dmag`` for the detection image at top level, and per
band figures under ``"bands"``. Skips with a clear message (exit 0, JSON ``"skipped"``) when
SExtractor is not installed.

    python benchmarks/photometry_vs_sextractor.py [--thresh 5] [--minarea 5]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SHARE = Path("/usr/share/source-extractor")


def find_sextractor() -> str | None:
    for name in ("source-extractor", "sex"):
        path = shutil.which(name)
        if path:
            return path
    return None


def load_field():
    try:
        from galforge.data.builtin import hdf_field

        s = hdf_field()
        return s.images[0], tuple(s.bands)
    except ImportError:
        from skimage.data import hubble_deep_field

        img = hubble_deep_field().astype(np.float32)
        return np.moveaxis(img, -1, 0), ("R", "G", "B")


def read_ascii_head(path: Path) -> dict[str, np.ndarray]:
    names, rows = [], []
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            parts = line[1:].split()
            names.append(parts[1])
        elif line.strip():
            rows.append([float(v) for v in line.split()])
    data = np.array(rows, dtype=np.float64).reshape(-1, len(names))
    return {n: data[:, i] for i, n in enumerate(names)}


def run_sextractor(binary, det_path, meas_path, workdir, args) -> dict[str, np.ndarray]:
    cat = workdir / f"{meas_path.stem}.cat"
    image_arg = str(det_path) if meas_path == det_path else f"{det_path},{meas_path}"
    cmd = [
        binary,
        image_arg,
        "-c",
        str(HERE / "sextractor" / "galforge.sex"),
        "-PARAMETERS_NAME",
        str(HERE / "sextractor" / "galforge.param"),
        "-FILTER_NAME",
        str(SHARE / "default.conv"),
        "-STARNNW_NAME",
        str(SHARE / "default.nnw"),
        "-CATALOG_NAME",
        str(cat),
        "-DETECT_THRESH",
        str(args.thresh),
        "-ANALYSIS_THRESH",
        str(args.thresh),
        "-DETECT_MINAREA",
        str(args.minarea),
        "-MAG_ZEROPOINT",
        str(args.zeropoint),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir)
    if res.returncode != 0:
        raise RuntimeError(f"SExtractor failed ({res.returncode}): {res.stderr[-2000:]}")
    return read_ascii_head(cat)


def compare(sex: dict, rows: list[dict], mag_key: str, flux_key: str, radius: float) -> dict:
    from scipy.spatial import cKDTree

    sx = np.column_stack([sex["X_IMAGE"] - 1.0, sex["Y_IMAGE"] - 1.0])  # FITS is 1-based
    gx = np.array([[r["x"], r["y"]] for r in rows])
    tree = cKDTree(gx)
    dist, idx = tree.query(sx, distance_upper_bound=radius)
    matched = np.isfinite(dist)
    g_mag = np.array([r[mag_key] for r in rows])
    g_flux = np.array([r[flux_key] for r in rows])
    s_mag = np.where(sex["MAG_AUTO"] < 90, sex["MAG_AUTO"], np.nan)
    dmag = g_mag[idx[matched]] - s_mag[matched]
    ok = np.isfinite(dmag)
    dmag = dmag[ok]
    ratio = g_flux[idx[matched]] / sex["FLUX_AUTO"][matched]
    ratio = ratio[np.isfinite(ratio) & (sex["FLUX_AUTO"][matched] > 0)]
    # how many galforge sources SExtractor also found
    back = cKDTree(sx).query(gx, distance_upper_bound=radius)[0]
    return {
        "n_sextractor": int(len(sx)),
        "n_galforge": int(len(gx)),
        "n_matched": int(matched.sum()),
        "matched_fraction": float(matched.mean()) if len(sx) else float("nan"),
        "matched_fraction_galforge": float(np.isfinite(back).mean()) if len(gx) else float("nan"),
        "median_dmag": float(np.median(dmag)),
        "median_abs_dmag": float(np.median(np.abs(dmag))),
        "dmag_nmad": float(1.4826 * np.median(np.abs(dmag - np.median(dmag)))),
        "dmag_p16_p84": [float(np.percentile(dmag, 16)), float(np.percentile(dmag, 84))],
        "frac_abs_dmag_lt_0.01": float(np.mean(np.abs(dmag) < 0.01)),
        "median_flux_ratio": float(np.median(ratio)),
        "median_position_offset_px": float(np.median(dist[matched])),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--thresh", type=float, default=5.0)
    ap.add_argument("--minarea", type=int, default=5)
    ap.add_argument("--zeropoint", type=float, default=22.5)
    ap.add_argument("--radius", type=float, default=2.0, help="match radius (pixels)")
    ap.add_argument("--keep", type=Path, default=None, help="keep FITS/catalogues here")
    args = ap.parse_args(argv)

    binary = find_sextractor()
    if binary is None:
        print(
            "SExtractor not found (neither 'source-extractor' nor 'sex' is on PATH): install "
            "it with 'apt-get install -y source-extractor' to run this benchmark; skipping."
        )
        print(
            json.dumps(
                {
                    "benchmark": "photometry_vs_sextractor",
                    "skipped": True,
                    "reason": "source-extractor binary not found",
                }
            )
        )
        return 0
    if not (SHARE / "default.conv").exists():
        print(f"SExtractor's filter files are not under {SHARE}; skipping.")
        print(
            json.dumps(
                {
                    "benchmark": "photometry_vs_sextractor",
                    "skipped": True,
                    "reason": f"{SHARE}/default.conv missing",
                }
            )
        )
        return 0

    from astropy.io import fits

    from galforge.evaluation.photometry import detect_and_measure, detection_image

    field, bands = load_field()
    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="galforge_sex_"))
    workdir.mkdir(parents=True, exist_ok=True)
    det = detection_image(field).astype(np.float32)
    det_path = workdir / "det.fits"
    fits.PrimaryHDU(det).writeto(det_path, overwrite=True)
    band_paths = {}
    for c, band in enumerate(bands):
        band_paths[band] = workdir / f"band_{band}.fits"
        fits.PrimaryHDU(np.ascontiguousarray(field[c], dtype=np.float32)).writeto(
            band_paths[band], overwrite=True
        )

    t0 = time.perf_counter()
    sex_det = run_sextractor(binary, det_path, det_path, workdir, args)
    t_sex = time.perf_counter() - t0
    sex_bands = {
        b: run_sextractor(binary, det_path, p, workdir, args) for b, p in band_paths.items()
    }
    t0 = time.perf_counter()
    rows = detect_and_measure(
        field[None], bands, zeropoint=args.zeropoint, thresh=args.thresh, minarea=args.minarea
    )
    t_gal = time.perf_counter() - t0

    results = {"det": compare(sex_det, rows, "mag_det", "flux_det", args.radius)}
    for b in bands:
        results[b] = compare(sex_bands[b], rows, f"mag_{b}", f"flux_{b}", args.radius)

    print(
        f"\ngalforge photometry vs SExtractor ({Path(binary).name}) on the XDF field "
        f"{field.shape[2]}x{field.shape[1]}, bands {bands}, thresh {args.thresh} sigma, "
        f"minarea {args.minarea}, match radius {args.radius} px"
    )
    hdr = (
        f"{'image':<6}{'N sex':>7}{'N gal':>7}{'matched':>9}{'med dmag':>11}{'med|dmag|':>11}"
        f"{'NMAD':>10}{'|dmag|<0.01':>13}{'flux ratio':>12}"
    )
    print(hdr)
    print("-" * len(hdr))
    for name, r in results.items():
        print(
            f"{name:<6}{r['n_sextractor']:>7}{r['n_galforge']:>7}{r['matched_fraction']:>9.4f}"
            f"{r['median_dmag']:>11.2e}{r['median_abs_dmag']:>11.2e}{r['dmag_nmad']:>10.2e}"
            f"{r['frac_abs_dmag_lt_0.01']:>13.3f}{r['median_flux_ratio']:>12.6f}"
        )
    print(
        f"time: SExtractor {t_sex:.2f} s (detection image), galforge {t_gal:.2f} s "
        f"(detection + {len(bands)} bands); ratio {t_gal / t_sex:.2f}"
    )
    out = {
        "benchmark": "photometry_vs_sextractor",
        "skipped": False,
        "sextractor": subprocess.run([binary, "-v"], capture_output=True, text=True).stdout.strip(),
        "thresh": args.thresh,
        "minarea": args.minarea,
        "match_radius_px": args.radius,
        "matched_fraction": results["det"]["matched_fraction"],
        "median_abs_dmag": results["det"]["median_abs_dmag"],
        "median_dmag": results["det"]["median_dmag"],
        "dmag_nmad": results["det"]["dmag_nmad"],
        "seconds_sextractor": t_sex,
        "seconds_galforge": t_gal,
        "bands": results,
    }
    print(json.dumps(out))
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
