"""The training data of a run: read once, checked, and recorded as what was actually done.

:func:`load_training_data` reads ``cfg.data.source`` through the one crop/resize route
(:meth:`galforge.config.DataConfig.read_options`: every image is cropped and resized as it is
read, to ``data.resize`` or else the model's image size), refuses data with nothing to learn
(every image constant) and writes into ``cfg.data`` what was done, so that the run's
``config.yaml`` says it: the size images were resized to and the pixel scale found in the
data.  :func:`resolve_normalizer` picks or fits the normalizer and records its stretch.
What a user should know (a resize, blank images, a guess of the reader) is returned as notes
to print and log.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from galforge.errors import ConfigError, DataError


@dataclass
class TrainingData:
    """The images a run trains on (physical units) and what reading them did."""

    iset: object  # galforge.data.ImageSet, as read (after crop and resize)
    images: np.ndarray  # float32 N×C×H×W
    notes: list[str] = field(default_factory=list)


def _blank_images(images: np.ndarray) -> np.ndarray:
    """Indices of images whose every pixel (every band) has one value."""
    flat = images.reshape(images.shape[0], -1)
    return np.flatnonzero(flat.max(axis=1) == flat.min(axis=1))


def load_training_data(cfg, image_size) -> TrainingData:
    """Read ``cfg.data.source`` for a model of ``image_size`` pixels a side, or of
    ``(height, width)`` (None: any size).

    Raises DataError for data that cannot train a model (no images, every image constant,
    images of several sizes for a model of any size), naming the ``data.*`` option to use.
    """
    from galforge.data import load_images
    from galforge.data.readers import SizeMismatch

    d = cfg.data
    if not d.source:
        raise ConfigError(
            "no training data: give DATA (a folder, a file, a prepared data set "
            "or a builtin: spec) or data.source"
        )
    try:
        iset = load_images(d.source, **d.read_options(image_size))
    except SizeMismatch as exc:
        raise DataError(
            f"{d.source}: {exc.detail}; bring every image to one size with --set "
            "data.resize=N (and data.resize_method) or --set data.crop_pixels=N"
        ) from None
    images = np.ascontiguousarray(iset.images, dtype=np.float32)
    notes = list(iset.report.warnings)

    resize = iset.extra.get("resize")
    if resize:
        h, w = resize["to"]
        sizes = ", ".join(
            f"{k} ({v})" if len(resize["from"]) > 1 else k for k, v in resize["from"].items()
        )
        why = "data.resize" if d.resize is not None else "the model's image size"
        notes.append(
            f"resized {resize['images']} of {len(images)} images from {sizes} to {h}×{w} "
            f"pixels ({resize['method']}), to {why}; choose with --set data.resize=N and "
            "data.resize_method"
        )
        if d.resize is None and int(h) == int(w):
            d.resize = int(h)  # config.yaml records the resize that was done (a non-square
            # one is the model's image_size × image_width, which the config already records)

    blank = _blank_images(images)
    if len(blank) == len(images):
        value = float(images.reshape(-1)[0])
        raise DataError(
            f"the training data {d.source} are blank: every image is constant (e.g. every "
            f"pixel {value:g}); there is nothing to learn. Check the files (empty cutouts, a "
            "wrong --hdu or crop)"
        )
    if len(blank):
        first = iset.meta[int(blank[0])].get("file", f"image {int(blank[0])}")
        notes.append(
            f"{len(blank)} of {len(images)} training images are constant (blank, e.g. {first}); "
            "they carry nothing to learn: remove them or select images with a catalogue"
        )
    for c, band in enumerate(iset.bands):
        plane = images[:, c]
        if plane.max() == plane.min():
            notes.append(
                f"band {band} holds one value ({float(plane.flat[0]):g}) in every "
                "image; the model learns a constant for it"
            )

    scale = iset.extra.get("pixel_scale")
    if d.pixel_scale is None and isinstance(scale, (int, float)) and scale > 0:
        d.pixel_scale = float(f"{float(scale):.6g}")
    zp = iset.extra.get("zeropoint")
    if getattr(d, "zeropoint", None) is None and isinstance(zp, (int, float)):
        d.zeropoint = float(zp)  # recorded in the bundle: MAGZP of the generated FITS
    return TrainingData(iset=iset, images=images, notes=notes)


def resolve_normalizer(cfg, data: TrainingData, output_range, resumed=None):
    """The normalizer of a run, and ``cfg.data`` updated to say which was used.

    In order: the run's own (``resumed``, when continuing a run); the one saved with a
    prepared data set when it maps to ``output_range`` and no other stretch was asked for;
    else one fitted on the images with ``data.stretch`` (default: asinh for physical units,
    linear for 8/16-bit levels).  Returns ``(normalizer, note or None)``.
    """
    from galforge.data.normalize import Normalizer, default_stretch

    d = cfg.data
    note = None
    norm = resumed
    if norm is None:
        norm = _stored_normalizer(data.iset, output_range)
        if norm is not None and d.stretch is not None and norm.stretch != d.stretch:
            note = (
                f"the prepared data set's normalizer has a {norm.stretch} stretch; "
                f"fitting a {d.stretch} one as data.stretch asks"
            )
            norm = None
    if norm is None:
        stretch = d.stretch or default_stretch(data.iset.units)
        norm = Normalizer.fit(
            data.images,
            clip_percentile=d.clip_percentile,
            stretch=stretch,
            asinh_softening=d.asinh_softening,
            target=tuple(output_range),
        )
    d.stretch = norm.stretch
    if norm.clip_percentile is not None:
        d.clip_percentile = float(norm.clip_percentile)
    return norm, note


def _stored_normalizer(iset, output_range):
    """The normalizer saved with a prepared data set, when it maps to the model's range."""
    from galforge.data.normalize import Normalizer

    extra = getattr(iset, "extra", None) or {}
    norm = extra.get("prepared_normalizer") or extra.get("normalizer")
    if isinstance(norm, Mapping):
        norm = Normalizer.from_dict(dict(norm))
    if not isinstance(norm, Normalizer):
        return None
    target = getattr(norm, "target", None)
    if target is not None and tuple(float(v) for v in target) != tuple(
        float(v) for v in output_range
    ):
        return None  # fitted for another output range: fit anew
    return norm
