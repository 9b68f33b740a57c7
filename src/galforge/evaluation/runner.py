"""``evaluate(real, fake, out_dir, **options)``: every registered measure, in parallel, cached.

The measures are the objects of :mod:`galforge.evaluation.registry` (the built-ins in
:mod:`galforge.evaluation.measures`, and any registered by the user); this module plans
their work, runs it and assembles the results without knowing any measure by name.

Work is split into tasks and run through Dask: the per-object measures in chunks of
``chunk_size`` images per set, and each set-level measure as one task.  ``scheduler``
picks the engine: ``"auto"`` (default), ``"threads"``, ``"processes"``, ``"synchronous"``,
or the address of a ``dask.distributed`` scheduler (``tcp://host:8786``); ``workers`` sets
the local pool size (default: the CPUs this process may use).  ``"auto"`` runs in local
processes when there is more than one worker and at least :data:`AUTO_PROCESS_IMAGES`
images to measure object by object, otherwise in threads: the isophote and Gini/M20/CAS/
Sérsic fits are Python loops that hold the GIL, so threads run them one at a time (a
500 + 500 galaxy evaluation at 128 px took 38 min in threads and 19 min in processes on
2 cores), while a worker process costs a few seconds to start.  Measures that cannot be
sent to another process (defined in a notebook or ``__main__``) keep ``"auto"`` in threads.
``metrics.json["settings"]["scheduler_used"]`` records the engine that ran.  A progress bar
(tqdm, on stderr) counts finished tasks.

Caching.  Each task's result is stored as JSON under ``out_dir/cache`` with a name made of
the measure and a SHA-256 *content hash* of everything the result depends on: the pixels
and bands of the images it saw (the chunk, or both whole sets), the measure's options
(``Measure.cache_options``) and version, the galforge version and :data:`CACHE_FORMAT`.
Re-running with a measure added, a threshold changed or the report restyled recomputes only
what changed; ``metrics.json["cache"]`` lists which tasks were computed and which reused.
Thresholds only enter the summary, never the cache.

Magnitudes.  With ``zeropoint`` (``--zeropoint``) magnitudes are ``zeropoint − 2.5 log10
flux``; without it, the zero point is taken from the REAL images' meta when every image
carries the same ``MAGZERO``/``MAGZP``/``ZP``/``PHOTZP``/``ZEROPT`` header value (the FAKE set
is in REAL's units); otherwise magnitudes are instrumental (``−2.5 log10 flux``, columns
``mag_inst_<band>``).  ``metrics.json["magnitudes"]`` says which.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from galforge import __version__
from galforge.errors import EvaluationError
from galforge.evaluation import registry
from galforge.evaluation.options import DEFAULTS as DEFAULTS  # the default settings
from galforge.evaluation.options import EvaluateOptions
from galforge.evaluation.registry import Context
from galforge.fileio import atomic_write_text
from galforge.jsonsafe import json_safe

#: images measured object by object (REAL + FAKE, still to compute) from which
#: ``scheduler="auto"`` starts worker processes instead of threads
AUTO_PROCESS_IMAGES = 128

#: Bumped whenever a cached result's layout or meaning changes (enters every cache key).
CACHE_FORMAT = 3


#: Meta keys (FITS header words, lower case as the readers store them) holding a zero point.
ZEROPOINT_KEYS = ("magzero", "magzp", "zp", "photzp", "zeropt")


def __getattr__(name):
    # The registry may grow after import (measures of one's own), so these are computed.
    if name == "MEASURES":
        return registry.names()
    if name == "DEFAULT_MEASURES":
        return tuple(m.name for m in registry.measures() if m.default)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------------------- inputs


class _Set:
    def __init__(self, obj, name: str, bands=None, units=None):
        images = getattr(obj, "images", obj)
        arr = np.asarray(images, dtype=np.float32)
        if arr.ndim == 3:
            arr = arr[:, None]
        if arr.ndim != 4 or len(arr) == 0:
            raise EvaluationError(f"{name}: expected N×C×H×W images, got shape {np.shape(images)}")
        if not np.all(np.isfinite(arr)):
            raise EvaluationError(
                f"{name}: {int((~np.isfinite(arr)).sum())} non-finite pixels; fill or drop them "
                "(the data readers' NaN handling does this)"
            )
        self.images = np.ascontiguousarray(arr)
        self.bands = tuple(
            getattr(obj, "bands", None) or bands or [f"b{i}" for i in range(arr.shape[1])]
        )
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


def _timed(fn, *args):
    """``(fn(*args), {"wall_s", "cpu_s"})``: the call's wall time and the CPU time of the
    thread that ran it (threads a library starts, e.g. torch's, are not counted)."""
    w0, c0 = time.perf_counter(), time.thread_time()
    value = fn(*args)
    return value, {"wall_s": time.perf_counter() - w0, "cpu_s": time.thread_time() - c0}


def _object_task(measure, images: np.ndarray, bands: tuple, ctx: Context):
    """Per-object measurement of one chunk (runs on a Dask worker); returns the rows and
    the task's timing (:func:`_timed`)."""
    return _timed(lambda: json_safe(measure.measure_chunk(images, bands, ctx)))


def _set_task(measure, real: np.ndarray, fake: np.ndarray, ctx: Context):
    """A set-level measure on both whole sets (runs on a Dask worker); returns the result
    and the task's timing (:func:`_timed`)."""
    return _timed(measure.compute, real, fake, ctx)


def _measure_timings(plan: dict, computed: dict, finished: dict) -> dict:
    """``{"measures": {name: {...}}}``: per measure, the tasks computed and reused, the summed
    wall and CPU seconds of its computed tasks (:func:`_timed`) and when its last task finished
    (seconds from the start of the computation)."""
    out = {}
    for name, entries in plan.items():
        keys = [key for _, _, key in entries]
        done = [computed[k][1] for k in keys if k in computed]
        out[name] = {
            "tasks": len(done),
            "reused": len(keys) - len(done),
            "task_wall_s": round(sum(t["wall_s"] for t in done), 3),
            "cpu_s": round(sum(t["cpu_s"] for t in done), 3),
            "finished_after_s": round(finished[name], 2) if name in finished else None,
        }
    return {"measures": out}


def magnitude_system(zeropoint, real_meta) -> dict:
    """``{"zeropoint", "system", "source"}``: the given zero point, else one read from every
    REAL image's meta (:data:`ZEROPOINT_KEYS`), else instrumental magnitudes."""
    if zeropoint is not None:
        zp = float(zeropoint)
        if not np.isfinite(zp):
            raise EvaluationError(f"--zeropoint {zeropoint}: give a finite number")
        return {"zeropoint": zp, "system": f"zero point {zp:g}", "source": "--zeropoint"}
    found: set = set()
    keys: set = set()
    for meta in real_meta or []:
        hit = None
        for key in ZEROPOINT_KEYS:
            for k, v in (meta or {}).items():
                if (
                    str(k).lower() == key
                    and isinstance(v, (int, float))
                    and not isinstance(v, bool)
                    and np.isfinite(v)
                ):
                    hit = (key, float(v))
                    break
            if hit:
                break
        if hit is None:
            found = set()
            break
        keys.add(hit[0].upper())
        found.add(hit[1])
    if len(found) == 1:
        zp = found.pop()
        return {
            "zeropoint": zp,
            "system": f"zero point {zp:g}",
            "source": f"REAL header {'/'.join(sorted(keys))}",
        }
    why = (
        "REAL images carry different zero points"
        if len(found) > 1
        else "no --zeropoint and no zero point in the REAL headers"
    )
    return {
        "zeropoint": None,
        "system": "instrumental",
        "source": f"{why}: m = −2.5 log10(flux in {{units}})",
    }


# ----------------------------------------------------------------------------- dask


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the platform has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def _importable(obj) -> bool:
    """Whether a worker process can rebuild ``obj``: its class and the functions it holds
    are importable by name (not defined in ``__main__``, a notebook, a function body or a
    lambda)."""
    held = [v for v in vars(obj).values() if callable(v)] if hasattr(obj, "__dict__") else []
    for thing in (type(obj), *held):
        module = getattr(thing, "__module__", None)
        name = getattr(thing, "__qualname__", "")
        if module in (None, "__main__") or "<" in name:
            return False
    return True


def choose_scheduler(tasks: dict, opts: dict) -> str:
    """The engine ``opts["scheduler"]`` stands for (``"auto"`` resolved; see the module
    docstring)."""
    sched = opts["scheduler"] or "auto"
    if sched != "auto":
        return sched
    workers = int(opts["workers"] or usable_cpus())
    per_object = [args for fn, args in tasks.values() if fn is _object_task]
    n_images = sum(len(args[1]) for args in per_object)
    if workers < 2 or n_images < AUTO_PROCESS_IMAGES:
        return "threads"
    measures = {id(args[0]): args[0] for fn, args in tasks.values()}
    if not all(_importable(m) for m in measures.values()):
        return "threads"
    return "processes"


def _drop_pool(pool) -> None:
    """Stop a worker pool now: queued tasks are cancelled and worker processes ended (a
    running thread cannot be stopped; it finishes its one task).  Workers are killed: they
    inherit the parent's SIGTERM handling, which would let them finish their task."""
    procs = list((getattr(pool, "_processes", None) or {}).values())  # shutdown forgets them
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        proc.kill()


class _Progress:
    """Per-measure progress of the running tasks: the bar's label names the measure whose
    task finished last with its count, and a log line (INFO, stderr in the CLI) says when
    each measure has finished, after how many seconds, with the CPU time of its tasks."""

    def __init__(self, bar, labels: dict):
        self.bar, self.labels = bar, labels
        self.total: dict[str, int] = {}
        for name in labels.values():
            self.total[name] = self.total.get(name, 0) + 1
        self.done = dict.fromkeys(self.total, 0)
        self.cpu = dict.fromkeys(self.total, 0.0)
        self.t0 = time.perf_counter()
        self.finished: dict[str, float] = {}

    def __call__(self, key: str, result) -> None:
        self.bar.update(1)
        name = self.labels.get(key)
        if name is None:
            return
        self.done[name] += 1
        if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], dict):
            self.cpu[name] += float(result[1].get("cpu_s", 0.0))
        self.bar.set_postfix_str(f"{name} {self.done[name]}/{self.total[name]}", refresh=False)
        if self.done[name] == self.total[name]:
            after = time.perf_counter() - self.t0
            self.finished[name] = after
            from galforge.log import get_logger

            get_logger("evaluate").info(
                f"evaluate: {name} done after {after:.1f} s "
                f"({self.total[name]} task{'s' if self.total[name] != 1 else ''}, "
                f"{self.cpu[name]:.1f} CPU-s)"
            )


def _run_tasks(
    tasks: dict, opts: dict, sched: str, labels: dict | None = None, finished: dict | None = None
) -> dict:
    """Compute ``{key: (fn, args)}`` with Dask on engine ``sched`` (:func:`choose_scheduler`)
    and a progress bar; returns ``{key: result}``.  ``labels`` (``{key: measure name}``)
    turns on per-measure progress (:class:`_Progress`); ``finished`` (a dict) receives each
    measure's finishing time in seconds from the start."""
    if not tasks:
        return {}
    import dask
    from tqdm.auto import tqdm

    keys = list(tasks)
    delayed = [
        dask.delayed(fn, pure=True)(*args, dask_key_name=f"galforge-{k}")
        for k, (fn, args) in tasks.items()
    ]
    bar = tqdm(
        total=len(keys),
        desc="evaluate",
        unit="task",  # a bar on a terminal only
        disable=None if opts["progress"] else True,
    )
    progress = _Progress(bar, {f"galforge-{k}": v for k, v in (labels or {}).items()})
    try:
        if sched in ("threads", "processes", "synchronous", "sync", "single-threaded"):
            from dask.callbacks import Callback

            class _Bar(Callback):
                def _posttask(self, key, result, dsk, state, worker_id):
                    if isinstance(key, str) and key.startswith("galforge-"):
                        progress(key, result)

            kw = {"scheduler": sched}
            pool = None
            if sched in ("threads", "processes"):
                # a pool of our own, so that an interrupt drops the queued tasks at once
                # (the shared pool would run every queued task before the process exits)
                from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

                n = int(opts["workers"]) if opts["workers"] else (os.cpu_count() or 1)
                if sched == "threads":
                    pool = ThreadPoolExecutor(n)
                else:  # as dask makes its own: its start method and worker set-up
                    from dask.multiprocessing import get_context, initialize_worker_process

                    if os.environ.get("PYTHONHASHSEED") in (None, "0"):
                        os.environ["PYTHONHASHSEED"] = "6640"  # as dask does
                    pool = ProcessPoolExecutor(
                        n, mp_context=get_context(), initializer=initialize_worker_process
                    )
                kw.update(pool=pool, num_workers=n)
            try:
                with _Bar():
                    results = dask.compute(*delayed, **kw)
            except BaseException:
                if pool is not None:
                    _drop_pool(pool)
                    pool = None
                raise
            finally:
                if pool is not None:
                    pool.shutdown(wait=True)
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
                for fut in as_completed(futures):
                    progress(fut.key, fut.result())
                results = client.gather(futures)
            finally:
                client.close()
    finally:
        bar.close()
    if finished is not None:
        finished.update(progress.finished)
    return dict(zip(keys, results, strict=True))


# ----------------------------------------------------------------------------- main


def _chunks(n: int, size: int) -> list[tuple[int, int]]:
    return [(i, min(n, i + size)) for i in range(0, n, size)]


def _select(measures, ctx: Context) -> list[str]:
    if measures is None:
        chosen = [m.name for m in registry.measures() if m.is_default(ctx)]
    else:
        chosen = [m.strip() for m in measures if m.strip()]
        known = registry.names()
        bad = [m for m in chosen if m not in known]
        if bad:
            raise EvaluationError(
                f"unknown measure(s) {', '.join(bad)} in --measures; choose from {', '.join(known)}"
            )
    for name in list(chosen):
        for need in registry.get(name).requires:
            if need not in chosen:
                chosen.append(need)
    return chosen


def evaluate(
    real, fake, out_dir, options: EvaluateOptions | Mapping[str, Any] | None = None, **kwargs
) -> dict:
    """Measure ``fake`` against ``real`` and write the report.

    ``real``/``fake`` are :class:`galforge.data.ImageSet` s (or ``N×C×H×W`` arrays with
    ``bands=``/``units=`` options).  Writes ``out_dir/report.html``, ``metrics.json``,
    ``catalogue_<measure>_<real|fake>.csv``, ``memorization_nn.csv`` and the PNG figures, and
    returns the metrics dict (also written to ``metrics.json``).

    Options, as an :class:`~galforge.evaluation.options.EvaluateOptions` (``options``) or as
    keywords laid over it (defaults in :data:`DEFAULTS`): ``measures`` (names of registered measures,
    :data:`MEASURES`), ``thresholds`` (see
    :func:`galforge.evaluation.registry.default_thresholds` and the rules in
    :mod:`galforge.evaluation.verdicts`), ``seed``, ``scheduler``, ``workers``,
    ``chunk_size``, ``band``, ``upscale``, ``isophote_engine``, ``zeropoint``,
    ``detect_thresh``, ``minarea``, ``mag_limit``, ``colour_bands``, ``mag_band``,
    ``redshift``, ``box_k``, ``nn_crop``,
    ``nn_k``, ``nn_normalize``, ``holdout_fraction``, ``classifier_folds``, ``hist_bins``,
    ``max_k``, ``encoder_weights``, ``inception_weights``, ``kid_subsets``,
    ``kid_subset_size``, ``grid_n``, ``progress``, ``cache``; ``bands``, ``units``.  They are
    checked once, when the options object is made.  The command's outcome does not
    depend on whether measures pass: failures are results in the summary.
    """
    from galforge.evaluation.photometry import DetectionOptions
    from galforge.evaluation.report import build_summary

    o = EvaluateOptions.build(options, **kwargs)
    bands_opt, units_opt, measures = o.bands, o.units, o.measures
    thresholds = o.all_thresholds()
    opts = o.settings()
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
    mags = magnitude_system(opts["zeropoint"], r.meta)
    mags["source"] = mags["source"].replace("{units}", str(r.units))
    detection = DetectionOptions(
        zeropoint=mags["zeropoint"], thresh=opts["detect_thresh"], minarea=opts["minarea"]
    )
    ctx = Context(bands=r.bands, units=r.units, options=opts, detection=detection, magnitudes=mags)
    measures = _select(measures, ctx)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache_dir = out / "cache"
    cache_dir.mkdir(exist_ok=True)
    t0 = time.time()
    notes: list[str] = []

    # ---- plan the tasks, reading what the cache already has
    tasks: dict[str, tuple] = {}
    have: dict[str, object] = {}
    plan: dict[str, list] = {}

    def lookup(key, fn, args):
        path = cache_dir / f"{key}.json"
        if key in tasks or key in have:
            return
        if opts["cache"] and path.is_file():
            have[key] = json.loads(path.read_text())
        else:
            tasks[key] = (fn, args)

    for m in registry.measures():
        if m.name not in measures or m.kind == "derived":
            continue
        why = m.unavailable(ctx)
        if why:
            notes.append(why)
            continue
        sub = m.cache_options(ctx)
        if m.kind == "object":
            keys = []
            for s_name, s in (("real", r), ("fake", f)):
                for a, b in _chunks(len(s.images), m.chunk_size(ctx)):
                    chunk = s.images[a:b]
                    key = f"{m.name}-" + _hash(
                        __version__, CACHE_FORMAT, m.name, m.version, sub, list(s.bands), chunk
                    )
                    keys.append((s_name, a, key))
                    lookup(key, _object_task, (m, chunk, s.bands, ctx))
            plan[m.name] = keys
        else:
            key = f"{m.name}-" + _hash(
                __version__, CACHE_FORMAT, m.name, m.version, sub, r.hash, f.hash
            )
            plan[m.name] = [("set", 0, key)]
            lookup(key, _set_task, (m, r.images, f.images, ctx))

    # ---- run what is missing, write it to the cache
    if tasks:
        for m in registry.measures():
            if m.name in plan:
                for module in m.imports:
                    importlib.import_module(module)
    engine = choose_scheduler(tasks, opts) if tasks else "none (cached)"
    labels = {key: name for name, entries in plan.items() for _, _, key in entries}
    finished: dict[str, float] = {}
    t_run = time.time()
    computed = _run_tasks(tasks, opts, engine, {k: labels[k] for k in tasks}, finished)
    timings = _measure_timings(plan, computed, finished)
    timings["compute_s"] = round(time.time() - t_run, 2)
    timings["plan_s"] = round(t_run - t0, 2)
    for key, (value, _) in computed.items():
        value = json_safe(value)
        computed[key] = value
        if opts["cache"]:
            atomic_write_text(cache_dir / f"{key}.json", json.dumps(value), fsync=False)
    have.update(computed)
    cache_info = {"computed": sorted(computed), "reused": sorted(set(have) - set(computed))}

    # ---- assemble the results, in registry order
    results: dict[str, dict] = {}
    catalogues: dict[str, dict[str, list[dict]]] = {}
    for m in registry.measures():
        if m.name not in measures:
            continue
        if m.kind == "object" and m.name in plan:
            rows = {"real": [], "fake": []}
            for s_name, start, key in plan[m.name]:
                for row in have[key]:
                    row = dict(row)
                    if not m.per_image:
                        row["image"] = int(row.get("image", 0)) + start
                    rows[s_name].append(row)
            if m.per_image:
                for s_name in rows:
                    for i, row in enumerate(rows[s_name]):
                        row.setdefault("image", i)
            catalogues[m.name] = rows
            results[m.name] = m.compare(rows, ctx)
        elif m.kind == "derived":
            if not all(need in catalogues for need in m.requires):
                continue
            try:
                results[m.name] = m.derive({need: catalogues[need] for need in m.requires}, ctx)
            except EvaluationError as exc:
                notes.append(f"{m.title or m.name}: {exc}")
        elif m.name in plan:
            results[m.name] = have[plan[m.name][0][2]]

    summary = build_summary(results, thresholds, ctx)
    metrics = {
        "galforge_version": __version__,
        "real": {
            "source": str(r.source),
            "n": int(len(r.images)),
            "units": r.units,
            "shape": list(r.images.shape[1:]),
            "content_hash": r.hash,
        },
        "fake": {
            "source": str(f.source),
            "n": int(len(f.images)),
            "units": f.units,
            "shape": list(f.images.shape[1:]),
            "content_hash": f.hash,
        },
        "bands": list(r.bands),
        "measures": measures,
        "settings": json_safe(
            {**{k: v for k, v in opts.items() if k != "progress"}, "scheduler_used": engine}
        ),
        "detection": detection.to_dict(),
        "magnitudes": mags,
        "thresholds": thresholds,
        "summary": summary,
        "results": results,
        "cache": cache_info,
        "notes": notes,
    }
    # ---- files: CSVs, figures, report
    from galforge.evaluation import report as rep

    t_out = time.time()
    files = rep.write_outputs(out, r, f, metrics, catalogues, ctx)
    metrics["files"] = files
    metrics["seconds"] = round(time.time() - t0, 2)
    timings["assemble_s"] = round(t_out - t_run - timings["compute_s"], 2)
    timings["outputs_s"] = round(time.time() - t_out, 2)
    timings["total_s"] = metrics["seconds"]
    metrics["timings"] = timings
    metrics = json_safe(metrics)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    rep.write_report(out, metrics, files["figures"], ctx)
    return metrics
