"""``evaluate(real, fake, out_dir, **options)``: every measure, in parallel, cached.

Work is split into tasks and run through Dask: the per-object measurements (isophotes,
moments, statmorph, photometry) in chunks of ``chunk_size`` images per set, and the
set-level measures (memorisation, power spectrum + realism classifier, Fréchet galaxy
distance, Inception FID/KID) as one task each.  ``scheduler`` picks the engine: ``"threads"``
(default), ``"processes"``, ``"synchronous"``, or the address of a ``dask.distributed``
scheduler (``tcp://host:8786``); ``workers`` sets the local pool size.  A progress bar
(tqdm, on stderr) counts finished tasks.

Caching.  Each task's result is stored as JSON under ``out_dir/cache`` with a name made of
the measure and a SHA-256 *content hash* of everything the result depends on: the pixels
and bands of the images it saw (the chunk, or both whole sets), the measure's options, the
galforge version and :data:`CACHE_FORMAT`.  Re-running with a measure added, a threshold
changed or the report restyled recomputes only what changed; ``metrics.json["cache"]``
lists which tasks were computed and which reused.  Thresholds only enter the summary, never the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

from galforge import __version__
from galforge.errors import EvaluationError
from galforge.evaluation.report import DEFAULT_THRESHOLDS, build_summary, json_safe

#: Every measure ``evaluate`` knows, in report order.
MEASURES = ("isophotes", "moments", "morphology", "photometry", "colour", "memorization",
            "power_spectrum", "fid", "inception")
#: Measures run when ``measures`` is not given (``inception`` only with weights).
DEFAULT_MEASURES = ("isophotes", "moments", "morphology", "photometry", "colour",
                    "memorization", "power_spectrum", "fid")
PER_OBJECT = ("isophotes", "moments", "morphology", "photometry")
#: Bumped whenever a cached result's layout or meaning changes (enters every cache key).
CACHE_FORMAT = 2

DEFAULTS = {
    "seed": 0,
    "scheduler": "threads",
    "workers": None,
    "chunk_size": 16,
    "band": "sum",              # band (or "sum") for shapes and morphology
    "upscale": 512,             # isophote upscaling (None: native resolution)
    "zeropoint": 22.5,
    "detect_thresh": 5.0,
    "minarea": 5,
    "mag_limit": None,          # KS of magnitudes only brighter than this
    "colour_bands": None,       # (blue, red); default: first and last band
    "mag_band": None,           # default: the red band of colour_bands
    "redshift": None,
    "box_k": 1.75,
    "nn_crop": 0.5,
    "nn_k": 3,
    "nn_normalize": True,
    "holdout_fraction": 0.2,
    "classifier_folds": 5,
    "hist_bins": 32,
    "max_k": 32,
    "encoder_weights": None,
    "inception_weights": None,
    "kid_subsets": 50,
    "kid_subset_size": 1000,
    "grid_n": 36,
    "progress": True,
    "cache": True,
}

_SHAPE_COLUMNS = ("ellipticity", "pa_deg", "flux", "sma", "half_light_sma")
_MOMENT_COLUMNS = ("ellipticity", "pa_deg", "flux")
_MORPH_COLUMNS = ("gini", "m20", "concentration", "asymmetry", "smoothness", "sersic_n")


# ----------------------------------------------------------------------------- inputs


class _Set:
    def __init__(self, obj, name: str, bands=None, units=None):
        images = getattr(obj, "images", obj)
        arr = np.asarray(images, dtype=np.float32)
        if arr.ndim == 3:
            arr = arr[:, None]
        if arr.ndim != 4 or len(arr) == 0:
            raise EvaluationError(
                f"{name}: expected N×C×H×W images, got shape {np.shape(images)}"
            )
        if not np.all(np.isfinite(arr)):
            raise EvaluationError(
                f"{name}: {int((~np.isfinite(arr)).sum())} non-finite pixels; fill or drop them "
                "(the data readers' NaN handling does this)"
            )
        self.images = np.ascontiguousarray(arr)
        self.bands = tuple(getattr(obj, "bands", None) or bands or
                           [f"b{i}" for i in range(arr.shape[1])])
        self.units = getattr(obj, "units", None) or units or "adu"
        self.source = getattr(obj, "source", "") or name
        self.meta = getattr(obj, "meta", None) or [{} for _ in range(len(arr))]
        h = hashlib.sha256()
        h.update(json.dumps([list(self.bands), list(arr.shape)]).encode())
        h.update(self.images.tobytes())
        self.hash = h.hexdigest()


def _hash(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(str(p.shape).encode())
            h.update(np.ascontiguousarray(p).tobytes())
        else:
            h.update(json.dumps(json_safe(p), sort_keys=True, default=str).encode())
    return h.hexdigest()[:24]


# ----------------------------------------------------------------------------- tasks


def _object_task(measure: str, images: np.ndarray, bands: tuple, opts: dict) -> list[dict]:
    """Per-object measurement of one chunk (runs on a Dask worker)."""
    from galforge.evaluation import morphology, photometry

    if measure == "isophotes":
        rows = morphology.measure_isophotes(images, bands, band=opts["band"],
                                            upscale=opts["upscale"])
    elif measure == "moments":
        rows = morphology.measure_moments(images, bands, band=opts["band"])
    elif measure == "morphology":
        rows = morphology.measure_statmorph(images, bands, band=opts["band"])
    elif measure == "photometry":
        rows = photometry.detect_and_measure(images, bands, zeropoint=opts["zeropoint"],
                                             thresh=opts["detect_thresh"],
                                             minarea=opts["minarea"])
    else:
        raise EvaluationError(f"unknown per-object measure {measure!r}")
    return json_safe(rows)


def _memorization_task(real, fake, opts) -> dict:
    from galforge.evaluation.memorization import memorization

    return memorization(real, fake, crop=opts["nn_crop"], k=opts["nn_k"],
                        holdout_fraction=opts["holdout_fraction"], seed=opts["seed"],
                        normalize=opts["nn_normalize"])


def _spectrum_summary(p: np.ndarray) -> dict:
    q = np.log10(np.maximum(p, 1e-30))
    return {"log10_mean": q.mean(0).tolist(),
            "log10_p16": np.percentile(q, 16, axis=0).tolist(),
            "log10_p84": np.percentile(q, 84, axis=0).tolist()}


def _power_spectrum_task(real, fake, opts) -> dict:
    from galforge.evaluation import features
    from galforge.evaluation.metrics import realism_classifier

    k, pr = features.power_spectra(real, max_k=opts["max_k"])
    _, pf = features.power_spectra(fake, max_k=opts["max_k"])
    edges = features.histogram_edges(real, bins=opts["hist_bins"])
    fr = features.realism_features(real, edges, max_k=opts["max_k"])
    ff = features.realism_features(fake, edges, max_k=opts["max_k"])
    clf = realism_classifier(fr, ff, folds=opts["classifier_folds"], seed=opts["seed"])
    # KS per ring on log power, a compact per-scale diagnostic
    from scipy.stats import ks_2samp

    ks_p = [[float(ks_2samp(np.log10(pr[:, b, i] + 1e-30), np.log10(pf[:, b, i] + 1e-30)).pvalue)
             for i in range(len(k))] for b in range(pr.shape[1])]
    nb = opts["hist_bins"]
    hr = features.pixel_histograms(real, edges).mean(0)
    hf = features.pixel_histograms(fake, edges).mean(0)
    return {"k": k.tolist(), "real": _spectrum_summary(pr), "fake": _spectrum_summary(pf),
            "pixel_histogram": {"edges": edges.tolist(), "real": hr.tolist(),
                                "fake": hf.tolist(), "bins": nb},
            "ks_p_per_k": ks_p, "classifier": clf,
            "features": f"log10 P(k) per band ({len(k)} rings) + {opts['hist_bins']}-bin "
                        "pixel histograms per band (edges at quantiles of the real set)"}


def _fid_task(real, fake, opts) -> dict:
    from galforge.evaluation import features
    from galforge.evaluation.metrics import features_fid_kid, fid_kid

    enc = features.load_galaxy_encoder(opts["encoder_weights"])
    scale = features.set_scale(real)
    xr = features.encoder_inputs(real, scale)
    xf = features.encoder_inputs(fake, scale)
    kw = {"kid_subsets": opts["kid_subsets"], "kid_subset_size": opts["kid_subset_size"],
          "seed": opts["seed"]}
    main = fid_kid(xr, xf, enc, **kw)
    # real-vs-real reference: two seeded halves of the real set
    perm = np.random.default_rng(opts["seed"]).permutation(len(real))
    half = len(real) // 2
    feats = features.encoder_features(enc, real, scale)
    ref = features_fid_kid(feats[perm[:half]], feats[perm[half:2 * half]], **kw)
    return {"fgd": main["fid"], "kid_mean": main["kid_mean"], "kid_std": main["kid_std"],
            "kid_subset_size": main["kid_subset_size"], "num_features": main["num_features"],
            "fgd_real_halves": ref["fid"], "kid_real_halves": ref["kid_mean"],
            "set_scale": scale, "encoder": features.galaxy_encoder_card(
                opts["encoder_weights"]).get("name", "galaxy encoder")}


def _inception_task(real, fake, bands, opts) -> dict:
    import torch

    from galforge.evaluation import features
    from galforge.evaluation.metrics import features_fid_kid

    net = features.load_inception(opts["inception_weights"])

    def feats(x):
        out = []
        with torch.no_grad():
            for i in range(0, len(x), 32):
                out.append(net(features.inception_inputs(x[i:i + 32], bands)).double())
        return torch.cat(out).numpy()

    res = features_fid_kid(feats(real), feats(fake), kid_subsets=opts["kid_subsets"],
                           kid_subset_size=opts["kid_subset_size"], seed=opts["seed"])
    return {"fid": res["fid"], "kid_mean": res["kid_mean"], "kid_std": res["kid_std"],
            "num_features": res["num_features"], "weights": str(opts["inception_weights"])}


# ----------------------------------------------------------------------------- dask


def _run_tasks(tasks: dict, opts: dict) -> dict:
    """Compute ``{key: (fn, args)}`` with Dask and a progress bar; returns ``{key: result}``."""
    if not tasks:
        return {}
    import dask
    from tqdm.auto import tqdm

    keys = list(tasks)
    delayed = [dask.delayed(fn, pure=True)(*args, dask_key_name=f"galforge-{k}")
               for k, (fn, args) in tasks.items()]
    sched = opts["scheduler"] or "threads"
    bar = tqdm(total=len(keys), desc="evaluate", unit="task", disable=not opts["progress"])
    try:
        if sched in ("threads", "processes", "synchronous", "sync", "single-threaded"):
            from dask.callbacks import Callback

            class _Bar(Callback):
                def _posttask(self, key, result, dsk, state, worker_id):
                    if isinstance(key, str) and key.startswith("galforge-"):
                        bar.update(1)

            kw = {"scheduler": sched}
            if opts["workers"] and sched in ("threads", "processes"):
                kw["num_workers"] = int(opts["workers"])
            with _Bar():
                results = dask.compute(*delayed, **kw)
        else:
            try:
                from distributed import Client, as_completed
            except ImportError as exc:  # pragma: no cover - distributed is a dependency
                raise EvaluationError("--scheduler ADDRESS needs dask.distributed") from exc
            try:
                client = Client(sched, timeout="10s")
            except Exception as exc:
                raise EvaluationError(
                    f"cannot reach the Dask scheduler at --scheduler {sched!r} ({exc}); "
                    "start one with `dask scheduler` or use threads/processes"
                ) from exc
            try:
                futures = client.compute(delayed)
                for _ in as_completed(futures):
                    bar.update(1)
                results = client.gather(futures)
            finally:
                client.close()
    finally:
        bar.close()
    return dict(zip(keys, results, strict=True))


# ----------------------------------------------------------------------------- main


def _chunks(n: int, size: int) -> list[tuple[int, int]]:
    return [(i, min(n, i + size)) for i in range(0, n, size)]


def evaluate(real, fake, out_dir, **options) -> dict:
    """Measure ``fake`` against ``real`` and write the report.

    ``real``/``fake`` are :class:`galforge.data.ImageSet` s (or ``N×C×H×W`` arrays with
    ``bands=``/``units=`` options).  Writes ``out_dir/report.html``, ``metrics.json``,
    ``catalogue_<measure>_<real|fake>.csv``, ``memorization_nn.csv`` and the PNG figures, and
    returns the metrics dict (also written to ``metrics.json``).

    Options (defaults in :data:`DEFAULTS`): ``measures`` (subset of :data:`MEASURES`),
    ``thresholds`` (``ks_p``, ``nn_ratio``, ``auc``, ``fgd_factor``, ``box_margin``),
    ``seed``, ``scheduler``, ``workers``, ``chunk_size``, ``band``, ``upscale``, ``zeropoint``,
    ``detect_thresh``, ``minarea``, ``mag_limit``, ``colour_bands``, ``mag_band``,
    ``redshift``, ``box_k``, ``nn_crop``, ``nn_k``, ``nn_normalize``, ``holdout_fraction``,
    ``classifier_folds``, ``hist_bins``, ``max_k``, ``encoder_weights``,
    ``inception_weights``, ``kid_subsets``, ``kid_subset_size``, ``grid_n``, ``progress``,
    ``cache``.  The command's outcome does not depend on whether measures pass: failures are
    results in the summary.
    """
    bands_opt = options.pop("bands", None)
    units_opt = options.pop("units", None)
    measures = options.pop("measures", None)
    thresholds = {**DEFAULT_THRESHOLDS, **(options.pop("thresholds", None) or {})}
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise EvaluationError(f"unknown evaluate option(s): {', '.join(sorted(unknown))}")
    opts = {**DEFAULTS, **options}
    if measures is None:
        measures = list(DEFAULT_MEASURES)
        if opts["inception_weights"]:
            measures.append("inception")
    measures = [m.strip() for m in measures if m.strip()]
    bad = [m for m in measures if m not in MEASURES]
    if bad:
        raise EvaluationError(
            f"unknown measure(s) {', '.join(bad)} in --measures; choose from {', '.join(MEASURES)}"
        )
    if "colour" in measures and "photometry" not in measures:
        measures.append("photometry")
    r = _Set(real, "REAL", bands_opt, units_opt)
    f = _Set(fake, "FAKE", bands_opt, units_opt)
    if r.bands != f.bands:
        raise EvaluationError(
            f"REAL has bands {r.bands} but FAKE has {f.bands}; evaluate sets with the same bands"
        )
    if r.images.shape[2:] != f.images.shape[2:]:
        raise EvaluationError(
            f"REAL images are {r.images.shape[2:]} pixels but FAKE are {f.images.shape[2:]}; "
            "resize one set to the other"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache_dir = out / "cache"
    cache_dir.mkdir(exist_ok=True)
    t0 = time.time()
    notes: list[str] = []

    # ---- plan the tasks, reading what the cache already has
    tasks: dict[str, tuple] = {}
    have: dict[str, object] = {}
    plan: dict[str, list[str]] = {}
    obj_opts = {k: opts[k] for k in ("band", "upscale", "zeropoint", "detect_thresh", "minarea")}
    relevant = {
        "isophotes": {"band": opts["band"], "upscale": opts["upscale"]},
        "moments": {"band": opts["band"]},
        "morphology": {"band": opts["band"]},
        "photometry": {k: opts[k] for k in ("zeropoint", "detect_thresh", "minarea")},
    }
    for m in measures:
        if m in PER_OBJECT:
            keys = []
            for s_name, s in (("real", r), ("fake", f)):
                for a, b in _chunks(len(s.images), int(opts["chunk_size"])):
                    chunk = s.images[a:b]
                    digest = _hash(__version__, CACHE_FORMAT, m, relevant[m], list(s.bands),
                                   chunk)
                    key = f"{m}-{digest}"
                    keys.append((s_name, a, key))
                    if key not in tasks and key not in have:
                        path = cache_dir / f"{key}.json"
                        if opts["cache"] and path.is_file():
                            have[key] = json.loads(path.read_text())
                        else:
                            tasks[key] = (_object_task, (m, chunk, s.bands, obj_opts))
            plan[m] = keys
        elif m == "colour":
            continue
        else:
            sub = {
                "memorization": {k: opts[k] for k in ("nn_crop", "nn_k", "holdout_fraction",
                                                      "nn_normalize", "seed")},
                "power_spectrum": {k: opts[k] for k in ("max_k", "hist_bins",
                                                        "classifier_folds", "seed")},
                "fid": {k: opts[k] for k in ("encoder_weights", "kid_subsets",
                                             "kid_subset_size", "seed")},
                "inception": {k: opts[k] for k in ("inception_weights", "kid_subsets",
                                                   "kid_subset_size", "seed")},
            }[m]
            if m == "fid" and opts["encoder_weights"]:
                sub["encoder_hash"] = _hash_file(opts["encoder_weights"])
            if m == "inception" and opts["inception_weights"]:
                sub["weights_hash"] = _hash_file(opts["inception_weights"])
            key = f"{m}-{_hash(__version__, CACHE_FORMAT, m, sub, r.hash, f.hash)}"
            plan[m] = [("set", 0, key)]
            path = cache_dir / f"{key}.json"
            if opts["cache"] and path.is_file():
                have[key] = json.loads(path.read_text())
                continue
            if m == "memorization":
                tasks[key] = (_memorization_task, (r.images, f.images, opts))
            elif m == "power_spectrum":
                tasks[key] = (_power_spectrum_task, (r.images, f.images, opts))
            elif m == "fid":
                tasks[key] = (_fid_task, (r.images, f.images, opts))
            elif m == "inception":
                if not opts["inception_weights"]:
                    try:
                        from galforge.evaluation.features import load_inception

                        load_inception(None)
                    except EvaluationError as exc:
                        notes.append(f"Inception FID/KID: {exc}")
                        plan.pop(m)
                        continue
                tasks[key] = (_inception_task, (r.images, f.images, r.bands, opts))

    # ---- run what is missing, write it to the cache
    computed = _run_tasks(tasks, opts)
    for key, value in computed.items():
        value = json_safe(value)
        computed[key] = value
        if opts["cache"]:
            tmp = cache_dir / f".{key}.{os.getpid()}.tmp"
            tmp.write_text(json.dumps(value))
            os.replace(tmp, cache_dir / f"{key}.json")
    have.update(computed)
    cache_info = {"computed": sorted(computed), "reused": sorted(set(have) - set(computed))}

    # ---- assemble the results
    results: dict[str, dict] = {}
    catalogues: dict[str, dict[str, list[dict]]] = {}
    for m in PER_OBJECT:
        if m not in plan:
            continue
        rows = {"real": [], "fake": []}
        for s_name, start, key in plan[m]:
            for row in have[key]:
                row = dict(row)
                if m == "photometry":
                    row["image"] = int(row.get("image", 0)) + start
                rows[s_name].append(row)
        if m != "photometry":
            for s_name in rows:
                for i, row in enumerate(rows[s_name]):
                    row.setdefault("image", i)
        catalogues[m] = rows
        results[m] = _compare_objects(m, rows, r.bands, opts)
    if "colour" in measures and "photometry" in catalogues:
        try:
            results["colour"] = _colour(catalogues["photometry"], r.bands, opts)
        except EvaluationError as exc:
            notes.append(f"colour–magnitude: {exc}")
    for m in ("memorization", "power_spectrum", "fid", "inception"):
        if m in plan:
            results[m] = have[plan[m][0][2]]

    summary = build_summary(results, thresholds)
    metrics = {
        "galforge_version": __version__,
        "real": {"source": str(r.source), "n": int(len(r.images)), "units": r.units,
                 "shape": list(r.images.shape[1:]), "content_hash": r.hash},
        "fake": {"source": str(f.source), "n": int(len(f.images)), "units": f.units,
                 "shape": list(f.images.shape[1:]), "content_hash": f.hash},
        "bands": list(r.bands),
        "measures": measures,
        "settings": json_safe({k: v for k, v in opts.items() if k != "progress"}),
        "thresholds": thresholds,
        "summary": summary,
        "results": results,
        "cache": cache_info,
        "notes": notes,
    }
    # ---- files: CSVs, figures, report
    from galforge.evaluation import report as rep

    files = rep.write_outputs(out, r, f, metrics, catalogues)
    metrics["files"] = files
    metrics["seconds"] = round(time.time() - t0, 2)
    metrics = json_safe(metrics)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    rep.write_report(out, metrics, files["figures"])
    return metrics


def _hash_file(path) -> str:
    p = Path(path)
    if not p.is_file():
        raise EvaluationError(f"weights file {p} not found; check the path")
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:24]


def _failures(rows: list[dict]) -> dict:
    failed = [r for r in rows if not r.get("ok", True)]
    reasons: dict[str, int] = {}
    for row in failed:
        reason = str(row.get("reason") or "failed")
        reasons[reason] = reasons.get(reason, 0) + 1
    return {"n": len(rows), "n_failed": len(failed), "reasons": reasons}


def _compare_objects(m: str, rows: dict, bands, opts) -> dict:
    from galforge.evaluation.stats import compare_columns

    if m == "isophotes":
        cols = _SHAPE_COLUMNS
    elif m == "moments":
        cols = _MOMENT_COLUMNS
    elif m == "morphology":
        cols = _MORPH_COLUMNS
    else:
        cols = tuple(f"mag_{b}" for b in bands)
    limits = None
    if m == "photometry" and opts["mag_limit"] is not None:
        limits = {c: (None, float(opts["mag_limit"])) for c in cols}
    res = {"columns": list(cols),
           "comparison": compare_columns(rows["real"], rows["fake"], cols, limits=limits),
           "failures": {"real": _failures(rows["real"]), "fake": _failures(rows["fake"])}}
    if m == "photometry":
        res["n_sources"] = {"real": len(rows["real"]), "fake": len(rows["fake"])}
    return res


def _colour(rows: dict, bands, opts) -> dict:
    from galforge.evaluation import colour

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
        cms[s_name] = {"colour": np.asarray(cm["colour"]).tolist(),
                       "mag": np.asarray(cm["mag"]).tolist(),
                       "colour_label": cm["colour_label"], "mag_label": cm["mag_label"],
                       "n": cm["n"], "n_valid": cm["n_valid"]}
    box = colour.fraction_in_box(cms["real"], cms["fake"], k=opts["box_k"])
    return {"blue": blue, "red": red, "mag_band": mag_band, "redshift": opts["redshift"],
            "k": opts["box_k"], "fraction_in_box": box["fraction"],
            "real_fraction_in_box": box["fraction_real"], "box": box,
            "real_cm": cms["real"], "fake_cm": cms["fake"]}
