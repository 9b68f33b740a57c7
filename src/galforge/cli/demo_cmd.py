"""``galforge demo``: the whole pipeline on bundled data, sized for a laptop CPU.

1. GalSim galaxies (g, r, i; 64×64) are made on the fly: a training set and, from another
   seed, a held-out set of the same population.
2. A narrow DCGAN-64 (the paper's architecture with fewer channels) is trained for as many
   steps as fit the time budget on this machine (measured before training), writing sample
   grids, a loss curve, the resolved config, checkpoints and a bundle.
3. Galaxies are generated from the bundle as FITS in the training data's units.
4. The samples are evaluated against the held-out galaxies (``report.html``).
5. A small Spatial GAN is trained on the Hubble eXtreme Deep Field image bundled with
   scikit-image and tiled into a deep field (zarr + FITS + preview PNG).

Everything goes under ``--out``; the command ends by printing where each output is.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

# the parts of the time budget each stage may use (the rest is generation and I/O)
_DCGAN_SHARE = 0.4
_SGAN_SHARE = 0.15
_MIN_STEPS = {"dcgan": 50, "sgan": 20}
_MAX_STEPS = {"dcgan": 3000, "sgan": 600}


def _seconds_per_step(cfg) -> float:
    """Time a few training steps of the configured model on this machine."""
    import numpy as np
    import torch

    from galforge.training.recipes import get_recipe

    recipe_cls = get_recipe(cfg.model.name)
    params = dict(cfg.model.params)
    size = recipe_cls.image_size_for(params)
    recipe = recipe_cls(params, channels=3, image_size=size, device=torch.device("cpu"),
                        seed=cfg.train.seed)
    if size is None:
        # crop-trained (fully convolutional) models: the crop of the mean pixel count
        crops = [int(c) for c in recipe.config.get("crop_sizes", [64])]
        size = int(round(float(np.sqrt(np.mean(np.square(crops)))) / 16.0)) * 16
    rng = torch.Generator().manual_seed(0)
    real = torch.from_numpy(
        np.random.default_rng(0).uniform(-1, 1, (cfg.train.batch, 3, size, size)).astype(
            np.float32))
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


def run_demo(out: str | Path = "demo-out", minutes: float = 6.0, seed: int = 0,
             progress: bool = True) -> dict:
    """Run the demo pipeline into ``out``; return a dict of the paths written and figures."""
    from galforge.cli.train_cmd import resolve_train_config
    from galforge.data import load_images
    from galforge.data.imageset import ImageSet
    from galforge.evaluation import evaluate
    from galforge.generation.field import field_from_bundle
    from galforge.generation.sampling import load_bundle
    from galforge.generation.writers import write_samples
    from galforge.training.trainer import train_from_config

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    budget = max(float(minutes), 1.0) * 60.0
    t_start = time.perf_counter()
    say = typer.echo
    result: dict = {"out": str(out)}

    # 1-2. DCGAN on GalSim galaxies
    train_spec = f"builtin:galsim?n=1024&size=64&seed={seed}"
    heldout_spec = f"builtin:galsim?n=100&size=64&seed={seed + 1000}"
    sets = ["model.width=32", "train.sample_every=100", "train.checkpoint_every=200",
            "train.log_every=10", f"train.progress={str(progress).lower()}"]
    cfg = resolve_train_config(train_spec, model="dcgan64", out=str(out / "dcgan"), batch=32,
                               seed=seed, steps=1, device="cpu", sets=sets)
    steps, per_step = _size_steps(cfg, _DCGAN_SHARE * budget, "dcgan")
    say(f"[1/5] training DCGAN-64 (width 32) on {train_spec}: {steps} steps "
        f"(~{per_step:.2f} s/step here, {cfg.train.threads} CPU thread(s))")
    t0 = time.perf_counter()
    summary = train_from_config(cfg)
    result["dcgan"] = {
        "run": summary["run_dir"], "steps": summary["step"], "seconds": time.perf_counter() - t0,
        "config": summary["config"], "loss_plot": summary["loss_plot"],
        "samples": summary["samples"], "bundle": summary["bundle"],
    }

    # 3. FITS galaxies in physical units
    say("[2/5] generating 64 galaxies as FITS from the bundle")
    bundle = load_bundle(summary["bundle"])
    gen = write_samples(bundle, out / "galaxies", n=64, seed=seed, fmt="fits", progress=progress)
    result["galaxies"] = {"dir": str(out / "galaxies"), "grid": str(gen.grid) if gen.grid else None,
                          "units": bundle.units, "bands": list(bundle.bands)}

    # 4. evaluation against held-out galaxies of the same population
    say(f"[3/5] evaluating 100 generated against 100 held-out galaxies ({heldout_spec})")
    real = load_images(heldout_spec)
    fake_images = bundle.sample(real.images.shape[0], seed=seed + 1)
    fake = ImageSet(images=fake_images, bands=tuple(bundle.bands), meta=[{} for _ in fake_images],
                    units=bundle.units, source=str(summary["bundle"]))
    metrics = evaluate(real, fake, out / "evaluation", upscale=None, progress=progress,
                       seed=seed, kid_subset_size=100, kid_subsets=20)
    result["evaluation"] = {"report": str(out / "evaluation" / "report.html"),
                            "metrics": str(out / "evaluation" / "metrics.json"),
                            "summary": metrics.get("summary", [])}

    # 5. Spatial GAN on the XDF and a tiled deep field
    remaining = budget - (time.perf_counter() - t_start)
    sgan_sets = ["model.crop_sizes=[64, 128]", "train.sample_every=100", "train.checkpoint_every=100", "train.snapshot_every=0",
                 f"train.progress={str(progress).lower()}"]
    scfg = resolve_train_config("builtin:hdf", model="sgan", out=str(out / "sgan"), batch=8,
                                seed=seed, steps=1, device="cpu", sets=sgan_sets)
    ssteps, sper = _size_steps(scfg, min(_SGAN_SHARE * budget, max(remaining * 0.4, 30.0)),
                               "sgan")
    say(f"[4/5] training a Spatial GAN on the Hubble XDF (builtin:hdf): {ssteps} steps "
        f"(~{sper:.2f} s/step here)")
    ssum = train_from_config(scfg)
    say("[5/5] tiling a 1024x1024 deep field from it")
    field_out = out / "field" / "deep_field.zarr"
    fields = field_from_bundle(ssum["bundle"], field_out, "1024x1024", seed=seed,
                               fits_out=out / "field" / "deep_field.fits",
                               preview=out / "field" / "deep_field.png", progress=progress,
                               overwrite=True, threads=scfg.train.threads)
    fr = fields[0]
    result["sgan"] = {"run": ssum["run_dir"], "steps": ssum["step"], "bundle": ssum["bundle"]}
    result["field"] = {"path": str(fr.path), "shape": list(fr.shape),
                       "fits_path": str(fr.fits_path) if fr.fits_path else None,
                       "preview_path": str(fr.preview_path) if fr.preview_path else None,
                       "mpix_per_s": fr.mpix_per_s}
    result["seconds"] = time.perf_counter() - t_start
    (out / "demo.json").write_text(json.dumps(result, indent=2, default=str))
    return result


def _print_result(r: dict) -> None:
    d = r["dcgan"]
    lines = [
        "",
        f"galforge demo finished in {r['seconds'] / 60:.1f} min. Outputs:",
        f"  DCGAN run ({d['steps']} steps):   {d['run']}",
        f"    resolved config:         {d['config']}",
        f"    loss curves:             {d['loss_plot']}",
        f"    sample grids:            {Path(d['run']) / 'samples'} ({len(d['samples'])} grids)",
        f"    bundle:                  {d['bundle']}",
        f"  generated galaxies (FITS, {r['galaxies']['units']}, bands "
        f"{','.join(r['galaxies']['bands'])}): {r['galaxies']['dir']}",
        f"    grid:                    {r['galaxies']['grid']}",
        f"  evaluation report:         {r['evaluation']['report']}",
        f"    metrics:                 {r['evaluation']['metrics']}",
    ]
    for row in r["evaluation"]["summary"]:
        verdict = "pass" if row.get("passed") else "FAIL"
        value = row.get("value")
        value = f"{value:.4g}" if isinstance(value, (int, float)) else str(value)
        lines.append(f"      {row.get('measure', '?'):<34} {value:>10}  {verdict}")
    lines += [
        f"  Spatial GAN run ({r['sgan']['steps']} steps): {r['sgan']['run']}",
        f"  deep field {r['field']['shape']}: {r['field']['path']}",
    ]
    for key in ("fits_path", "preview_path"):
        if r["field"].get(key):
            lines.append(f"    {key.split('_')[0] + ':':<24} {r['field'][key]}")
    lines.append(f"  summary of this demo:      {Path(r['out']) / 'demo.json'}")
    typer.echo("\n".join(lines))


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        out: Path = typer.Option(Path("demo-out"), "--out", "-o", help="Folder for every output."),
        minutes: float = typer.Option(6.0, "--minutes", "-m",
                                      help="Time budget; training steps are sized to fit it."),
        seed: int = typer.Option(0, "--seed", help="Seed of every random draw."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars."),
    ) -> None:
        """Train, generate, evaluate and tile on bundled data (CPU, no network)."""
        _print_result(run_demo(out, minutes=minutes, seed=seed, progress=progress))
