"""Latent-space helpers: seeded latents, truncation, interpolation and vector arithmetic.

Latents are float32 tensors ``N×...`` (for a DCGAN ``N×100×1×1``). Every random latent comes
from :func:`gaussian_latents`, whose row ``k`` depends only on ``(seed, start + k)`` — the
same stream :meth:`galforge.generation.Bundle.latent` uses — so a latent picked here reproduces
the sample of that seed and index.

Typical uses with a loaded bundle ``g``::

    z = g.latent(2, seed=7)                           # samples 0 and 1 of seed 7
    path = interpolate(z[0], z[1], steps=9)            # spherical path between them
    frames = g.generate_from_latent(path)              # 9 images, physical units
    z_t = truncate(g.latent(16, seed=0), 0.7)          # more typical galaxies
    z = g.latent(500, seed=1)                          # vector arithmetic:
    direction = attribute_direction(z, with_attr=mask_big, without_attr=~mask_big)
    bigger = add_direction(z[:8], direction, scale=1.0)

For generators with an intermediate latent space (capability ``intermediate``) the tools of
StyleGAN's papers work in w: :func:`style_mix` (a style-mixing grid), :func:`interpolation`
(frames between seeds, lerp in w or slerp in z) and :func:`seed_arithmetic` (v1 − v2 + v3 of
the seeds' z or w). A "seed" names sample 0 of that seed, as ``galforge generate --seed S``
writes it; its noise maps (capability ``noise``) are that sample's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from galforge.errors import ConfigError
from galforge.models.capabilities import INTERMEDIATE, require
from galforge.seeding import check_seed, sample_generator, sample_latents

__all__ = [
    "add_direction",
    "arithmetic",
    "attribute_direction",
    "gaussian_latents",
    "group_mean",
    "interpolate",
    "MixingGrid",
    "interpolation",
    "lerp",
    "seed_arithmetic",
    "seed_latents",
    "seed_noise",
    "slerp",
    "style_mix",
    "truncate",
    "truncated_gaussian_latents",
]


def gaussian_latents(
    per_sample_shape: Sequence[int], n: int, seed: int, *, start: int = 0
) -> torch.Tensor:
    """Standard normal latents for sample indices ``start..start+n-1`` of ``seed``.

    Row ``k`` depends only on ``(seed, start + k)``, never on how many rows are drawn at once.
    """
    return sample_latents(tuple(per_sample_shape), n, seed, start=start)


def truncated_gaussian_latents(
    per_sample_shape: Sequence[int],
    n: int,
    seed: int,
    threshold: float,
    *,
    start: int = 0,
    max_rounds: int = 1000,
) -> torch.Tensor:
    """Normal latents with every component inside ``[-threshold, threshold]``.

    Components outside are redrawn from the sample's own seeded stream (the "truncation
    trick" of Brock et al. 2019); as with :func:`gaussian_latents`, row ``k`` depends only
    on ``(seed, start + k)``.
    """
    threshold = float(threshold)
    if not threshold > 0:
        raise ConfigError(f"truncation threshold {threshold}: must be > 0")
    shape = tuple(int(s) for s in per_sample_shape)
    out = torch.empty((int(n), *shape), dtype=torch.float32)
    for k in range(int(n)):
        gen = sample_generator(seed, start + k)
        z = torch.randn(shape, generator=gen)
        for _ in range(max_rounds):
            outside = z.abs() > threshold
            if not bool(outside.any()):
                break
            z = torch.where(outside, torch.randn(shape, generator=gen), z)
        else:
            z = z.clamp(-threshold, threshold)
        out[k] = z
    return out


def truncate(z: torch.Tensor, psi: float, mean: torch.Tensor | None = None) -> torch.Tensor:
    """Pull latents toward the mean latent: ``mean + psi * (z - mean)``.

    ``psi = 1`` leaves them unchanged, ``psi = 0`` gives the mean latent (the "average"
    image); values in between trade variety for typicality. ``mean`` defaults to zero, the
    mean of Gaussian latents.
    """
    psi = float(psi)
    if not np.isfinite(psi) or psi < 0:
        raise ConfigError(f"truncation psi={psi}: must be a number >= 0 (1 = no truncation)")
    z = torch.as_tensor(z, dtype=torch.float32)
    if mean is None:
        return z * psi
    mean = torch.as_tensor(mean, dtype=z.dtype, device=z.device)
    return mean + psi * (z - mean)


def _as_pair(z0, z1) -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.as_tensor(z0, dtype=torch.float32)
    b = torch.as_tensor(z1, dtype=torch.float32)
    if a.shape != b.shape:
        raise ConfigError(
            f"latents of shapes {tuple(a.shape)} and {tuple(b.shape)} cannot be mixed"
        )
    return a, b


def _as_weights(t) -> tuple[torch.Tensor, bool]:
    w = torch.as_tensor(t, dtype=torch.float32)
    return w.reshape(-1), w.dim() == 0


def lerp(z0, z1, t) -> torch.Tensor:
    """Linear interpolation ``(1 - t) z0 + t z1``; ``t`` a number or a sequence (stacked)."""
    a, b = _as_pair(z0, z1)
    w, scalar = _as_weights(t)
    shape = (-1,) + (1,) * a.dim()
    out = (1 - w).reshape(shape) * a[None] + w.reshape(shape) * b[None]
    return out[0] if scalar else out


def slerp(z0, z1, t, eps: float = 1e-7) -> torch.Tensor:
    """Spherical interpolation (along the great circle between ``z0`` and ``z1``).

    Keeps the norm of Gaussian latents typical along the path, unlike :func:`lerp`, whose
    midpoints are shorter than any real sample. Falls back to ``lerp`` for (anti)parallel
    latents. ``t`` a number or a sequence (stacked).
    """
    a, b = _as_pair(z0, z1)
    w, scalar = _as_weights(t)
    fa, fb = a.reshape(-1).double(), b.reshape(-1).double()
    cos = torch.dot(fa, fb) / (fa.norm() * fb.norm()).clamp_min(eps)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    if float(torch.sin(omega).abs()) < eps:
        return lerp(a, b, w[0] if scalar else w)
    wd = w.double()
    ca = torch.sin((1 - wd) * omega) / torch.sin(omega)
    cb = torch.sin(wd * omega) / torch.sin(omega)
    out = ca[:, None] * fa[None] + cb[:, None] * fb[None]
    out = out.float().reshape((-1, *a.shape))
    return out[0] if scalar else out


def interpolate(z0, z1, steps: int, method: str = "slerp") -> torch.Tensor:
    """``steps`` latents from ``z0`` to ``z1`` inclusive (``method``: ``slerp`` or ``lerp``)."""
    if int(steps) < 2:
        raise ConfigError(f"interpolation steps={steps}: need at least 2")
    t = torch.linspace(0.0, 1.0, int(steps))
    if method == "slerp":
        return slerp(z0, z1, t)
    if method == "lerp":
        return lerp(z0, z1, t)
    raise ConfigError(f"interpolation method {method!r}: use slerp or lerp")


def _select(z: torch.Tensor, select) -> torch.Tensor:
    if select is None:
        return z
    sel = torch.as_tensor(np.asarray(select))
    if sel.dtype == torch.bool:
        if sel.shape[0] != z.shape[0]:
            raise ConfigError(f"selection mask has {sel.shape[0]} entries for {z.shape[0]} latents")
        return z[sel]
    return z[sel.long()]


def group_mean(z, select=None) -> torch.Tensor:
    """Mean latent of a group: all of ``z`` or the rows picked by ``select`` (mask or indices)."""
    z = torch.as_tensor(z, dtype=torch.float32)
    group = _select(z, select)
    if group.shape[0] == 0:
        raise ConfigError("the selected group of latents is empty; select at least one latent")
    return group.mean(dim=0)


def attribute_direction(z, with_attr, without_attr) -> torch.Tensor:
    """Direction from the mean latent of one group to that of another.

    ``mean(z[with_attr]) - mean(z[without_attr])``: e.g. latents whose images are large
    galaxies minus those that are small ones.
    """
    return group_mean(z, with_attr) - group_mean(z, without_attr)


def add_direction(z, direction, scale: float = 1.0) -> torch.Tensor:
    """Move latents along ``direction``: ``z + scale * direction`` (broadcast over rows)."""
    z = torch.as_tensor(z, dtype=torch.float32)
    d = torch.as_tensor(direction, dtype=torch.float32)
    return z + float(scale) * d


def arithmetic(plus: Sequence, minus: Sequence = ()) -> torch.Tensor:
    """Latent arithmetic: ``sum(plus) - sum(minus)`` (e.g. ``arithmetic([a, c], [b])``)."""
    if not plus:
        raise ConfigError("latent arithmetic needs at least one latent to add")
    total = torch.zeros_like(torch.as_tensor(plus[0], dtype=torch.float32))
    for term in plus:
        total = total + torch.as_tensor(term, dtype=torch.float32)
    for term in minus:
        total = total - torch.as_tensor(term, dtype=torch.float32)
    return total


# ----------------------------------------------------------------------------- seeds and w


def seed_latents(bundle, seeds: Sequence[int]) -> torch.Tensor:
    """The latents of the seeds' own samples (sample 0 of each seed), ``len(seeds)×...``."""
    seeds = [check_seed(s, "seed") for s in seeds]
    if not seeds:
        raise ConfigError("no seeds given; pass at least one seed")
    return torch.cat([bundle.latent(1, s) for s in seeds])


def seed_noise(bundle, seeds: Sequence[int], mode: str | None = None) -> list | None:
    """The noise maps of the seeds' own samples (``mode`` random), or the shared maps of
    ``const``/``none``; None for generators without noise inputs."""
    per_seed = [bundle.noise(1, s, mode=mode) for s in seeds]
    if per_seed[0] is None:
        return None
    if per_seed[0][0].shape[0] == 1 and bundle.noise_mode(mode) != "random":
        return per_seed[0]
    return [torch.cat(maps) for maps in zip(*per_seed, strict=True)]


def _seed_ws(bundle, seeds, truncation, cutoff=None) -> torch.Tensor:
    require(bundle.generator, INTERMEDIATE, "w-space tools")
    w = bundle.to_w(seed_latents(bundle, seeds))
    return bundle.truncate_w(w, truncation, cutoff) if truncation is not None else w


def parse_styles(styles, num_ws: int) -> list[int]:
    """Layer indices from ``"0-3"``, ``"0,2,5-6"`` or a sequence of ints, checked against
    ``num_ws`` (the synthesis network's number of w inputs)."""
    if isinstance(styles, str):
        out: list[int] = []
        for part in styles.split(","):
            part = part.strip()
            lo, sep, hi = part.partition("-")
            try:
                out.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
            except ValueError:
                raise ConfigError(f"--styles {styles!r}: write layers as 0-3 or 0,2,4") from None
    else:
        out = [int(v) for v in styles]
    bad = [v for v in out if not 0 <= v < int(num_ws)]
    if not out or bad:
        raise ConfigError(f"--styles {styles!r}: this generator has layers 0 to {num_ws - 1}")
    return sorted(set(out))


@dataclass
class MixingGrid:
    """A style-mixing grid: ``images[r, c]`` has the w of row seed ``rows[r]`` with the layers
    ``styles`` taken from column seed ``cols[c]`` (physical units, ``R×C×bands×H×W``)."""

    rows: list[int]
    cols: list[int]
    styles: list[int]
    images: np.ndarray
    row_images: np.ndarray  # R×bands×H×W: the row seeds' own images
    col_images: np.ndarray  # C×bands×H×W: the column seeds' own images
    ws: torch.Tensor  # R×C×num_ws×w_dim: the per-layer w of every cell


def style_mix(
    bundle,
    rows: Sequence[int],
    cols: Sequence[int],
    styles,
    *,
    truncation: float | None = None,
    noise_mode: str | None = None,
    batch: int = 64,
) -> MixingGrid:
    """Style mixing (Karras et al. 2019, section 3.1): row seeds give the base w, column
    seeds' w replace the layers ``styles``. A cell keeps its row seed's noise maps, so a
    cell with no layers replaced is the row seed's own image."""
    require(bundle.generator, INTERMEDIATE, "style mixing")
    rows, cols = list(rows), list(cols)
    if not rows or not cols:
        raise ConfigError("style mixing needs at least one row seed and one column seed")
    num_ws = int(bundle.generator.num_ws)
    layers = parse_styles(styles, num_ws)
    w_rows = _seed_ws(bundle, rows, truncation)
    w_cols = _seed_ws(bundle, cols, truncation)
    n_r, n_c, dim = len(rows), len(cols), w_rows.shape[-1]
    ws = w_rows[:, None, None, :].repeat(1, n_c, num_ws, 1)
    ws[:, :, layers] = w_cols[None, :, None, :]
    noise_r, noise_c = seed_noise(bundle, rows, noise_mode), seed_noise(bundle, cols, noise_mode)
    cell_noise = (
        None
        if noise_r is None
        else [m if m.shape[0] == 1 else m.repeat_interleave(n_c, dim=0) for m in noise_r]
    )
    images = bundle.generate_from_w(ws.reshape(n_r * n_c, num_ws, dim), batch, noise=cell_noise)
    return MixingGrid(
        rows,
        cols,
        layers,
        images.reshape(n_r, n_c, *images.shape[1:]),
        bundle.generate_from_w(w_rows, batch, noise=noise_r),
        bundle.generate_from_w(w_cols, batch, noise=noise_c),
        ws,
    )


def _path_positions(n_seeds: int, frames: int) -> list[tuple[int, float]]:
    """``(segment, t)`` of each frame of a path through ``n_seeds`` keys, ends included."""
    if n_seeds < 2:
        raise ConfigError("interpolation needs at least two seeds (--seeds 42,1234)")
    if int(frames) < n_seeds:
        raise ConfigError(f"--frames {frames}: need at least one frame per seed ({n_seeds})")
    out = []
    for k in range(int(frames)):
        pos = k * (n_seeds - 1) / (int(frames) - 1)
        seg = min(int(pos), n_seeds - 2)
        out.append((seg, 1.0 if k == int(frames) - 1 else pos - seg))
    return out


def _noise_path(noise, positions) -> list | None:
    """Noise maps along the path: variance-keeping (spherical) blend of the keys' maps."""
    if noise is None or noise[0].shape[0] == 1:
        return noise
    flat = torch.cat([m.reshape(m.shape[0], -1) for m in noise], dim=1)
    rows = torch.stack([slerp(flat[s], flat[s + 1], t) for s, t in positions])
    out, at = [], 0
    for m in noise:
        size = m[0].numel()
        out.append(rows[:, at : at + size].reshape(len(positions), *m.shape[1:]))
        at += size
    return out


def interpolation(
    bundle,
    seeds: Sequence[int],
    frames: int,
    *,
    space: str = "z",
    truncation: float | None = None,
    noise_mode: str | None = None,
    batch: int = 64,
) -> tuple[torch.Tensor, np.ndarray]:
    """Frames along a path through the seeds' samples: slerp in z or lerp in w
    (``space``), ``frames`` in all, the first and last being the first and last seeds' own
    images. Noise maps (random mode) are blended between the seeds' maps along the path.
    Returns ``(latents, images)`` (the z or w of every frame; physical units)."""
    if space not in ("z", "w"):
        raise ConfigError(f"--space {space!r}: use z (slerp) or w (lerp)")
    require(bundle.generator, INTERMEDIATE, "interpolation")
    seeds = list(seeds)
    positions = _path_positions(len(seeds), frames)
    noise = _noise_path(seed_noise(bundle, seeds, noise_mode), positions)
    if space == "z":
        z = seed_latents(bundle, seeds)
        path = torch.stack([slerp(z[s], z[s + 1], t) for s, t in positions])
        return path, bundle.generate_from_latent(path, batch, truncation=truncation, noise=noise)
    w = _seed_ws(bundle, seeds, truncation)
    path = torch.stack([lerp(w[s], w[s + 1], t) for s, t in positions])
    return path, bundle.generate_from_w(path, batch, noise=noise)


def seed_arithmetic(
    bundle, plus: Sequence[int], minus: Sequence[int] = (), *, space: str = "w"
) -> torch.Tensor:
    """``sum(plus) - sum(minus)`` of the seeds' latents in ``space`` (``z`` or ``w``); render
    the result with ``bundle.generate_from_latent`` (z) or ``bundle.generate_from_w`` (w)."""
    if space not in ("z", "w"):
        raise ConfigError(f"space={space!r}: use z or w")
    if space == "w":
        require(bundle.generator, INTERMEDIATE, "arithmetic in w")
        to = lambda seeds: _seed_ws(bundle, seeds, None)  # noqa: E731
    else:
        to = lambda seeds: seed_latents(bundle, seeds)  # noqa: E731
    return arithmetic(list(to(list(plus))), list(to(list(minus))) if minus else ())
