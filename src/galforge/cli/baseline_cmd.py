"""``galforge baseline b1|b2 --like DATA -n N --out DIR``: diamond baselines of sparse fields."""

from __future__ import annotations

from pathlib import Path

import typer

from galforge.errors import ConfigError


def register(app: typer.Typer) -> None:
    """Add the ``baseline`` command to ``app``."""

    @app.command("baseline")
    def baseline(
        kind: str = typer.Argument(
            ...,
            metavar="b1|b2",
            help="b1: normal sizes and intensities; b2: geometric, small and large galaxies apart.",
        ),
        like: str = typer.Option(
            ...,
            "--like",
            help="Sparse fields to fit (a folder, a file or "
            "builtin:sparse?...): one band, background exactly 0.",
        ),
        n: int = typer.Option(16, "-n", "--n", help="Number of images to draw."),
        out: Path = typer.Option(
            ..., "--out", help="Folder for the FITS images, baseline.json and grid.png."
        ),
        seed: int = typer.Option(0, "--seed", help="Seed: the same seed gives identical files."),
        limit: int = typer.Option(None, "--limit", help="Fit on the first N images of --like."),
        overwrite: bool = typer.Option(
            False, "--overwrite", help="Replace an earlier baseline in --out."
        ),
    ) -> None:
        """Draw N sparse fields from a baseline fitted to --like (positions uniform, diamonds)."""
        from galforge import outputs
        from galforge.data import load_images
        from galforge.fileio import check_output_path
        from galforge.generation.baselines import (
            KINDS,
            fit_baseline,
            sample_baseline,
            write_baseline,
        )

        kind = kind.lower()
        if kind not in KINDS:
            raise ConfigError(f"baseline {kind!r}: choose b1 or b2")
        if n < 1:
            raise ConfigError(f"-n {n}: the number of images must be at least 1")
        if seed < 0:
            raise ConfigError(f"--seed {seed}: the seed must be a non-negative integer")
        check_output_path(out, "--out")
        outputs.check_folder(out, overwrite=overwrite, command="baseline")
        opts = {} if limit is None else {"limit": int(limit)}
        data = load_images(like, **opts)
        if len(data.bands) != 1:
            raise ConfigError(
                f"--like {like}: {len(data.bands)} bands; the baselines fit "
                "single-band sparse fields"
            )
        fit = fit_baseline(kind, data.images, source=str(like))
        images = sample_baseline(fit, n, seed)
        outputs.claim_folder(out, overwrite=overwrite, command="baseline")
        paths = write_baseline(
            out, images, fit, seed=seed, units=data.units, band=data.bands[0], source=str(like)
        )
        typer.echo(
            f"wrote {len(paths)} {kind.upper()} baseline images of {fit.shape[0]}×"
            f"{fit.shape[1]} pixels to {out} (fit: {out / 'baseline.json'}, preview: "
            f"{out / 'grid.png'})"
        )
