"""galforge: generative adversarial networks for galaxy images and deep fields.

The public API, the functions the command line calls:

* :func:`load` — a trained generator (bundle, run folder or ``pretrained:NAME``);
* :func:`generate` — galaxies from it written as FITS/PNG/NumPy files (``galforge generate``);
* :func:`field` — a seamless deep field of any size, tile by tile (``galforge field``);
* :func:`evaluate` — physical validation of generated against real galaxies
  (``galforge evaluate``);
* :mod:`pretrained` — the shipped models: ``galforge.pretrained.names()``, ``.card(name)``,
  ``.cards()``; load one with ``galforge.load("pretrained:NAME")``.

Importing ``galforge`` imports none of torch, numpy or the rest: each function imports what
it needs when called.
"""

from __future__ import annotations

__version__ = "0.1.0"

from galforge.errors import GalforgeError  # noqa: E402

#: ``typing.TYPE_CHECKING`` without importing typing (tens of ms): type checkers read the
#: block below, the interpreter skips it
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from os import PathLike
    from types import ModuleType
    from typing import Any

    from galforge.data.imageset import ImageSet
    from galforge.generation.field import FieldResult
    from galforge.generation.sampling import Bundle
    from galforge.generation.writers import GenerationResult

    Source = str | PathLike[str]

__all__ = ["GalforgeError", "__version__", "evaluate", "field", "generate", "load", "pretrained"]


def load(path: Source, device: str = "auto") -> Bundle:
    """Load a trained generator from a bundle folder, a run folder or ``pretrained:NAME``.

    Parameters
    ----------
    path
        A bundle folder (``bundle.json`` + safetensors), a run folder written by
        ``galforge train`` or ``pretrained:NAME`` (a shipped model).
    device
        ``auto`` (CUDA, then Apple MPS, then CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

    Returns
    -------
    Bundle
        ``.sample(n, seed=0)`` gives a float32 ``n×C×H×W`` array in the training data's
        physical units; ``.bands``, ``.units``, ``.pixel_scale`` (arcsec/pixel) and
        ``.zeropoint`` (AB zero point of its unit) describe it, None where unknown. Nothing
        in the files is executed (no pickle).
    """
    from galforge.generation.sampling import load_bundle

    return load_bundle(path, device=device)


def generate(
    source: Source | Bundle,
    out: Source,
    n: int = 16,
    *,
    seed: int = 0,
    fmt: str = "fits",
    batch: int = 64,
    truncation: float | None = None,
    truncation_cutoff: int | None = None,
    noise_mode: str | None = None,
    conditions: Mapping[str, float] | Sequence[float] | None = None,
    stage: int | None = None,
    device: str = "auto",
    progress: bool = False,
    overwrite: bool = False,
) -> GenerationResult:
    """Generate ``n`` galaxies and write them, with a ``grid.png`` preview, into ``out``.

    Parameters
    ----------
    source
        What :func:`load` takes, or a loaded bundle.
    out
        The folder for the files (refused when it holds other files, unless ``overwrite``
        and they are galaxies an earlier ``generate`` wrote).
    n
        Number of galaxies.
    seed
        The same seed and bundle give the same files, bit for bit, on one machine.
    fmt
        ``fits`` (one FITS per galaxy, physical units), ``fits-cube`` (one ``N×C×H×W`` cube
        with a table of galaxies), ``png`` (8-bit views) or ``npy``.
    batch
        Galaxies per forward pass (memory stays bounded whatever ``n``).
    truncation, truncation_cutoff
        Truncation ψ (1 = none) toward the mean latent (toward ``w_avg`` for models with an
        intermediate latent space, then only on its first ``truncation_cutoff`` layers).
    noise_mode
        Generators with noise inputs: ``random`` (default), ``const`` or ``none``.
    conditions
        A conditional generator's condition, ``{name: value}`` for every galaxy.
    stage
        Chained models: the stage whose images are written (1: StackGAN's stage I).
    device
        See :func:`load`.
    progress
        Show a progress bar.
    overwrite
        Replace the galaxies an earlier ``generate`` wrote to ``out``.

    Returns
    -------
    GenerationResult
        ``out_dir``, ``format``, ``n``, ``files``, ``grid`` and ``index``; ``.summary()``
        is what the command prints.
    """
    from galforge.errors import ConfigError
    from galforge.generation.sampling import Bundle, load_bundle
    from galforge.generation.writers import FORMATS, write_samples

    if str(fmt).lower() not in FORMATS:
        raise ConfigError(f"generate(fmt={fmt!r}): unknown format; use one of {', '.join(FORMATS)}")
    for name, value, low in (("n", n, 1), ("batch", batch, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"generate({name}={value!r}): give an integer >= {low}")
    if truncation is not None and not truncation >= 0:
        raise ConfigError(f"generate(truncation={truncation!r}): give a number >= 0 (1 = none)")
    bundle = source if isinstance(source, Bundle) else load_bundle(source, device=device)
    if truncation_cutoff is not None:
        from galforge.models.capabilities import INTERMEDIATE, require

        require(bundle.generator, INTERMEDIATE, "truncation_cutoff")
    if stage is not None:
        bundle = bundle.stage(stage)
    return write_samples(
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


def field(
    source: Source,
    out: Source,
    size: str | Sequence[int],
    *,
    tile: int = 1024,
    seed: int = 0,
    fmt: str | None = None,
    ensemble: int | None = None,
    realisations: int | None = None,
    workers: int = 1,
    processes: bool = False,
    scheduler: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    device: str = "auto",
    progress: bool = False,
    fits: Source | None = None,
    preview: Source | None = None,
    threads: int | None = None,
    **options: Any,
) -> list[FieldResult]:
    """Generate a seamless deep field tile by tile, streamed to disk (``galforge field``).

    Parameters
    ----------
    source
        A run, bundle or ``pretrained:NAME`` whose generator is ``windowed`` (a fully
        convolutional generator such as the Spatial GAN) or places ``sources``.
    out
        A ``.zarr`` folder, a ``.fits`` or a ``.npy`` file.
    size
        ``"HxW"`` in pixels (``"8192x8192"``), one side for a square, or ``(H, W)``.
    tile
        Tile side in pixels (a multiple of the generator's upscale factor).
    seed
        The same seed gives the same field.
    fmt
        Output format (default: from the suffix of ``out``).
    ensemble, realisations
        The last K kept snapshots of a run as a self-ensemble, or R fields, one per snapshot.
    workers, processes, scheduler
        Tiles generated at once by local Dask workers (threads, or processes), or a
        ``dask.distributed`` scheduler address (``tcp://host:8786``).
    resume
        Finish an interrupted field.
    overwrite
        Replace a field an earlier ``field`` wrote to ``out``.
    device, progress
        See :func:`load`; a progress bar.
    fits, preview
        Also write the whole field as FITS, and a PNG preview.
    threads
        torch threads per tile (fixing it keeps fields bit-identical across machines' cores).
    **options
        Further options of :func:`galforge.generation.field.generate_field` (``compile``,
        ``preview_size``, ``space_check``).

    Returns
    -------
    list of FieldResult
        One per field written: ``path``, ``shape``, tiles done, timing, FITS/preview/truth
        catalogue paths.
    """
    from galforge.errors import ConfigError
    from galforge.generation.field import field_from_bundle, parse_size

    parse_size(size, option="field(size=...)")
    for name, value in (
        ("tile", tile),
        ("workers", workers),
        ("ensemble", ensemble),
        ("realisations", realisations),
        ("threads", threads),
    ):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ConfigError(f"field({name}={value!r}): give an integer >= 1")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"field(seed={seed!r}): give an integer >= 0")
    return field_from_bundle(
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
        progress=progress,
        fits_out=fits,
        preview=preview,
        threads=threads,
        **options,
    )


def evaluate(
    real: Source | ImageSet,
    fake: Source | ImageSet | Bundle,
    out: Source,
    *,
    n: int = 256,
    seed: int = 0,
    measures: Sequence[str] | None = None,
    thresholds: Mapping[str, float] | None = None,
    size: int | None = None,
    limit: int | None = None,
    device: str = "auto",
    overwrite: bool = False,
    progress: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Measure generated galaxies against real ones; write the report (``galforge evaluate``).

    Parameters
    ----------
    real
        The real galaxies: what :func:`galforge.data.load_images` reads (a folder, a file, a
        prepared set, ``builtin:...``) or an :class:`~galforge.data.ImageSet`.
    fake
        The same kinds, or a model (what :func:`load` takes, or a loaded bundle), sampled
        ``n`` times with ``seed``.
    out
        The report folder: ``report.html``, ``metrics.json``, catalogues and figures.
    n, seed
        Galaxies sampled from a model, and their seed (also the seed of the measures).
    measures
        Names of registered measures (default: all that apply).
    thresholds
        Overrides of the pass/fail thresholds, by name.
    size, limit
        Resize images read from files to ``size`` pixels; read at most ``limit`` per set.
    device
        Device for sampling a model (see :func:`load`).
    overwrite
        Replace an earlier evaluation in ``out`` (its measure cache is kept).
    progress
        Show a progress bar.
    **options
        Further options of :func:`galforge.evaluation.evaluate` (``zeropoint``, ``band``,
        ``scheduler``, ``workers``, ``chunk_size``, ``colour_bands``, ...).

    Returns
    -------
    dict
        The metrics, as in ``metrics.json``: ``summary`` (one row per measure with its
        verdict), ``results``, ``settings``, ``magnitudes``, ``notes``.
    """
    from galforge import outputs
    from galforge.errors import ConfigError
    from galforge.evaluation import evaluate as run_evaluation

    for name, value, low in (("n", n, 2), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"evaluate({name}={value!r}): give an integer >= {low}")
    outputs.check_folder(out, overwrite=overwrite, option="evaluate(out=...)", command="evaluate")
    real_set = _image_set(real, "real", n=n, seed=seed, size=size, limit=limit, device=device)
    fake_set = _image_set(fake, "fake", n=n, seed=seed, size=size, limit=limit, device=device)
    outputs.claim_folder(
        out, overwrite=overwrite, option="evaluate(out=...)", command="evaluate", keep=("cache",)
    )
    return run_evaluation(
        real_set,
        fake_set,
        out,
        measures=list(measures) if measures is not None else None,
        thresholds=dict(thresholds or {}),
        seed=seed,
        progress=progress,
        **options,
    )


def _image_set(
    source, what: str, *, n: int, seed: int, size: int | None, limit: int | None, device: str
):
    """``source`` as an ImageSet: as it is, read from files, or (``fake``) sampled from a
    model."""
    from galforge.data import ImageSet, load_images
    from galforge.errors import ConfigError
    from galforge.generation.sampling import Bundle

    if isinstance(source, ImageSet):
        return source
    if isinstance(source, Bundle) or _is_model(source):
        if what == "real":
            raise ConfigError(
                f"evaluate(real={str(source)!r}): a model, not data; give the "
                "real galaxies (a folder, file, prepared set or builtin: spec)"
            )
        bundle = source if isinstance(source, Bundle) else load(source, device=device)
        images = bundle.sample(n, seed=seed)
        meta = [{"id": f"sample-{i}", "seed": seed, "index": i} for i in range(n)]
        return ImageSet(
            images=images,
            bands=tuple(bundle.bands),
            meta=meta,
            units=bundle.units,
            source=f"{source} (sampled n={n}, seed={seed})",
        )
    opts = {k: v for k, v in (("size", size), ("limit", limit)) if v}
    return load_images(str(source), **opts)


def _is_model(source) -> bool:
    from pathlib import Path

    from galforge.pretrained import is_pretrained

    if is_pretrained(source):
        return True
    p = Path(source).expanduser()
    if p.is_file() and p.name in ("bundle.json", "run.json"):
        return True
    return p.is_dir() and ((p / "bundle.json").is_file() or (p / "run.json").is_file())


def __getattr__(name: str) -> ModuleType:
    # galforge.pretrained without importing it first (the zoo is read when asked)
    if name == "pretrained":
        import importlib

        return importlib.import_module("galforge.pretrained")
    raise AttributeError(f"module 'galforge' has no attribute {name!r}")
