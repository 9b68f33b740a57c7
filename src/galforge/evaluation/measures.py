"""galforge's built-in measures, each one object registered once (report order).

isophotes, moments, morphology (statmorph), photometry (sep) are per-object measures;
colour (colour–magnitude) is derived from photometry; memorization, power_spectrum (with
the realism classifier), fid (Fréchet galaxy distance) and inception (literature FID/KID,
with user weights) are set-level measures.  The rules behind their verdicts are in
:mod:`galforge.evaluation.verdicts`.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np

from galforge.errors import EvaluationError
from galforge.evaluation.kinds import DerivedMeasure, ObjectMeasure, SetMeasure, summary_row

__all__ = ["BUILTINS", "hash_file"]


def hash_file(path) -> str:
    """Short SHA-256 of a weights file (it enters the cache key of the measure using it)."""
    p = Path(path)
    if not p.is_file():
        raise EvaluationError(f"weights file {p} not found; check the path")
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:24]


# --------------------------------------------------------------------------- per object


class Isophotes(ObjectMeasure):
    name = "isophotes"
    label = "isophote"
    title = "Isophote shapes (ellipse fits)"
    options = ("band", "upscale", "isophote_engine")
    imports = (
        "galforge.evaluation.morphology",
        "galforge.evaluation.isophote_fit",
        "photutils.isophote",
        "scipy.stats",
    )

    def measure_chunk(self, images, bands, ctx):
        from galforge.evaluation import morphology

        return morphology.measure_isophotes(
            images,
            bands,
            band=ctx.options["band"],
            upscale=ctx.options["upscale"],
            engine=ctx.options["isophote_engine"],
        )

    def chunk_size(self, ctx):
        # galforge's fitter advances all stamps of a chunk together: its cost per stamp
        # falls fourfold from 16 to 200 stamps, so it takes at least 128 per task
        size = super().chunk_size(ctx)
        return max(size, 128) if ctx.options["isophote_engine"] == "galforge" else size

    def columns(self, ctx):
        return ("ellipticity", "pa_deg", "flux", "sma", "half_light_sma")


class Moments(ObjectMeasure):
    name = "moments"
    label = "moments"
    title = "Moment shapes (sep)"
    options = ("band",)
    imports = ("galforge.evaluation.morphology", "scipy.stats")

    def measure_chunk(self, images, bands, ctx):
        from galforge.evaluation import morphology

        return morphology.measure_moments(images, bands, band=ctx.options["band"])

    def columns(self, ctx):
        return ("ellipticity", "pa_deg", "flux")


class Morphology(ObjectMeasure):
    name = "morphology"
    label = "morphology"
    title = "Morphology (statmorph)"
    options = ("band",)
    imports = ("galforge.evaluation.morphology", "statmorph", "scipy.stats")

    def measure_chunk(self, images, bands, ctx):
        from galforge.evaluation import morphology

        return morphology.measure_statmorph(images, bands, band=ctx.options["band"])

    def columns(self, ctx):
        return ("gini", "m20", "concentration", "asymmetry", "smoothness", "sersic_n")


class Photometry(ObjectMeasure):
    name = "photometry"
    label = "photometry"
    title = "Source photometry (sep)"
    imports = ("galforge.evaluation.photometry", "scipy.stats")
    fitted = False
    per_image = False

    def cache_options(self, ctx):
        return ctx.detection.to_dict()

    def measure_chunk(self, images, bands, ctx):
        from galforge.evaluation import photometry

        return photometry.detect_and_measure(images, bands, ctx.detection)

    def columns(self, ctx):
        from galforge.evaluation.photometry import mag_column

        return tuple(mag_column(b, ctx.detection.zeropoint) for b in ctx.bands)

    def limits(self, ctx):
        if ctx.options.get("mag_limit") is None:
            return None
        return {c: (None, float(ctx.options["mag_limit"])) for c in self.columns(ctx)}

    def compare(self, rows, ctx):
        res = super().compare(rows, ctx)
        res["n_sources"] = {"real": len(rows["real"]), "fake": len(rows["fake"])}
        res["magnitudes"] = dict(ctx.magnitudes)
        return res

    def details(self, result, ctx):
        tables = super().details(result, ctx)[:1]
        n = result.get("n_sources") or {}
        mags = result.get("magnitudes") or {}
        tables.append(
            {
                "title": "Source photometry: sources and magnitude system",
                "columns": ["quantity", "value"],
                "rows": [
                    ["sources detected (real)", n.get("real")],
                    ["sources detected (fake)", n.get("fake")],
                    ["magnitude system", mags.get("system")],
                    ["zero point", mags.get("zeropoint")],
                    ["zero point from", mags.get("source")],
                ],
            }
        )
        return tables

    def outputs(self, out, real, fake, result, catalogue, ctx):
        from galforge.evaluation import photometry

        files = super().outputs(out, real, fake, result, catalogue, ctx)
        band = ctx.bands[-1]
        photometry.plot_number_counts(
            catalogue["real"],
            catalogue["fake"],
            band,
            out / "number_counts.png",
            n_images=(len(real.images), len(fake.images)),
        )
        system = ctx.magnitudes.get("system", "")
        files["figures"].append(
            {
                "file": "number_counts.png",
                "caption": f"Number counts per {band} magnitude bin, per "
                f"image ({system} magnitudes).",
            }
        )
        return files


# --------------------------------------------------------------------------- derived


class Colour(DerivedMeasure):
    name = "colour"
    title = "Colour–magnitude"
    requires = ("photometry",)
    thresholds = {"box_margin": 0.1}

    def derive(self, catalogues, ctx):
        from galforge.evaluation import colour

        rows = catalogues["photometry"]
        bands = ctx.bands
        opts = ctx.options
        blue, red = opts["colour_bands"] or (bands[0], bands[-1])
        if blue not in bands or red not in bands:
            raise EvaluationError(
                f"--colour-bands {blue},{red}: both must be among the bands {tuple(bands)}"
            )
        if blue == red:
            raise EvaluationError("colour–magnitude needs two different bands (--colour-bands)")
        mag_band = opts["mag_band"] or red
        if mag_band not in bands:
            raise EvaluationError(f"--mag-band {mag_band}: not among the bands {tuple(bands)}")
        cms = {}
        for s_name in ("real", "fake"):
            cm = colour.colour_magnitude(rows[s_name], blue, red, mag_band, opts["redshift"])
            cms[s_name] = {
                "colour": np.asarray(cm["colour"]).tolist(),
                "mag": np.asarray(cm["mag"]).tolist(),
                "colour_label": cm["colour_label"],
                "mag_label": cm["mag_label"],
                "n": cm["n"],
                "n_valid": cm["n_valid"],
            }
        box = colour.fraction_in_box(cms["real"], cms["fake"], k=opts["box_k"])
        return {
            "blue": blue,
            "red": red,
            "mag_band": mag_band,
            "redshift": opts["redshift"],
            "k": opts["box_k"],
            "fraction_in_box": box["fraction"],
            "real_fraction_in_box": box["fraction_real"],
            "box": box,
            "magnitude_system": ctx.magnitudes.get("system"),
            "real_cm": cms["real"],
            "fake_cm": cms["fake"],
        }

    def summary(self, result, thresholds, ctx):
        from galforge.evaluation.verdicts import fraction_threshold, too_few

        if result.get("fraction_in_box") is None and not result.get("box"):
            return []
        box = result.get("box") or {}
        ref = result.get("real_fraction_in_box")
        n_r, n_f = box.get("n_real"), box.get("n_fake")
        val = result.get("fraction_in_box")
        thr, se = (None, None)
        if ref is not None:
            thr, se = fraction_threshold(
                ref, n_r or 0, n_f or 0, thresholds["box_margin"], thresholds["z"]
            )
        few = too_few(n_r, n_f, thresholds)
        note = "no fake object with finite colour" if n_f == 0 else few
        passed = thr is not None and val is not None and val >= thr and few is None
        return [
            summary_row(
                f"CMD fraction of fakes in median ± {result.get('k')}σ box",
                val,
                thr,
                passed,
                "≥ real fraction − max(box_margin, z·SE)",
                self.name,
                n_real=n_r,
                n_fake=n_f,
                note=note,
                real_fraction=ref,
                standard_error=se,
            )
        ]

    def details(self, result, ctx):
        box = result.get("box") or {}
        rows = [
            ["colour", f"{result.get('blue')} − {result.get('red')}"],
            ["magnitude band", result.get("mag_band")],
            ["magnitude system", result.get("magnitude_system")],
            ["redshift (absolute magnitudes)", result.get("redshift")],
            ["box half-width", f"{result.get('k')} σ"],
            ["box colour range", _range(box.get("box", {}).get("colour"))],
            ["box magnitude range", _range(box.get("box", {}).get("mag"))],
            ["real objects with finite colour", box.get("n_real")],
            ["fake objects with finite colour", box.get("n_fake")],
            ["real fraction in box", box.get("fraction_real")],
            ["fake fraction in box", box.get("fraction")],
        ]
        return [{"title": "Colour–magnitude box", "columns": ["quantity", "value"], "rows": rows}]

    def outputs(self, out, real, fake, result, catalogue, ctx):
        from galforge.evaluation.colour import plot_cmd

        plot_cmd(result["real_cm"], result["fake_cm"], out / "cmd.png", k=result["k"])
        frac, ref = result.get("fraction_in_box"), result.get("real_fraction_in_box")
        n_f = (result.get("box") or {}).get("n_fake")
        if frac is not None and not math.isfinite(frac):
            frac = None
        inside = (
            f"{frac:.3f} of fakes inside"
            if frac is not None
            else f"no fake with a finite colour (n={n_f}), so none inside"
        )
        real_txt = f"{ref:.3f}" if ref is not None else "–"
        return {
            "figures": [
                {
                    "file": "cmd.png",
                    "caption": f"Colour–magnitude diagram ({result.get('magnitude_system')}"
                    f" magnitudes); {inside} the real median ± "
                    f"{result['k']}σ box (real itself: {real_txt}).",
                }
            ],
            "csv": [],
        }


def _range(v):
    if not v:
        return None
    return f"{v[0]:.3f} … {v[1]:.3f}"


# --------------------------------------------------------------------------- set level


class Memorization(SetMeasure):
    name = "memorization"
    title = "Memorisation"
    imports = ("galforge.evaluation.memorization", "galforge.evaluation.photometry", "torch")
    options = ("nn_crop", "nn_k", "holdout_fraction", "nn_normalize", "seed")
    thresholds = {"nn_ratio": 0.9}

    def cache_options(self, ctx):
        detection = {k: v for k, v in ctx.detection.to_dict().items() if k != "zeropoint"}
        return {**super().cache_options(ctx), "detection": detection}

    def compute(self, real, fake, ctx):
        from galforge.evaluation.memorization import memorization

        o = ctx.options
        return memorization(
            real,
            fake,
            crop=o["nn_crop"],
            k=o["nn_k"],
            holdout_fraction=o["holdout_fraction"],
            seed=o["seed"],
            normalize=o["nn_normalize"],
            detection=ctx.detection,
        )

    def summary(self, result, thresholds, ctx):
        from galforge.evaluation.verdicts import failure_verdict, too_few

        deg_r = result.get("degenerate_real") or {}
        deg_f = result.get("degenerate_fake") or {}
        ok, deg_note = failure_verdict(
            deg_r, deg_f, thresholds, "degenerate-image rate (constant or no source)"
        )
        n_r = result.get("n_train", 0) + result.get("n_holdout", 0)
        n_usable = (deg_f.get("n", 0) - deg_f.get("n_failed", 0)) if deg_f else None
        few = too_few(n_r, n_usable, thresholds)
        if few:
            few = few.replace("fake", "usable fake")
        rows = []
        for metric in ("l1", "mse"):
            v = result.get(f"nn_ratio_{metric}")
            up = self._upper(result, metric, thresholds["z"])
            if v is None or up is None or not math.isfinite(up):
                thr = thresholds["nn_ratio"] if up is None or math.isnan(up) else 0.0
            else:
                thr = thresholds["nn_ratio"] * v / up if up > 0 else thresholds["nn_ratio"]
            passed = v is not None and v > thr and ok and few is None
            rows.append(
                summary_row(
                    f"memorisation NN ratio ({metric.upper()})",
                    v,
                    thr,
                    passed,
                    "upper bound of ratio > nn_ratio",
                    self.name,
                    n_real=n_r,
                    n_fake=result.get("n_fake"),
                    note="; ".join(x for x in (deg_note, few) if x),
                    failure_rate_real=deg_r.get("failure_rate"),
                    failure_rate_fake=deg_f.get("failure_rate"),
                    upper_bound=up,
                )
            )
        return rows

    @staticmethod
    def _upper(result, metric, z):
        from galforge.evaluation.verdicts import ratio_upper_bound

        fake_d = (result.get(f"fake_nn_{metric}") or {}).get("distance")
        hold_d = result.get(f"holdout_nn_{metric}")
        if not fake_d or not hold_d:
            return None
        return ratio_upper_bound([d[0] for d in fake_d], hold_d, z)

    def details(self, result, ctx):
        rows = [
            [k, result.get(k)]
            for k in (
                "n_train",
                "n_holdout",
                "n_fake",
                "crop_fraction",
                "k",
                "normalize",
                "median_fake_train_l1",
                "median_holdout_train_l1",
                "nn_ratio_l1",
                "median_fake_train_mse",
                "median_holdout_train_mse",
                "nn_ratio_mse",
            )
            if k in result
        ]
        z = float(ctx.thresholds.get("z", 2.0))
        for metric in ("l1", "mse"):
            up = self._upper(result, metric, z)
            if up is not None:
                rows.append([f"upper bound of nn_ratio_{metric} (z={z:g})", up])
        tables = [
            {
                "title": "Memorisation: nearest neighbours",
                "columns": ["quantity", "value"],
                "rows": rows,
            }
        ]
        deg = []
        for s_name in ("real", "fake"):
            d = result.get(f"degenerate_{s_name}")
            if d:
                r = d.get("reasons") or {}
                deg.append(
                    [
                        s_name,
                        d.get("n"),
                        r.get("constant image", 0),
                        r.get("no source detected", 0),
                        d.get("failure_rate"),
                    ]
                )
        if deg:
            tables.append(
                {
                    "title": "Memorisation: degenerate images",
                    "columns": [
                        "set",
                        "images",
                        "constant",
                        "no source detected",
                        "degenerate fraction",
                    ],
                    "rows": deg,
                }
            )
        return tables

    def outputs(self, out, real, fake, result, catalogue, ctx):
        from galforge.evaluation.figures import write_csv
        from galforge.evaluation.memorization import plot_nn_grid

        rows = []
        for i, (idx, dist) in enumerate(
            zip(result["fake_nn_l1"]["index"], result["fake_nn_l1"]["distance"], strict=True)
        ):
            rows.append(
                {
                    "fake": i,
                    "nn_real_l1": idx[0],
                    "nn_l1": dist[0],
                    "nn_real_mse": result["fake_nn_mse"]["index"][i][0],
                    "nn_mse": result["fake_nn_mse"]["distance"][i][0],
                }
            )
        write_csv(out / "memorization_nn.csv", rows)
        plot_nn_grid(
            out / "nn_grid.png",
            fake.images,
            real.images,
            result,
            ctx.bands,
            n_show=min(8, len(fake.images)),
            metric="l1",
        )
        ratio = result.get("nn_ratio_l1")
        return {
            "figures": [
                {
                    "file": "nn_grid.png",
                    "caption": f"The fakes closest to the training part of REAL: "
                    f"fake, its {result['k']} nearest real images, absolute "
                    f"differences. NN ratio (L1) "
                    f"{'–' if ratio is None else f'{ratio:.3f}'}.",
                }
            ],
            "csv": ["memorization_nn.csv"],
        }


def _spectrum_summary(p: np.ndarray) -> dict:
    q = np.log10(np.maximum(p, 1e-30))
    return {
        "log10_mean": q.mean(0).tolist(),
        "log10_p16": np.percentile(q, 16, axis=0).tolist(),
        "log10_p84": np.percentile(q, 84, axis=0).tolist(),
    }


class PowerSpectrum(SetMeasure):
    name = "power_spectrum"
    title = "Power spectra"
    imports = (
        "galforge.evaluation.features",
        "galforge.evaluation.metrics",
        "scipy.stats",
        "sklearn.ensemble",
        "sklearn.metrics",
        "sklearn.model_selection",
    )
    options = ("max_k", "hist_bins", "classifier_folds", "seed")
    thresholds = {"auc": 0.6}

    def compute(self, real, fake, ctx):
        from scipy.stats import ks_2samp

        from galforge.evaluation import features
        from galforge.evaluation.metrics import realism_classifier

        o = ctx.options
        k, pr = features.power_spectra(real, max_k=o["max_k"])
        _, pf = features.power_spectra(fake, max_k=o["max_k"])
        edges = features.histogram_edges(real, bins=o["hist_bins"])
        fr = features.realism_features(real, edges, max_k=o["max_k"])
        ff = features.realism_features(fake, edges, max_k=o["max_k"])
        clf = realism_classifier(fr, ff, folds=o["classifier_folds"], seed=o["seed"])
        # KS per ring on log power, a compact per-scale diagnostic
        ks_p = [
            [
                float(ks_2samp(np.log10(pr[:, b, i] + 1e-30), np.log10(pf[:, b, i] + 1e-30)).pvalue)
                for i in range(len(k))
            ]
            for b in range(pr.shape[1])
        ]
        hr = features.pixel_histograms(real, edges).mean(0)
        hf = features.pixel_histograms(fake, edges).mean(0)
        return {
            "k": k.tolist(),
            "real": _spectrum_summary(pr),
            "fake": _spectrum_summary(pf),
            "pixel_histogram": {
                "edges": edges.tolist(),
                "real": hr.tolist(),
                "fake": hf.tolist(),
                "bins": o["hist_bins"],
            },
            "ks_p_per_k": ks_p,
            "classifier": clf,
            "features": f"log10 P(k) per band ({len(k)} rings) + {o['hist_bins']}-bin "
            "pixel histograms per band (edges at quantiles of the real set)",
        }

    def summary(self, result, thresholds, ctx):
        clf = result.get("classifier")
        if not clf:
            return []
        v = clf.get("auc")
        se = (clf.get("auc_std") or 0.0) / math.sqrt(max(int(clf.get("folds") or 1), 1))
        thr = thresholds["auc"] + thresholds["z"] * se
        n = clf.get("n_per_class")
        return [
            summary_row(
                "realism classifier ROC AUC",
                v,
                thr,
                v is not None and v < thr,
                "< auc + z·σ_folds/√folds",
                self.name,
                n_real=n,
                n_fake=n,
                standard_error=se,
            )
        ]

    def details(self, result, ctx):
        clf = result.get("classifier") or {}
        folds = ", ".join(f"{a:.3f}" for a in clf.get("auc_folds") or [])
        return [
            {
                "title": "Realism classifier (gradient boosting on spectra and pixel histograms)",
                "columns": ["quantity", "value"],
                "rows": [
                    ["ROC AUC (mean over folds)", clf.get("auc")],
                    ["AUC spread over folds (σ)", clf.get("auc_std")],
                    ["AUC per fold", folds or None],
                    ["folds", clf.get("folds")],
                    ["images per class", clf.get("n_per_class")],
                    ["features", clf.get("n_features")],
                    ["feature set", result.get("features")],
                ],
            }
        ]

    def outputs(self, out, real, fake, result, catalogue, ctx):
        from galforge.evaluation.figures import plot_pixel_histograms, plot_spectra_summary

        plot_spectra_summary(
            out / "power_spectra.png",
            np.asarray(result["k"]),
            result["real"],
            result["fake"],
            ctx.bands,
        )
        auc = (result.get("classifier") or {}).get("auc")
        figs = [
            {
                "file": "power_spectra.png",
                "caption": "Azimuthally averaged power spectra: mean of log10 P(k) and "
                "16–84 % spread. Realism classifier ROC AUC "
                f"{'–' if auc is None else f'{auc:.3f}'}.",
            }
        ]
        plot_pixel_histograms(out / "pixel_histograms.png", result["pixel_histogram"], ctx.bands)
        figs.append(
            {
                "file": "pixel_histograms.png",
                "caption": "Mean per-image pixel histograms on bins at quantiles of the "
                "real pixels (a flat real histogram by construction); these "
                "and the spectra are the realism classifier's features.",
            }
        )
        return {"figures": figs, "csv": []}


GARBAGE_MAX = 1000  # images per garbage control set of the Fréchet galaxy distance


class FrechetGalaxyDistance(SetMeasure):
    name = "fid"
    title = "Fréchet galaxy distance"
    version = "2"  # 2: the garbage controls (fgd_zeros, fgd_noise)
    imports = ("galforge.evaluation.features", "galforge.evaluation.metrics")
    options = ("encoder_weights", "kid_subsets", "kid_subset_size", "seed")
    thresholds = {"fgd_factor": 3.0}

    def cache_options(self, ctx):
        sub = super().cache_options(ctx)
        if ctx.options.get("encoder_weights"):
            sub["encoder_hash"] = hash_file(ctx.options["encoder_weights"])
        return sub

    def compute(self, real, fake, ctx):
        from galforge.evaluation import features
        from galforge.evaluation.metrics import features_fid_kid, fid_kid

        o = ctx.options
        enc = features.load_galaxy_encoder(o["encoder_weights"])
        scale = features.set_scale(real)
        xr = features.encoder_inputs(real, scale)
        xf = features.encoder_inputs(fake, scale)
        kw = {
            "kid_subsets": o["kid_subsets"],
            "kid_subset_size": o["kid_subset_size"],
            "seed": o["seed"],
        }
        main = fid_kid(xr, xf, enc, **kw)
        # real-vs-real reference: two seeded halves of the real set
        perm = np.random.default_rng(o["seed"]).permutation(len(real))
        half = len(real) // 2
        feats = features.encoder_features(enc, real, scale)
        ref = features_fid_kid(feats[perm[:half]], feats[perm[half : 2 * half]], **kw)
        # garbage controls: the distance of all-zero images and of pure noise (with the real
        # pixels' mean and spread per band), as many as the fakes.  A threshold these pass is
        # no test at this n ("too few to judge").
        garbage = {}
        m = min(len(fake), GARBAGE_MAX)
        rng = np.random.default_rng([int(o["seed"]), 29])
        mean = real.mean(axis=(0, 2, 3), keepdims=True)
        std = real.std(axis=(0, 2, 3), keepdims=True)
        for name, images in (
            ("zeros", np.zeros((m, *real.shape[1:]), np.float32)),
            ("noise", (mean + std * rng.standard_normal((m, *real.shape[1:]))).astype(np.float32)),
        ):
            garbage[name] = features_fid_kid(
                feats, features.encoder_features(enc, images, scale), **kw
            )["fid"]
        return {
            "fgd": main["fid"],
            "kid_mean": main["kid_mean"],
            "kid_std": main["kid_std"],
            "fgd_zeros": garbage["zeros"],
            "fgd_noise": garbage["noise"],
            "kid_subset_size": main["kid_subset_size"],
            "num_features": main["num_features"],
            "fgd_real_halves": ref["fid"],
            "kid_real_halves": ref["kid_mean"],
            "n_real": int(len(real)),
            "n_fake": int(len(fake)),
            "n_half": int(half),
            "set_scale": scale,
            "encoder": features.galaxy_encoder_card(o["encoder_weights"]).get(
                "name", "galaxy encoder"
            ),
        }

    def summary(self, result, thresholds, ctx):
        if "fgd" not in result:
            return []
        thr = thresholds["fgd_factor"] * max(result["fgd_real_halves"], 1e-12)
        v = result["fgd"]
        garbage = {k: result.get(f"fgd_{k}") for k in ("zeros", "noise")}
        passed_by = [k for k, g in garbage.items() if g is not None and not g >= thr]
        note = None
        if passed_by:
            note = (
                f"too few to judge: at this n the threshold {thr:.4g} also passes "
                + " and ".join(
                    f"{'all-zero images' if k == 'zeros' else 'pure noise'} (FGD {garbage[k]:.4g})"
                    for k in passed_by
                )
                + "; evaluate more images"
            )
        return [
            summary_row(
                "Fréchet galaxy distance",
                v,
                thr,
                v is not None and v < thr and not passed_by,
                f"< {thresholds['fgd_factor']:g} × real-vs-real FGD",
                self.name,
                n_real=result.get("n_real"),
                n_fake=result.get("n_fake"),
                note=note,
            )
        ]


class Inception(SetMeasure):
    name = "inception"
    title = "Inception FID/KID"
    imports = ("galforge.evaluation.features", "galforge.evaluation.metrics")
    options = ("inception_weights", "kid_subsets", "kid_subset_size", "seed")

    def is_default(self, ctx) -> bool:
        return bool(ctx.options.get("inception_weights"))

    def cache_options(self, ctx):
        sub = super().cache_options(ctx)
        if ctx.options.get("inception_weights"):
            sub["weights_hash"] = hash_file(ctx.options["inception_weights"])
        return sub

    def unavailable(self, ctx):
        if ctx.options.get("inception_weights"):
            return None
        try:
            from galforge.evaluation.features import load_inception

            load_inception(None)
        except EvaluationError as exc:
            return f"Inception FID/KID: {exc}"
        return None

    def compute(self, real, fake, ctx):
        import torch

        from galforge.evaluation import features
        from galforge.evaluation.metrics import features_fid_kid

        o = ctx.options
        net = features.load_inception(o["inception_weights"])

        def feats(x):
            out = []
            with torch.no_grad():
                for i in range(0, len(x), 32):
                    out.append(net(features.inception_inputs(x[i : i + 32], ctx.bands)).double())
            return torch.cat(out).numpy()

        res = features_fid_kid(
            feats(real),
            feats(fake),
            kid_subsets=o["kid_subsets"],
            kid_subset_size=o["kid_subset_size"],
            seed=o["seed"],
        )
        return {
            "fid": res["fid"],
            "kid_mean": res["kid_mean"],
            "kid_std": res["kid_std"],
            "num_features": res["num_features"],
            "weights": str(o["inception_weights"]),
        }


#: The built-in measures in report order; :mod:`galforge.evaluation.registry` registers them.
BUILTINS = (
    Isophotes(),
    Moments(),
    Morphology(),
    Photometry(),
    Colour(),
    Memorization(),
    PowerSpectrum(),
    FrechetGalaxyDistance(),
    Inception(),
)
