"""The data a recipe needs, read, normalised and batched.

A recipe declares what it trains on with a *data need* (``Recipe.data_need(settings)``):

:class:`Stamps`
    one stack of images at one size (``size=None``: as read); a batch is an ``N×C×H×W``
    tensor, shuffled by epoch and augmented per image (:class:`StampBatches`).  With
    ``conditions`` (catalogue columns of each image's meta, e.g. ``("mag", "hlr")``) a batch
    is ``{"images": N×C×H×W, "conditions": N×K}``: the physical conditions of a conditional
    generator.
:class:`PairedStamps`
    the same images at several sizes (e.g. 64 and 128 pixels for a chained super-resolution
    stage); a batch is ``{size: N×C×size×size}``, the same images, flips and quarter turns
    at every size. The smaller sizes are resized from the largest with ``method`` (None:
    ``data.resize_method``); a size listed in ``normalizers`` is mapped to model space with
    that fixed normaliser (e.g. the one of a frozen earlier stage whose output the recipe
    consumes) instead of the one fitted for the run.
:class:`Fields`
    large images kept whole; the recipe cuts its own batches from them (random crops)
    through :meth:`~galforge.training.recipe.Recipe.make_batches`.

:func:`prepare_data` reads ``data.source`` at the size the need asks for (through
:mod:`galforge.training.datasource`, the one crop/resize route), fits the
:class:`~galforge.data.normalize.Normalizer` (or reuses a prepared data set's, or the run's
own when resuming, after checking the data fingerprint), and returns the model-space arrays;
:func:`batch_source` turns them into a :class:`BatchSource`.

A :class:`BatchSource` turns a step number into a batch, as a pure function of
``(seed, step)``, so a resumed run sees exactly the batches of an uninterrupted one without
any saved loader state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from galforge.errors import DataError, TrainingError
from galforge.runfolder import RunFolder
from galforge.seeding import step_generator
from galforge.training.augment import Augment, FlipRotate

__all__ = [
    "BatchSource",
    "Fields",
    "PairedBatches",
    "PairedStamps",
    "StampBatches",
    "Stamps",
    "TrainingData",
    "batch_source",
    "condition_table",
    "prepare_data",
]


#: values (pixels × bands × images) normalised at a time when the data are prepared
_BLOCK_VALUES = 1 << 22


# ----------------------------------------------------------------------------- needs
@dataclass(frozen=True)
class Stamps:
    """One stack of images, resized to ``size`` pixels a side, or to ``(height, width)`` for
    non-square images (None: as read), with the meta columns ``conditions`` of each image as
    float conditions."""

    size: int | tuple[int, int] | None = None
    conditions: tuple[str, ...] = ()


@dataclass(frozen=True)
class PairedStamps:
    """The same images at each of ``sizes`` (pixels a side).

    ``method``: how the smaller sizes are made from the largest (``nearest``, ``bicubic``,
    ``area``; None: ``data.resize_method``). ``normalizers``: ``(size, Normalizer dict)``
    pairs; those sizes are normalised with the given normaliser instead of the run's.
    ``bands``: the band names the data must have, in order (those of the normalisers'
    model), or None. Data smaller than the largest size are refused: the largest images of
    a pair are never upsampled.
    """

    sizes: tuple[int, ...]
    method: str | None = None
    normalizers: tuple[tuple[int, dict], ...] = ()
    bands: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Fields:
    """Whole fields as read; the recipe crops them (``Recipe.make_batches``)."""


DataNeed = Stamps | PairedStamps | Fields


# ----------------------------------------------------------------------------- batches
class BatchSource:
    """Deterministic batches: ``batch(step)`` depends only on the seed and ``step``.

    ``steps_per_epoch`` is the number of steps that make one pass over the data.
    """

    steps_per_epoch: int = 1

    def batch(self, step: int):  # pragma: no cover - interface
        raise TrainingError(f"{type(self).__name__} does not implement batch(step)")


class StampBatches(BatchSource):
    """Shuffled epochs over a stack of stamps, with per-image random augmentation.

    Epoch ``e`` visits the images in the order of a permutation drawn from
    ``(seed, "epoch", e)``; step ``s`` takes the ``s % steps_per_epoch``-th slice of
    ``batch_size`` images (the incomplete last slice is dropped, so every batch has the same
    size; with fewer images than ``batch_size`` every batch is the whole set).  Augmentation
    draws come from ``(seed, "augment", s)``.
    """

    def __init__(
        self,
        data: Tensor,
        batch_size: int,
        seed: int,
        *,
        flips: bool = True,
        rot90: bool = True,
        rotate: str | None = None,
        augment: Augment | None = None,
        conditions: Tensor | None = None,
    ):
        if data.dim() != 4 or data.shape[0] == 0:
            raise TrainingError(
                f"training data must be a non-empty N×C×H×W stack, got shape {tuple(data.shape)}"
            )
        if conditions is not None and conditions.shape[0] != data.shape[0]:
            raise TrainingError(f"{conditions.shape[0]} condition rows for {data.shape[0]} images")
        self.data = data
        self.conditions = conditions
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.augment = augment if augment is not None else FlipRotate(flips, rot90, rotate)
        n = data.shape[0]
        self.steps_per_epoch = max(1, n // self.batch_size)
        self._perm_epoch = -1
        self._perm: Tensor | None = None

    def indices(self, step: int) -> Tensor:
        """Indices of the images of the batch of ``step`` (the global batch, all ranks)."""
        epoch, i = divmod(int(step), self.steps_per_epoch)
        if epoch != self._perm_epoch:
            self._perm = torch.randperm(
                self.data.shape[0], generator=step_generator(self.seed, "epoch", epoch)
            )
            self._perm_epoch = epoch
        b = min(self.batch_size, self.data.shape[0])
        return self._perm[i * b : (i + 1) * b]

    def batch(self, step: int):
        idx = self.indices(step)
        x = self.augment(
            self.data.index_select(0, idx), step_generator(self.seed, "augment", int(step))
        )
        if self.conditions is None:
            return x
        return {"images": x, "conditions": self.conditions.index_select(0, idx)}


class PairedBatches(BatchSource):
    """:class:`StampBatches` over several sizes of the same images: ``{size: batch}``.

    The same images, flips and quarter turns at every size (one augmentation draw per step).
    """

    def __init__(
        self,
        data: Mapping[int, Tensor],
        batch_size: int,
        seed: int,
        *,
        flips: bool = True,
        rot90: bool = True,
    ):
        sizes = sorted(int(s) for s in data)
        self._sources = {
            s: StampBatches(data[s], batch_size, seed, flips=flips, rot90=rot90) for s in sizes
        }
        first = self._sources[sizes[0]]
        self.steps_per_epoch = first.steps_per_epoch
        self.data = data

    def batch(self, step: int) -> dict[int, Tensor]:
        return {s: src.batch(step) for s, src in self._sources.items()}


def batch_source(
    need: DataNeed, data, batch_size: int, seed: int, *, augment: Mapping | None = None
) -> BatchSource:
    """The default batches for ``need`` (``augment``: flips, rot90, rotate of the data config)."""
    aug = dict(augment or {"flips": True, "rot90": True, "rotate": None})
    if isinstance(need, PairedStamps):
        return PairedBatches(
            data, batch_size, seed, flips=aug.get("flips", True), rot90=aug.get("rot90", True)
        )
    if isinstance(need, Fields):
        raise TrainingError(
            "a recipe that trains on whole fields must cut its own batches (Recipe.make_batches)"
        )
    if isinstance(data, Mapping):
        return StampBatches(data["images"], batch_size, seed, conditions=data["conditions"], **aug)
    return StampBatches(data, batch_size, seed, **aug)


def condition_table(iset, names) -> np.ndarray:
    """``N×K`` float32 conditions: the meta columns ``names`` of each image of ``iset``."""
    names = list(names)
    out = np.empty((len(iset.meta), len(names)), dtype=np.float32)
    if len(iset.meta) != len(iset.images):
        raise DataError(
            f"{iset.source}: {len(iset.images)} images but {len(iset.meta)} meta "
            "records; conditions need one record per image"
        )
    for i, rec in enumerate(iset.meta):
        for k, name in enumerate(names):
            value = rec.get(name)
            try:
                out[i, k] = float(value)
            except (TypeError, ValueError):
                raise DataError(
                    f"{iset.source}: image {rec.get('id', i)!r} has no number in column "
                    f"{name!r} (got {value!r}); copy the column from the catalogue "
                    "(data.options.catalog_columns) or drop that condition"
                ) from None
            if not np.isfinite(out[i, k]):
                raise DataError(
                    f"{iset.source}: image {rec.get('id', i)!r} has a non-finite "
                    f"{name!r}; select rows with finite values (data.options.where)"
                )
    return out


# ----------------------------------------------------------------------------- preparing
def _check_pair_source(cfg, need: PairedStamps, iset, size: int) -> None:
    """Paired sizes come from images at least ``size`` pixels a side, with ``need.bands``."""
    smaller = []
    for key in ((iset.extra or {}).get("resize") or {}).get("from", {}):
        try:
            h, w = (int(v) for v in str(key).split("×"))
        except ValueError:
            continue
        if min(h, w) < size:
            smaller.append(str(key))
    if smaller:
        raise DataError(
            f"{cfg.data.source}: images of {', '.join(sorted(smaller))} pixels, smaller than "
            f"the {size}×{size} pixels this model learns to make; train it on data at least "
            f"{size} pixels a side (their {size} px images are never upsampled)"
        )
    if need.bands is not None and tuple(iset.bands) != tuple(need.bands):
        raise DataError(
            f"{cfg.data.source}: bands ({', '.join(iset.bands)}) but the model this one builds "
            f"on was trained on ({', '.join(need.bands)}); train on data with those bands (arrays "
            f"name theirs with --set data.options.bands=[{','.join(need.bands)}])"
        )


@dataclass
class TrainingData:
    """What :func:`prepare_data` returns: model-space data and what describes it."""

    data: object  # N×C×H×W float32 array; {size: array} for PairedStamps;
    # {"images": ..., "conditions": N×K} for conditioned Stamps
    normalizer: object
    iset: object  # the ImageSet as read
    fingerprint: str
    n_images: int
    image_shape: tuple[int, ...]  # C, H, W of the largest images
    notes: list[str] = field(default_factory=list)  # what the user should know (resizes, ...)


def prepare_data(
    cfg, need: DataNeed, output_range, *, run_dir=None, resume: bool = False
) -> TrainingData:
    """Read, resize and normalise the data of a run for a recipe's ``need``.

    Reading goes through the one crop/resize route of
    :func:`galforge.training.datasource.load_training_data` (which records in ``cfg.data``
    what it did); the normalizer is the run's own when resuming (after checking that the
    data are the same by fingerprint), else the one a prepared data set carries, else one
    fitted on the data (:func:`galforge.training.datasource.resolve_normalizer`).
    """
    from galforge.data.normalize import Normalizer
    from galforge.training import datasource

    sizes = need.sizes if isinstance(need, PairedStamps) else None
    size = None if isinstance(need, Fields) else (max(sizes) if sizes else need.size)
    read = datasource.load_training_data(cfg, size)
    iset, imgs = read.iset, read.images
    if sizes:
        _check_pair_source(cfg, need, iset, size)
    fingerprint = iset.fingerprint()
    resumed = None
    folder = RunFolder(run_dir) if run_dir is not None else None
    if resume and folder is not None and folder.is_run():
        info = folder.read_info()
        if info.data_fingerprint and info.data_fingerprint != fingerprint:
            raise TrainingError(
                f"--resume: the data {cfg.data.source} differ from the data the run in "
                f"{folder.path} was trained on (fingerprint mismatch); resume with the same DATA"
            )
        if info.normalizer:
            resumed = Normalizer.from_dict(info.normalizer)
    normalizer, note = datasource.resolve_normalizer(cfg, read, output_range, resumed=resumed)
    notes = list(read.notes) + ([note] if note else [])

    def to_model(x, norm=normalizer, resized_to=None):
        """``x`` (resized to ``resized_to`` pixels first, if given) in model space, made
        block by block into one float32 array: the memory it takes beyond the result stays
        small whatever the size of the set."""
        if getattr(norm, "channels", x.shape[1]) != x.shape[1]:
            raise TrainingError(
                f"the training data {cfg.data.source} have {x.shape[1]} bands but a normaliser "
                f"the model needs has {norm.channels}; train on data with its bands"
            )
        side = x.shape[2:] if resized_to is None else (int(resized_to),) * 2
        out = np.empty((x.shape[0], x.shape[1], *side), dtype=np.float32)
        per_image = max(1, int(np.prod(x.shape[1:])))
        step = max(1, _BLOCK_VALUES // per_image)
        for a in range(0, x.shape[0], step):
            block = x[a : a + step]
            if resized_to is not None:
                block = resize(block, int(resized_to), method=method)
            out[a : a + step] = norm.forward(block)
            if not np.isfinite(out[a : a + step]).all():
                raise TrainingError(
                    f"the training data {cfg.data.source} contain non-finite values after "
                    "normalisation; read them with nan_policy fill or reject "
                    "(data.options.nan_policy)"
                )
        return out

    from galforge.data.transforms import resize

    method = (need.method if isinstance(need, PairedStamps) else None) or cfg.data.resize_method
    if sizes:
        fixed = {int(s): Normalizer.from_dict(d) for s, d in need.normalizers}
        data = {
            int(s): to_model(
                imgs, fixed.get(int(s), normalizer), None if int(s) == size else int(s)
            )
            for s in sizes
        }
    elif isinstance(need, Stamps) and need.conditions:
        data = {"images": to_model(imgs), "conditions": condition_table(iset, need.conditions)}
    else:
        data = to_model(imgs)
    return TrainingData(
        data,
        normalizer,
        iset,
        fingerprint,
        int(imgs.shape[0]),
        tuple(int(v) for v in imgs.shape[1:]),
        notes,
    )


def as_tensors(data):
    """Arrays (or a dict of them) as float32 CPU tensors."""
    if isinstance(data, Mapping):
        return {k: as_tensors(v) for k, v in data.items()}
    if isinstance(data, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
    return data
