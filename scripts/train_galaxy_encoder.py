"""Train galforge's galaxy encoder and write the weights shipped in ``galforge/assets``.

The encoder (:class:`galforge.evaluation.features.GalaxyEncoder`) learns to regress, from a
single-band 64×64 stamp, the physical parameters of a GalSim Sérsic galaxy: ellipticity
``eps = 1 - q``, position angle as ``cos 2θ``/``sin 2θ``, ``log10`` half-light radius
(pixels), ``log10`` flux relative to the set scale and Sérsic index.  Its penultimate
features are the space of the Fréchet galaxy distance used by ``galforge evaluate``.

Galaxies: Sérsic profiles (n 0.5–4 on a 0.05 grid, half-light radius 0.3–1.6 arcsec,
axis ratio 0.15–1, uniform PA, centre offset ±1 px, flux log-uniform over 1.5 dex) convolved
with a Moffat PSF (β = 3, FWHM 0.6–0.8 arcsec) on 0.2 arcsec pixels, plus Gaussian noise
with a peak S/N per galaxy log-uniform in 10–300, some stamps with a faint neighbour.
Everything is drawn from ``numpy.random.default_rng(seed)`` and ``torch.Generator`` seeded
from ``--seed``: the same command writes the same weights on the same machine.

    python scripts/train_galaxy_encoder.py --out src/galforge/assets

On an idle 2-core CPU this takes about 9 minutes (1 min of GalSim drawing, ~45 s per
epoch); the shipped weights took 31 minutes because the cores were shared with other jobs.

Writes ``galaxy_encoder.safetensors`` and ``galaxy_encoder.json`` (architecture, training
settings, validation RMS / median absolute error per parameter).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import galsim
import numpy as np
import torch
from safetensors.torch import save_file

from galforge.evaluation.features import (
    ENCODER_PARAMS,
    ENCODER_SIZE,
    GalaxyEncoder,
    encoder_inputs,
    set_scale,
)

PIXEL_SCALE = 0.2


def make_galaxies(n: int, seed: int, size: int = ENCODER_SIZE):
    """``n`` noisy single-band stamps ``n×1×size×size`` and their truth table ``n×6``."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 1, size, size), dtype=np.float32)
    truth = np.zeros((n, 6), dtype=np.float64)
    fluxes = np.zeros(n)
    for i in range(n):
        sersic_n = float(np.round(rng.uniform(0.5, 4.0) / 0.05) * 0.05)
        hlr = float(np.exp(rng.uniform(np.log(0.3), np.log(1.6))))
        q = float(rng.uniform(0.15, 1.0))
        theta = float(rng.uniform(0, np.pi))
        flux = float(10 ** rng.uniform(3.0, 4.5))
        fwhm = float(rng.uniform(0.6, 0.8))
        dx, dy = rng.uniform(-1, 1, size=2)
        gal = galsim.Sersic(n=sersic_n, half_light_radius=hlr, flux=flux, trunc=0)
        gal = gal.shear(q=q, beta=theta * galsim.radians).shift(dx * PIXEL_SCALE, dy * PIXEL_SCALE)
        if rng.uniform() < 0.2:  # a faint neighbour near the edge
            r = rng.uniform(20, 28) * PIXEL_SCALE
            phi = rng.uniform(0, 2 * np.pi)
            nb = galsim.Exponential(
                half_light_radius=float(rng.uniform(0.2, 0.6)),
                flux=flux * float(rng.uniform(0.02, 0.2)),
            )
            gal = gal + nb.shift(r * np.cos(phi), r * np.sin(phi))
        psf = galsim.Moffat(beta=3.0, fwhm=fwhm)
        img = galsim.Convolve(gal, psf).drawImage(nx=size, ny=size, scale=PIXEL_SCALE)
        arr = img.array.astype(np.float64)
        snr = float(np.exp(rng.uniform(np.log(10), np.log(300))))
        sigma = arr.max() / snr
        arr = arr + rng.normal(0.0, sigma, size=arr.shape)
        images[i, 0] = arr
        eps = 1.0 - q
        truth[i] = [
            eps,
            np.cos(2 * theta),
            np.sin(2 * theta),
            np.log10(hlr / PIXEL_SCALE),
            0.0,
            sersic_n,
        ]
        fluxes[i] = flux
    return images, truth, fluxes


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="src/galforge/assets", help="folder for the weights + card")
    ap.add_argument("--n-train", type=int, default=6000)
    ap.add_argument("--n-val", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    x_tr, y_tr, f_tr = make_galaxies(args.n_train, args.seed)
    x_va, y_va, f_va = make_galaxies(args.n_val, args.seed + 1)
    scale = set_scale(x_tr)
    y_tr[:, 4] = np.log10(f_tr / scale)
    y_va[:, 4] = np.log10(f_va / scale)
    t_data = time.time() - t0
    print(f"made {args.n_train}+{args.n_val} galaxies in {t_data:.0f} s; set scale {scale:.4g}")

    xt = encoder_inputs(x_tr, scale)
    xv = encoder_inputs(x_va, scale)
    mu = y_tr.mean(0)
    sd = y_tr.std(0) + 1e-8
    yt = torch.from_numpy((y_tr - mu) / sd).float()

    gen = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    model = GalaxyEncoder()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps_per_epoch = math.ceil(args.n_train / args.batch)
    total = steps_per_epoch * args.epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=total)
    step = 0
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(args.n_train, generator=gen)
        run = 0.0
        for b in range(steps_per_epoch):
            idx = perm[b * args.batch : (b + 1) * args.batch]
            xb = xt[idx]
            # flips keep eps/hlr/flux/n and change PA to -θ (sin 2θ flips sign)
            yb = yt[idx].clone()
            flip = torch.rand(len(idx), generator=gen) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
            sin_norm0 = (-0.0 - mu[2]) / sd[2]  # normalised value of sin 2θ = 0
            yb[flip, 2] = 2 * float(sin_norm0) - yb[flip, 2]
            loss = torch.nn.functional.smooth_l1_loss(model.predict(xb), yb, beta=0.5)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            run += loss.item()
        print(
            f"epoch {epoch + 1}/{args.epochs} loss {run / steps_per_epoch:.4f} "
            f"({time.time() - t0:.0f} s)",
            flush=True,
        )

    model.eval()
    with torch.no_grad():
        pred = model.predict(xv).double().numpy() * sd + mu
    err = pred - y_va
    validation = {
        name: {
            "rms": float(np.sqrt(np.mean(err[:, j] ** 2))),
            "median_abs": float(np.median(np.abs(err[:, j]))),
            "truth_std": float(np.std(y_va[:, j])),
        }
        for j, name in enumerate(ENCODER_PARAMS)
    }
    pa_pred = 0.5 * np.degrees(np.arctan2(pred[:, 2], pred[:, 1]))
    pa_true = 0.5 * np.degrees(np.arctan2(y_va[:, 2], y_va[:, 1]))
    dpa = (pa_pred - pa_true + 90) % 180 - 90
    elong = y_va[:, 0] > 0.3
    validation["pa_deg_eps_gt_0.3"] = {
        "rms": float(np.sqrt(np.mean(dpa[elong] ** 2))),
        "median_abs": float(np.median(np.abs(dpa[elong]))),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "galaxy_encoder.safetensors"))
    card = {
        "name": "galforge galaxy encoder",
        "architecture": {
            "class": "galforge.evaluation.features.GalaxyEncoder",
            "width": model.width,
            "num_features": model.num_features,
            "input": f"1x{ENCODER_SIZE}x{ENCODER_SIZE} encoder_inputs()",
        },
        "parameters": list(ENCODER_PARAMS),
        "parameter_units": {
            "eps": "1 - b/a",
            "cos2theta": "",
            "sin2theta": "",
            "log_hlr": "log10 pixels (64-px stamp)",
            "log_flux": "log10 flux / set scale",
            "sersic_n": "",
        },
        "target_mean": mu.tolist(),
        "target_std": sd.tolist(),
        "training": {
            "n_train": args.n_train,
            "n_val": args.n_val,
            "epochs": args.epochs,
            "batch": args.batch,
            "lr": args.lr,
            "seed": args.seed,
            "pixel_scale_arcsec": PIXEL_SCALE,
            "set_scale": scale,
            "seconds": round(time.time() - t0, 1),
            "script": "scripts/train_galaxy_encoder.py",
        },
        "validation": validation,
    }
    (out / "galaxy_encoder.json").write_text(json.dumps(card, indent=2) + "\n")
    print(
        json.dumps(
            {
                "validation_rms": {k: round(v["rms"], 4) for k, v in validation.items()},
                "seconds": card["training"]["seconds"],
            }
        )
    )


if __name__ == "__main__":
    main()
