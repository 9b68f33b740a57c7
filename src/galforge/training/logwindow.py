"""What a training run says as it goes: the log window, progress lines and loss curves.

:class:`LogWindow` sums the losses and timings of the steps since the last log line and turns
them into that line's record (means per step, learning rates, augmentation probabilities,
throughput); :func:`progress_line` is the one-line form of a record for redirected output;
:func:`plot_losses` draws a run's ``log.jsonl`` into ``loss.png``.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from galforge.fileio import atomic_write_bytes


class LogWindow:
    """Losses and timings summed over the steps since the last log line."""

    def __init__(self) -> None:
        self.begin = time.perf_counter()  # the start of this session's training
        self.images_last = 0  # images in the last step's batch (this process)
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, float] = {}
        self.n = 0
        self.t_data = self.t_step = 0.0

    def add(self, losses: Mapping[str, float]) -> None:
        """Count one step's losses."""
        self.n += 1
        for k, v in losses.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)

    def time(self, t_data: float, t_step: float, images: int) -> None:
        """Count one step's seconds waiting for data and in the recipe, and its batch size."""
        self.t_data += t_data
        self.t_step += t_step
        self.images_last = int(images)

    def loss_means(self) -> dict[str, float]:
        """Mean of each loss over the window (the progress bar's postfix)."""
        n = max(self.n, 1)
        return {k: v / n for k, v in self.sums.items() if k.startswith("loss")}

    def record(self, done: int, steps_per_epoch: int, recipe, world_size: int) -> dict:
        """The log line of the window ending at step ``done``; the window starts again."""
        n = max(self.n, 1)
        rec = {"step": done, "epoch": round(done / steps_per_epoch, 4)}
        rec.update({k: v / n for k, v in self.sums.items()})
        rec.update({f"lr_{k}": v for k, v in recipe.learning_rates().items()})
        for name, aug in recipe.augmentations().items():
            p = aug.state_dict().get("p")
            if isinstance(p, (int, float)):
                rec[f"augment_{name}_p"] = float(p)
        rec["time_step_s"] = self.t_step / n
        rec["time_data_s"] = self.t_data / n
        rec["images_per_s"] = (
            self.images_last * world_size * n / max(self.t_step + self.t_data, 1e-9)
        )
        rec["elapsed_s"] = time.perf_counter() - self.begin
        self.reset()
        return rec


def clock(seconds: float) -> str:
    s = int(round(max(seconds, 0.0)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def progress_line(rec: Mapping[str, Any], total: int, start: int = 0) -> str:
    """One line of training progress from a ``log.jsonl`` record (redirected output);
    ``start``: the step this session began at (for the time left)."""
    step = int(rec["step"])
    parts = [
        f"step {step}/{total} ({100.0 * step / max(total, 1):.0f}%)",
        f"epoch {float(rec.get('epoch', 0)):.2f}",
    ]
    losses = [
        f"{k} {v:.4g}"
        for k, v in rec.items()
        if isinstance(v, (int, float)) and (k.startswith("loss") or k in ("r1", "gp"))
    ]
    if losses:
        parts.append(" ".join(losses))
    rate, elapsed = rec.get("images_per_s"), rec.get("elapsed_s")
    if rate:
        parts.append(f"{rate:.1f} img/s")
    if elapsed is not None:
        left = elapsed / max(step - int(start), 1) * (total - step)
        parts.append(f"elapsed {clock(elapsed)} eta {clock(left)}")
    return " | ".join(parts)


def plot_losses(log_path: str | Path, png_path: str | Path) -> Path | None:
    """Draw the loss curves of a ``log.jsonl`` into a PNG (no global matplotlib state)."""
    log_path, png_path = Path(log_path), Path(png_path)
    if not log_path.is_file():
        return None
    rows = []
    for line in log_path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    rows = [r for r in rows if "step" in r and "error" not in r]
    keys = sorted({k for r in rows for k in r if k.startswith("loss")})
    if not rows or not keys:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metrics = sorted({k for r in rows for k in r if k.startswith("metric_")})
    fig = Figure(figsize=(11 if metrics else 7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 2 if metrics else 1, 1)
    for k in keys:
        pts = [(r["step"], r[k]) for r in rows if isinstance(r.get(k), (int, float))]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, label=k, lw=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    if metrics:  # in-training metrics on their own axes, beside the losses
        mx = fig.add_subplot(1, 2, 2)
        for k in metrics:
            pts = [(r["step"], r[k]) for r in rows if isinstance(r.get(k), (int, float))]
            if pts:
                xs, ys = zip(*pts, strict=True)
                mx.plot(xs, ys, "o-", label=k[len("metric_") :], lw=1.2, ms=3)
        mx.set_xlabel("step")
        mx.grid(alpha=0.3)
        mx.legend(loc="best")
    fig.tight_layout()

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(png_path, buf.getvalue())
