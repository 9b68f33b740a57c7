"""``galforge mix``, ``galforge interpolate`` and ``galforge project``: the latent tools of
models with an intermediate latent space (capability ``intermediate``)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import typer

from galforge.errors import ConfigError


def _seeds(text: str, option: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"{option} {text!r}: give seeds as whole numbers, e.g. 1,2,3") from None
    if not seeds or any(s < 0 for s in seeds):
        raise ConfigError(f"{option} {text!r}: give non-negative seeds, e.g. 1,2,3")
    return seeds


def _load(source: str, device: str, what: str):
    from galforge.generation.sampling import load_bundle
    from galforge.models.capabilities import INTERMEDIATE, require

    bundle = load_bundle(source, device=device)
    require(bundle.generator, INTERMEDIATE, what)
    return bundle


def _tiles(images: np.ndarray, stretch, min_tile: int = 64) -> list:
    from PIL import Image

    rgb = stretch.apply(images)
    factor = max(1, -(-min_tile // max(1, min(images.shape[-2:]))))
    return [
        Image.fromarray(
            np.ascontiguousarray(t.repeat(factor, axis=0).repeat(factor, axis=1)), mode="RGB"
        )
        for t in rgb
    ]


def mixing_picture(grid, bands, units):
    """The style-mixing figure: column seeds' images along the top, row seeds' images down
    the left, each cell the row seed's w with the column seed's layers."""
    from PIL import Image, ImageDraw

    from galforge.data.display import fit_stretch

    cells = grid.images.reshape(-1, *grid.images.shape[2:])
    every = np.concatenate([grid.row_images, grid.col_images, cells])
    stretch = fit_stretch(every, bands, units)
    rows, cols = _tiles(grid.row_images, stretch), _tiles(grid.col_images, stretch)
    body = _tiles(cells, stretch)
    s, pad, bar = rows[0].width, 2, 14
    n_r, n_c = len(rows), len(cols)
    canvas = Image.new("RGB", (pad + (n_c + 1) * (s + pad), bar + pad + (n_r + 1) * (s + pad)))
    draw = ImageDraw.Draw(canvas)
    layers = ",".join(str(v) for v in grid.styles)
    draw.text((4, 2), f"layers {layers} from the column seed", fill=(255, 255, 255))
    for c, tile in enumerate(cols):
        x = pad + (c + 1) * (s + pad)
        canvas.paste(tile, (x, bar + pad))
        draw.text((x + 2, bar + pad + 2), str(grid.cols[c]), fill=(255, 255, 0))
    for r, tile in enumerate(rows):
        y = bar + pad + (r + 1) * (s + pad)
        canvas.paste(tile, (pad, y))
        draw.text((pad + 2, y + 2), str(grid.rows[r]), fill=(255, 255, 0))
        for c in range(n_c):
            canvas.paste(body[r * n_c + c], (pad + (c + 1) * (s + pad), y))
    return canvas


def _save_png(path: Path, picture) -> Path:
    from galforge.data.display import preview_png_info
    from galforge.fileio import atomic_write_bytes

    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", pnginfo=preview_png_info("grid"))
    return atomic_write_bytes(path, buffer.getvalue())


def _fits(bundle, path: Path, image, seed: int, index: int, extra: dict) -> Path:
    from galforge.generation.writers import write_fits

    return write_fits(
        path,
        image,
        bands=bundle.bands,
        units=bundle.units,
        seed=seed,
        index=index,
        bundle_id=bundle.bundle_id,
        family=bundle.family,
        date=bundle.created or None,
        extra=extra,
        pixel_scale=bundle.pixel_scale,
        zeropoint=bundle.zeropoint,
    )


def register(app: typer.Typer) -> None:
    """Add ``mix``, ``interpolate`` and ``project`` to ``app``."""

    @app.command("mix")
    def mix(
        source: str = typer.Argument(..., metavar="RUN_OR_BUNDLE", help="A run or bundle folder."),
        rows: str = typer.Option(..., "--rows", help="Row seeds (base w), e.g. 1,2,3."),
        cols: str = typer.Option(..., "--cols", help="Column seeds (their w replaces --styles)."),
        styles: str = typer.Option(
            "0-3",
            "--styles",
            help="Layers taken from the column seed, e.g. 0-3 (coarse) or 8-13 (fine).",
        ),
        out: Path = typer.Option(..., "--out", help="Folder for the FITS cells and grid.png."),
        truncation: float = typer.Option(None, "--truncation", help="Truncation psi in w."),
        noise_mode: str = typer.Option(
            None, "--noise-mode", help="random (default: each row seed's own maps), const or none."
        ),
        device: str = typer.Option(
            "auto",
            "--device",
            help="auto (CUDA, then Apple MPS, then CPU), cpu, cuda, cuda:N or mps.",
        ),
        overwrite: bool = typer.Option(
            False, "--overwrite", help="Replace an earlier mix in --out."
        ),
    ) -> None:
        """Style-mixing grid: one FITS per cell (and per row/column seed) plus grid.png."""
        from galforge import outputs
        from galforge.fileio import check_output_path
        from galforge.projection import style_mix

        row_seeds, col_seeds = _seeds(rows, "--rows"), _seeds(cols, "--cols")
        check_output_path(out, "--out")
        bundle = _load(source, device, "galforge mix")
        grid = style_mix(
            bundle, row_seeds, col_seeds, styles, truncation=truncation, noise_mode=noise_mode
        )
        outputs.claim_folder(out, overwrite=overwrite, command="mix")
        layers = ",".join(str(v) for v in grid.styles)
        for r, rs in enumerate(row_seeds):
            _fits(bundle, out / f"row_{r:03d}.fits", grid.row_images[r], rs, 0, {})
            for c, cs in enumerate(col_seeds):
                _fits(
                    bundle,
                    out / f"mix_r{r:03d}_c{c:03d}.fits",
                    grid.images[r, c],
                    rs,
                    0,
                    {
                        "COLSEED": (cs, "seed of the column (replaced layers)"),
                        "STYLES": (layers, "layers of w taken from COLSEED"),
                    },
                )
        for c, cs in enumerate(col_seeds):
            _fits(bundle, out / f"col_{c:03d}.fits", grid.col_images[c], cs, 0, {})
        png = _save_png(out / "grid.png", mixing_picture(grid, bundle.bands, bundle.units))
        typer.echo(
            f"wrote a {len(row_seeds)}×{len(col_seeds)} style-mixing grid (layers "
            f"{layers}) to {out}\n  grid:  {png}"
        )

    @app.command("interpolate")
    def interpolate(
        source: str = typer.Argument(..., metavar="RUN_OR_BUNDLE", help="A run or bundle folder."),
        seeds: str = typer.Option(..., "--seeds", help="Seeds to pass through, e.g. 42,1234."),
        frames: int = typer.Option(200, "--frames", help="Frames in all (ends included)."),
        space: str = typer.Option("z", "--space", help="z (slerp) or w (lerp)."),
        out: Path = typer.Option(
            ...,
            "--out",
            help="anim.gif (animated) or strip.png; the "
            "FITS frames go to the folder beside it (anim_frames/).",
        ),
        truncation: float = typer.Option(None, "--truncation", help="Truncation psi in w."),
        noise_mode: str = typer.Option(
            None,
            "--noise-mode",
            help="random (default: the seeds' maps blended along the path), const or none.",
        ),
        fps: float = typer.Option(25.0, "--fps", help="GIF frames per second."),
        device: str = typer.Option(
            "auto",
            "--device",
            help="auto (CUDA, then Apple MPS, then CPU), cpu, cuda, cuda:N or mps.",
        ),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace earlier frames."),
    ) -> None:
        """Frames between seeds as FITS plus an animated GIF (or a PNG strip)."""
        from PIL import Image

        from galforge import outputs
        from galforge.data.display import fit_stretch
        from galforge.fileio import atomic_write_bytes, check_output_path
        from galforge.projection import interpolation

        suffix = out.suffix.lower()
        if suffix not in (".gif", ".png"):
            raise ConfigError(f"--out {out}: end it in .gif (animation) or .png (strip)")
        if not fps > 0:
            raise ConfigError(f"--fps {fps}: must be > 0")
        seed_list = _seeds(seeds, "--seeds")
        check_output_path(out, "--out")
        bundle = _load(source, device, "galforge interpolate")
        _, images = interpolation(
            bundle, seed_list, frames, space=space, truncation=truncation, noise_mode=noise_mode
        )
        folder = out.with_name(out.stem + "_frames")
        outputs.claim_entry(out, overwrite=overwrite)
        outputs.claim_folder(folder, overwrite=overwrite, command="interpolate")
        for k, image in enumerate(images):
            _fits(
                bundle,
                folder / f"frame_{k:05d}.fits",
                image,
                seed_list[0],
                k,
                {
                    "SEEDS": (",".join(map(str, seed_list)), "seeds of the path"),
                    "SPACE": (space, "interpolation space (z slerp, w lerp)"),
                },
            )
        tiles = _tiles(images, fit_stretch(images, bundle.bands, bundle.units))
        buffer = io.BytesIO()
        if suffix == ".gif":
            tiles[0].save(
                buffer,
                format="GIF",
                save_all=True,
                append_images=tiles[1:],
                duration=max(1, round(1000 / fps)),
                loop=0,
            )
            atomic_write_bytes(out, buffer.getvalue())
        else:
            s = tiles[0].width
            strip = Image.new("RGB", (len(tiles) * (s + 2) + 2, s + 4))
            for k, t in enumerate(tiles):
                strip.paste(t, (2 + k * (s + 2), 2))
            _save_png(out, strip)
        typer.echo(f"wrote {len(images)} frames ({space} space) to {folder}\n  {suffix[1:]}: {out}")

    @app.command("project")
    def project(
        source: str = typer.Argument(..., metavar="RUN_OR_BUNDLE", help="A run or bundle folder."),
        target: str = typer.Argument(
            ...,
            metavar="TARGET",
            help="A galaxy image (FITS or any input galforge reads; the first image is used).",
        ),
        steps: int = typer.Option(1000, "--steps", help="Optimisation steps."),
        out: Path = typer.Option(..., "--out", help="Folder for the projection's files."),
        wplus: bool = typer.Option(False, "--wplus", help="Optimise one w per layer (w+)."),
        noise: bool = typer.Option(False, "--noise", help="Optimise the noise maps too."),
        noise_mode: str = typer.Option(
            None,
            "--noise-mode",
            help="Noise maps used (and the start of --noise): random (of --seed), const or none.",
        ),
        lr: float = typer.Option(0.1, "--lr", help="Adam learning rate on w."),
        feature_weight: float = typer.Option(
            1.0, "--feature-weight", help="Weight of the galaxy-encoder feature distance."
        ),
        seed: int = typer.Option(0, "--seed", help="Seed of every random draw."),
        device: str = typer.Option(
            "auto",
            "--device",
            help="auto (CUDA, then Apple MPS, then CPU), cpu, cuda, cuda:N or mps.",
        ),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier projection."),
    ) -> None:
        """Find the w whose image best matches TARGET (χ² in physical units + encoder features)."""
        from galforge import outputs
        from galforge.fileio import check_output_path
        from galforge.projection import project, write_projection

        if steps < 1:
            raise ConfigError(f"--steps {steps}: must be at least 1")
        if not lr > 0 or not feature_weight >= 0:
            raise ConfigError("--lr must be > 0 and --feature-weight >= 0")
        check_output_path(out, "--out")
        bundle = _load(source, device, "galforge project")
        outputs.claim_folder(out, overwrite=overwrite, command="project")
        result = project(
            bundle,
            target,
            steps=steps,
            wplus=wplus,
            noise=noise,
            noise_mode=noise_mode,
            seed=seed,
            lr=lr,
            feature_weight=feature_weight,
            progress=None if progress else False,
        )
        paths = write_projection(result, bundle, out)
        typer.echo(
            f"projected {target} in {steps} steps: chi2/pixel {result.chi2_per_pixel:.4g}, "
            f"rmse {result.rmse:.4g} {bundle.units}\n  files: {out} "
            f"({', '.join(p.name for p in paths.values())})"
        )
