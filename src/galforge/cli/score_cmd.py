"""``galforge score fit|predict|ladder``: the realism scorer of sparse galaxy fields
(:mod:`galforge.evaluation.realism`)."""

from __future__ import annotations

import io
from pathlib import Path

import typer

from galforge.config import check_ranges
from galforge.errors import ConfigError

_FEATURES = typer.Option(
    "histogram,spectrum",
    "--features",
    help="Feature sets, comma separated: histogram, spectrum, galaxies, hog_lbp, fft_row.",
)


def _fits_bytes(plane, header: dict, bands=(), units: str | None = None) -> bytes:
    from astropy.io import fits

    from galforge import fitsheader

    hdu = fits.PrimaryHDU(plane)
    fitsheader.unit_cards(hdu.header, units)
    if bands:
        hdu.header["BANDS"] = (",".join(bands), "the plane is the mean of these bands")
    fitsheader.date_cards(hdu.header)
    for key, value in header.items():
        hdu.header[key] = value
    buf = io.BytesIO()
    hdu.writeto(buf)
    return buf.getvalue()


def _source_name(meta: dict, data: str, i: int) -> str:
    """The real image's file relative to DATA (or its id, or its index)."""
    name = meta.get("file")
    if not name:
        return str(meta.get("id", i))
    try:
        name = str(Path(name).resolve().relative_to(Path(data).expanduser().resolve()))
    except (ValueError, OSError):
        name = str(name)
    return f"{name}[{meta['index']}]" if meta.get("index") else name


def _score_text(score: float) -> str:
    return f"{score:g}"


def register(app: typer.Typer) -> None:
    """Add the ``score`` command group to ``app``."""
    group = typer.Typer(
        help="Realism scorer: fit on scored images, predict scores, make a "
        "degradation ladder of scored images.",
        no_args_is_help=True,
    )
    app.add_typer(group, name="score")

    @group.command("fit")
    def fit(
        images: Path = typer.Argument(..., help="Folder of the images (FITS, PNG, npy, ...)."),
        scores: Path = typer.Option(
            ...,
            "--scores",
            help="CSV with columns file,score "
            "(optional group); names relative to IMAGES or absolute.",
        ),
        out: Path = typer.Option(..., "--out", help="Folder to write the scorer to."),
        features: str = _FEATURES,
        folds: int = typer.Option(5, "--folds", help="Cross-validation folds (K of K-fold)."),
        seed: int = typer.Option(0, "--seed", help="Seed of the folds and the trees."),
        trees: int = typer.Option(300, "--trees", help="Number of boosted trees."),
        depth: int = typer.Option(3, "--depth", help="Depth of each tree."),
        learning_rate: float = typer.Option(
            0.05, "--learning-rate", help="Shrinkage of each tree."
        ),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace a scorer in --out."),
    ) -> None:
        """Fit a realism scorer and report its cross-validated mean absolute error."""
        from galforge import outputs
        from galforge.evaluation import realism
        from galforge.fileio import check_output_path

        sets = realism.parse_feature_sets(features)
        check_ranges({"--folds": (folds, ">= 2"), "--seed": (seed, ">= 0")})
        if trees < 1 or depth < 1 or not learning_rate > 0:
            raise ConfigError("--trees and --depth must be at least 1 and --learning-rate > 0")
        if not images.exists():
            raise ConfigError(
                f"IMAGES {images}: no such folder; give the folder the CSV names are relative to"
            )
        check_output_path(out, "--out")
        # refuse a used folder before the work, not after
        outputs.check_folder(out, overwrite=overwrite, command="score fit")
        params = {"n_estimators": trees, "max_depth": depth, "learning_rate": learning_rate}
        scorer = realism.fit_files(
            images, scores, features=sets, folds=folds, seed=seed, params=params
        )
        outputs.claim_folder(out, overwrite=overwrite, command="score fit")
        scorer.save(out)
        cv = scorer.cv
        how = "grouped by the CSV's group column" if cv["grouped"] else "shuffled"
        typer.echo(
            f"cross-validated MAE {cv['mae']:.3f} ± {cv['mae_std']:.3f} ({cv['folds']}-fold, "
            f"{how}; always predicting the mean score: {cv['baseline_mae']:.3f}) on "
            f"{cv['n']} images, scores {scorer.training['score_min']:g} to "
            f"{scorer.training['score_max']:g}"
        )
        typer.echo(
            f"features {'+'.join(sets)} ({scorer.spec.n_features} values per "
            f"{scorer.spec.shape[0]}×{scorer.spec.shape[1]} image); scorer written to {out}"
        )

    @group.command("predict")
    def predict(
        images: str = typer.Argument(..., help="Folder or file of images, or a builtin: spec."),
        scorer: Path = typer.Option(
            ..., "--scorer", help="Folder written by `galforge score fit`."
        ),
        out: Path = typer.Option(..., "--out", help="CSV to write (columns file,score)."),
        overwrite: bool = typer.Option(
            False, "--overwrite", help="Replace a CSV an earlier predict wrote."
        ),
    ) -> None:
        """Predict the realism score of every image."""
        import numpy as np

        from galforge import outputs
        from galforge.evaluation import realism
        from galforge.fileio import atomic_write_text, check_output_path

        check_output_path(out, "--out")
        model = realism.RealismScorer.load(scorer)
        rows = realism.predict_files(model, images)
        outputs.claim_entry(out, overwrite=overwrite)
        atomic_write_text(out, realism.scores_csv_text(rows))
        s = np.array([r["score"] for r in rows])
        typer.echo(
            f"{len(rows)} images scored: mean {s.mean():.3f}, median {np.median(s):.3f}, "
            f"min {s.min():.3f}, max {s.max():.3f} (scorer cross-validated MAE "
            f"{model.cv.get('mae', float('nan')):.3f}); written to {out}"
        )

    @group.command("ladder")
    def ladder(
        data: str = typer.Argument(
            ..., help="Real images: folder, file, prepared set or builtin: spec."
        ),
        out: Path = typer.Option(..., "--out", help="Folder for the FITS images and scores.csv."),
        limit: int = typer.Option(None, "--limit", help="Use at most this many real images."),
        seed: int = typer.Option(0, "--seed", help="Seed of the random damage."),
        threshold: float = typer.Option(
            0.0, "--threshold", help="Set pixels with |value| <= T to 0 first."
        ),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace a ladder in --out."),
    ) -> None:
        """Degraded versions of real images with known scores (8 = real … 0), ready for
        `galforge score fit OUT --scores OUT/scores.csv`."""
        import csv

        from galforge import outputs
        from galforge.data import load_images
        from galforge.evaluation import realism
        from galforge.fileio import (
            atomic_write_bytes,
            atomic_write_json,
            atomic_write_text,
            check_output_path,
        )

        if threshold < 0:
            raise ConfigError(f"--threshold must be >= 0, got {threshold}")
        check_ranges({"--limit": (limit, ">= 1"), "--seed": (seed, ">= 0")})
        check_output_path(out, "--out")
        iset = load_images(data, **({"limit": limit} if limit is not None else {}))
        steps = realism.degradation_ladder(iset.images, seed=seed, threshold=threshold, what=data)
        first = next(steps)  # checks the data before anything is written
        outputs.claim_folder(out, overwrite=overwrite, command="score ladder")
        buf = io.StringIO()
        table = csv.writer(buf, lineterminator="\n")
        table.writerow(["file", "score", "group", "rung"])
        count = 0
        for i, rung, plane in (first, *steps):
            name = f"{i:05d}_s{_score_text(rung.score)}_{rung.name}.fits"
            source = _source_name(iset.meta[i], data, i)
            atomic_write_bytes(
                out / name,
                _fits_bytes(
                    plane,
                    {
                        "RSCORE": (float(rung.score), "realism score of this ladder rung"),
                        "RUNG": (rung.name, "degradation ladder rung"),
                        "SOURCE": (source[-40:], "real image it was made from"),
                        "LADSEED": (seed, "seed of the ladder's damage"),
                    },
                    iset.bands,
                    iset.units,
                ),
                fsync=False,
            )
            table.writerow([name, _score_text(rung.score), f"{i:05d}", rung.name])
            count += 1
        atomic_write_text(out / "scores.csv", buf.getvalue())
        atomic_write_json(
            out / "ladder.json",
            {
                "source": data,
                "n_real": len(iset),
                "seed": seed,
                "threshold": threshold,
                "rungs": [r.to_dict() for r in realism.DEFAULT_LADDER],
            },
        )
        typer.echo(
            f"{count} images ({len(iset)} real × {len(realism.DEFAULT_LADDER)} rungs, "
            f"scores {', '.join(_score_text(r.score) for r in realism.DEFAULT_LADDER)}) "
            f"written to {out}; fit with: galforge score fit {out} --scores "
            f"{out / 'scores.csv'} --out SCORER"
        )
