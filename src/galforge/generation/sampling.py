"""Sampling a bundle: the loaded generator, its seeded latents, batched and streamed samples.

``bundle = load_bundle("runs/x")`` rebuilds the networks of a bundle folder (or of a run
folder's present weights, without writing anything) and composes them into one sampler,
whose capabilities (:mod:`galforge.models.capabilities`) decide what can be asked of it.
``bundle.sample(16, seed=0)`` returns float32 ``N×C×H×W`` images in the training data's
physical units.

Sampling is reproducible: the latent of sample ``i`` for seed ``s`` is drawn from its own
random stream ``(s, i)`` (:func:`galforge.seeding.sample_latents`), so the same sample comes
out whatever the batch size or the range of indices asked for. Generators with per-pixel
noise inputs (capability ``noise``, StyleGAN's) get, by default, noise maps of their own per
sample from the stream ``(s, i)`` of :func:`galforge.seeding.sample_noise` (``noise_mode``
``"random"``); ``"const"`` uses the fixed maps stored with the weights (every sample shares
them), ``"none"`` zero noise.
``for start, images in iter_samples(bundle, 1_000_000, seed=3): ...`` streams chunks with a
progress bar.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

import numpy as np
import torch

from galforge.bundle import BUNDLE_JSON, BundleFile, read_bundle, resolve_device
from galforge.errors import BundleError, ConfigError
from galforge.models.capabilities import (
    CONDITIONAL,
    INTERMEDIATE,
    LATENT,
    NOISE,
    PHYSICAL,
    STAGED,
    capabilities,
    require,
)
from galforge.options import Options
from galforge.runfolder import RUN_JSON, RunFolder
from galforge.seeding import sample_latents, sample_noise

__all__ = ["NOISE_MODES", "Bundle", "SamplingOptions", "iter_samples", "load_bundle", "sample"]

#: ``--noise-mode`` values: per-sample seeded maps (default), the stored maps, zero noise
NoiseMode = Literal["random", "const", "none"]
NOISE_MODES: tuple[str, ...] = get_args(NoiseMode)


@dataclasses.dataclass(frozen=True)
class SamplingOptions(Options):
    """Which samples are drawn and how, the same for :meth:`Bundle.sample`,
    :func:`iter_samples`, :func:`sample` and :func:`galforge.generation.writers.write_samples`
    (each takes one, or these keywords laid over it).

    ``start``: the index of the first sample (sample ``i`` depends only on ``(seed, start + i)``
    and its conditions); ``truncation`` ψ pulls latents toward the mean latent
    (:meth:`Bundle.latent`), ``truncation_cutoff`` truncates the first layers of w only;
    ``noise_mode`` for generators with noise inputs (:meth:`Bundle.noise`; lower-cased,
    checked when made); ``conditions`` for conditional generators (:meth:`Bundle.conditions`).
    """

    CALLER: ClassVar[str] = "sampling"

    start: int = 0
    truncation: float | None = None
    truncation_cutoff: int | None = None
    noise_mode: NoiseMode | None = dataclasses.field(
        default=None, metadata={"option": "--noise-mode"}
    )
    conditions: Any = None

    def __post_init__(self) -> None:
        if isinstance(self.noise_mode, str):
            self._set("noise_mode", self.noise_mode.lower())
        super().__post_init__()
        self._set("start", int(self.start))

    @classmethod
    def split(
        cls, options: SamplingOptions | Mapping[str, Any] | None, kwargs: dict
    ) -> tuple[SamplingOptions, dict]:
        """``(options with the sampling keywords of kwargs laid over, the other keywords)``."""
        names = cls.names()
        mine = {k: v for k, v in kwargs.items() if k in names}
        return cls.build(options, **mine), {k: v for k, v in kwargs.items() if k not in names}


def _check_count(value, name: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name}={value!r}: must be an integer >= {minimum}")
    return int(value)


def _finite(config: dict, key: str) -> float | None:
    data = config.get("data") if isinstance(config, dict) else None
    value = data.get(key) if isinstance(data, dict) else None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _positive(config: dict, key: str) -> float | None:
    value = _finite(config, key)
    return value if value is not None and value > 0 else None


class Bundle:
    """A loaded bundle: the composed generator and what turns its output into physical images.

    Attributes: ``family``, ``parts`` (the rebuilt networks by name), ``generator`` (the
    sampler composed from them, eval mode on ``device``), ``capabilities``, ``spec`` (the
    ``generator`` part's spec; by part name for families of several parts), ``config``,
    ``bands`` (tuple), ``units``, ``normalizer``, ``output_range``, ``data_fingerprint``,
    ``galforge_version``, ``bundle_id``, ``created``, ``image_shape`` (C, H, W), ``path`` and
    ``meta`` (the whole ``bundle.json``); ``pixel_scale`` (arcsec/pixel of the training data)
    and ``zeropoint`` (AB magnitude zero point of its pixel unit), None where unknown.
    """

    def __init__(self, file: BundleFile, device, display_path: Path | None = None):
        from galforge.bundle import probe_image_shape

        self.file = file
        self.path = Path(display_path or file.path)
        self.meta = file.meta
        self.device = device
        self.generator, self.parts = file.sampler(device)
        self.capabilities = capabilities(self.generator)
        require(self.generator, LATENT, "sampling")
        self.normalizer = file.normalizer
        meta = self.meta
        self.family: str = meta["family"]
        specs = {name: p.spec for name, p in file.parts.items()}
        self.spec: dict = specs["generator"] if list(specs) == ["generator"] else specs
        self.config: dict = meta.get("config") or {}
        self.bands: tuple[str, ...] = tuple(meta["bands"])
        self.units: str = meta["units"]
        self.output_range: tuple[float, float] = tuple(float(v) for v in meta["output_range"])
        self.data_fingerprint = meta.get("data_fingerprint")
        self.galforge_version = meta.get("galforge_version")
        self.bundle_id: str = meta["bundle_id"]
        self.created: str = meta.get("created", "")
        self.pixel_scale: float | None = _positive(self.config, "pixel_scale")
        self.zeropoint: float | None = _finite(self.config, "zeropoint")
        if self.zeropoint is None and str(self.units).strip() in ("nanomaggy", "nanomaggies"):
            self.zeropoint = 22.5  # nanomaggies are defined on the AB scale with this zero point
        self.latent_sample_shape = tuple(int(s) for s in self.generator.latent_shape(1)[1:])
        self.image_shape: tuple[int, ...] = probe_image_shape(self.generator)
        json_path = file.path / BUNDLE_JSON
        if self.image_shape[0] != len(self.bands):
            raise BundleError(
                f"{json_path}: the generator makes {self.image_shape[0]} channels but the "
                f"bundle lists {len(self.bands)} bands {list(self.bands)}"
            )
        recorded = meta.get("image_shape")
        if recorded and tuple(recorded) != self.image_shape:
            raise BundleError(
                f"{json_path}: image_shape {recorded} does not match the generator's output "
                f"{list(self.image_shape)}"
            )

    @property
    def condition_names(self) -> tuple[str, ...]:
        """Names of the conditions a conditional generator takes (empty otherwise)."""
        if CONDITIONAL not in self.capabilities:
            return ()
        return tuple(str(c) for c in self.generator.condition_names)

    def conditions(self, values, n: int) -> np.ndarray | None:
        """``n×K`` float32 conditions from ``values``: None, one row (a sequence of K numbers
        or a ``{name: value}`` mapping) used for every sample, or ``n`` rows."""
        if values is None:
            return None
        require(self.generator, CONDITIONAL, "conditions (--condition)")
        names = self.condition_names
        if isinstance(values, dict):
            unknown = sorted(set(values) - set(names))
            missing = [k for k in names if k not in values]
            if unknown or missing:
                raise ConfigError(
                    f"--condition: the {self.family!r} generator takes {', '.join(names)}"
                    + (f"; missing: {', '.join(missing)}" if missing else "")
                    + (f"; unknown: {', '.join(unknown)}" if unknown else "")
                )
            values = [float(values[k]) for k in names]
        arr = np.asarray(values, dtype=np.float32)
        if arr.ndim == 1:
            arr = np.broadcast_to(arr, (int(n), arr.shape[0]))
        if arr.ndim != 2 or arr.shape != (int(n), len(names)):
            raise ConfigError(
                f"conditions of shape {np.shape(values)}: give {len(names)} values "
                f"({', '.join(names)}) per sample, or one row for all"
            )
        return np.ascontiguousarray(arr)

    def __repr__(self) -> str:
        return (
            f"Bundle(family={self.family!r}, bands={self.bands}, units={self.units!r}, "
            f"image_shape={self.image_shape}, bundle_id={self.bundle_id!r}, path='{self.path}')"
        )

    def stage(self, stage: int) -> Bundle:
        """This bundle seen at stage ``stage`` of a chained generator (``staged``).

        The same latents (sample ``i`` for a seed is the same galaxy at every stage), the
        stage's own model-space output, mapped to physical units with the stage's
        normaliser (hyper-parameter ``<part>_normalizer``; the bundle's when absent). The
        last stage is the bundle itself.
        """
        require(self.generator, STAGED, "--stage")
        names = tuple(self.generator.stages)
        if (
            isinstance(stage, bool)
            or not isinstance(stage, (int, np.integer))
            or not 1 <= int(stage) <= len(names)
        ):
            raise ConfigError(
                f"--stage {stage}: the {self.family!r} model has stages 1 to {len(names)}"
            )
        stage = int(stage)
        if stage == len(names):
            return self
        import copy

        from galforge.bundle import probe_image_shape
        from galforge.data.normalize import Normalizer

        view = copy.copy(self)
        view.generator = _StageSampler(self.generator, stage).eval()
        view.capabilities = capabilities(view.generator)
        norm = (self.meta.get("hyperparameters") or {}).get(f"{names[stage - 1]}_normalizer")
        view.normalizer = Normalizer.from_dict(norm) if norm else self.normalizer
        view.image_shape = probe_image_shape(view.generator)
        return view

    def mean_latent(self) -> torch.Tensor:
        """The mean latent (zeros for Gaussian latents unless the generator defines one)."""
        custom = getattr(self.generator, "mean_latent", None)
        if callable(custom):
            return torch.as_tensor(custom(), dtype=torch.float32).cpu()
        return torch.zeros(self.latent_sample_shape, dtype=torch.float32)

    def latent(
        self,
        n: int,
        seed: int = 0,
        *,
        start: int = 0,
        truncation: float | None = None,
        **shape_options,
    ) -> torch.Tensor:
        """Latents of samples ``start..start+n-1`` for ``seed`` (CPU float32 tensor).

        ``truncation`` ψ pulls each latent toward the mean latent: ``mean + ψ (z - mean)``
        (for generators with an intermediate latent space the pull happens in w, at
        :meth:`generate_from_latent`). ``shape_options`` go to the generator's
        ``latent_shape`` (e.g. ``image_size=256`` for fully convolutional generators).
        """
        n = _check_count(n, "n")
        shape = self.latent_sample_shape
        if shape_options:
            shape = tuple(int(v) for v in self.generator.latent_shape(1, **shape_options)[1:])
        z = sample_latents(shape, n, seed, start=int(start))
        psi = _check_psi(truncation)
        if psi is not None and INTERMEDIATE not in self.capabilities:
            mean = self.mean_latent()
            z = mean + psi * (z - mean)
        return z

    def noise_mode(self, mode: str | None = None) -> str | None:
        """The noise mode ``mode`` stands for (None: ``"random"``); None for generators without
        noise inputs (a mode asked of one is refused, naming the ``noise`` capability)."""
        if mode is not None:
            mode = str(mode).lower()
            if mode not in NOISE_MODES:
                raise ConfigError(f"--noise-mode {mode!r}: choose one of {', '.join(NOISE_MODES)}")
            require(self.generator, NOISE, f"--noise-mode {mode}")
            return mode
        return "random" if NOISE in self.capabilities else None

    def noise(
        self, n: int, seed: int = 0, *, start: int = 0, mode: str | None = None
    ) -> list[torch.Tensor] | None:
        """Noise maps for samples ``start..start+n-1`` of ``seed`` (capability ``noise``).

        ``mode`` (see :data:`NOISE_MODES`; default ``"random"``): ``"random"`` draws the maps of
        sample ``i`` from its own stream (``N×1×h×w`` each, independent of ``n`` and of the
        batch); ``"const"`` gives the stored maps and ``"none"`` zeros (``1×1×h×w``, shared).
        None for generators without noise inputs. Pass the result to
        :meth:`generate_from_latent` / :meth:`generate_from_w` (``noise=``).
        """
        mode = self.noise_mode(mode)
        if mode is None:
            return None
        g = self.generator
        if mode == "const":
            return [m.detach().float().cpu().reshape(1, 1, *m.shape[-2:]) for m in g.const_noise()]
        shapes = [tuple(int(v) for v in s) for s in g.noise_shapes()]
        if mode == "none":
            return [torch.zeros((1, 1, *s)) for s in shapes]
        return sample_noise(shapes, _check_count(n, "n"), seed, start=int(start))

    def truncate_w(
        self, w: torch.Tensor, psi: float | None, cutoff: int | None = None
    ) -> torch.Tensor:
        """``w`` pulled toward ``mean_w()``: ``mean + psi (w - mean)``, on the first ``cutoff``
        layers only when given (then per-layer ``N×num_ws×w_dim``)."""
        require(self.generator, INTERMEDIATE, "truncation in w")
        psi = _check_psi(psi)
        cutoff = _check_cutoff(cutoff)
        g = self.generator
        if psi is None:
            return w
        mean = torch.as_tensor(g.mean_w(), dtype=w.dtype).to(w.device)
        if cutoff is None:
            return mean + psi * (w - mean)
        ws = w[:, None, :].repeat(1, int(g.num_ws), 1) if w.dim() == 2 else w.clone()
        ws[:, :cutoff] = mean + psi * (ws[:, :cutoff] - mean)
        return ws

    def _forward(
        self, z: torch.Tensor, conditions, truncation, noise=None, truncation_cutoff=None
    ) -> torch.Tensor:
        caps = self.capabilities
        kw = {} if noise is None else {"noise": noise}
        args = []
        if conditions is not None:
            require(self.generator, CONDITIONAL, "conditions")
            args.append(torch.as_tensor(conditions, dtype=torch.float32).to(self.device))
        elif CONDITIONAL in caps:
            raise ConfigError(
                f"the {self.family!r} generator needs conditions "
                f"({', '.join(self.generator.condition_names)}); pass conditions=..."
            )
        psi = _check_psi(truncation)
        if truncation_cutoff is not None:
            require(self.generator, INTERMEDIATE, "--truncation-cutoff")
        if INTERMEDIATE in caps and psi is not None:
            g = self.generator
            w = self.truncate_w(g.mapping(z, *args), psi, truncation_cutoff)
            return g.synthesis(w, *args, **kw)
        return self.generator(z, *args, **kw)

    def to_w(self, z, conditions=None) -> torch.Tensor:
        """Intermediate latents ``w = mapping(z)`` (generators with an intermediate space).

        Interpolation, truncation, style mixing and vector arithmetic in w use the helpers of
        :mod:`galforge.generation.latent` on these, then :meth:`generate_from_w`.
        """
        require(self.generator, INTERMEDIATE, "w latents")
        z = torch.as_tensor(z, dtype=torch.float32).to(self.device)
        args = (
            ()
            if conditions is None
            else (torch.as_tensor(conditions, dtype=torch.float32).to(self.device),)
        )
        with torch.inference_mode():
            return self.generator.mapping(z, *args).float().cpu()

    def generate_from_w(self, w, batch: int = 64, *, conditions=None, noise=None) -> np.ndarray:
        """Images (physical units) for intermediate latents ``w`` (``N×w_dim`` or per layer
        ``N×num_ws×w_dim``, see :meth:`to_w`); ``noise`` from :meth:`noise` (None: the
        generator's stored maps)."""
        require(self.generator, INTERMEDIATE, "w latents")
        batch = _check_count(batch, "batch", minimum=1)
        w = torch.as_tensor(w, dtype=torch.float32)
        lo, hi = self.output_range
        chunks = []
        with torch.inference_mode():
            for s in range(0, w.shape[0], batch):
                args = (
                    ()
                    if conditions is None
                    else (
                        torch.as_tensor(conditions, dtype=torch.float32)[s : s + batch].to(
                            self.device
                        ),
                    )
                )
                kw = {} if noise is None else {"noise": self._noise_rows(noise, s, s + batch)}
                out = self.generator.synthesis(w[s : s + batch].to(self.device), *args, **kw)
                self._check_finite(out)
                chunks.append(out.float().clamp_(lo, hi).cpu().numpy())
        if not chunks:
            return np.empty((0, *self.image_shape), dtype=np.float32)
        physical = self.normalizer.inverse(np.concatenate(chunks, axis=0))
        return np.ascontiguousarray(np.asarray(physical, dtype=np.float32))

    def _check_finite(self, out: torch.Tensor) -> None:
        """Refuse NaN or infinite pixels (broken weights) instead of writing them."""
        if not bool(torch.isfinite(out).all()):
            raise BundleError(
                f"{self.path}: the generator produced NaN or infinite pixels; its weights are "
                "broken: re-export the bundle from an intact run (galforge export RUN)"
            )

    def _noise_rows(self, noise, s: int, e: int) -> list[torch.Tensor]:
        require(self.generator, NOISE, "noise maps")
        return [(m if m.shape[0] == 1 else m[s:e]).to(self.device) for m in noise]

    def generate_from_latent(
        self,
        z,
        batch: int = 64,
        *,
        conditions=None,
        truncation: float | None = None,
        truncation_cutoff: int | None = None,
        noise=None,
    ) -> np.ndarray:
        """Images for latents ``z`` as float32 ``N×C×H×W`` in physical units.

        The generator's model-space output is clamped to ``output_range`` and mapped back
        to the training data's units with the normalizer's inverse (a generator with the
        ``physical`` capability returns physical units itself: used as it is). ``conditions``
        (``N×K``) for conditional generators; ``truncation`` applies in w for generators
        with an intermediate latent space (to the first ``truncation_cutoff`` layers when
        given). ``noise``: maps from :meth:`noise` (None: the generator's stored maps).
        """
        batch = _check_count(batch, "batch", minimum=1)
        z = torch.as_tensor(z, dtype=torch.float32)
        cond = None if conditions is None else torch.as_tensor(conditions, dtype=torch.float32)
        lo, hi = self.output_range
        physical = PHYSICAL in self.capabilities
        chunks = []
        with torch.inference_mode():
            for s in range(0, z.shape[0], batch):
                c = None if cond is None else cond[s : s + batch]
                nz = None if noise is None else self._noise_rows(noise, s, s + batch)
                out = self._forward(
                    z[s : s + batch].to(self.device), c, truncation, nz, truncation_cutoff
                ).float()
                self._check_finite(out)
                chunks.append((out if physical else out.clamp_(lo, hi)).cpu().numpy())
        if not chunks:
            return np.empty((0, *self.image_shape), dtype=np.float32)
        if physical:  # the generator maps its output to physical units itself
            return np.ascontiguousarray(np.concatenate(chunks, axis=0), dtype=np.float32)
        model_space = np.concatenate(chunks, axis=0)
        physical = self.normalizer.inverse(model_space)
        return np.ascontiguousarray(np.asarray(physical, dtype=np.float32))

    def sample(
        self,
        n: int,
        seed: int = 0,
        batch: int = 64,
        options: SamplingOptions | Mapping[str, Any] | None = None,
        **kwargs,
    ) -> np.ndarray:
        """``n`` generated images, float32 ``N×C×H×W`` in the training data's units.

        Sample ``i`` depends only on ``(seed, start + i)`` (and its conditions), not on
        ``batch``. For very large ``n`` use :func:`iter_samples`, which streams chunks.
        ``options``: a :class:`SamplingOptions` (``start``, ``truncation``,
        ``truncation_cutoff``, ``noise_mode``, ``conditions``) or its keywords; any other
        keyword is a shape option of the latent (:meth:`latent`).
        """
        o, shape_options = SamplingOptions.split(options, kwargs)
        start, truncation, noise_mode = o.start, o.truncation, o.noise_mode
        n = _check_count(n, "n")
        batch = _check_count(batch, "batch", minimum=1)
        cond = _given_or_drawn(self, o.conditions, n, seed, start)
        self.noise_mode(noise_mode)
        out = np.empty((n, *self.image_shape), dtype=np.float32) if not shape_options else None
        for s in range(0, n, batch):
            m = min(batch, n - s)
            z = self.latent(m, seed, start=int(start) + s, truncation=truncation, **shape_options)
            c = None if cond is None else cond[s : s + m]
            nz = self.noise(m, seed, start=int(start) + s, mode=noise_mode)
            images = self.generate_from_latent(
                z,
                batch=batch,
                conditions=c,
                truncation=truncation,
                truncation_cutoff=o.truncation_cutoff,
                noise=nz,
            )
            if out is None:
                out = np.empty((n, *images.shape[1:]), dtype=np.float32)
            out[s : s + m] = images
        if out is None:
            out = np.empty((0, *self.image_shape), dtype=np.float32)
        return out


class _StageSampler(torch.nn.Module):
    """A ``staged`` sampler cut after stage ``stage``: ``forward(z)`` is that stage's output."""

    CAPABILITIES = frozenset({LATENT})

    def __init__(self, chain: torch.nn.Module, stage: int):
        super().__init__()
        self.chain, self.stage = chain, int(stage)
        if NOISE in getattr(chain, "CAPABILITIES", ()):
            self.CAPABILITIES = frozenset({LATENT, NOISE})

    def latent_shape(self, n: int, **options) -> tuple[int, ...]:
        return tuple(self.chain.latent_shape(n, **options))

    def noise_shapes(self) -> list:
        return list(self.chain.noise_shapes())

    def const_noise(self) -> list:
        return list(self.chain.const_noise())

    def forward(self, z: torch.Tensor, noise: list | None = None) -> torch.Tensor:
        if noise is None:
            return self.chain.stage_output(z, self.stage)
        return self.chain.stage_output(z, self.stage, noise=noise)


def _given_or_drawn(bundle: Bundle, conditions, n: int, seed: int, start: int):
    """The conditions as given (:meth:`Bundle.conditions`); none given to a conditional
    generator that carries a sample of its training catalogue: rows drawn from it per sample
    (:func:`galforge.generation.observe.draw_conditions`)."""
    if conditions is None:
        from galforge.generation.observe import draw_conditions

        drawn = draw_conditions(bundle, n, seed, start=start)
        if drawn is not None:
            return drawn
    return bundle.conditions(conditions, n)


def _check_psi(truncation) -> float | None:
    if truncation is None:
        return None
    psi = float(truncation)
    if not (math.isfinite(psi) and psi >= 0):
        raise ConfigError(f"--truncation {truncation}: must be a number >= 0 (1 = none)")
    return psi


def _check_cutoff(cutoff) -> int | None:
    if cutoff is None:
        return None
    if isinstance(cutoff, bool) or not isinstance(cutoff, (int, np.integer)) or cutoff < 0:
        raise ConfigError(
            f"--truncation-cutoff {cutoff!r}: must be a whole number >= 0 "
            "(the first layers truncated)"
        )
    return int(cutoff)


def load_bundle(path, device="auto") -> Bundle:
    """Load a bundle for sampling, from a bundle folder or a run folder; writes nothing.

    ``path`` may be a bundle folder (``bundle.json`` + one safetensors file per part), its
    ``bundle.json``, ``pretrained:NAME`` (a shipped bundle), or a training run folder (``run.json``): a run folder means its present
    weights (``RUN/bundle`` when it was exported from them, otherwise the bundle the export
    would write, built in memory). ``device``: ``auto`` (CUDA, then Apple MPS, then CPU),
    ``cpu``, ``cuda``, ``cuda:N`` or ``mps``. Raises
    :class:`BundleError` naming the file for anything missing, corrupt or inconsistent.
    """
    from galforge import pretrained

    dev = resolve_device(device)
    p = Path(pretrained.resolve(path)).expanduser()
    if not p.exists():
        raise BundleError(
            f"{p}: no such bundle or run folder; pass a folder with {BUNDLE_JSON} or {RUN_JSON}"
        )
    if p.is_file():
        if p.name in (BUNDLE_JSON, RUN_JSON):
            p = p.parent
        else:
            raise BundleError(
                f"{p}: is a file; pass the bundle folder (with {BUNDLE_JSON}) or the run folder"
            )
    if (p / BUNDLE_JSON).is_file():
        return Bundle(read_bundle(p), dev)
    run = RunFolder(p)
    if run.is_run():
        return Bundle(run.bundle_file(), dev, display_path=p)
    if (p / "bundle" / BUNDLE_JSON).is_file():
        return Bundle(read_bundle(p / "bundle"), dev)
    raise BundleError(
        f"{p}: neither a bundle folder ({BUNDLE_JSON} missing) nor a run folder ({RUN_JSON} "
        "missing); pass the folder written by galforge train or galforge export"
    )


def iter_samples(
    bundle: Bundle,
    n: int,
    seed: int = 0,
    batch: int = 64,
    options: SamplingOptions | Mapping[str, Any] | None = None,
    *,
    progress: bool | None = None,
    desc: str = "generating",
    **kwargs,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(first_index, images)`` chunks of at most ``batch`` samples, ``n`` in all.

    ``options``: a :class:`SamplingOptions` or its keywords (``start``, ``truncation``,
    ``truncation_cutoff``, ``noise_mode``, ``conditions``). ``progress``: ``True`` shows a
    progress bar on stderr, ``False`` none, ``None`` (default) shows one only when stderr is a
    terminal.
    """
    o = SamplingOptions.build(options, **kwargs)
    start, truncation, truncation_cutoff, noise_mode = (
        o.start,
        o.truncation,
        o.truncation_cutoff,
        o.noise_mode,
    )
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ConfigError(f"-n {n!r}: the number of samples must be an integer >= 0")
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise ConfigError(f"--batch {batch!r}: the batch size must be an integer >= 1")
    n, batch = int(n), int(batch)
    cond = _given_or_drawn(bundle, o.conditions, n, seed, start)
    bundle.noise_mode(noise_mode)
    from tqdm.auto import tqdm

    with tqdm(
        total=n, desc=desc, unit="img", disable=(None if progress is None else not progress)
    ) as bar:
        for offset in range(0, n, batch):
            m = min(batch, n - offset)
            z = bundle.latent(m, seed, start=start + offset, truncation=truncation)
            c = None if cond is None else cond[offset : offset + m]
            nz = bundle.noise(m, seed, start=start + offset, mode=noise_mode)
            images = bundle.generate_from_latent(
                z,
                batch=batch,
                truncation=truncation,
                truncation_cutoff=truncation_cutoff,
                conditions=c,
                noise=nz,
            )
            bar.update(m)
            yield start + offset, images


def sample(
    bundle: Bundle,
    n: int,
    seed: int = 0,
    batch: int = 64,
    options: SamplingOptions | Mapping[str, Any] | None = None,
    *,
    progress: bool | None = None,
    **kwargs,
) -> np.ndarray:
    """All ``n`` samples in one float32 ``N×C×H×W`` array (with an optional progress bar);
    ``options`` as for :func:`iter_samples`."""
    o = SamplingOptions.build(options, **kwargs)
    out = np.empty((int(n), *bundle.image_shape), dtype=np.float32)
    for first, images in iter_samples(bundle, n, seed, batch, o, progress=progress):
        out[first - o.start : first - o.start + len(images)] = images
    return out
