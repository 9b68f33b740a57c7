"""Image features for the evaluation: power spectra, pixel histograms, feature networks.

* :func:`power_spectra` -- azimuthally averaged (or summed, optionally windowed) 1-D power
  spectrum of every image and band.
* :func:`pixel_histograms` -- per-image, per-band pixel histograms on bin edges fixed once
  (from the real set) so real and fake are binned the same way.
* :class:`GalaxyEncoder` -- galforge's galaxy encoder: a small CNN trained on GalSim
  galaxies (``scripts/train_galaxy_encoder.py``) to regress each galaxy's ellipticity
  ``eps = 1 - b/a``, position angle as ``cos 2θ`` and ``sin 2θ``, ``log10`` half-light
  radius (stamp pixels on a 64-px grid), ``log10`` flux (relative to the set scale) and
  Sérsic index.  Its penultimate layer (128 features) is the feature space of galforge's
  *Fréchet galaxy distance*.  The shipped weights and their validation error per
  parameter are in ``galforge/assets/galaxy_encoder.json`` (read it with
  :func:`galaxy_encoder_card`).  Validation RMS errors of the shipped weights (1,000 held-out
  GalSim galaxies, S/N 10–300): ``eps`` 0.057, ``cos 2θ`` 0.25 and ``sin 2θ`` 0.27 (the
  angle of nearly round galaxies is undefined; for ``eps > 0.3`` the PA error is 3.1° RMS),
  ``log10`` half-light radius 0.051 dex, ``log10`` flux 0.034 dex, Sérsic ``n`` 0.45.
  Trained by ``scripts/train_galaxy_encoder.py`` (seed 0, 6,000 galaxies, 10 epochs).
* :func:`encoder_inputs` -- the fixed preprocessing in front of the encoder: band mean,
  resize to 64×64 (area average), division by a *set scale* measured on the reference
  (real) set and applied unchanged to the other set, then ``asinh`` stretch.
* :func:`load_inception` -- Inception-v3 features for literature-comparable FID/KID.
  Inception weights cannot be shipped or downloaded here, so the network comes from a file
  the user supplies (a TorchScript archive or a ``torch.export`` ``.pt2`` program mapping
  float32 ``N×3×299×299`` images in ``[0, 1]`` to ``N×D`` features) or from an installed
  ``torch-fidelity`` (which uses its own weight cache).  Without either it raises
  :class:`~galforge.errors.EvaluationError` saying what to pass.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from galforge.errors import EvaluationError

ENCODER_SIZE = 64
ENCODER_PARAMS = ("eps", "cos2theta", "sin2theta", "log_hlr", "log_flux", "sersic_n")
ASINH_SOFTENING = 0.05  # in units of the set scale


# ---------------------------------------------------------------------------- helpers


def _as_array(images) -> np.ndarray:
    x = np.asarray(images, dtype=np.float32)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise EvaluationError(
            f"images must be N×C×H×W (got shape {x.shape}); pass a stack of images"
        )
    return x


def band_reduce(images, bands=None, band=None) -> np.ndarray:
    """Reduce ``N×C×H×W`` images to ``N×H×W``: the band mean (``band=None`` or ``"sum"``
    gives the mean, which differs from the sum only by a constant), or one named band."""
    x = _as_array(images)
    if band is None or band in ("sum", "mean"):
        return x.mean(axis=1)
    if isinstance(band, int):
        return x[:, band]
    bands = tuple(bands or ())
    if band not in bands:
        raise EvaluationError(f"band {band!r} is not one of the bands {bands}; pass --band NAME")
    return x[:, bands.index(band)]


# ---------------------------------------------------------------------------- spectra


def window_2d(h: int, w: int, window: str | None) -> np.ndarray | None:
    """The 2-D taper ``window`` (``"hann"``: outer product of two symmetric Hann windows,
    ``numpy.hanning``, zero at the edges) of shape ``h×w``; ``None`` for no window."""
    if window is None or window == "none":
        return None
    if window == "hann":
        return np.outer(np.hanning(h), np.hanning(w))
    raise EvaluationError(f"unknown window {window!r}; use 'hann' or None")


def power_spectra(
    images,
    *,
    max_k: int | None = None,
    window: str | None = None,
    statistic: str = "mean",
    subtract_mean: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Azimuthally averaged (or summed) power spectrum of every image and band.

    Each band of each image has its mean removed (``subtract_mean``), is multiplied by the
    2-D ``window`` (:func:`window_2d`; none by default), is Fourier transformed, and
    ``|F|² / (H·W)`` is averaged (``statistic="mean"``) or summed (``"sum"``) in integer
    rings of radius ``|k|`` (in FFT bins).  Returns ``(k, P)`` with ``k`` the ring centres in
    cycles per pixel (length ``K``) and ``P`` of shape ``N×C×K``.  Ring 0 (the mean) is
    dropped; ``K = min(H, W) // 2`` unless ``max_k`` is smaller.
    """
    if statistic not in ("mean", "sum"):
        raise EvaluationError(f"unknown ring statistic {statistic!r}; use 'mean' or 'sum'")
    x = _as_array(images).astype(np.float64)
    n, c, h, w = x.shape
    if subtract_mean:
        x = x - x.mean(axis=(2, 3), keepdims=True)
    taper = window_2d(h, w, window)
    if taper is not None:
        x = x * taper
    power = np.abs(np.fft.fft2(x, axes=(2, 3))) ** 2 / (h * w)
    fy = np.fft.fftfreq(h) * h
    fx = np.fft.fftfreq(w) * w
    # radius in units of the shorter axis' frequency bins
    scale = min(h, w)
    rr = np.sqrt((fy[:, None] * scale / h) ** 2 + (fx[None, :] * scale / w) ** 2)
    ring = np.rint(rr).astype(int).ravel()
    kmax = min(h, w) // 2 if max_k is None else min(max_k, min(h, w) // 2)
    sel = (ring >= 1) & (ring <= kmax)
    counts = np.bincount(ring[sel], minlength=kmax + 1)[1:]
    if statistic == "sum":
        counts = np.ones_like(counts)
    flat = power.reshape(n * c, h * w)[:, sel]
    out = np.zeros((n * c, kmax))
    for i in range(n * c):
        out[i] = np.bincount(ring[sel], weights=flat[i], minlength=kmax + 1)[1:] / counts
    k = np.arange(1, kmax + 1) / scale
    return k, out.reshape(n, c, kmax)


def histogram_edges(images, bins: int = 32, lo: float = 0.5, hi: float = 99.9) -> np.ndarray:
    """Per-band bin edges (``C×(bins+1)``) at quantiles of the pooled pixels of ``images``.

    Quantile edges make the histogram of the reference set roughly flat, whatever its units
    (8-bit levels or nanomaggies); values outside fall in the first/last bin."""
    x = _as_array(images)
    edges = []
    for b in range(x.shape[1]):
        px = x[:, b].ravel()
        qs = np.percentile(px, np.linspace(lo, hi, bins + 1))
        qs = np.maximum.accumulate(qs)
        # strictly increasing edges even for quantised data (8-bit levels)
        span = max(float(qs[-1] - qs[0]), 1e-12)
        qs = qs + np.arange(bins + 1) * span * 1e-9
        edges.append(qs)
    return np.stack(edges)


def pixel_histograms(images, edges: np.ndarray) -> np.ndarray:
    """Normalised pixel histograms ``N×C×bins`` of every image and band on fixed ``edges``
    (``C×(bins+1)``, see :func:`histogram_edges`); outliers are clipped into the end bins."""
    x = _as_array(images)
    n, c = x.shape[:2]
    nb = edges.shape[1] - 1
    out = np.zeros((n, c, nb), dtype=np.float64)
    for b in range(c):
        idx = np.searchsorted(edges[b], x[:, b].reshape(n, -1), side="right") - 1
        idx = np.clip(idx, 0, nb - 1)
        for i in range(n):
            out[i, b] = np.bincount(idx[i], minlength=nb)
    return out / out.sum(axis=2, keepdims=True)


def realism_features(images, edges: np.ndarray, *, max_k: int = 32) -> np.ndarray:
    """Feature vectors for the realism classifier: ``log10`` power spectrum of every band
    (up to ``max_k`` rings) followed by the pixel histograms of every band."""
    _, p = power_spectra(images, max_k=max_k)
    logp = np.log10(p + 1e-30).reshape(len(p), -1)
    hist = pixel_histograms(images, edges).reshape(len(p), -1)
    return np.concatenate([logp, hist], axis=1).astype(np.float32)


# ---------------------------------------------------------------------------- encoder


class GalaxyEncoder(nn.Module):
    """Small CNN: ``N×1×64×64`` preprocessed stamps (:func:`encoder_inputs`) to
    ``num_features`` penultimate features (``forward``) and 6 physical parameters
    (:meth:`predict`, order :data:`ENCODER_PARAMS`)."""

    def __init__(self, width: int = 32, num_features: int = 128):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(1, w, 5, stride=2, padding=2),
            nn.SiLU(),  # 32
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1),
            nn.SiLU(),  # 16
            nn.Conv2d(2 * w, 2 * w, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1),
            nn.SiLU(),  # 8
            nn.Conv2d(4 * w, 4 * w, 3, stride=2, padding=1),
            nn.SiLU(),  # 4
        )
        self.fc = nn.Linear(4 * w * 16, num_features)
        self.head = nn.Linear(num_features, len(ENCODER_PARAMS))
        self.width = width
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (``N×num_features``): the Fréchet galaxy distance space."""
        h = self.body(x).flatten(1)
        return F.silu(self.fc(h))

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Regressed parameters ``N×6`` in the order of :data:`ENCODER_PARAMS`."""
        return self.head(self.forward(x))


def set_scale(images) -> float:
    """The brightness scale of a set: median over images of the 99.5th percentile of the
    band-mean pixels.  Measured on the reference (real) set and applied to both sets."""
    x = band_reduce(images)
    per = np.percentile(x.reshape(len(x), -1), 99.5, axis=1)
    s = float(np.median(per))
    if not np.isfinite(s) or s <= 0:
        s = float(np.max(np.abs(x))) or 1.0
    return s


def encoder_inputs(images, scale: float, size: int = ENCODER_SIZE) -> torch.Tensor:
    """Preprocess ``N×C×H×W`` images for :class:`GalaxyEncoder`: band mean, area resize to
    ``size``×``size``, divide by ``scale`` (:func:`set_scale` of the reference set), asinh
    stretch.  Returns a float32 tensor ``N×1×size×size``."""
    x = torch.from_numpy(np.ascontiguousarray(band_reduce(images)))[:, None]
    if x.shape[-2:] != (size, size):
        if x.shape[-1] >= size and x.shape[-2] >= size:
            x = F.interpolate(x, size=(size, size), mode="area")
        else:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = x / float(scale)
    return torch.asinh(x / ASINH_SOFTENING) * ASINH_SOFTENING * 4.0


def _asset(name: str) -> Path:
    return Path(str(resources.files("galforge") / "assets" / name))


def galaxy_encoder_card(path: str | Path | None = None) -> dict:
    """The JSON card of the encoder weights (training settings, validation error per
    parameter).  ``path`` is the weights file; default: the shipped one."""
    p = Path(path) if path else _asset("galaxy_encoder.safetensors")
    card = p.with_suffix(".json")
    if not card.is_file():
        raise EvaluationError(
            f"galaxy encoder card {card} is missing; run scripts/train_galaxy_encoder.py"
        )
    return json.loads(card.read_text())


def load_galaxy_encoder(path: str | Path | None = None) -> GalaxyEncoder:
    """Load the galaxy encoder (default: the weights shipped in ``galforge/assets``)."""
    from safetensors.torch import load_file

    p = Path(path) if path else _asset("galaxy_encoder.safetensors")
    if not p.is_file():
        raise EvaluationError(
            f"galaxy encoder weights {p} not found; run scripts/train_galaxy_encoder.py "
            "or pass --encoder-weights FILE"
        )
    card = galaxy_encoder_card(p)
    arch = card.get("architecture", {})
    model = GalaxyEncoder(
        width=int(arch.get("width", 32)), num_features=int(arch.get("num_features", 128))
    )
    try:
        model.load_state_dict(load_file(str(p)))
    except (RuntimeError, OSError) as exc:
        raise EvaluationError(f"galaxy encoder weights {p} do not load: {exc}") from exc
    return model.eval()


def encoder_features(encoder: nn.Module, images, scale: float, *, batch: int = 256) -> np.ndarray:
    """Penultimate encoder features (``N×D`` float64) of ``images`` at set ``scale``."""
    x = encoder_inputs(images, scale)
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out.append(encoder(x[i : i + batch]).double())
    return torch.cat(out).numpy()


# ---------------------------------------------------------------------------- inception


class _InceptionAdapter(nn.Module):
    """Wraps a user-supplied network so it can be fed ``N×3×299×299`` float images in [0, 1]."""

    def __init__(self, net, kind: str, num_features: int | None = None):
        super().__init__()
        # kept out of the module tree: exported programs refuse train()/eval() calls
        self.__dict__["net"] = net
        self.kind = kind
        if num_features is not None:
            self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "torch-fidelity":
            out = self.net((x.clamp(0, 1) * 255).round().to(torch.uint8))
            out = out[0] if isinstance(out, (tuple, list)) else out
        else:
            out = self.net(x)
            out = out[0] if isinstance(out, (tuple, list)) else out
        return out.reshape(len(x), -1).float()


def load_inception(weights: str | Path | None = None) -> nn.Module:
    """Inception-v3 feature extractor for literature-comparable FID/KID.

    ``weights`` is a TorchScript archive (``.pt``/``.pth``/``.ts``) or a ``torch.export``
    program (``.pt2``) mapping float32 ``N×3×299×299`` images in ``[0, 1]`` to ``N×D``
    features (2048 for the pool3 layer used in the literature).  Only load files you trust:
    a TorchScript graph is code.  With ``weights=None`` an installed ``torch-fidelity`` is
    used (its own weight cache).  Otherwise :class:`EvaluationError` says what to pass.
    """
    if weights is None:
        try:
            from torch_fidelity.feature_extractor_inceptionv3 import (
                FeatureExtractorInceptionV3,
            )
        except ImportError as exc:
            raise EvaluationError(
                "Inception-v3 features unavailable: pass --inception-weights FILE "
                "(a TorchScript or .pt2 Inception-v3 feature network) or install torch-fidelity"
            ) from exc
        try:
            net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
        except Exception as exc:  # its weight cache missing and no network
            raise EvaluationError(
                f"Inception-v3 features unavailable ({exc}); pass --inception-weights FILE"
            ) from exc
        return _InceptionAdapter(net.eval(), "torch-fidelity", 2048).eval()
    p = Path(weights)
    if not p.is_file():
        raise EvaluationError(
            f"Inception weights file {p} not found; pass --inception-weights FILE "
            "(a TorchScript or .pt2 feature network)"
        )
    try:
        if p.suffix == ".pt2":
            net = torch.export.load(str(p)).module()
        else:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                net = torch.jit.load(str(p), map_location="cpu")
    except Exception as exc:
        raise EvaluationError(
            f"Inception weights file {p} is not a TorchScript archive or .pt2 program ({exc}); "
            "export your Inception-v3 feature network with torch.jit.save or torch.export.save"
        ) from exc
    if isinstance(net, torch.jit.ScriptModule):
        net.eval()
    return _InceptionAdapter(net, "file")


def inception_inputs(images, bands, size: int = 299) -> torch.Tensor:
    """RGB view of ``N×C×H×W`` images for Inception: Lupton/asinh colour composite
    (1 band: grey; 2 bands: their mean in the middle channel) resized to ``size``; float32
    ``N×3×size×size`` in ``[0, 1]``."""
    from galforge.data.display import to_rgb

    rgb = to_rgb(np.asarray(images, dtype=np.float32), tuple(bands))  # N×H×W×3 uint8
    x = torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 255.0
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
