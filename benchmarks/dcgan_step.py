"""Time galforge's DCGAN-64 training step against a plain PyTorch loop of the same network.

Like with like: galforge's ``dcgan64`` recipe in its ``paper`` configuration (``model.config=
paper``: Fussell & Moews exactly, transposed convolutions, no sky noise, no EMA) against a
reference written here in the classic pytorch/examples DCGAN structure: two ``nn.Sequential``
networks with the layer list of Fussell & Moews (2019, appendix A), N(0, 0.02)
initialisation, Adam(2e-4, (0.5, 0.999)), and per step: D on real (backward), D on detached
fakes (backward), D step, then G through D with the non-saturating loss (backward), G step.
Both have the same width W (the paper's 128 unless ``--width`` says otherwise) and run in the
same process on the same batches, interleaved (the order alternates every step), after
warm-up steps; the ratio galforge / plain is the overhead of galforge's trainer step.

The ``cpu`` configuration (galforge's default: W = 32, resize-convolution upsampling, sky
noise, D's profile, minibatch-deviation and moments paths, EMA of G) is a different network;
its cost per step on the same batches is printed as a row of its own (``--no-cpu-config``
skips it) and takes no part in the ratio.  The table gives the median seconds per step; the
last line is the same figures as JSON.

    python benchmarks/dcgan_step.py --batch 32 --steps 20 --device cpu [--width 32]
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
    ap.add_argument(
        "--width", type=int, default=128, help="channel multiplier W of both sides (paper: 128)"
    )
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per implementation")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument(
        "--no-cpu-config",
        dest="cpu_config",
        action="store_false",
        help="skip the row of the cpu configuration",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )

    recipe = RECIPES["dcgan64"](
        {"config": "paper", "width": args.width},
        channels=args.channels,
        image_size=64,
        device=device,
        seed=0,
    )
    cpu_recipe = (
        RECIPES["dcgan64"](
            {"config": "cpu"}, channels=args.channels, image_size=64, device=device, seed=0
        )
        if args.cpu_config
        else None
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

    def run_cpu(i):
        rng = torch.Generator(device=device).manual_seed(1000 + i)
        sync()
        t = time.perf_counter()
        cpu_recipe.train_step(real, i, rng)
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
        if cpu_recipe is not None:
            run_cpu(i)
    tg, tp, tc = [], [], []
    for i in range(args.steps):
        if i % 2 == 0:
            tg.append(run_galforge(i))
            tp.append(run_plain(i))
        else:
            tp.append(run_plain(i))
            tg.append(run_galforge(i))
        if cpu_recipe is not None:
            tc.append(run_cpu(i))
    mg, mp = statistics.median(tg), statistics.median(tp)
    mc = statistics.median(tc) if tc else None
    ratio = mg / mp

    def params(net):
        return sum(p.numel() for p in net.parameters()) / 1e6

    print(
        f"DCGAN-64 training step, batch={args.batch}, bands={args.channels}, "
        f"device={device}, threads={torch.get_num_threads()}, torch {torch.__version__}"
    )
    print(f"{args.steps} timed steps each after {args.warmup} warm-up, interleaved")
    rows = [
        ("galforge paper", f"W={args.width}", recipe, tg, mg),
        ("plain pytorch", f"W={args.width}", plain, tp, mp),
    ]
    if cpu_recipe is not None:
        w_cpu = cpu_recipe.settings.width
        rows.append(("galforge cpu", f"W={w_cpu}", cpu_recipe, tc, mc))
    print(
        f"{'implementation':<16}{'network':>8}{'G M par':>9}{'D M par':>9}"
        f"{'median s/step':>15}{'min s/step':>12}{'images/s':>10}"
    )
    for name, net, obj, ts, med in rows:
        print(
            f"{name:<16}{net:>8}{params(obj.G):>9.2f}{params(obj.D):>9.2f}"
            f"{med:>15.4f}{min(ts):>12.4f}{args.batch / med:>10.1f}"
        )
    ratio_min = min(tg) / min(tp)
    print(
        f"ratio galforge paper / plain pytorch (same network): {ratio:.3f} of the medians, "
        f"{ratio_min:.3f} of the fastest steps (the less sensitive to other load)"
    )
    if mc is not None:
        print(f"galforge cpu config (the default; another network, so no ratio): {mc:.4f} s/step")
    print(
        json.dumps(
            {
                "benchmark": "dcgan_step",
                "ratio": round(ratio, 4),
                "ratio_min": round(ratio_min, 4),
                "galforge_median_s": round(mg, 5),
                "plain_median_s": round(mp, 5),
                "cpu_config_median_s": round(mc, 5) if mc is not None else None,
                "cpu_config_width": int(cpu_recipe.settings.width) if cpu_recipe else None,
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
