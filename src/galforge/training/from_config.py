"""Training from a resolved run config: data prepared, recipe built, :class:`Trainer` run.

:func:`train_from_config` is what ``galforge train`` calls: the pipeline reads and normalises
the data the recipe needs (:func:`galforge.training.pipeline.prepare_data`), the recipe is
built (initialised from an ``--init`` model, parts frozen), and the trainer runs it into
``cfg.output.out``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

import galforge.training.distributed as ddp
from galforge.bundle import resolve_device
from galforge.errors import ConfigError
from galforge.log import get_logger
from galforge.runfolder import RunFolder
from galforge.training.metrics import MetricHook
from galforge.training.pipeline import prepare_data
from galforge.training.trainer import Trainer

log = get_logger("train")


def _accepts(cls, keyword: str) -> bool:
    """Whether ``cls(...)`` takes ``keyword`` (explicitly or through ``**kwargs``)."""
    import inspect

    params = inspect.signature(cls.__init__).parameters
    return keyword in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def train_from_config(
    cfg,
    *,
    resume: bool = False,
    dist_info: ddp.DistInfo | None = None,
    metrics: Sequence[MetricHook] = (),
    overwrite: bool = False,
) -> dict:
    """Train the model of a resolved :class:`galforge.config.RunConfig`; return the summary.

    The pipeline reads the data the recipe needs and normalises it
    (:func:`galforge.training.pipeline.prepare_data`); the recipe is built and the
    :class:`Trainer` runs it into ``cfg.output.out``.
    """
    from galforge.training.recipes import get_recipe

    recipe_cls = get_recipe(cfg.model.name)
    run_dir = Path(cfg.output.out)
    params = dict(cfg.model.params)
    settings = recipe_cls.make_settings(params)
    need = recipe_cls.data_need(settings)
    if dist_info is None:
        dist_info = ddp.init_distributed(
            "cuda"
            if cfg.train.device.startswith("cuda")
            or (cfg.train.device == "auto" and torch.cuda.is_available())
            else "cpu"
        )
    device = resolve_device(cfg.train.device, dist_info.local_rank)
    size = recipe_cls.image_size_for(params)
    output_range = recipe_cls.output_range_for(settings)
    data = prepare_data(cfg, need, output_range, run_dir=run_dir, resume=resume)
    extra = {}
    if data.normalizer is not None and _accepts(recipe_cls, "normalizer"):
        # recipes written before the keyword existed (plug-in families) are built without it
        extra["normalizer"] = data.normalizer.to_dict()
    if _accepts(recipe_cls, "data_info"):
        # what the data say of themselves that a recipe may need (a forward model's PSF)
        from galforge.data.psf import data_psf

        extra["data_info"] = {
            "pixel_scale": cfg.data.pixel_scale,
            "bands": list(data.iset.bands),
            "psf": data_psf(data.iset.extra),
        }
    recipe = recipe_cls(
        params,
        channels=data.image_shape[0],
        image_size=size,
        device=device,
        seed=cfg.train.seed,
        **extra,
    )
    notes = data.notes
    if (dist_info is None or dist_info.is_main) and notes:
        for note in notes:
            log.info(f"note: {note}")
    parent, init_ema = None, None
    if cfg.train.init and not resume:
        from galforge.training.init import initialise_from

        parent, init_ema = initialise_from(
            recipe, cfg.train.init, data.iset.bands, cfg.train.band_map
        )
    elif cfg.train.band_map and not cfg.train.init:
        raise ConfigError("--band-map maps the data's bands onto an --init model's: give --init")
    if cfg.train.freeze_g or cfg.train.freeze_d:
        recipe.freeze(int(cfg.train.freeze_g or 0), int(cfg.train.freeze_d or 0))
    trainer = Trainer(
        recipe,
        data.data,
        run_dir,
        cfg.train,
        normalizer=data.normalizer,
        bands=data.iset.bands,
        units=data.iset.units,
        data_fingerprint=data.fingerprint,
        config=cfg,
        model_name=cfg.model.name,
        augment={"flips": cfg.data.flips, "rot90": cfg.data.rot90, "rotate": cfg.data.rotate},
        output=cfg.output,
        resume=resume,
        dist_info=dist_info,
        metrics=metrics,
        overwrite=overwrite,
    )
    if parent is not None:
        trainer.parent, trainer.initial_ema = parent, init_ema
    elif resume and RunFolder(run_dir).is_run():
        trainer.parent = RunFolder(run_dir).read_info().parent
    trainer.notes = notes
    summary = trainer.fit()
    summary["n_images"] = data.n_images
    summary["image_shape"] = list(data.image_shape)
    summary["bands"] = list(data.iset.bands)
    summary["units"] = data.iset.units
    return summary
