"""``galforge train``: train a model on galaxy images and export its bundle."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer

from galforge import interrupt
from galforge.errors import ConfigError, DiskFullError, Interrupted
from galforge.fileio import check_output_path

# the command-line flag of a config key, where there is one (named in messages)
FLAG_KEYS = {
    "--model": "model.name",
    "--batch": "train.batch",
    "--seed": "train.seed",
    "--init": "train.init",
    "--band-map": "train.band_map",
    "--stage1": "model.stage1",
    "--freeze-g": "train.freeze_g",
    "--freeze-d": "train.freeze_d",
}

# keys a resumed run may change; everything else must match the run's saved config
RESUME_MUTABLE = (
    "train.steps",
    "train.epochs",
    "train.device",
    "train.amp",
    "train.amp_dtype",
    "train.progress",
    "train.log_every",
    "train.sample_every",
    "train.checkpoint_every",
    "train.snapshot_every",
    "train.threads",
    "output.",
    "data.source",
    "data.options.",
    "train.metric_every",
    "train.metric_n",
    "train.keep_best",
)

METRICS = ("fgd", "kid")


def resolve_train_config(
    data: str | None = None,
    *,
    model: str | None = None,
    out: str | None = None,
    steps: int | None = None,
    epochs: int | None = None,
    batch: int | None = None,
    seed: int | None = None,
    resume: bool = False,
    config: str | Path | None = None,
    device: str | None = None,
    amp: bool | None = None,
    sets: list[str] | None = None,
    init: str | None = None,
    band_map: str | None = None,
    stage1: str | None = None,
    freeze_g: int | None = None,
    freeze_d: int | None = None,
    metric_every: int | None = None,
    metric_n: int | None = None,
    keep_best: str | None = None,
    psf: str | None = None,
    condition_columns: str | None = None,
):
    """Resolve the :class:`galforge.config.RunConfig` of ``galforge train`` from its options.

    Order: defaults < ``config`` YAML < flags < ``--set``.  With ``resume`` the run's saved
    ``config.yaml`` replaces the defaults and only the run length, device and output
    cadence may change.
    """
    from galforge.config import changed_keys, load_yaml, resolve_config
    from galforge.training.recipes import model_configs, model_defaults

    if steps is not None and epochs is not None:
        raise ConfigError("--steps and --epochs both given: use one of them")
    flags = {
        "data.source": data,
        "model.name": model,
        "output.out": out,
        "train.batch": batch,
        "train.seed": seed,
        "train.device": device,
        "train.amp": amp,
        "train.steps": steps,
        "train.epochs": epochs,
        "train.init": init,
        "train.band_map": band_map,
        "model.stage1": stage1,
        "train.freeze_g": freeze_g,
        "train.freeze_d": freeze_d,
        "train.metric_every": metric_every,
        "train.metric_n": metric_n,
        "train.keep_best": keep_best,
        "model.psf": psf,
        "model.conditions": None
        if condition_columns is None
        else [c.strip() for c in str(condition_columns).split(",") if c.strip()],
    }
    defaults = model_defaults()
    if stage1 is not None and model is not None and "stage1" not in defaults.get(model, {}):
        takers = sorted(name for name, d in defaults.items() if "stage1" in d)
        raise ConfigError(
            f"--stage1: --model {model} is not chained after a stage-I model; "
            f"--stage1 is for {', '.join(takers) or 'chained models'}"
        )
    base = None
    saved_path = Path(out) / "config.yaml" if out else None
    if resume and saved_path is not None and saved_path.is_file():
        base = load_yaml(saved_path)
    configs = model_configs()
    cfg = resolve_config(
        base=base,
        yaml_file=config,
        flags=flags,
        sets=sets,
        model_defaults=defaults,
        model_configs=configs,
    )
    # a length given on the command line replaces the other kind of length
    t = cfg.train
    set_keys = {s.split("=", 1)[0].strip() for s in (sets or [])}
    if steps is not None and "train.epochs" not in set_keys:
        t.epochs = None
    if epochs is not None and "train.steps" not in set_keys:
        t.steps = None
    if t.steps is not None and t.epochs is not None:
        raise ConfigError(
            "both train.steps and train.epochs are set: keep one (--steps N or --epochs E)"
        )
    if base is not None:
        saved = resolve_config(base=base, model_defaults=defaults, model_configs=configs).to_dict()
        frozen = [
            k
            for k in changed_keys(saved, cfg.to_dict())
            if not any(k == m or (m.endswith(".") and k.startswith(m)) for m in RESUME_MUTABLE)
        ]
        if frozen:
            now = cfg.to_dict()

            def show(key: str) -> str:
                sec, _, name = key.partition(".")
                was = saved.get(sec, {}).get(name) if isinstance(saved.get(sec), dict) else None
                new = now.get(sec, {}).get(name) if isinstance(now.get(sec), dict) else None
                flag = {v: k for k, v in FLAG_KEYS.items()}.get(key)
                named = f"{flag} ({key})" if flag else key
                return f"{named} {was!r} -> {new!r}"

            raise ConfigError(
                f"--resume cannot change {', '.join(show(k) for k in frozen)} of the run in "
                f"{out}: resume with the run's settings, or start a new run with another --out"
            )
    return cfg


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train(
        data: str = typer.Argument(
            ...,
            help="Training images: folder, file, prepared data set "
            "or builtin: spec (e.g. 'builtin:galsim?n=500&size=64').",
        ),
        model: str = typer.Option(None, "--model", "-m", help="Model: dcgan64, dcgan128, ..."),
        out: str = typer.Option(None, "--out", "-o", help="Run folder to write."),
        steps: int = typer.Option(None, "--steps", help="Total training steps."),
        epochs: int = typer.Option(None, "--epochs", help="Total epochs (instead of --steps)."),
        batch: int = typer.Option(None, "--batch", help="Batch size."),
        seed: int = typer.Option(None, "--seed", help="Seed of every random draw."),
        resume: bool = typer.Option(
            False, "--resume", help="Continue the run in --out up to the new total."
        ),
        overwrite: bool = typer.Option(
            False,
            "--overwrite",
            help="Start again in --out, replacing the files an earlier run recorded writing there.",
        ),
        config: Path = typer.Option(None, "--config", help="YAML config file."),
        dry_run: bool = typer.Option(
            False, "--dry-run", help="Print the resolved config and exit."
        ),
        device: str = typer.Option(None, "--device", help="auto, cpu or cuda."),
        amp: bool = typer.Option(None, "--amp/--no-amp", help="Mixed precision (CUDA only)."),
        set_: list[str] = typer.Option(
            None, "--set", help="Override any config value: dotted.key=value (repeatable)."
        ),
        init: str = typer.Option(
            None,
            "--init",
            help="Start from this run, bundle or "
            "pretrained:NAME (fine-tuning; same model options).",
        ),
        band_map: str = typer.Option(
            None,
            "--band-map",
            help="With --init: map the data's bands onto the model's, e.g. R=i,G=r,B=g.",
        ),
        stage1: str = typer.Option(
            None,
            "--stage1",
            help="--model stackgan2: the stage-I "
            "dcgan64 run, bundle or pretrained:NAME it chains after.",
        ),
        freeze_g: int = typer.Option(
            None,
            "--freeze-g",
            help="Keep the first N synthesis layers of G fixed (coarse first; fine-tuning).",
        ),
        freeze_d: int = typer.Option(
            None,
            "--freeze-d",
            help="Keep the first M blocks of D fixed (from the highest resolution).",
        ),
        metric_every: int = typer.Option(
            None,
            "--metric-every",
            help="Fréchet galaxy distance and KID every K steps (log, loss.png).",
        ),
        metric_n: int = typer.Option(
            None, "--metric-n", help="Images per set for --metric-every (default 256)."
        ),
        keep_best: str = typer.Option(
            None,
            "--keep-best",
            help="fgd or kid: the metric whose best value keeps checkpoints/best (default fgd).",
        ),
        psf: str = typer.Option(
            None,
            "--psf",
            help="The data's PSF: train a forward model "
            "(G draws the galaxy before it). moffat:fwhm=0.7[,beta=3.5], "
            "gaussian:fwhm=ARCSEC, a FITS image, or auto (what the data "
            "say, e.g. builtin:galsim).",
        ),
        condition_columns: str = typer.Option(
            None,
            "--condition-columns",
            help="Condition G and D on these catalogue columns, e.g. flux,hlr.",
        ),
    ) -> None:
        """Train a GAN on galaxy images; writes checkpoints, samples, logs and a bundle."""
        cfg = resolve_train_config(
            data,
            model=model,
            out=out,
            steps=steps,
            epochs=epochs,
            batch=batch,
            seed=seed,
            resume=resume,
            config=config,
            device=device,
            amp=amp,
            sets=set_ or [],
            init=init,
            band_map=band_map,
            stage1=stage1,
            freeze_g=freeze_g,
            freeze_d=freeze_d,
            metric_every=metric_every,
            metric_n=metric_n,
            keep_best=keep_best,
            psf=psf,
            condition_columns=condition_columns,
        )
        if dry_run:
            typer.echo(cfg.to_yaml().rstrip())
            return
        check_output_path(cfg.output.out, "--out")
        if resume and overwrite:
            raise ConfigError(
                "--resume and --overwrite both given: continue the run, or start it again, not both"
            )
        if not resume:  # refused before the data are read (galforge.outputs)
            from galforge import outputs

            earlier = (Path(cfg.output.out) / "run.json").is_file()
            outputs.check_folder(
                cfg.output.out,
                overwrite=overwrite,
                command="train",
                holds="an earlier run; pass --resume to continue it" if earlier else "",
            )
        from galforge.training.from_config import train_from_config

        again = (
            f"galforge train {shlex.quote(str(cfg.data.source))} --out "
            f"{shlex.quote(str(cfg.output.out))} --resume"
        )
        with interrupt.stop_requests("training", "step"):
            try:
                t = cfg.train
                hooks = []
                if t.metric_every:  # Fréchet galaxy distance and KID, from one computation
                    from galforge.evaluation.metrics import galaxy_distances
                    from galforge.training.metrics import sample_metric_hooks

                    hooks = sample_metric_hooks(
                        galaxy_distances, METRICS, t.metric_every, t.metric_n, t.keep_best
                    )
                summary = train_from_config(cfg, resume=resume, metrics=hooks, overwrite=overwrite)
            except Interrupted as exc:
                raise Interrupted(
                    f"{exc}; continue with `{again}`",
                    signum=exc.signum,
                    step=exc.step,
                    checkpoint=exc.checkpoint,
                ) from None
            except DiskFullError as exc:
                raise exc.with_hint(f"resume with `{again}`") from None
            signum = interrupt.requested()
        if not summary.get("is_main", True):
            return  # data-parallel run: rank 0 reports
        run = Path(summary["run_dir"])
        lines = [
            f"trained {cfg.model.name} to step {summary['step']} (epoch {summary['epoch']}) on "
            f"{summary['n_images']} images {tuple(summary['image_shape'])} "
            f"[{', '.join(summary['bands'])}] in {summary['units']}",
            f"  run folder:     {run}",
            f"  config:         {summary['config']}",
            f"  checkpoint:     {summary['checkpoint']}",
            *(
                [f"  generator:      {summary['generator']}"]
                if list(summary.get("parts") or ["generator"]) == ["generator"]
                else [f"  {name + ':':<15} {path}" for name, path in summary["parts"].items()]
            ),
            f"  log:            {summary['log']}",
        ]
        if Path(summary["loss_plot"]).is_file():
            lines.append(f"  loss curves:    {summary['loss_plot']}")
        if summary["samples"]:
            lines.append(f"  sample grids:   {run / 'samples'} (last: {summary['samples'][-1]})")
        if summary["bundle"]:
            lines.append(f"  bundle:         {summary['bundle']}")
        elif summary.get("export_note"):
            lines.append(f"  {summary['export_note']}")
        typer.echo("\n".join(lines))
        if signum is not None:
            raise Interrupted(
                f"interrupted after the last step ({summary['step']}): the run "
                f"in {run} is complete",
                signum=signum,
                step=summary["step"],
            )
