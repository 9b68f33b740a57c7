"""Memorisation: does the generator copy its training images?

For every fake image the nearest real image is found by the mean absolute difference (L1)
of the central crop (50 % of each side by default, where the galaxy is; the noisy outskirts
would otherwise dominate) and, separately, by the mean squared difference (MSE).

The summary statistic is the **NN ratio**::

    median(fake -> train NN distance) / median(held-out real -> train NN distance)

A generator that copies training images puts fakes much closer to the training set than an
independent real image is (ratio ≪ 1); one that does not gives ratio ≈ 1.

Brightness normalisation.  Galaxy sets span orders of magnitude in flux, so raw pixel
distances are dominated by the brightest images and a median over a few hundred of them
scatters by tens of per cent.  By default (``normalize=True``) every crop is divided by its
own mean absolute value before the distances are taken: bright and faint galaxies then
weigh alike, the ratio of two independent sets scatters far less around 1, and an exact copy
still has distance 0.  ``normalize=False`` uses the pixel values as they are.

The held-out split.  REAL is split once, with ``numpy.random.default_rng(seed)``, into a
*train* part and a *held-out* part of ``holdout_fraction`` (default 20 %, at least 2 images
and at most half the set): a seeded random permutation of the image indices whose first
``n_holdout`` entries are held out.  Pass REAL = the data the model was trained on; the
held-out images then play the role of "new galaxies from the same distribution".  (Fakes
copied from images that landed in the held-out part are not caught, so a fully memorising
generator gives a ratio of about 0, not exactly 0.)

Sampling noise and degenerate samples.  The held-out NN distances are kept beside the
fakes' so that the verdict can put distribution-free confidence bounds on both medians
(:mod:`galforge.evaluation.verdicts`): a median of a handful of held-out images is noisy.  With
``detection=`` (a :class:`~galforge.evaluation.photometry.DetectionOptions`) every image is
also checked for being *degenerate* — constant, or without any detected source: blank or
featureless fakes sit far from every real image and would otherwise look "not memorised".
"""

from __future__ import annotations

import numpy as np
import torch

from galforge.errors import EvaluationError


def central_crop(images, fraction: float = 0.5) -> np.ndarray:
    """The central ``fraction`` of each side of ``N×C×H×W`` images."""
    x = np.asarray(images, dtype=np.float32)
    if not 0 < fraction <= 1:
        raise EvaluationError(f"--nn-crop must be in (0, 1], got {fraction}")
    h, w = x.shape[-2:]
    ch, cw = max(1, int(round(h * fraction))), max(1, int(round(w * fraction)))
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    return x[..., y0 : y0 + ch, x0 : x0 + cw]


def split_holdout(n: int, fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``range(n)`` into ``(train_idx, holdout_idx)`` (both sorted).

    ``n_holdout = clip(round(fraction * n), 2, n // 2)``; the held-out indices are the first
    ``n_holdout`` entries of ``default_rng(seed).permutation(n)``."""
    if n < 4:
        raise EvaluationError(
            f"memorisation needs at least 4 real images to hold some out (got {n}); "
            "pass more REAL images"
        )
    k = int(np.clip(round(fraction * n), 2, n // 2))
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[k:]), np.sort(perm[:k])


def nearest_neighbours(
    query, reference, *, metric: str = "l1", k: int = 1, batch: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest ``reference`` images of every ``query`` image.

    ``metric`` is ``"l1"`` (mean absolute difference per pixel) or ``"mse"`` (mean squared
    difference per pixel).  Returns ``(distances, indices)``, both ``N_query×k``, sorted by
    distance."""
    q = torch.from_numpy(np.asarray(query, dtype=np.float32).reshape(len(query), -1))
    r = torch.from_numpy(np.asarray(reference, dtype=np.float32).reshape(len(reference), -1))
    if q.shape[1] != r.shape[1]:
        raise EvaluationError(
            f"real and fake images differ in shape ({tuple(np.shape(query)[1:])} vs "
            f"{tuple(np.shape(reference)[1:])}); resize one set to the other"
        )
    if metric not in ("l1", "mse"):
        raise EvaluationError(f"unknown nearest-neighbour metric {metric!r}; use l1 or mse")
    k = min(k, len(r))
    npx = q.shape[1]
    dists, idxs = [], []
    for i in range(0, len(q), batch):
        qb = q[i : i + batch].double()
        if metric == "l1":
            d = torch.cdist(qb, r.double(), p=1.0) / npx
        else:
            d = torch.cdist(qb, r.double(), p=2.0) ** 2 / npx
        val, ind = torch.topk(d, k, dim=1, largest=False)
        dists.append(val)
        idxs.append(ind)
    return torch.cat(dists).numpy(), torch.cat(idxs).numpy()


def normalize_crops(crops: np.ndarray) -> np.ndarray:
    """Divide every crop by its own mean absolute value (all-zero crops are left as they are)."""
    amp = np.abs(crops).mean(axis=tuple(range(1, crops.ndim)), keepdims=True)
    return crops / np.where(amp > 0, amp, 1.0)


def degenerate_images(images, detection=None) -> dict:
    """Count the degenerate images of an ``N×C×H×W`` stack: constant ones (every pixel
    equal) and, among the others, those in which source detection (``detection``, a
    :class:`~galforge.evaluation.photometry.DetectionOptions`) finds nothing.

    Returns ``{"n", "n_failed", "failure_rate", "reasons": {"constant image": k,
    "no source detected": k}, "flags": [bool per image]}``."""
    from galforge.evaluation.photometry import detect_and_measure

    x = np.asarray(images, dtype=np.float32)
    n = len(x)
    flat = x.reshape(n, -1)
    constant = flat.max(axis=1) == flat.min(axis=1) if n else np.zeros(0, bool)
    no_source = np.zeros(n, dtype=bool)
    idx = np.flatnonzero(~constant)
    if idx.size:
        bands = [f"b{i}" for i in range(x.shape[1])]
        rows = detect_and_measure(x[idx], bands, detection)
        found = {int(r["image"]) for r in rows}
        no_source[idx] = [i not in found for i in range(idx.size)]
    flags = constant | no_source
    return {
        "n": int(n),
        "n_failed": int(flags.sum()),
        "failure_rate": float(flags.mean()) if n else None,
        "reasons": {
            "constant image": int(constant.sum()),
            "no source detected": int(no_source.sum()),
        },
        "flags": flags.tolist(),
    }


def memorization(
    real,
    fake,
    *,
    crop: float = 0.5,
    k: int = 3,
    holdout_fraction: float = 0.2,
    seed: int = 0,
    normalize: bool = True,
    detection=None,
) -> dict:
    """Nearest-neighbour memorisation test of ``fake`` against ``real`` (``N×C×H×W`` arrays).

    Returns a JSON-safe dict with ``nn_ratio_l1`` and ``nn_ratio_mse`` (the summary
    statistics), the medians
    they are made of, the held-out split and its NN distances, per fake the ``k`` nearest
    training images (indices into ``real``) and their distances, and — with ``detection``
    (a :class:`~galforge.evaluation.photometry.DetectionOptions`) — the degenerate images
    of each set (``degenerate_real``, ``degenerate_fake``, see :func:`degenerate_images`)."""
    real = np.asarray(real, dtype=np.float32)
    fake = np.asarray(fake, dtype=np.float32)
    if real.shape[1:] != fake.shape[1:]:
        raise EvaluationError(
            f"memorisation compares images pixel by pixel: real {real.shape[1:]} and fake "
            f"{fake.shape[1:]} differ; resample one set to the other's size and bands"
        )
    train_idx, hold_idx = split_holdout(len(real), holdout_fraction, seed)
    rc = central_crop(real, crop)
    fc = central_crop(fake, crop)
    if normalize:
        rc, fc = normalize_crops(rc), normalize_crops(fc)
    out = {
        "crop_fraction": crop,
        "k": k,
        "holdout_fraction": holdout_fraction,
        "seed": seed,
        "normalize": normalize,
        "n_train": int(len(train_idx)),
        "n_holdout": int(len(hold_idx)),
        "n_fake": int(len(fake)),
        "holdout_indices": hold_idx.tolist(),
    }
    for metric in ("l1", "mse"):
        fd, fi = nearest_neighbours(fc, rc[train_idx], metric=metric, k=k)
        hd, _ = nearest_neighbours(rc[hold_idx], rc[train_idx], metric=metric, k=1)
        med_f = float(np.median(fd[:, 0]))
        med_h = float(np.median(hd[:, 0]))
        ratio = med_f / med_h if med_h > 0 else (1.0 if med_f == 0 else float("inf"))
        out[f"median_fake_train_{metric}"] = med_f
        out[f"median_holdout_train_{metric}"] = med_h
        out[f"nn_ratio_{metric}"] = float(ratio)
        out[f"fake_nn_{metric}"] = {"index": train_idx[fi].tolist(), "distance": fd.tolist()}
        out[f"holdout_nn_{metric}"] = hd[:, 0].tolist()
    if detection is not None:
        out["degenerate_real"] = degenerate_images(real, detection)
        out["degenerate_fake"] = degenerate_images(fake, detection)
    return out


def plot_nn_grid(
    path, fake, real, result: dict, bands, *, n_show: int = 8, metric: str = "l1"
) -> str:
    """Figure: rows of [fake | its k nearest real images | |fake - match|] for the
    ``n_show`` fakes closest to the training set (one montage, labelled)."""
    import matplotlib
    from matplotlib.figure import Figure

    from galforge.data.display import to_rgb

    nn = result[f"fake_nn_{metric}"]
    idx = np.asarray(nn["index"])
    dist = np.asarray(nn["distance"])
    order = np.argsort(dist[:, 0])[:n_show]
    k = idx.shape[1]
    h, w = fake.shape[-2:]
    pad = max(1, h // 16)
    ncol = 1 + 2 * k
    canvas = np.ones((len(order) * (h + pad) + pad, ncol * (w + pad) + pad, 3), np.float32)
    cmap = matplotlib.colormaps["magma"]
    labels = []
    for row, i in enumerate(order):
        f = fake[i : i + 1]
        matches = real[idx[i]]
        views = to_rgb(np.concatenate([f, matches]), tuple(bands)).astype(np.float32) / 255
        diffs = np.abs(matches - f).mean(axis=1)
        top = max(float(diffs.max()), 1e-12)
        tiles = [views[0]] + [views[1 + j] for j in range(k)]
        tiles += [cmap(diffs[j] / top)[..., :3] for j in range(k)]
        y = pad + row * (h + pad)
        for c, tile in enumerate(tiles):
            x = pad + c * (w + pad)
            canvas[y : y + h, x : x + w] = tile[::-1]  # origin at the bottom, as in imshow(lower)
        labels.append((y, f"fake {i}", [f"real {idx[i, j]}  d={dist[i, j]:.3g}" for j in range(k)]))
    scale = 1.9 / (w + pad)
    fig = Figure(figsize=(canvas.shape[1] * scale, canvas.shape[0] * scale + 0.4))
    ax = fig.add_axes((0, 0, 1, 1 - 0.4 / (canvas.shape[0] * scale + 0.4)))
    ax.imshow(canvas, interpolation="nearest")
    for y, flabel, mlabels in labels:
        ax.text(pad, y + 1, flabel, color="w", fontsize=6, va="top")
        for j, t in enumerate(mlabels):
            ax.text(pad + (1 + j) * (w + pad), y + 1, t, color="w", fontsize=5, va="top")
    ax.set_axis_off()
    fig.suptitle(
        f"Fakes closest to the training set ({metric.upper()}, central crop): fake, "
        f"{k} nearest real, |difference| (band mean)",
        fontsize=7,
    )
    fig.savefig(path, dpi=100)
    return str(path)
