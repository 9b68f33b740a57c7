"""``galforge evaluate REAL FAKE --out DIR``: physical validation of generated galaxies."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from galforge.config import check_ranges
from galforge.errors import ConfigError, DataError, EvaluationError


def _is_model_folder(source: str) -> bool:
    from galforge.pretrained import is_pretrained

    if is_pretrained(source):
        return True
    p = Path(source).expanduser()
    if p.is_file() and p.name in ("bundle.json", "run.json"):
        return True
    return p.is_dir() and ((p / "bundle.json").is_file() or (p / "run.json").is_file())


def load_set(
    source: str,
    what: str,
    *,
    n: int | None,
    seed: int,
    size: int | None,
    limit: int | None,
    device: str = "auto",
):
    """Read REAL or FAKE: anything :func:`galforge.data.load_images` reads, or (FAKE only) a
    run/bundle folder, sampled with ``n`` and ``seed``."""
    from galforge.data import ImageSet, load_images

    if _is_model_folder(source):
        if what == "REAL":
            raise ConfigError(
                f"REAL {source} is a model (run/bundle) folder; REAL must be data "
                "(a folder, file, prepared set or builtin: spec)"
            )
        import galforge

        bundle = galforge.load(source, device=device)
        count = n or 256
        images = bundle.sample(count, seed=seed)
        meta = [{"id": f"sample-{i}", "seed": seed, "index": i} for i in range(count)]
        return ImageSet(
            images=images,
            bands=tuple(bundle.bands),
            meta=meta,
            units=bundle.units,
            source=f"{source} (sampled n={count}, seed={seed})",
        )
    opts = {}
    if size:
        opts["size"] = size
    if limit:
        opts["limit"] = limit
    try:
        return load_images(source, **opts)
    except (DataError, ConfigError) as exc:
        msg = str(exc)
        if source not in msg:
            msg = f"{what} {source}: {msg}"
        raise type(exc)(msg) from exc


def _parse_thresholds(items: list[str]) -> dict:
    from galforge.evaluation.registry import default_thresholds

    known = default_thresholds()
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--threshold {item!r}: use NAME=VALUE, e.g. --threshold auc=0.65")
        name, value = item.split("=", 1)
        name = name.strip()
        if name not in known:
            raise ConfigError(f"--threshold {name}: unknown; choose from {', '.join(known)}")
        try:
            out[name] = float(value)
        except ValueError as exc:
            raise ConfigError(f"--threshold {item!r}: {value!r} is not a number") from exc
    return out


def _num(v) -> str:
    return "–" if v is None else f"{v:.4g}"


def _count(v) -> str:
    return "–" if v is None else str(int(v))


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def register(app: typer.Typer) -> None:
    """Add the ``evaluate`` command to ``app``."""

    @app.command("evaluate")
    def evaluate_cmd(
        real: str = typer.Argument(
            ..., metavar="REAL", help="Real images: folder, file, prepared set or builtin: spec."
        ),
        fake: str = typer.Argument(
            ...,
            metavar="FAKE",
            help="Generated images (same kinds as REAL) or a run/bundle "
            "folder to sample with -n/--seed.",
        ),
        out: Path = typer.Option(..., "--out", help="Folder for report.html, metrics.json, CSVs."),
        n: int = typer.Option(
            None, "-n", "--n", help="Images to sample when FAKE is a run/bundle (default 256)."
        ),
        seed: int = typer.Option(0, "--seed", help="Seed for sampling, splits, classifier, KID."),
        measures: str = typer.Option(
            None,
            "--measures",
            help="Comma-separated subset of the registered measures: isophotes, moments, "
            "morphology, photometry, colour, memorization, power_spectrum, fid, inception "
            "and any registered by the user (default: all but inception, which runs when "
            "--inception-weights is given).",
        ),
        threshold: list[str] = typer.Option(
            None,
            "--threshold",
            help="NAME=VALUE, repeatable: ks_p (0.05, family-wise over the KS rows), "
            "min_objects (10), failure_margin (0.05), failure_alpha (0.01), z (2), "
            "box_margin (0.1), nn_ratio (0.9), auc (0.6), fgd_factor (3).",
        ),
        band: str = typer.Option("sum", "--band", help="Band for shapes/morphology, or 'sum'."),
        upscale: int = typer.Option(
            512, "--upscale", help="Isophote fits: bicubic upscale to this size (0: off)."
        ),
        isophote_engine: str = typer.Option(
            "galforge",
            "--isophote-engine",
            help="Isophote fitter: galforge (batched, fast) or photutils (one stamp at a time).",
        ),
        zeropoint: float = typer.Option(
            None,
            "--zeropoint",
            help="Magnitude zero point of REAL's pixel units (22.5 for nanomaggies). Default: "
            "the REAL FITS headers' MAGZERO/MAGZP/ZP/PHOTZP when all agree, else "
            "instrumental magnitudes (-2.5 log10 flux).",
        ),
        detect_thresh: float = typer.Option(
            5.0, "--detect-thresh", help="Detection threshold in background sigma."
        ),
        minarea: int = typer.Option(5, "--minarea", help="Minimum connected pixels per source."),
        mag_limit: float = typer.Option(
            None, "--mag-limit", help="KS of magnitudes only for sources brighter than this."
        ),
        colour_bands: str = typer.Option(
            None, "--colour-bands", help="BLUE,RED bands of the colour (default first,last)."
        ),
        redshift: float = typer.Option(
            None, "--redshift", help="Redshift for absolute magnitudes in the CMD."
        ),
        box_k: float = typer.Option(1.75, "--box-k", help="CMD box half-width in sigma."),
        holdout_fraction: float = typer.Option(
            0.2, "--holdout-fraction", help="Part of REAL held out for memorisation."
        ),
        encoder_weights: Path = typer.Option(
            None, "--encoder-weights", help="Galaxy encoder weights (default: shipped)."
        ),
        inception_weights: Path = typer.Option(
            None,
            "--inception-weights",
            help="TorchScript/.pt2 Inception-v3 feature network for literature FID/KID.",
        ),
        size: int = typer.Option(None, "--size", help="Resize images read from files to SIZE."),
        limit: int = typer.Option(None, "--limit", help="Read at most this many images per set."),
        scheduler: str = typer.Option(
            "auto",
            "--scheduler",
            help="auto (processes for large sets on several "
            "CPUs, else threads), threads, processes, "
            "synchronous or a dask.distributed address "
            "(tcp://host:8786).",
        ),
        workers: int = typer.Option(
            None, "--workers", help="Local Dask workers (default: the usable CPUs)."
        ),
        chunk_size: int = typer.Option(16, "--chunk-size", help="Images per parallel task."),
        cache: bool = typer.Option(True, "--cache/--no-cache", help="Reuse cached measures."),
        device: str = typer.Option(
            "auto",
            "--device",
            help="Device for sampling a bundle: auto (CUDA, then Apple "
            "MPS, then CPU), cpu, cuda, cuda:N or mps.",
        ),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar."),
        fields: bool = typer.Option(
            False,
            "--fields",
            help="REAL and FAKE are deep fields (FITS, zarr, npy, builtin:hdf; FAKE also a "
            "run/bundle/pretrained:NAME, tiled to REAL's size with --seed): write the "
            "field report (density, magnitudes, colours, sizes, w(θ), sky, classifier).",
        ),
        truth: Path = typer.Option(
            None,
            "--truth",
            help="With --fields: truth catalogue of FAKE (FITS table or CSV: x, y, "
            "flux_<band>/mag_<band>) for completeness and magnitude bias.",
        ),
        match_radius: float = typer.Option(
            2.0, "--match-radius", help="With --truth: match radius in pixels."
        ),
        overwrite: bool = typer.Option(
            False,
            "--overwrite",
            help="Replace an earlier evaluation in --out (its measure cache is kept).",
        ),
    ) -> None:
        """Measure FAKE against REAL; write DIR/report.html, metrics.json and CSV catalogues.

        Exits 0 whether or not the measures pass (failures are results, listed in the
        summary); exits 2 on bad input."""
        from galforge import outputs
        from galforge.evaluation import evaluate

        if n is not None and n < 2:
            raise ConfigError(f"-n {n}: sample at least 2 images")
        check_ranges(
            {
                "--holdout-fraction": (holdout_fraction, "(0, 1)"),
                "--upscale": (upscale, ">= 0"),
                "--detect-thresh": (detect_thresh, "> 0"),
                "--minarea": (minarea, ">= 1"),
                "--box-k": (box_k, "> 0"),
                "--size": (size, ">= 8"),
                "--limit": (limit, ">= 1"),
                "--workers": (workers, ">= 1"),
                "--chunk-size": (chunk_size, ">= 1"),
                "--match-radius": (match_radius, "> 0"),
                "--redshift": (redshift, "> 0"),
            }
        )
        if seed < 0:
            raise ConfigError(f"--seed {seed}: the seed must be a non-negative integer")
        outputs.check_folder(out, overwrite=overwrite, command="evaluate")
        if fields:
            from galforge.cli import evaluate_fields

            outputs.claim_folder(out, overwrite=overwrite, command="evaluate")
            evaluate_fields.run(
                real,
                fake,
                out,
                truth=truth,
                match_radius=match_radius,
                seed=seed,
                zeropoint=zeropoint,
                detect_thresh=detect_thresh,
                minarea=minarea,
                threshold=threshold,
                device=device,
            )
            return
        if truth is not None:
            raise ConfigError(
                f"--truth {truth}: a truth catalogue belongs to a field; add --fields"
            )
        for path, name in (
            (encoder_weights, "--encoder-weights"),
            (inception_weights, "--inception-weights"),
        ):
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"{name} {path}: no such file")
        cb = None
        if colour_bands:
            cb = tuple(b.strip() for b in colour_bands.split(","))
            if len(cb) != 2:
                raise ConfigError(f"--colour-bands {colour_bands!r}: give two bands, BLUE,RED")
        real_set = load_set(real, "REAL", n=None, seed=seed, size=size, limit=limit)
        fake_set = load_set(fake, "FAKE", n=n, seed=seed, size=size, limit=limit, device=device)
        outputs.claim_folder(out, overwrite=overwrite, command="evaluate", keep=("cache",))
        try:
            metrics = evaluate(
                real_set,
                fake_set,
                out,
                measures=measures.split(",") if measures else None,
                thresholds=_parse_thresholds(threshold),
                seed=seed,
                band=band,
                upscale=upscale or None,
                isophote_engine=isophote_engine,
                zeropoint=zeropoint,
                detect_thresh=detect_thresh,
                minarea=minarea,
                mag_limit=mag_limit,
                colour_bands=cb,
                redshift=redshift,
                box_k=box_k,
                holdout_fraction=holdout_fraction,
                encoder_weights=str(encoder_weights) if encoder_weights else None,
                inception_weights=str(inception_weights) if inception_weights else None,
                scheduler=scheduler,
                workers=workers,
                chunk_size=chunk_size,
                cache=cache,
                progress=progress,
            )
        except EvaluationError as exc:
            raise EvaluationError(f"evaluate {real} vs {fake}: {exc}") from exc
        rows = metrics["summary"]
        width = max([len(r["measure"]) for r in rows] + [7])
        typer.echo(
            f"{'measure':<{width}}  {'value':>10}  {'threshold':>10}  {'n real':>6}  "
            f"{'n fake':>6}  {'fail real':>9}  {'fail fake':>9}  result"
        )
        for r in rows:
            note = f" ({r['note']})" if r.get("note") else ""
            typer.echo(
                f"{r['measure']:<{width}}  {_num(r['value']):>10}  "
                f"{_num(r['threshold']):>10}  {_count(r.get('n_real')):>6}  "
                f"{_count(r.get('n_fake')):>6}  {_pct(r.get('failure_rate_real')):>9}  "
                f"{_pct(r.get('failure_rate_fake')):>9}  "
                f"{'pass' if r['passed'] else 'FAIL'}{note}"
            )
        from galforge.evaluation.report import timing_rows

        timing = timing_rows(metrics)
        if timing:
            tw = max(len(str(row[0])) for row in timing)
            typer.echo(f"timings ({metrics['settings'].get('scheduler_used')}):")
            typer.echo(
                f"{'measure':<{tw}}  {'tasks':>5}  {'reused':>6}  {'CPU s':>8}  "
                f"{'done after s':>12}"
            )
            for name, tasks, reused, cpu, after in timing:
                typer.echo(
                    f"{name:<{tw}}  {_count(tasks):>5}  {_count(reused):>6}  "
                    f"{_num(cpu):>8}  {_num(after):>12}"
                )
        mags = metrics.get("magnitudes") or {}
        if mags:
            typer.echo(f"magnitudes: {mags.get('system')} ({mags.get('source')})")
        for note in metrics.get("notes", []):
            typer.echo(f"note: {note}")
        n_pass = sum(r["passed"] for r in rows)
        typer.echo(f"{n_pass}/{len(rows)} measures pass")
        typer.echo(f"report: {Path(out) / 'report.html'}")
        typer.echo(
            json.dumps(
                {"report": str(Path(out) / "report.html"), "passed": n_pass, "measures": len(rows)}
            )
        )
