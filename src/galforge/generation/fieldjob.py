"""Rendering a deep field tile by tile: the picklable job a worker runs (:class:`FieldJob`),
one tile's render-write-record (:func:`run_tile`), and the Dask execution of the tiles still to
do (:func:`execute_tiles`).  Part of :mod:`galforge.generation.field` (whose docstring says how
a field is made: seamless tiles, bounded memory, self-ensembles).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from galforge import interrupt
from galforge.errors import Interrupted
from galforge.generation.fieldlatent import FieldLatent, add_sky_noise, ensemble_index
from galforge.generation.fieldsink import FieldSink
from galforge.models.capabilities import SOURCES, capabilities


@dataclass
class FieldJob:
    """Everything a worker needs to render and write one tile (picklable)."""

    generators: list[nn.Module]
    normalizer: object | None
    size: tuple[int, int]
    tile: int
    seed: int
    out: Path
    fmt: str
    channels_last: bool = True
    compile: bool = False
    threads: int | None = None
    write_to: Path | None = None  # where tiles go while the field is made (None: out)
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_cache"] = {}
        return state

    @property
    def upscale(self) -> int:
        return int(self.generators[0].upscale)

    @property
    def latent_hw(self) -> tuple[int, int]:
        u = self.upscale
        return math.ceil(self.size[0] / u), math.ceil(self.size[1] / u)

    @property
    def grid(self) -> tuple[int, int]:
        return math.ceil(self.size[0] / self.tile), math.ceil(self.size[1] / self.tile)

    @property
    def progress_dir(self) -> Path:
        return self.out.with_name(self.out.name + ".progress")

    @property
    def staged(self) -> Path:
        """Where a FITS or npy field is made: inside the progress folder, moved to ``out``
        when every tile is written (a half-made field never sits under the final name)."""
        return self.progress_dir / self.out.name

    @property
    def write_path(self) -> Path:
        return self.write_to or self.out

    def marker(self, ty: int, tx: int) -> Path:
        return self.progress_dir / f"tile-{ty:05d}-{tx:05d}.done"

    def tiles(self) -> list[tuple[int, int]]:
        gy, gx = self.grid
        return [(ty, tx) for ty in range(gy) for tx in range(gx)]

    def tile_box(self, ty: int, tx: int) -> tuple[int, int, int, int]:
        y0, x0 = ty * self.tile, tx * self.tile
        return y0, x0, min(self.tile, self.size[0] - y0), min(self.tile, self.size[1] - x0)

    def sink(self) -> FieldSink:
        if "sink" not in self._cache:
            c = self.generators[0].channels
            sink = FieldSink(self.write_path, self.fmt, (c, *self.size), self.tile)
            sink.open()
            self._cache["sink"] = sink
        return self._cache["sink"]

    def _runner(self, index: int):
        """The (optionally compiled) tile function of generator ``index``, built once."""
        key = ("run", index)
        if key not in self._cache:
            g = self.generators[index]
            if self.channels_last:
                # in place, but as ordinary tensors: run inside inference_mode, the
                # conversion would leave the caller's model unusable with autograd
                with torch.inference_mode(False):
                    g = g.to(memory_format=torch.channels_last)
            fn = g.forward_window
            if self.compile:
                fn = torch.compile(fn, dynamic=False)
            self._cache[key] = fn
        return self._cache[key]

    def render(self, ty: int, tx: int) -> np.ndarray:
        """Tile ``(ty, tx)`` in physical units, ``C x h x w`` float32 (h, w clipped at edges)."""
        if self.threads and torch.get_num_threads() != self.threads:
            # the same intra-op thread count everywhere keeps the sums, hence the pixels,
            # identical whatever process or cluster worker renders the tile
            torch.set_num_threads(self.threads)
        y0, x0, h, w = self.tile_box(ty, tx)
        g = self.generators[0]
        if SOURCES in capabilities(g):
            # a field of sources: the generator draws any window from the seed (physical units)
            with torch.inference_mode():
                y = g.render_window(self.seed, y0, x0, h, w, self.size)
            return np.ascontiguousarray(y.cpu().numpy(), dtype=np.float32)
        plan = g.plan_window(self.tile)
        oy, ox = y0 // self.upscale, x0 // self.upscale
        latent = FieldLatent(self.seed, self.latent_hw, g.latent_channels)
        device = next(g.parameters()).device
        z = latent.window(
            oy + plan.latent_start, ox + plan.latent_start, plan.latent_size, plan.latent_size
        )[None].to(device)
        if self.channels_last:
            z = z.contiguous(memory_format=torch.channels_last)
        lh, lw = self.latent_hw
        interior = (
            oy + plan.latent_start >= 0
            and ox + plan.latent_start >= 0
            and oy + plan.latent_start + plan.latent_size <= lh
            and ox + plan.latent_start + plan.latent_size <= lw
            and self.tile * (ty + 1) <= self.size[0]
            and self.tile * (tx + 1) <= self.size[1]
        )
        masks = None
        if self.compile or not interior:
            # a compiled tile function always takes masks so that one graph serves every tile
            masks = g.window_masks(plan, (oy, ox), self.latent_hw, device=device)
        index = ensemble_index(ty, tx, len(self.generators), self.seed)
        with torch.inference_mode():
            y = self._runner(index)(z, plan, masks)
            y = add_sky_noise(
                self.generators[index], y[:, :, :h, :w].float(), self.seed, self.size, y0, x0
            )
            y = y.cpu().contiguous()
            if self.normalizer is not None:
                y = self.normalizer.inverse(y)
        y = y.numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
        return np.ascontiguousarray(y[0], dtype=np.float32)


def run_tile(job: FieldJob, ty: int, tx: int) -> int:
    """Render, write and record one tile; returns its pixel count (0: skipped on a stop request)."""
    if interrupt.requested() is not None:
        return 0
    data = job.render(ty, tx)
    y0, x0, h, w = job.tile_box(ty, tx)
    job.sink().write(y0, x0, data)
    job.marker(ty, tx).touch()
    return h * w


def stop_if_interrupted(job: FieldJob) -> None:
    """SIGINT/SIGTERM (galforge.interrupt): the finished tiles are recorded; stop here."""
    signum = interrupt.requested()
    if signum is None:
        return
    done = sum(1 for t in job.tiles() if job.marker(*t).exists())
    raise Interrupted(
        f"interrupted with {done} of {len(job.tiles())} tiles of {job.out} "
        f"written (recorded in {job.progress_dir})",
        signum=signum,
    )


def execute_tiles(
    job: FieldJob, todo, workers, processes, scheduler, progress, todo_pixels
) -> None:
    import dask
    from tqdm.auto import tqdm

    # pixels with SI prefixes: the rate reads "Mpix/s", the remaining time is the ETA
    bar = tqdm(
        total=todo_pixels,
        unit="pix",
        unit_scale=True,  # a bar on a terminal only
        disable=None if progress else True,
        desc="field",
        dynamic_ncols=True,
        smoothing=0.1,
    )
    try:
        if job.compile and scheduler is None and not processes:
            # compile once here, on the first tile, so that worker threads share the graph
            first = todo[0]
            bar.update(run_tile(job, *first))
            todo = todo[1:]
        tasks = [dask.delayed(run_tile, pure=False)(job, ty, tx) for ty, tx in todo]
        if scheduler is not None:
            from distributed import Client, as_completed

            with Client(scheduler) as client:
                futures = client.compute(tasks)
                for fut in as_completed(futures):
                    bar.update(fut.result())
            return
        from dask.callbacks import Callback

        class _Progress(Callback):
            def _posttask(self, key, result, dsk, state, worker_id):
                if isinstance(result, int):
                    bar.update(result)

        if workers == 1 and not processes:
            sched, kwargs = "synchronous", {}
        else:
            sched = "processes" if processes else "threads"
            kwargs = {"num_workers": workers}
        with _Progress():
            dask.compute(*tasks, scheduler=sched, **kwargs)
    finally:
        bar.close()
