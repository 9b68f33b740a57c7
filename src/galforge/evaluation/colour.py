"""Colour–magnitude diagrams and the fraction of generated objects inside the real locus.

:func:`colour_magnitude` turns a photometric catalogue (rows of
:func:`galforge.evaluation.photometry.detect_and_measure`, with ``mag_<band>`` columns) into
colour ``m1 − m2`` against the magnitude in a chosen band — apparent, or absolute when a
redshift is given:

    M = m − 5 log10(D_L / 10 pc) − K

with the luminosity distance ``D_L`` from an astropy cosmology (flat ΛCDM with H0 = 70 km/s/Mpc
and Ωm = 0.3 by default) — the SDSS-style conversion. The K-correction ``K`` is not modelled:
it is 0 unless the caller supplies it (``k_correction``, a number or one value per object),
so absolute magnitudes of objects at appreciable redshift are in the observed frame.

:func:`fraction_in_box` gives the fraction of generated objects inside the box
``median ± k·σ`` of the real objects on both axes (k = 1.75 by default), and
:func:`plot_cmd` draws both sets with that box.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from galforge.errors import EvaluationError

__all__ = [
    "DEFAULT_COSMOLOGY",
    "distance_modulus",
    "colour_magnitude",
    "fraction_in_box",
    "plot_cmd",
]

#: Cosmology used for absolute magnitudes when none is given: flat ΛCDM, H0=70, Ωm=0.3.
DEFAULT_COSMOLOGY = {"H0": 70.0, "Om0": 0.3}


def _cosmology(cosmology):
    from astropy import cosmology as cosmo_mod

    if cosmology is None:
        return cosmo_mod.FlatLambdaCDM(**DEFAULT_COSMOLOGY)
    if isinstance(cosmology, str):
        try:
            return getattr(cosmo_mod, cosmology)
        except AttributeError:
            raise EvaluationError(
                f"cosmology={cosmology!r} is not an astropy cosmology; use e.g. 'Planck18' or "
                "'WMAP9', or pass an astropy cosmology object"
            ) from None
    if not hasattr(cosmology, "luminosity_distance"):
        raise EvaluationError(
            "cosmology must be an astropy cosmology, a name like 'Planck18', "
            "or None for flat LCDM (H0=70, Om0=0.3)"
        )
    return cosmology


def distance_modulus(redshift, cosmology=None) -> np.ndarray:
    """``5 log10(D_L / 10 pc)`` for each redshift (NaN where the redshift is not positive)."""
    z = np.atleast_1d(np.asarray(redshift, dtype=np.float64))
    out = np.full(z.shape, np.nan)
    good = np.isfinite(z) & (z > 0)
    if good.any():
        d_l = _cosmology(cosmology).luminosity_distance(z[good]).to_value("pc")
        out[good] = 5.0 * np.log10(d_l / 10.0)
    return out


def _mag_key(cat, band: str) -> str:
    """``mag_<band>``, or ``mag_inst_<band>`` for a catalogue of instrumental magnitudes."""
    keys = cat if isinstance(cat, dict) else (cat[0] if len(cat) else {})
    for key in (f"mag_{band}", f"mag_inst_{band}"):
        if key in keys:
            return key
    return f"mag_{band}"


def _mags(cat, band: str) -> np.ndarray:
    key = _mag_key(cat, band)
    if isinstance(cat, dict):
        if key not in cat:
            raise EvaluationError(
                f"catalogue has no column {key!r}; available: "
                f"{sorted(k for k in cat if k.startswith('mag_'))}"
            )
        return np.asarray(cat[key], dtype=np.float64)
    if len(cat) and key not in cat[0]:
        raise EvaluationError(
            f"catalogue has no column {key!r}; available: "
            f"{sorted(k for k in cat[0] if k.startswith('mag_'))} — choose bands that were "
            "measured"
        )
    return np.array([r.get(key, math.nan) for r in cat], dtype=np.float64)


def colour_magnitude(
    cat,
    band1: str,
    band2: str,
    mag_band: str,
    redshift=None,
    *,
    cosmology=None,
    k_correction=None,
) -> dict:
    """Colour ``mag_<band1> − mag_<band2>`` against the magnitude in ``mag_band``.

    Parameters
    ----------
    cat:
        A catalogue: a list of row dicts with ``mag_<band>`` entries (or ``mag_inst_<band>``
        for instrumental magnitudes; the labels then say so), or a dict of columns.
    band1, band2:
        Bands of the colour (e.g. ``"g"``, ``"r"`` for g − r).
    mag_band:
        Band of the magnitude axis.
    redshift:
        ``None`` for apparent magnitudes; a number (every object at that redshift), one
        value per object, or the name of a catalogue column. Objects with a non-positive or
        missing redshift get a NaN absolute magnitude.
    cosmology:
        astropy cosmology object or name (``"Planck18"``); ``None``: flat ΛCDM, H0=70, Ωm=0.3.
    k_correction:
        Optional K-correction (magnitudes; number or per object) subtracted from the absolute
        magnitude; not modelled by galforge, so ``None`` means 0.

    Returns
    -------
    dict
        ``colour`` and ``mag`` (float arrays, one entry per object), ``valid`` (both finite),
        ``absolute`` (bool), ``colour_label``, ``mag_label``, ``n`` and ``n_valid``.
    """
    c1, c2 = _mags(cat, band1), _mags(cat, band2)
    mag = _mags(cat, mag_band)
    absolute = redshift is not None
    if absolute:
        if isinstance(redshift, str):
            if isinstance(cat, dict):
                z = np.asarray(cat.get(redshift, []), dtype=np.float64)
            else:
                if len(cat) and redshift not in cat[0]:
                    raise EvaluationError(
                        f"redshift column {redshift!r} is not in the "
                        "catalogue; give a number or a column that exists"
                    )
                z = np.array([r.get(redshift, math.nan) for r in cat], dtype=np.float64)
        else:
            z = np.asarray(redshift, dtype=np.float64)
        if z.ndim == 0:
            z = np.full(mag.shape, float(z))
        if z.shape != mag.shape:
            raise EvaluationError(
                f"redshift has {z.size} values for {mag.size} objects; give "
                "one redshift, or one per object"
            )
        if np.any(np.isfinite(z) & (z < 0)):
            raise EvaluationError("redshift must not be negative")
        mag = mag - distance_modulus(z, cosmology)
        if k_correction is not None:
            mag = mag - np.broadcast_to(np.asarray(k_correction, dtype=np.float64), mag.shape)
    colour = c1 - c2
    valid = np.isfinite(colour) & np.isfinite(mag)
    inst = " (instrumental)" if _mag_key(cat, mag_band).startswith("mag_inst_") else ""
    return {
        "colour": colour,
        "mag": mag,
        "valid": valid,
        "absolute": absolute,
        "colour_label": f"{band1} − {band2}{inst}",
        "mag_label": (f"M_{mag_band}" if absolute else f"{mag_band}") + inst,
        "n": int(mag.size),
        "n_valid": int(valid.sum()),
    }


def _xy(cm) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(cm, dict):
        c, m = np.asarray(cm["colour"], float), np.asarray(cm["mag"], float)
    else:
        arr = np.asarray(cm, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise EvaluationError(
                "colour–magnitude data must be a colour_magnitude() dict or an "
                f"N×2 array (colour, mag); got shape {arr.shape}"
            )
        c, m = arr[:, 0], arr[:, 1]
    ok = np.isfinite(c) & np.isfinite(m)
    return c[ok], m[ok]


def fraction_in_box(real_cm, fake_cm, k: float = 1.75, *, robust: bool = False) -> dict:
    """Fraction of fake objects inside the real ``median ± k·σ`` box (colour and magnitude).

    ``real_cm``/``fake_cm`` are :func:`colour_magnitude` results or ``N×2`` arrays of
    (colour, magnitude). ``σ`` is the standard deviation of the real values (with
    ``robust=True``: 1.4826 × the median absolute deviation). Objects with non-finite
    colour or magnitude are left out and counted.

    Returns ``{"fraction", "n_inside", "n_fake", "fraction_real", "k", "box": {"colour":
    [lo, hi], "mag": [lo, hi]}, "n_real"}`` — ``fraction_real`` is the same fraction for the
    real objects themselves, the reference to compare ``fraction`` with.
    """
    if not k > 0:
        raise EvaluationError(f"k must be positive (got {k})")
    rc, rm = _xy(real_cm)
    fc, fm = _xy(fake_cm)
    if rc.size < 2:
        raise EvaluationError(
            f"fraction_in_box needs at least 2 real objects with finite "
            f"colour and magnitude, got {rc.size}"
        )

    def spread(v):
        if robust:
            return 1.4826 * float(np.median(np.abs(v - np.median(v))))
        return float(np.std(v))

    box_c = (float(np.median(rc) - k * spread(rc)), float(np.median(rc) + k * spread(rc)))
    box_m = (float(np.median(rm) - k * spread(rm)), float(np.median(rm) + k * spread(rm)))

    def inside(c, m):
        return (c >= box_c[0]) & (c <= box_c[1]) & (m >= box_m[0]) & (m <= box_m[1])

    n_in = int(inside(fc, fm).sum())
    return {
        "fraction": (n_in / fc.size) if fc.size else math.nan,
        "n_inside": n_in,
        "n_fake": int(fc.size),
        "fraction_real": float(inside(rc, rm).mean()),
        "n_real": int(rc.size),
        "k": float(k),
        "box": {"colour": list(box_c), "mag": list(box_m)},
    }


def plot_cmd(
    real_cm,
    fake_cm,
    path: str | Path,
    *,
    k: float = 1.75,
    labels: tuple[str, str] = ("real", "fake"),
    colour_label: str | None = None,
    mag_label: str | None = None,
    max_points: int = 5000,
    seed: int = 0,
) -> Path:
    """Save the colour–magnitude diagram of both sets, with the real median ± kσ box, as PNG.

    At most ``max_points`` points per set are drawn (a seeded random subset); the box and
    the fraction in the legend use all objects.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rc, rm = _xy(real_cm)
    fc, fm = _xy(fake_cm)
    rng = np.random.default_rng(seed)
    fig = Figure(figsize=(5.5, 4.2), layout="constrained")
    ax = fig.subplots()
    for c, m, lab, col in ((rc, rm, labels[0], "tab:blue"), (fc, fm, labels[1], "tab:orange")):
        if c.size > max_points:
            keep = rng.choice(c.size, max_points, replace=False)
            c, m = c[keep], m[keep]
        ax.scatter(m, c, s=4, alpha=0.5, color=col, label=f"{lab} (n={c.size})")
    if rc.size >= 2:
        res = fraction_in_box(real_cm, fake_cm, k)
        (c0, c1), (m0, m1) = res["box"]["colour"], res["box"]["mag"]
        frac = res["fraction"]
        inside = f"{frac:.1%}" if math.isfinite(frac) else "– (no fake with a finite colour)"
        ax.add_patch(
            Rectangle(
                (m0, c0),
                m1 - m0,
                c1 - c0,
                fill=False,
                color="k",
                lw=1.2,
                ls="--",
                label=f"real median ± {k:g}σ (fake inside: {inside})",
            )
        )
    if isinstance(real_cm, dict):
        colour_label = colour_label or real_cm.get("colour_label")
        mag_label = mag_label or real_cm.get("mag_label")
    ax.set_xlabel(mag_label or "magnitude")
    ax.set_ylabel(colour_label or "colour")
    ax.invert_xaxis()
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=100)
    return path
