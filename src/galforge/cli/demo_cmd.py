"""``galforge demo``: galforge's models and its whole pipeline on bundled data, on a laptop CPU.

1. Galaxies from the pretrained ``galsim-dcgan64`` (g, r, i; counts): FITS in physical units,
   a grid, and a side-by-side picture with real galaxies of the training population.
2. Their evaluation against held-out galaxies of that population (``report.html``).
3. A deep field tiled from the pretrained ``xdf-deepfield`` with its truth catalogue (or from
   ``xdf-sgan``, or, when neither is installed, from a short Spatial GAN training on the
   Hubble XDF).
4. The training loop live: a short DCGAN run from scratch on GalSim galaxies.
5. Fine-tuning: ``galsim-dcgan64`` trained further on real XDF galaxy stamps
   (``--init pretrained:galsim-dcgan64 --band-map R=i,G=r,B=g``), the sim→real step.

Everything goes under ``--out``; the command ends by printing where each output is.
Training steps are sized to the time budget on this machine (measured before training).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from galforge import outputs

# the parts of the time budget each training stage may use (the rest is generation,
# evaluation and I/O)
_LIVE_SHARE = 0.15
_FINETUNE_SHARE = 0.2
_SGAN_SHARE = 0.15
_MIN_STEPS = {"dcgan": 30, "sgan": 20}
_MAX_STEPS = {"dcgan": 3000, "sgan": 600}
GALAXY_MODEL = "galsim-dcgan64"
#: the field models the demo tiles from, preferred first (the Spatial GAN is the fallback)
FIELD_MODELS = ("xdf-deepfield", "xdf-sgan")
#: the galaxy model's training data (seed 1) and the held-out draw the demo compares with
TRAIN_SPEC = "builtin:galsim?n={n}&size=64&seed=1"
HELDOUT_SPEC = "builtin:galsim?n={n}&size=64&seed={seed}"
#: the measures the demo runs (the zoo card has the full set, isophotes included, on 500)
DEMO_MEASURES = (
    "moments",
    "morphology",
    "photometry",
    "colour",
    "memorization",
    "power_spectrum",
    "fid",
)


def _seconds_per_step(cfg) -> float:
    """Time a few training steps of the configured model on this machine."""
    import numpy as np
    import torch

    from galforge.training.recipes import get_recipe

    recipe_cls = get_recipe(cfg.model.name)
    params = dict(cfg.model.params)
    size = recipe_cls.image_size_for(params)
    recipe = recipe_cls(
        params, channels=3, image_size=size, device=torch.device("cpu"), seed=cfg.train.seed
    )
    if size is None:
        # crop-trained (fully convolutional) models: the crop of the mean pixel count
        crops = [int(c) for c in recipe.config.get("crop_sizes", [64])]
        size = int(round(float(np.sqrt(np.mean(np.square(crops)))) / 16.0)) * 16
    rng = torch.Generator().manual_seed(0)
    real = torch.from_numpy(
        np.random.default_rng(0).uniform(-1, 1, (cfg.train.batch, 3, size, size)).astype(np.float32)
    )
    recipe.train_step(real, 0, rng)  # warm-up: allocations, first-call overheads
    t0 = time.perf_counter()
    n = 3
    for step in range(1, n + 1):
        recipe.train_step(real, step, rng)
    return (time.perf_counter() - t0) / n


def _fastest_threads(cfg) -> tuple[int, float]:
    """Pick the CPU thread count that trains fastest here; return it and seconds per step.

    On a machine whose cores are partly busy, several OpenMP threads waiting on each other
    can be many times slower than one, so both are measured rather than assumed.
    """
    import torch

    default = torch.get_num_threads()
    timings = {}
    try:
        for threads in sorted({1, default}):
            torch.set_num_threads(threads)
            timings[threads] = _seconds_per_step(cfg)
    finally:
        torch.set_num_threads(default)
    best = min(timings, key=timings.get)
    return best, timings[best]


def _size_steps(cfg, seconds: float, family: str) -> tuple[int, float]:
    """Set ``cfg``'s thread count and steps to fit ``seconds``; return (steps, s/step)."""
    threads, per_step = _fastest_threads(cfg)
    cfg.train.threads = threads
    steps = int(seconds / max(per_step, 1e-3))
    cfg.train.steps = max(_MIN_STEPS[family], min(_MAX_STEPS[family], steps))
    return cfg.train.steps, per_step


def _train(
    spec: str,
    model: str,
    out: Path,
    seconds: float,
    family: str,
    seed: int,
    progress: bool,
    sets: list[str],
    batch: int,
    **flags,
) -> tuple[dict, object]:
    from galforge.cli.train_cmd import resolve_train_config
    from galforge.training.from_config import train_from_config

    cfg = resolve_train_config(
        spec,
        model=model,
        out=str(out),
        batch=batch,
        seed=seed,
        steps=1,
        device="cpu",
        sets=[*sets, f"train.progress={str(progress).lower()}"],
        **flags,
    )
    _size_steps(cfg, seconds, family)
    return cfg, lambda: train_from_config(cfg)


def run_demo(
    out: str | Path = "demo-out",
    minutes: float = 6.0,
    seed: int = 0,
    progress: bool = True,
    n_eval: int = 150,
    overwrite: bool = False,
) -> dict:
    """Run the demo pipeline into ``out``; return a dict of the paths written and figures.

    ``out`` is an owned output folder (:mod:`galforge.outputs`): a used one is refused unless
    ``overwrite``, which replaces only what an earlier demo recorded writing there."""
    with outputs.scope():
        return _run_demo(Path(out), minutes, seed, progress, n_eval, overwrite)


def _run_demo(
    out: Path, minutes: float, seed: int, progress: bool, n_eval: int, overwrite: bool
) -> dict:
    import galforge
    from galforge import pretrained
    from galforge.data import load_images
    from galforge.data.display import save_side_by_side
    from galforge.data.imageset import ImageSet
    from galforge.evaluation import evaluate
    from galforge.generation.field import field_from_bundle
    from galforge.generation.writers import write_samples

    # the demo's folder holds only what the demo writes: with overwrite an earlier demo's
    # recorded outputs are replaced; anything else there (at any depth) is refused
    outputs.claim_folder(out, overwrite=overwrite, command="demo")
    budget = max(float(minutes), 1.0) * 60.0
    t_start = time.perf_counter()
    say = typer.echo
    result: dict = {"out": str(out)}

    # 1. galaxies from the pretrained model (a short training when it is not installed)
    if GALAXY_MODEL in pretrained.names():
        card = pretrained.card(GALAXY_MODEL)
        model = f"pretrained:{GALAXY_MODEL}"
        say(
            f"[1/5] generating 64 galaxies from {model} ({card.title}; "
            f"{card.training.get('steps', '?')} training steps)"
        )
    else:
        gcfg, train_gal = _train(
            TRAIN_SPEC.format(n=2048),
            "dcgan64",
            out / "dcgan",
            _FINETUNE_SHARE * budget,
            "dcgan",
            seed,
            progress,
            ["data.stretch=asinh", "train.sample_every=100"],
            32,
        )
        say(
            f"[1/5] pretrained:{GALAXY_MODEL} is not installed: training DCGAN-64 for "
            f"{gcfg.train.steps} steps instead, then generating 64 galaxies"
        )
        model = train_gal()["bundle"]
    bundle = galforge.load(model)
    gen = write_samples(bundle, out / "galaxies", n=64, seed=seed, fmt="fits", progress=progress)
    held = load_images(HELDOUT_SPEC.format(n=n_eval, seed=3000 + seed))
    fake_images = bundle.sample(n_eval, seed=seed + 1)
    side = save_side_by_side(
        out / "real_vs_generated.png",
        {"real (held-out GalSim)": held.images[:16], f"generated ({model})": fake_images[:16]},
        bundle.bands,
        nrow=4,
        units=bundle.units,
    )
    result["galaxies"] = {
        "dir": str(out / "galaxies"),
        "grid": str(gen.grid) if gen.grid else None,
        "side_by_side": str(side),
        "units": bundle.units,
        "bands": list(bundle.bands),
        "model": str(model),
    }

    # 2. evaluation against held-out galaxies of the training population
    say(f"[2/5] evaluating {n_eval} generated against {n_eval} held-out galaxies ({held.source})")
    fake = ImageSet(
        images=fake_images,
        bands=tuple(bundle.bands),
        meta=[{} for _ in fake_images],
        units=bundle.units,
        source=f"{model} (n={n_eval}, seed={seed + 1})",
    )
    metrics = evaluate(
        held, fake, out / "evaluation", measures=list(DEMO_MEASURES), progress=progress, seed=seed
    )
    result["evaluation"] = {
        "report": str(out / "evaluation" / "report.html"),
        "metrics": str(out / "evaluation" / "metrics.json"),
        "summary": metrics.get("summary", []),
    }

    # 3. a deep field
    field_dir = out / "field"
    field_model = next((m for m in FIELD_MODELS if m in pretrained.names()), None)
    if field_model is not None:
        say(f"[3/5] tiling a 1024x1024 deep field from pretrained:{field_model}")
        field_src, field_threads = f"pretrained:{field_model}", None
        result["sgan"] = {"model": field_src}
    else:
        scfg, train_sgan = _train(
            "builtin:hdf",
            "sgan",
            out / "sgan",
            _SGAN_SHARE * budget,
            "sgan",
            seed,
            progress,
            [
                "model.crop_sizes=[64]",
                "model.widths=[128,64,32,16]",
                "model.d_widths=[32,64,128,256,256]",
                "train.sample_every=50",
                "train.checkpoint_every=100",
                "train.snapshot_every=0",
            ],
            16,
        )
        say(
            f"[3/5] training a Spatial GAN on the Hubble XDF for {scfg.train.steps} steps "
            "and tiling a 1024x1024 deep field from it"
        )
        ssum = train_sgan()
        field_src, field_threads = ssum["bundle"], scfg.train.threads
        result["sgan"] = {"run": ssum["run_dir"], "steps": ssum["step"], "bundle": ssum["bundle"]}
    fr = field_from_bundle(
        field_src,
        field_dir / "deep_field.zarr",
        "1024x1024",
        seed=seed,
        fits_out=field_dir / "deep_field.fits",
        preview=field_dir / "deep_field.png",
        progress=progress,
        overwrite=True,
        threads=field_threads,
    )[0]
    result["field"] = {
        "path": str(fr.path),
        "shape": list(fr.shape),
        "fits_path": str(fr.fits_path) if fr.fits_path else None,
        "preview_path": str(fr.preview_path) if fr.preview_path else None,
        "truth_path": str(fr.truth_path) if fr.truth_path else None,
        "truth_rows": fr.truth_rows,
        "mpix_per_s": fr.mpix_per_s,
    }

    # 4. the training loop, live
    spent = time.perf_counter() - t_start
    live_s = max(20.0, min(_LIVE_SHARE * budget, (budget - spent) * 0.4))
    lcfg, train_live = _train(
        TRAIN_SPEC.format(n=1024),
        "dcgan64",
        out / "train-live",
        live_s,
        "dcgan",
        seed,
        progress,
        ["data.stretch=asinh", "train.sample_every=50", "train.checkpoint_every=100"],
        32,
    )
    say(
        f"[4/5] training DCGAN-64 (cpu config) from scratch for {lcfg.train.steps} steps, "
        f"{lcfg.train.threads} CPU thread(s) — the loop you would run for hours"
    )
    t0 = time.perf_counter()
    live = train_live()
    result["live"] = {
        "run": live["run_dir"],
        "steps": live["step"],
        "seconds": time.perf_counter() - t0,
        "config": live["config"],
        "loss_plot": live["loss_plot"],
        "samples": live["samples"],
    }

    # 5. fine-tuning the pretrained model on real XDF galaxies
    spent = time.perf_counter() - t_start
    ft_s = max(20.0, min(_FINETUNE_SHARE * budget, (budget - spent) * 0.8))
    # the fine-tuned network is the pretrained one: with its sky noise or without
    sky = "true" if isinstance(bundle.spec, dict) and bundle.spec.get("sky_noise") else "false"
    fcfg, train_ft = _train(
        "builtin:hdf-stamps",
        "dcgan64",
        out / "finetune-xdf",
        ft_s,
        "dcgan",
        seed,
        progress,
        ["train.sample_every=25", "train.checkpoint_every=100", f"model.sky_noise={sky}"],
        32,
        init=str(model),
        band_map="R=i,G=r,B=g",
    )
    say(
        f"[5/5] fine-tuning {model} on real XDF galaxy stamps "
        f"(builtin:hdf-stamps, R=i G=r B=g) for {fcfg.train.steps} steps"
    )
    ft = train_ft()
    result["finetune"] = {
        "run": ft["run_dir"],
        "steps": ft["step"],
        "bundle": ft["bundle"],
        "samples": ft["samples"],
        "n_images": ft["n_images"],
    }
    result["seconds"] = time.perf_counter() - t_start
    (out / "demo.json").write_text(json.dumps(result, indent=2, default=str))
    return result


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else "–"


def _print_result(r: dict) -> None:
    g, ev = r["galaxies"], r["evaluation"]
    n_pass = sum(1 for row in ev["summary"] if row.get("passed"))
    lines = [
        "",
        f"galforge demo finished in {r['seconds'] / 60:.1f} min.",
        "",
        f"Generated galaxies ({g['model']}, FITS in {g['units']}, bands "
        f"{','.join(g['bands'])}): {g['dir']}",
        f"  sample grid:               {g['grid']}",
        f"  real vs generated:         {g['side_by_side']}",
        f"Evaluation ({n_pass} of {len(ev['summary'])} measures pass): {ev['report']}",
    ]
    for row in ev["summary"]:
        verdict = "pass" if row.get("passed") else "FAIL"
        lines.append(f"      {row.get('measure', '?'):<44} {_fmt(row.get('value')):>10}  {verdict}")
    f = r["field"]
    lines += [
        f"Deep field {f['shape'][1]}x{f['shape'][2]} ({r['sgan'].get('model') or 'short Spatial GAN run'}): "
        f"{f['path']}"
    ]
    for key in ("fits_path", "preview_path"):
        if f.get(key):
            lines.append(f"  {key.split('_')[0] + ':':<25} {f[key]}")
    if f.get("truth_path"):
        lines.append(f"  {'truth catalogue:':<25} {f['truth_path']} ({f['truth_rows']} sources)")
    lv, ft = r["live"], r["finetune"]
    lines += [
        f"Training from scratch ({lv['steps']} steps, {lv['seconds']:.0f} s): {lv['run']}",
        f"  loss curves:               {lv['loss_plot']}",
        f"  sample grids:              {Path(lv['run']) / 'samples'}",
        f"Fine-tuned on {ft['n_images']} real XDF stamps ({ft['steps']} steps): {ft['run']}",
        f"  sample grids:              {Path(ft['run']) / 'samples'}",
        f"  bundle:                    {ft['bundle']}",
        "",
        f"Start with {g['side_by_side']} and {ev['report']};",
        f"everything the demo did is listed in {Path(r['out']) / 'demo.json'}.",
    ]
    typer.echo("\n".join(lines))


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        out: Path = typer.Option(Path("demo-out"), "--out", "-o", help="Folder for every output."),
        minutes: float = typer.Option(
            6.0, "--minutes", "-m", help="Time budget; training steps are sized to fit it."
        ),
        seed: int = typer.Option(0, "--seed", help="Seed of every random draw."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars."),
        overwrite: bool = typer.Option(
            False,
            "--overwrite",
            help="Replace the outputs an earlier demo recorded writing to --out.",
        ),
    ) -> None:
        """Pretrained galaxies and a deep field, their evaluation, live training and fine-tuning."""
        _print_result(
            run_demo(out, minutes=minutes, seed=seed, progress=progress, overwrite=overwrite)
        )
