"""galforge galaxies as GalSim objects, for image simulations.

``objects = sample_objects("runs/psf", 10, seed=0, flux=2e4, hlr=0.6)`` returns one
``{band: galsim.InterpolatedImage}`` per galaxy: the galaxy *before* the telescope, drawn by a
generator with a physical forward model (capability ``prepsf``), with the model's pixel scale
and the galaxy's flux in the bundle's physical units.  Convolve it with any PSF, shear it,
place it, and draw it as any instrument would::

    import galsim
    gal = objects[0]["r"].shear(g1=0.02, g2=0.0)
    image = galsim.Convolve(gal, galsim.Moffat(beta=3, fwhm=0.9)).drawImage(
        nx=64, ny=64, scale=0.26)

Conditions (conditional bundles) are given by name as one number for every galaxy or one per
galaxy; without them they are drawn from the training catalogue's sample.  This module sits
with :mod:`galforge.generation` (it samples bundles); within galforge, ``import galsim``
still means GalSim itself (absolute imports), this module being ``galforge.galsim``.
"""

from __future__ import annotations

import galsim
import numpy as np

from galforge.errors import ConfigError

__all__ = ["sample_objects"]


def _bundle(model, device: str):
    from galforge.generation.sampling import Bundle, load_bundle

    return model if isinstance(model, Bundle) else load_bundle(model, device=device)


def _condition_rows(bundle, n: int, conditions: dict):
    if not conditions:
        return None
    names = bundle.condition_names
    if not names:
        raise ConfigError(
            f"conditions {sorted(conditions)}: the {bundle.family!r} generator takes none"
        )
    unknown = sorted(set(conditions) - set(names))
    missing = [k for k in names if k not in conditions]
    if unknown or missing:
        raise ConfigError(
            f"sample_objects: the generator takes the conditions "
            f"{', '.join(names)}"
            + (f"; unknown: {', '.join(unknown)}" if unknown else "")
            + (f"; missing: {', '.join(missing)}" if missing else "")
        )
    cols = []
    for k in names:
        v = np.asarray(conditions[k], dtype=np.float32).reshape(-1)
        if v.size not in (1, n):
            raise ConfigError(
                f"sample_objects: condition {k!r} has {v.size} values; give one, "
                f"or one per galaxy ({n})"
            )
        cols.append(np.broadcast_to(v, (n,)))
    return np.stack(cols, axis=1)


def sample_objects(
    model, n: int, *, seed: int = 0, start: int = 0, device: str = "cpu", **conditions
) -> list[dict[str, galsim.GSObject]]:
    """``n`` galaxies of ``model`` (a bundle, its folder, a run folder or ``pretrained:NAME``)
    before the PSF, as ``[{band: galsim.InterpolatedImage}, ...]``.

    Each object is the pre-PSF stamp of its band on the model's scene grid (the data's pixel
    scale, or a finer one for a model trained with ``model.oversample``), its
    flux the stamp's sum in the bundle's units: ready to convolve with any PSF and draw.
    ``conditions``: ``name=value`` (or ``name=[one value per galaxy]``) for conditional
    bundles. Sample ``i`` of a seed is the galaxy ``galforge generate`` draws for it.
    """
    from galforge.generation.observe import prepsf_galaxies
    from galforge.generation.sampling import _check_count

    n = _check_count(n, "n", 0)
    bundle = _bundle(model, device)
    scenes, _, _ = prepsf_galaxies(
        bundle, n, seed, start=start, conditions=_condition_rows(bundle, n, conditions)
    )
    info = bundle.generator.psf_info()
    scale = float(info.get("scene_pixel_scale", info["pixel_scale"]))
    out = []
    for stamp in scenes:
        galaxy = {}
        for band, plane in zip(bundle.bands, stamp, strict=True):
            arr = np.ascontiguousarray(plane, dtype=np.float64)
            galaxy[band] = galsim.InterpolatedImage(
                galsim.ImageD(arr, scale=scale), flux=float(arr.sum())
            )
        out.append(galaxy)
    return out
