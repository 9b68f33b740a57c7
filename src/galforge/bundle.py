"""Bundles: the shareable form of a trained generator.

A bundle is a folder with two files:

``bundle.json``
    ``format``, ``format_version``, ``bundle_id``, ``created``, ``galforge_version``,
    ``family`` (generator family in :mod:`galforge.models.registry`), ``module`` (the galforge
    module that registers the family, optional), ``spec`` (the generator's hyper-parameters),
    ``config`` (the run's resolved config), ``hyperparameters`` (the recipe's settings),
    ``bands``, ``units``, ``normalizer`` (the fitted
    :class:`galforge.data.normalize.Normalizer` as a dict; ``null``: samples stay in model
    space), ``output_range``
    (model-space range of the generator's head), ``data_fingerprint`` (of the training
    data), ``image_shape`` (C, H, W of one sample), ``weights`` (file name, sha256 and tensor
    count of the weights) and ``source`` (where it was exported from, e.g. the run's model,
    step and epoch).
``generator.safetensors``
    the generator's weights (the EMA weights when the run used EMA).

``bundle_id`` is a short content hash of the weights and of the JSON description (the
creation time excluded): two bundles with the same id generate the same images.

Loading executes nothing from the files: JSON is parsed, tensors are read with
``safetensors``, and the network is rebuilt by galforge's own code from ``family`` and
``spec``. A ``module`` named in ``bundle.json`` is imported only when it is a ``galforge``
module.

Sampling is reproducible: the latent of sample ``i`` for seed ``s`` is drawn from its own
random stream derived from ``(s, i)``, so the same sample comes out whatever the batch size
or the range of indices asked for.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from galforge import __version__, pretrained
from galforge.errors import BundleError, ConfigError, GalforgeError
from galforge.fileio import atomic_write_bytes

__all__ = [
    "BUNDLE_JSON",
    "WEIGHTS_FILE",
    "Bundle",
    "IdentityNormalizer",
    "export_run",
    "index_generator",
    "indexed_normal",
    "load_bundle",
    "save_bundle",
]

BUNDLE_JSON = "bundle.json"
WEIGHTS_FILE = "generator.safetensors"
RUN_JSON = "run.json"
BUNDLE_FORMAT = "galforge-bundle"
BUNDLE_FORMAT_VERSION = 1
_REQUIRED_KEYS = ("family", "spec", "bands", "units", "normalizer", "output_range")


# --------------------------------------------------------------------------- latents


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or int(seed) < 0:
        raise ConfigError(f"seed={seed!r}: the seed must be a non-negative integer (e.g. --seed 0)")
    return int(seed)


def index_generator(seed: int, index: int) -> torch.Generator:
    """The CPU ``torch.Generator`` of sample ``index`` for ``seed``.

    Its state is derived from ``(seed, index)`` with :class:`numpy.random.SeedSequence`, so
    neighbouring seeds and indices give independent streams.
    """
    state = np.random.SeedSequence(entropy=_check_seed(seed), spawn_key=(int(index),))
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(state.generate_state(1, np.uint64)[0]))
    return gen


def indexed_normal(
    per_sample_shape: Sequence[int], n: int, seed: int, *, start: int = 0
) -> torch.Tensor:
    """Standard normal latents ``(n, *per_sample_shape)`` for indices ``start..start+n-1``.

    Row ``k`` depends only on ``(seed, start + k)``: asking for indices 0..99 at once or in
    chunks of any size gives the same numbers. Drawn on the CPU in float32.
    """
    _check_seed(seed)
    n = int(n)
    out = torch.empty((n, *per_sample_shape), dtype=torch.float32)
    for k in range(n):
        out[k] = torch.randn(tuple(per_sample_shape), generator=index_generator(seed, start + k))
    return out


# --------------------------------------------------------------------------- files


def _json_default(obj):
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (Path, torch.device)):
        return str(obj)
    if isinstance(obj, torch.dtype):
        return str(obj).replace("torch.", "")
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def _canonical(data) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=_json_default)




def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _tensor_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 of names, dtypes, shapes and values: independent of the file serialisation."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _read_json(path: Path, what: str) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise BundleError(f"{path}: file missing; {what}") from exc
    except OSError as exc:
        raise BundleError(f"{path}: cannot be read ({exc}); {what}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BundleError(
            f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); the file is corrupt: {what}"
        ) from exc
    if not isinstance(data, dict):
        raise BundleError(f"{path}: expected a JSON object; the file is corrupt: {what}")
    return data


def _read_weights(path: Path, what: str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise BundleError(f"{path}: file missing; {what}")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise BundleError(f"{path}: not a readable safetensors file ({exc}); {what}") from exc


class IdentityNormalizer:
    """Stands in for a missing normalizer: the generator's output is used as it is."""

    channels = None

    def forward(self, x):
        return x

    def inverse(self, y):
        return y

    def to_dict(self):
        return None


def _normalizer_dict(normalizer) -> dict | None:
    if normalizer is None or isinstance(normalizer, IdentityNormalizer):
        return None
    if isinstance(normalizer, Mapping):
        return dict(normalizer)
    to_dict = getattr(normalizer, "to_dict", None)
    if to_dict is None:
        raise BundleError(
            f"normalizer of type {type(normalizer).__name__} has no to_dict(); pass the fitted "
            "galforge.data.normalize.Normalizer or its dict"
        )
    return to_dict()


def _safe_module(module) -> str | None:
    """Only galforge's own modules may be imported on behalf of a bundle file."""
    if isinstance(module, str) and (module == "galforge" or module.startswith("galforge.")):
        return module
    return None


def _build_generator(family: str, spec: dict, module: str | None, where: Path) -> torch.nn.Module:
    from galforge.models.registry import build_generator, known_families

    try:
        return build_generator(family, spec, module=_safe_module(module))
    except (GalforgeError, ValueError, KeyError) as exc:
        if family not in known_families():
            raise BundleError(
                f"{where}: unknown generator family {family!r}; known families: "
                f"{', '.join(known_families()) or 'none'} (was the bundle made by a newer "
                "galforge or a plug-in that is not installed?)"
            ) from exc
        raise BundleError(f"{where}: the {family!r} generator cannot be rebuilt: {exc}") from exc


def _load_weights_into(generator: torch.nn.Module, state: dict, where: Path, json_path: Path):
    try:
        generator.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise BundleError(
            f"{where}: the weights do not fit the generator described in {json_path} ({first} "
            f"...); the two files come from different models: re-export the bundle"
        ) from exc


def _probe_shape(generator: torch.nn.Module, device: torch.device) -> tuple[int, ...]:
    shape = _per_sample_latent_shape(generator)
    z = indexed_normal(shape, 1, 0).to(device)
    with torch.inference_mode():
        out = generator(z)
    return tuple(int(s) for s in out.shape[1:])


def _per_sample_latent_shape(generator: torch.nn.Module) -> tuple[int, ...]:
    latent_shape = getattr(generator, "latent_shape", None)
    if latent_shape is None:
        raise BundleError(
            f"generator {type(generator).__name__} has no latent_shape(n); it cannot be sampled"
        )
    return tuple(int(s) for s in latent_shape(1)[1:])


def save_bundle(
    dir,
    *,
    family: str,
    spec: dict,
    state_dict: Mapping[str, torch.Tensor],
    normalizer,
    bands: Sequence[str],
    units: str,
    output_range: Sequence[float],
    config: dict | None,
    data_fingerprint: str | None,
    module: str | None = None,
    source: dict | None = None,
    hyperparameters: dict | None = None,
    created: str | None = None,
) -> Path:
    """Write ``bundle.json`` and ``generator.safetensors`` into ``dir``; return ``dir``.

    The generator is rebuilt from ``family`` and ``spec`` and given ``state_dict`` before
    anything is written, so a bundle that saves is a bundle that loads. ``normalizer`` is the
    fitted Normalizer (or its dict); ``output_range`` the generator head's model-space range;
    ``module`` the galforge module that registers ``family`` (when not
    ``galforge.models.<family>``); ``hyperparameters`` the recipe's own settings (loss,
    optimiser, ...) when they are not already in ``config``; ``source`` free JSON about where
    the weights come from; ``normalizer=None`` means samples stay in model space;
    ``created`` an ISO time (default: now, UTC). Both files are written atomically.
    """
    out_dir = Path(dir)
    bands = [str(b) for b in bands]
    if not bands:
        raise BundleError(f"{out_dir}: a bundle needs the band names of its images")
    lo, hi = (float(v) for v in output_range)
    if not lo < hi:
        raise BundleError(f"{out_dir}: output_range {list(output_range)} must be (low, high)")
    tensors = {}
    for name, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise BundleError(f"{out_dir}: state_dict entry {name!r} is not a tensor")
        tensors[str(name)] = value.detach().to("cpu").contiguous().clone()
    generator = _build_generator(family, dict(spec), module, out_dir)
    _load_weights_into(generator, tensors, out_dir / WEIGHTS_FILE, out_dir / BUNDLE_JSON)
    generator.eval()
    image_shape = _probe_shape(generator, torch.device("cpu"))
    if image_shape[0] != len(bands):
        raise BundleError(
            f"{out_dir}: the generator makes {image_shape[0]} channels but {len(bands)} bands "
            f"{bands} were given"
        )

    from safetensors.torch import save as save_tensors

    # one metadata key only: safetensors does not keep the order of several keys
    payload = save_tensors(tensors, metadata={"format": "pt"})
    weights_sha = hashlib.sha256(payload).hexdigest()
    meta = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_FORMAT_VERSION,
        "galforge_version": __version__,
        "family": str(family),
        "module": module,
        "spec": dict(spec),
        "config": dict(config or {}),
        "hyperparameters": dict(hyperparameters or {}),
        "bands": bands,
        "units": str(units),
        "normalizer": _normalizer_dict(normalizer),
        "output_range": [lo, hi],
        "data_fingerprint": data_fingerprint,
        "image_shape": list(image_shape),
        "weights": {"file": WEIGHTS_FILE, "sha256": weights_sha, "tensors": len(tensors)},
        "source": dict(source or {}),
    }
    try:
        meta = json.loads(_canonical(meta))
    except TypeError as exc:
        raise BundleError(f"{out_dir}: bundle description is not JSON-serialisable: {exc}") from exc
    identity = hashlib.sha256(_tensor_digest(tensors).encode())
    identity.update(_canonical({k: v for k, v in meta.items() if k != "weights"}).encode())
    meta["bundle_id"] = identity.hexdigest()[:12]
    meta["created"] = created or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    atomic_write_bytes(out_dir / WEIGHTS_FILE, payload)
    text = json.dumps(meta, indent=2, sort_keys=True) + "\n"
    atomic_write_bytes(out_dir / BUNDLE_JSON, text.encode("utf-8"))
    return out_dir


# --------------------------------------------------------------------------- Bundle


def _resolve_device(device) -> torch.device:
    if isinstance(device, torch.device):
        return device
    name = str(device or "cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"--device {name!r}: not a device; use auto, cpu or cuda") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available here; use --device cpu")
    return dev


class Bundle:
    """A loaded generator with everything needed to turn its output into physical images.

    Attributes: ``family``, ``spec``, ``config``, ``bands`` (tuple of band names),
    ``units``, ``normalizer``, ``output_range``, ``data_fingerprint``, ``galforge_version``,
    ``bundle_id``, ``created``, ``image_shape`` (C, H, W), ``generator`` (``nn.Module`` in
    eval mode on ``device``), ``path`` (the bundle folder) and ``meta`` (the whole
    ``bundle.json``).
    """

    def __init__(self, path: Path, meta: dict, generator: torch.nn.Module, normalizer, device):
        self.path = Path(path)
        self.meta = meta
        self.generator = generator
        self.normalizer = normalizer
        self.device = device
        self.family: str = meta["family"]
        self.spec: dict = meta["spec"]
        self.config: dict = meta.get("config") or {}
        self.bands: tuple[str, ...] = tuple(meta["bands"])
        self.units: str = meta["units"]
        self.output_range: tuple[float, float] = tuple(float(v) for v in meta["output_range"])
        self.data_fingerprint = meta.get("data_fingerprint")
        self.galforge_version = meta.get("galforge_version")
        self.bundle_id: str = meta["bundle_id"]
        self.created: str = meta.get("created", "")
        self.latent_sample_shape = _per_sample_latent_shape(generator)
        self.image_shape: tuple[int, ...] = _probe_shape(generator, device)

    def __repr__(self) -> str:
        return (
            f"Bundle(family={self.family!r}, bands={self.bands}, units={self.units!r}, "
            f"image_shape={self.image_shape}, bundle_id={self.bundle_id!r}, path='{self.path}')"
        )

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
        (ψ = 1: unchanged; smaller ψ: more typical, less varied images). ``shape_options``
        go to the generator's ``latent_shape`` (e.g. ``image_size=256`` for fully
        convolutional generators that can make larger images).
        """
        n = _check_count(n, "n")
        shape = self.latent_sample_shape
        if shape_options:
            shape = tuple(int(v) for v in self.generator.latent_shape(1, **shape_options)[1:])
        z = indexed_normal(shape, n, seed, start=int(start))
        if truncation is not None:
            psi = float(truncation)
            if not (math.isfinite(psi) and psi >= 0):
                raise ConfigError(f"--truncation {truncation}: must be a number >= 0 (1 = none)")
            mean = self.mean_latent()
            z = mean + psi * (z - mean)
        return z

    def generate_from_latent(self, z, batch: int = 64) -> np.ndarray:
        """Images for latents ``z`` as float32 ``N×C×H×W`` in physical units.

        The generator's model-space output is clamped to ``output_range`` and mapped back
        to the training data's units with the normalizer's inverse.
        """
        batch = _check_count(batch, "batch", minimum=1)
        z = torch.as_tensor(z, dtype=torch.float32)
        lo, hi = self.output_range
        chunks = []
        with torch.inference_mode():
            for s in range(0, z.shape[0], batch):
                out = self.generator(z[s : s + batch].to(self.device))
                chunks.append(out.float().clamp_(lo, hi).cpu().numpy())
        if not chunks:
            return np.empty((0, *self.image_shape), dtype=np.float32)
        model_space = np.concatenate(chunks, axis=0)
        physical = self.normalizer.inverse(model_space)
        return np.ascontiguousarray(np.asarray(physical, dtype=np.float32))

    def sample(
        self,
        n: int,
        seed: int = 0,
        batch: int = 64,
        *,
        start: int = 0,
        truncation: float | None = None,
        **shape_options,
    ) -> np.ndarray:
        """``n`` generated images, float32 ``N×C×H×W`` in the training data's units.

        Sample ``i`` depends only on ``(seed, start + i)``, not on ``batch``. For very large
        ``n`` use :func:`galforge.generation.sampling.iter_samples`, which streams chunks.
        ``shape_options`` go to :meth:`latent`.
        """
        n = _check_count(n, "n")
        batch = _check_count(batch, "batch", minimum=1)
        out = np.empty((n, *self.image_shape), dtype=np.float32) if not shape_options else None
        for s in range(0, n, batch):
            m = min(batch, n - s)
            z = self.latent(m, seed, start=int(start) + s, truncation=truncation, **shape_options)
            images = self.generate_from_latent(z, batch=batch)
            if out is None:
                out = np.empty((n, *images.shape[1:]), dtype=np.float32)
            out[s : s + m] = images
        if out is None:
            out = np.empty((0, *self.image_shape), dtype=np.float32)
        return out


def _check_count(value, name: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name}={value!r}: must be an integer >= {minimum}")
    return int(value)


def _load_bundle_dir(folder: Path, device: torch.device, display_path: Path | None = None) -> Bundle:
    from galforge.data.normalize import Normalizer

    json_path = folder / BUNDLE_JSON
    weights_path = folder / WEIGHTS_FILE
    hint = "re-export the bundle (galforge export RUN) or copy the complete bundle folder"
    meta = _read_json(json_path, hint)
    missing = [k for k in _REQUIRED_KEYS if k not in meta]
    if missing:
        raise BundleError(f"{json_path}: missing key(s) {', '.join(missing)}; {hint}")
    if meta.get("format", BUNDLE_FORMAT) != BUNDLE_FORMAT:
        raise BundleError(f"{json_path}: format {meta.get('format')!r} is not a galforge bundle")
    version = meta.get("format_version", BUNDLE_FORMAT_VERSION)
    if not isinstance(version, int) or version > BUNDLE_FORMAT_VERSION:
        raise BundleError(
            f"{json_path}: bundle format version {version!r} is newer than this galforge "
            f"understands ({BUNDLE_FORMAT_VERSION}); upgrade galforge"
        )
    if not isinstance(meta["spec"], dict) or not isinstance(meta["bands"], list):
        raise BundleError(f"{json_path}: 'spec' must be an object and 'bands' a list; {hint}")
    if meta["normalizer"] is not None and not isinstance(meta["normalizer"], dict):
        raise BundleError(f"{json_path}: 'normalizer' must be an object or null; {hint}")
    if "bundle_id" not in meta:
        meta["bundle_id"] = hashlib.sha256(_canonical(meta).encode()).hexdigest()[:12]
    recorded = (meta.get("weights") or {}).get("sha256")
    if not weights_path.is_file():
        raise BundleError(f"{weights_path}: file missing; {hint}")
    if recorded and _sha256_file(weights_path) != recorded:
        raise BundleError(
            f"{weights_path}: contents do not match the checksum recorded in {json_path} "
            f"(file changed or corrupt); {hint}"
        )
    state = _read_weights(weights_path, hint)
    generator = _build_generator(meta["family"], meta["spec"], meta.get("module"), json_path)
    _load_weights_into(generator, state, weights_path, json_path)
    generator.to(device).eval()
    for p in generator.parameters():
        p.requires_grad_(False)
    try:
        if meta["normalizer"] is None:
            normalizer = IdentityNormalizer()
        else:
            normalizer = Normalizer.from_dict(meta["normalizer"])
    except GalforgeError as exc:
        raise BundleError(f"{json_path}: bad 'normalizer': {exc}") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{json_path}: bad 'normalizer' ({exc!r}); {hint}") from exc
    n_norm = getattr(normalizer, "channels", None)
    if isinstance(n_norm, int) and n_norm != len(meta["bands"]):
        raise BundleError(
            f"{json_path}: the normalizer has {n_norm} channels but the bundle lists "
            f"{len(meta['bands'])} bands {meta['bands']}; {hint}"
        )
    bundle = Bundle(display_path or folder, meta, generator, normalizer, device)
    if bundle.image_shape[0] != len(bundle.bands):
        raise BundleError(
            f"{json_path}: the generator makes {bundle.image_shape[0]} channels but the bundle "
            f"lists {len(bundle.bands)} bands {list(bundle.bands)}; {hint}"
        )
    recorded_shape = meta.get("image_shape")
    if recorded_shape and tuple(recorded_shape) != bundle.image_shape:
        raise BundleError(
            f"{json_path}: image_shape {recorded_shape} does not match the generator's output "
            f"{list(bundle.image_shape)}; {hint}"
        )
    return bundle


def _bundle_is_current(bundle_dir: Path, run_dir: Path) -> bool:
    """Whether RUN/bundle was exported from the run's present generator weights."""
    run_weights = run_dir / WEIGHTS_FILE
    if not (bundle_dir / BUNDLE_JSON).is_file():
        return False
    if not run_weights.is_file():
        return True  # nothing newer to export from
    try:
        meta = json.loads((bundle_dir / BUNDLE_JSON).read_text(encoding="utf-8"))
        recorded = meta["source"]["run_weights_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return recorded == _sha256_file(run_weights)


def load_bundle(path, device="cpu") -> Bundle:
    """Load a bundle for sampling, from a bundle folder or a run folder.

    ``path`` may be a bundle folder (``bundle.json`` + ``generator.safetensors``), its
    ``bundle.json``, or a training run folder (``run.json``). For a run folder, ``RUN/bundle``
    is used when it was exported from the run's present weights; otherwise the run is
    exported to ``RUN/bundle`` first (into a temporary folder when the run folder is read-only),
    so a run folder always means its latest weights. ``device``: ``cpu``, ``cuda`` or
    ``auto``. Raises :class:`BundleError` naming the file for anything missing, corrupt or
    inconsistent.
    """
    dev = _resolve_device(device)
    p = Path(pretrained.resolve(path)).expanduser()
    if not p.exists():
        raise BundleError(f"{p}: no such bundle or run folder; pass a folder with {BUNDLE_JSON} or {RUN_JSON}")
    if p.is_file():
        if p.name in (BUNDLE_JSON, RUN_JSON):
            p = p.parent
        else:
            raise BundleError(
                f"{p}: is a file; pass the bundle folder (with {BUNDLE_JSON}) or the run folder"
            )
    if (p / BUNDLE_JSON).is_file():
        return _load_bundle_dir(p, dev)
    if (p / RUN_JSON).is_file():
        bundle_dir = p / "bundle"
        if _bundle_is_current(bundle_dir, p):
            return _load_bundle_dir(bundle_dir, dev)
        try:
            return _load_bundle_dir(export_run(p), dev)
        except PermissionError:
            with tempfile.TemporaryDirectory(prefix="galforge-bundle-") as tmp:
                return _load_bundle_dir(export_run(p, out=Path(tmp)), dev, display_path=p)
    if (p / "bundle" / BUNDLE_JSON).is_file():
        return _load_bundle_dir(p / "bundle", dev)
    raise BundleError(
        f"{p}: neither a bundle folder ({BUNDLE_JSON} missing) nor a run folder ({RUN_JSON} "
        "missing); pass the folder written by galforge train or galforge export"
    )


def export_run(run_dir, out=None) -> Path:
    """Export the bundle of a training run: read ``RUN/run.json`` and ``RUN/generator.safetensors``
    (and ``RUN/config.yaml`` when ``run.json`` has no ``config``) and write ``RUN/bundle/``
    (or ``out``). Returns the bundle folder.
    """
    run = Path(run_dir).expanduser()
    if not run.is_dir():
        raise BundleError(f"{run}: no such run folder; pass the --out folder of galforge train")
    hint = "is this the --out folder of galforge train, and has it written a checkpoint yet?"
    info = _read_json(run / RUN_JSON, hint)
    missing = [k for k in _REQUIRED_KEYS if k not in info]
    if missing:
        raise BundleError(f"{run / RUN_JSON}: missing key(s) {', '.join(missing)}; {hint}")
    weights_path = run / WEIGHTS_FILE
    state = _read_weights(weights_path, hint)
    prefixes = ("module.", "_orig_mod.")
    for prefix in prefixes:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    config = info.get("config")
    if config is None and (run / "config.yaml").is_file():
        import yaml

        try:
            config = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise BundleError(f"{run / 'config.yaml'}: not valid YAML ({exc}); {hint}") from exc
    source = {
        key: info[key] for key in ("model", "step", "epoch", "parent") if key in info
    }
    source["run_weights_sha256"] = _sha256_file(weights_path)
    return save_bundle(
        Path(out) if out is not None else run / "bundle",
        family=info["family"],
        spec=info["spec"],
        state_dict=state,
        normalizer=info["normalizer"],
        bands=info["bands"],
        units=info["units"],
        output_range=info["output_range"],
        config=config if isinstance(config, dict) else {},
        data_fingerprint=info.get("data_fingerprint"),
        module=info.get("export_module"),
        source=source,
        hyperparameters=info.get("hyperparameters"),
    )
