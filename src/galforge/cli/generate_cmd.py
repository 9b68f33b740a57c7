"""``galforge generate`` and ``galforge export``: galaxies from a trained bundle or run."""

from __future__ import annotations

from pathlib import Path

import typer

from galforge.errors import ConfigError
from galforge.fileio import check_output_path


def _check_space(out: Path, n: int, image_shape, fmt: str) -> int:
    """Refuse (ConfigError) ``n`` galaxies whose files would not fit on the disk of ``out``."""
    import math
    import shutil

    from galforge.generation.fieldio import FITS_BLOCK, _existing_folder, human_bytes

    pixels = math.prod(int(s) for s in image_shape)
    if fmt == "png":
        one = pixels + 4096  # 8-bit view, at most
    elif fmt == "npy":
        one = pixels * 4
    else:  # FITS: header + padded data
        one = -(-pixels * 4 // FITS_BLOCK) * FITS_BLOCK + 2 * FITS_BLOCK
    need = int(n) * one
    folder = _existing_folder(Path(out))
    free = shutil.disk_usage(folder).free
    if need > free:
        shape = "x".join(str(int(s)) for s in image_shape)
        raise ConfigError(
            f"-n {n}: {n} galaxies of {shape} as {fmt.upper()} need about {human_bytes(need)} "
            f"but {folder} has {human_bytes(free)} free; lower -n or choose another --out"
        )
    return need


def register(app: typer.Typer) -> None:
    """Add the ``generate`` and ``export`` commands to ``app``."""

    @app.command("generate")
    def generate(
        source: str = typer.Argument(
            ...,
            metavar="RUN_OR_BUNDLE",
            help="A run folder (galforge train --out) or a bundle folder.",
        ),
        n: int = typer.Option(16, "-n", "--n", help="Number of galaxies to generate."),
        seed: int = typer.Option(
            0, "--seed", help="Seed: the same seed and bundle give identical files."
        ),
        out: Path = typer.Option(..., "--out", help="Folder for the generated files."),
        fmt: str = typer.Option(
            "fits",
            "--format",
            help="fits (one FITS per galaxy, physical units), fits-cube "
            "(all in one N×C×H×W FITS with a table of galaxies), png (8-bit view) or npy.",
        ),
        batch: int = typer.Option(64, "--batch", help="Galaxies generated per forward pass."),
        truncation: float = typer.Option(
            None,
            "--truncation",
            help="Truncation psi: pull latents toward the mean (1 = none); "
            "in w toward w_avg for models with an intermediate latent space.",
        ),
        truncation_cutoff: int = typer.Option(
            None,
            "--truncation-cutoff",
            help="Truncate only the first L layers of w (intermediate-latent models).",
        ),
        noise_mode: str = typer.Option(
            None,
            "--noise-mode",
            help="Models with noise inputs: random (default: maps drawn "
            "per galaxy from its seed), const (the maps stored with the weights) or none.",
        ),
        condition: list[str] = typer.Option(
            None,
            "--condition",
            help="Condition of a conditional generator, NAME=VALUE "
            "(repeatable; the same for every galaxy).",
        ),
        conditions_table: Path = typer.Option(
            None,
            "--conditions",
            help="Conditional generators: a CSV table with a header "
            "naming the conditions, one galaxy per row (sets -n). Without conditions they are "
            "drawn from the training catalogue.",
        ),
        psf: str = typer.Option(
            None,
            "--psf",
            help="Observe the galaxies (drawn before the PSF: models trained with "
            "--psf) through this PSF: moffat:fwhm=0.9[,beta=3.5], gaussian:fwhm=ARCSEC or a "
            "FITS image; writes catalog.csv beside the FITS.",
        ),
        pixel_scale: float = typer.Option(
            None,
            "--pixel-scale",
            help="With --psf: the new pixel scale (arcsec; default the "
            "model's); the stamps keep their size.",
        ),
        noise: str = typer.Option(
            None,
            "--noise",
            help="With --psf: sigma=VALUE, a fixed per-pixel noise σ; default "
            "each galaxy keeps its S/N in the training population (--noise-mode none: none).",
        ),
        stage: int = typer.Option(
            None,
            "--stage",
            help="Chained models: write the images of this stage (1: the "
            "64 px stage-I intermediate of a stackgan2 model); default: the last.",
        ),
        device: str = typer.Option(
            "auto",
            "--device",
            help="auto (CUDA, then Apple MPS, then CPU), cpu, cuda, cuda:N or mps.",
        ),
        progress: bool = typer.Option(
            True, "--progress/--no-progress", help="Show a progress bar."
        ),
        overwrite: bool = typer.Option(
            False, "--overwrite", help="Replace the galaxies an earlier generate wrote to --out."
        ),
    ) -> None:
        """Generate N galaxies (FITS by default) plus a grid.png preview into --out."""
        from galforge.generation.sampling import load_bundle
        from galforge.generation.writers import FORMATS, write_samples

        if fmt.lower() not in FORMATS:
            raise ConfigError(f"--format {fmt!r}: unknown format; use one of {', '.join(FORMATS)}")
        if n < 1:
            raise ConfigError(f"-n {n}: the number of galaxies must be at least 1")
        if batch < 1:
            raise ConfigError(f"--batch {batch}: the batch size must be at least 1")
        if seed < 0:
            raise ConfigError(f"--seed {seed}: the seed must be a non-negative integer")
        if truncation is not None and not truncation >= 0:
            raise ConfigError(f"--truncation {truncation}: must be a number >= 0 (1 = none)")
        conditions = None
        if condition:
            conditions = {}
            for item in condition:
                name, sep, value = item.partition("=")
                try:
                    conditions[name.strip()] = float(value)
                except ValueError:
                    sep = ""
                if not sep or not name.strip():
                    raise ConfigError(f"--condition {item!r}: write NAME=VALUE, e.g. mag=19.5")
        check_output_path(out, "--out")
        bundle = load_bundle(source, device=device)
        if truncation_cutoff is not None:
            from galforge.models.capabilities import INTERMEDIATE, require

            require(bundle.generator, INTERMEDIATE, "--truncation-cutoff")
        if stage is not None:
            bundle = bundle.stage(stage)
        from galforge.generation import observe

        if conditions_table is not None:
            if conditions is not None:
                raise ConfigError("--condition and --conditions both given: use one of them")
            conditions = observe.read_condition_table(conditions_table, bundle.condition_names)
            n = len(conditions)
        elif conditions is None:
            conditions = observe.draw_conditions(bundle, n, seed)  # the training catalogue's
        if psf is not None or pixel_scale is not None or noise is not None:
            from galforge.models.capabilities import PREPSF, require

            require(
                bundle.generator,
                PREPSF,
                "--psf (observing the galaxies through another PSF; train with --psf)",
            )
            if fmt.lower() != "fits":
                raise ConfigError(f"--format {fmt}: --psf writes FITS (one per galaxy)")
            _check_space(out, n, bundle.image_shape, "fits")
            result = observe.write_observed(
                bundle,
                out,
                n,
                seed,
                psf=psf or bundle.generator.psf_info()["psf"],
                pixel_scale=pixel_scale,
                noise=observe.parse_noise(noise, noise_mode),
                conditions=conditions,
                batch=batch,
                overwrite=overwrite,
            )
            typer.echo(result.summary())
            return
        _check_space(out, n, bundle.image_shape, fmt.lower())
        result = write_samples(
            bundle,
            out,
            n,
            seed,
            fmt=fmt,
            batch=batch,
            truncation=truncation,
            progress=None if progress else False,
            overwrite=overwrite,
            conditions=conditions,
            truncation_cutoff=truncation_cutoff,
            noise_mode=noise_mode,
        )
        typer.echo(result.summary())

    @app.command("export")
    def export(
        run: Path = typer.Argument(
            ..., metavar="RUN", help="A run folder written by galforge train."
        ),
        step: int | None = typer.Option(
            None,
            "--step",
            min=0,
            help="Export the kept snapshot of this step (checkpoints/step-XXXXXXXX) instead of "
            "the present weights; default folder RUN/bundle-step-XXXXXXXX.",
        ),
        out: Path | None = typer.Option(
            None, "--out", "-o", help="Bundle folder to write (default RUN/bundle)."
        ),
        overwrite: bool = typer.Option(
            False, "--overwrite", help="Replace a bundle an earlier export wrote to --out."
        ),
    ) -> None:
        """Export RUN/bundle (bundle.json + one safetensors file per part); print its path."""
        from galforge.runfolder import RunFolder

        if out is not None:
            check_output_path(out, "--out")
        typer.echo(str(RunFolder(run).export(out, step=step, overwrite=overwrite)))
