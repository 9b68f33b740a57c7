"""``galforge field``: a seamless deep field of any size from a run or bundle whose generator
has the ``windowed`` capability (e.g. the Spatial GAN)."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer

from galforge import interrupt
from galforge.errors import ConfigError, Interrupted
from galforge.fileio import check_output_path


def register(app: typer.Typer) -> None:
    """Add the ``field`` command to ``app``."""

    @app.command("field")
    def field(
        source: str = typer.Argument(
            ...,
            metavar="RUN_OR_BUNDLE",
            help="A run or bundle folder (or pretrained:NAME) of a windowed generator, e.g. sgan.",
        ),
        size: str = typer.Option(..., "--size", help="Field size HxW in pixels, e.g. 8192x8192."),
        out: Path = typer.Option(..., "--out", help="Output: a .zarr folder, .fits or .npy file."),
        tile: int = typer.Option(
            1024,
            "--tile",
            help="Tile side in pixels (a multiple of the generator's upscale, 16 for sgan).",
        ),
        seed: int = typer.Option(0, "--seed", help="Latent seed: same seed, same field."),
        fmt: str = typer.Option(
            None, "--format", help="zarr (default), fits or npy; guessed from --out's suffix."
        ),
        ensemble: int = typer.Option(
            None, "--ensemble", help="Self-ensemble of the last K kept snapshots (per tile)."
        ),
        realisations: int = typer.Option(
            None, "--realisations", help="Write R fields, one per each of the last R snapshots."
        ),
        workers: int = typer.Option(1, "--workers", help="Tiles generated at once (local Dask)."),
        processes: bool = typer.Option(
            False, "--processes/--threads", help="Local workers as processes or threads."
        ),
        scheduler: str = typer.Option(
            None, "--scheduler", help="Address of a dask.distributed scheduler (tcp://host:8786)."
        ),
        resume: bool = typer.Option(False, "--resume", help="Finish an interrupted field."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
        fits: Path = typer.Option(
            None, "--fits", help="Also write the final FITS cube here (zarr/npy outputs)."
        ),
        preview: Path = typer.Option(None, "--preview", help="Write an RGB preview PNG here."),
        fits_compression: str = typer.Option(
            "none",
            "--fits-compression",
            help="Tile-compress the FITS field once it is "
            "complete: none, gzip2 (GZIP_2, lossless for float pixels) or rice (RICE_1 of "
            "pixels quantised to 1/16 of each tile's noise: lossy below the noise, ~3x "
            "smaller).",
        ),
        zarr_format: int = typer.Option(
            3,
            "--zarr-format",
            help="zarr specification of a zarr field: 3 (zarr-python 3; dimension names in "
            "its metadata) or 2 (readable by zarr-python 2; names in _ARRAY_DIMENSIONS).",
        ),
        compile_: str = typer.Option(
            "auto", "--compile", help="torch.compile the tile function: auto, on or off."
        ),
        threads: int = typer.Option(
            None,
            "--threads-per-tile",
            help="torch threads per tile, the same on every worker "
            "(default: this machine's count); fixing it keeps fields bit-identical.",
        ),
        no_space_check: bool = typer.Option(
            False,
            "--no-space-check",
            help="Write the field even when the free disk space looks too small for it.",
        ),
        device: str = typer.Option(
            "auto",
            "--device",
            help="auto (CUDA, then Apple MPS, then CPU), cpu, cuda, cuda:N or mps.",
        ),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar."),
    ) -> None:
        """Generate a deep field tile by tile, streamed to disk (bounded memory, resumable)."""
        from galforge.generation.field import field_from_bundle, parse_size
        from galforge.generation.fieldio import FITS_COMPRESSIONS, compress_fits

        parse_size(size)
        if fits_compression.lower() not in FITS_COMPRESSIONS:
            raise ConfigError(
                f"--fits-compression {fits_compression!r}: use one of "
                f"{', '.join(FITS_COMPRESSIONS)}"
            )
        for option, path in (("--out", out), ("--fits", fits), ("--preview", preview)):
            if path is not None:
                check_output_path(path, option)
        modes = {"auto": "auto", "on": True, "off": False}
        if compile_ not in modes:
            raise ConfigError(f"--compile {compile_!r}: use auto, on or off")
        for name, value in (
            ("--ensemble", ensemble),
            ("--realisations", realisations),
            ("--threads-per-tile", threads),
        ):
            if value is not None and value < 1:
                raise ConfigError(f"{name} {value}: give at least 1")
        again = [
            "galforge",
            "field",
            source,
            "--size",
            size,
            "--out",
            str(out),
            "--tile",
            str(tile),
            "--seed",
            str(seed),
        ]
        for name, value in (
            ("--format", fmt),
            ("--ensemble", ensemble),
            ("--realisations", realisations),
            ("--fits", fits),
            ("--preview", preview),
            ("--threads-per-tile", threads),
        ):
            if value is not None:
                again += [name, str(value)]
        with interrupt.stop_requests("the field", "tile"):
            try:
                results = field_from_bundle(
                    source,
                    out,
                    size,
                    ensemble=ensemble,
                    realisations=realisations,
                    device=device,
                    tile=tile,
                    seed=seed,
                    fmt=fmt,
                    workers=workers,
                    processes=processes,
                    scheduler=scheduler,
                    resume=resume,
                    overwrite=overwrite,
                    compile=modes[compile_],
                    progress=progress,
                    fits_out=fits,
                    preview=preview,
                    threads=threads,
                    space_check=not no_space_check,
                    zarr_format=zarr_format,
                )
            except Interrupted as exc:
                command = shlex.join([*again, "--resume"])
                raise Interrupted(f"{exc}; continue with `{command}`", signum=exc.signum) from None
        for r in results:
            direct = Path(r.path).suffix.lower() in (".fits", ".fit")
            for path in (r.fits_path, r.path if direct else None):
                if path is not None and fits_compression.lower() != "none":
                    compress_fits(path, fits_compression)
            c, h, w = r.shape
            line = (
                f"{r.path}: {c}x{h}x{w}, {r.tiles_total} tiles "
                f"({r.tiles_done} already done), {r.seconds:.1f} s"
            )
            if r.tiles_pixels:
                line += f", {r.mpix_per_s:.3f} Mpix/s"
            if r.fits_path:
                line += f"; FITS {r.fits_path}"
            if r.preview_path:
                line += f"; preview {r.preview_path}"
            if getattr(r, "truth_path", None):
                line += f"; truth catalogue {r.truth_path} ({r.truth_rows} sources)"
            typer.echo(line)
