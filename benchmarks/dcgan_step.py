"""Time galforge's DCGAN-64 training step against a plain PyTorch loop of the same network.

The reference is written here in the classic pytorch/examples DCGAN structure: two
``nn.Sequential`` networks with the layer list of Fussell & Moews (2019, appendix A), N(0,
0.02) initialisation, Adam(2e-4, (0.5, 0.999)), and per step: D on real (backward), D on
detached fakes (backward), D step, then G through D with the non-saturating loss (backward),
G step.  Both run in the same process on the same batches, interleaved (the order
alternates every step), after warm-up steps; the table gives the median seconds per step
and the ratio galforge / plain.  The last line is the same figures as JSON.

    python benchmarks/dcgan_step.py --width 32 --batch 32 --steps 20 --device cpu
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
from torch import nn

from galforge.training.recipes import RECIPES


def plain_generator(nz: int, w: int, nc: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(nz, 8 * w, 4, 1, 0, bias=True),
        nn.ReLU(True),
        nn.ConvTranspose2d(8 * w, 4 * w, 4, 2, 1, bias=False),
        nn.BatchNorm2d(4 * w),
        nn.ReLU(True),
        nn.ConvTranspose2d(4 * w, 2 * w, 4, 2, 1, bias=False),
        nn.BatchNorm2d(2 * w),
        nn.ReLU(True),
        nn.ConvTranspose2d(2 * w, w, 4, 2, 1, bias=False),
        nn.BatchNorm2d(w),
        nn.ReLU(True),
        nn.ConvTranspose2d(w, nc, 4, 2, 1, bias=True),
        nn.Tanh(),
    )


def plain_discriminator(w: int, nc: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(nc, w, 4, 2, 1, bias=True),
        nn.LeakyReLU(0.2, True),
        nn.Conv2d(w, 2 * w, 4, 2, 1, bias=False),
        nn.BatchNorm2d(2 * w),
        nn.LeakyReLU(0.2, True),
        nn.Conv2d(2 * w, 4 * w, 4, 2, 1, bias=False),
        nn.BatchNorm2d(4 * w),
        nn.LeakyReLU(0.2, True),
        nn.Conv2d(4 * w, 8 * w, 4, 2, 1, bias=False),
        nn.BatchNorm2d(8 * w),
        nn.LeakyReLU(0.2, True),
        nn.Conv2d(8 * w, 1, 4, 1, 0, bias=True),
    )


def weights_init(m: nn.Module) -> None:
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class PlainLoop:
    """The reference training step."""

    def __init__(self, width: int, channels: int, device: torch.device, nz: int = 100):
        self.nz = nz
        self.device = device
        self.G = plain_generator(nz, width, channels).to(device)
        self.D = plain_discriminator(width, channels).to(device)
        self.G.apply(weights_init)
        self.D.apply(weights_init)
        self.crit = nn.BCEWithLogitsLoss()
        self.optD = torch.optim.Adam(self.D.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.optG = torch.optim.Adam(self.G.parameters(), lr=2e-4, betas=(0.5, 0.999))

    def step(self, real: torch.Tensor, rng: torch.Generator) -> tuple[float, float]:
        b = real.shape[0]
        noise = torch.randn(b, self.nz, 1, 1, generator=rng, device=rng.device)
        ones = torch.ones(b, device=self.device)
        zeros = torch.zeros(b, device=self.device)
        self.D.zero_grad()
        err_real = self.crit(self.D(real).view(-1), ones)
        err_real.backward()
        fake = self.G(noise)
        err_fake = self.crit(self.D(fake.detach()).view(-1), zeros)
        err_fake.backward()
        self.optD.step()
        self.G.zero_grad()
        err_g = self.crit(self.D(fake).view(-1), ones)
        err_g.backward()
        self.optG.step()
        return (err_real + err_fake).item(), err_g.item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=32, help="channel multiplier W (paper: 128)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per implementation")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )

    recipe = RECIPES["dcgan64"](
        {"width": args.width}, channels=args.channels, image_size=64, device=device, seed=0
    )
    plain = PlainLoop(args.width, args.channels, device)
    data_rng = torch.Generator().manual_seed(0)
    real = (torch.rand(args.batch, args.channels, 64, 64, generator=data_rng) * 2 - 1).to(device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def run_galforge(i):
        rng = torch.Generator(device=device).manual_seed(1000 + i)
        sync()
        t = time.perf_counter()
        recipe.train_step(real, i, rng)
        sync()
        return time.perf_counter() - t

    def run_plain(i):
        rng = torch.Generator(device=device).manual_seed(1000 + i)
        sync()
        t = time.perf_counter()
        plain.step(real, rng)
        sync()
        return time.perf_counter() - t

    for i in range(args.warmup):
        run_galforge(i)
        run_plain(i)
    tg, tp = [], []
    for i in range(args.steps):
        if i % 2 == 0:
            tg.append(run_galforge(i))
            tp.append(run_plain(i))
        else:
            tp.append(run_plain(i))
            tg.append(run_galforge(i))
    mg, mp = statistics.median(tg), statistics.median(tp)
    ratio = mg / mp
    n_g = sum(p.numel() for p in recipe.G.parameters())
    n_d = sum(p.numel() for p in recipe.D.parameters())
    print(
        f"DCGAN-64 training step, W={args.width}, batch={args.batch}, bands={args.channels}, "
        f"device={device}, threads={torch.get_num_threads()}, torch {torch.__version__}"
    )
    print(
        f"G {n_g / 1e6:.2f} M parameters, D {n_d / 1e6:.2f} M parameters, "
        f"{args.steps} timed steps each after {args.warmup} warm-up, interleaved"
    )
    print(f"{'implementation':<16}{'median s/step':>15}{'min s/step':>13}{'images/s':>11}")
    for name, ts, med in (("galforge", tg, mg), ("plain pytorch", tp, mp)):
        print(f"{name:<16}{med:>15.4f}{min(ts):>13.4f}{args.batch / med:>11.1f}")
    print(f"ratio galforge / plain: {ratio:.3f}")
    print(
        json.dumps(
            {
                "benchmark": "dcgan_step",
                "ratio": round(ratio, 4),
                "galforge_median_s": round(mg, 5),
                "plain_median_s": round(mp, 5),
                "width": args.width,
                "batch": args.batch,
                "steps": args.steps,
                "device": str(device),
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "machine": platform.machine(),
            }
        )
    )


if __name__ == "__main__":
    main()
