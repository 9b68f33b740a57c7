"""The bundle file format: the shareable form of a trained generator.

A bundle is a folder with ``bundle.json`` and one safetensors file per named part::

    bundle.json
    generator.safetensors          # family with one part (dcgan, sgan, ...)
    stage1.safetensors + stage2.safetensors       # e.g. a chained super-resolution model
    positions.safetensors + galaxies.safetensors  # e.g. a two-stage sparse-field model

``bundle.json`` (format version 2) holds ``format``, ``format_version``, ``bundle_id``,
``created``, ``galforge_version``, ``family`` (how the parts make a sample:
:func:`galforge.models.registry.compose`), ``module`` (the galforge module that registers the
family, optional), ``parts`` (by name: the part's ``family`` in the generator registry, its
``spec``, ``module``, ``file``, ``sha256`` and tensor count), ``config`` (the run's resolved
config), ``hyperparameters`` (the recipe's settings), ``bands``, ``units``, ``normalizer``
(the fitted :class:`galforge.data.normalize.Normalizer` as a dict; ``null``: samples stay in
model space), ``output_range`` (model-space range of the generator's head),
``data_fingerprint``, ``image_shape`` (C, H, W of one sample) and ``source`` (where it was
exported from).

Bundles of format version 1 (galforge 0.1: ``family`` + ``spec`` + ``weights`` and one
``generator.safetensors``) are read as a family with the single part ``generator``.

``bundle_id`` is a short content hash of the weights and of the JSON description (the
creation time excluded): two bundles with the same id generate the same images.

Reading executes nothing from the files: JSON is parsed, tensors are read with
``safetensors``, and the networks are rebuilt by galforge's own code from the part specs.
A ``module`` named in ``bundle.json`` is imported only when it is a ``galforge`` module.
This module reads, checks and writes bundles; sampling them is :mod:`galforge.generation`'s.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from galforge import __version__
from galforge.errors import BundleError, ConfigError, GalforgeError
from galforge.fileio import atomic_write_bytes
from galforge.seeding import sample_latents

__all__ = [
    "BUNDLE_JSON",
    "WEIGHTS_FILE",
    "BundleFile",
    "IdentityNormalizer",
    "Part",
    "build_parts",
    "describe_bundle",
    "part_file",
    "probe_image_shape",
    "read_bundle",
    "resolve_device",
    "save_bundle",
    "sha256_file",
    "write_bundle",
]

BUNDLE_JSON = "bundle.json"
WEIGHTS_FILE = "generator.safetensors"
BUNDLE_FORMAT = "galforge-bundle"
BUNDLE_FORMAT_VERSION = 2
_REQUIRED_KEYS = ("family", "bands", "units", "normalizer", "output_range")
HINT = "re-export the bundle (galforge export RUN) or copy the complete bundle folder"


@dataclass
class Part:
    """One named network of a bundle: its registered ``family``, JSON ``spec`` and weights."""

    family: str
    spec: dict
    state_dict: Mapping[str, torch.Tensor]
    module: str | None = None


def part_file(name: str) -> str:
    """File of part ``name`` in a bundle or run folder (``generator.safetensors``)."""
    return f"{name}.safetensors"


# --------------------------------------------------------------------------- helpers


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


def sha256_file(path: Path) -> str:
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


MAX_JSON_CHARS = 64 << 20  # a bundle.json / run.json is kilobytes; a config a few MB at most
MAX_JSON_DEPTH = 32  # deeper than any description galforge writes
MAX_PARAMETER_BYTES = 2 << 30  # a part whose parameters and buffers exceed 2 GiB is refused


def _depth(obj, level: int = 0) -> int:
    """Nesting depth of parsed JSON (stops counting past MAX_JSON_DEPTH)."""
    if level > MAX_JSON_DEPTH:
        return level
    if isinstance(obj, dict):
        return max((_depth(v, level + 1) for v in obj.values()), default=level + 1)
    if isinstance(obj, list):
        return max((_depth(v, level + 1) for v in obj), default=level + 1)
    return level


def non_finite(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors that hold NaN or infinity."""
    return [
        k
        for k, v in tensors.items()
        if torch.is_floating_point(v) and not bool(torch.isfinite(v).all())
    ]


def _check_finite(tensors: Mapping[str, torch.Tensor], where, what: str) -> None:
    bad = non_finite(tensors)
    if bad:
        raise BundleError(
            f"{where}: {len(bad)} weight tensor(s) hold NaN or infinity ({bad[0]}, ...); {what}"
        )


def _spec_size(part, where: Path) -> None:
    """Refuse a part whose spec describes networks too large to allocate (built on the
    ``meta`` device first: shapes only, no memory), naming the largest spec value."""
    from galforge.models.registry import build_generator

    try:
        with torch.device("meta"):
            net = build_generator(part.family, dict(part.spec), module=safe_module(part.module))
        size = sum(t.numel() * t.element_size() for t in (*net.parameters(), *net.buffers()))
    except GalforgeError:
        return  # reported with its own message when the part is built for real
    except Exception:  # noqa: BLE001 - a family that cannot be built on meta is built for real
        size = 0
        numbers = [
            v for v in part.spec.values() if isinstance(v, (int, float)) and not isinstance(v, bool)
        ]
        if not any(abs(v) > 1e6 for v in numbers):
            return
        size = None  # not measurable: a spec value beyond any network galforge builds
    if size is None or size > MAX_PARAMETER_BYTES:
        numeric = {
            k: v
            for k, v in part.spec.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        key = max(numeric, key=lambda k: abs(numeric[k])) if numeric else "?"
        about = "an unmeasurable size" if size is None else f"about {size / 2**30:.3g} GiB"
        raise BundleError(
            f"{where}: the spec describes a {part.family!r} network of {about} "
            f"(spec key {key!r}={numeric.get(key)!r}); galforge builds bundle parts of at "
            f"most {MAX_PARAMETER_BYTES >> 30} GiB: the file is corrupt or not made by galforge"
        )


def read_json(path: Path, what: str) -> dict:
    """A JSON object from ``path``; BundleError naming the file (and ``what`` to do) otherwise."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise BundleError(f"{path}: file missing; {what}") from exc
    except UnicodeDecodeError as exc:
        raise BundleError(
            f"{path}: not a text (UTF-8) JSON file; the file is corrupt: {what}"
        ) from exc
    except OSError as exc:
        raise BundleError(f"{path}: cannot be read ({exc}); {what}") from exc
    if len(text) > MAX_JSON_CHARS:
        raise BundleError(
            f"{path}: {len(text)} characters is far more than a description "
            f"needs; the file is corrupt: {what}"
        )
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BundleError(
            f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); the file is corrupt: {what}"
        ) from exc
    except RecursionError as exc:
        raise BundleError(f"{path}: JSON nested too deeply; the file is corrupt: {what}") from exc
    if _depth(data) > MAX_JSON_DEPTH:
        raise BundleError(
            f"{path}: JSON nested deeper than {MAX_JSON_DEPTH} levels; the file is corrupt: {what}"
        )
    if not isinstance(data, dict):
        raise BundleError(f"{path}: expected a JSON object; the file is corrupt: {what}")
    return data


def read_weights(path: Path, what: str) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; BundleError naming the file otherwise."""
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


def _normalizer_from(meta: dict, json_path: Path):
    from galforge.data.normalize import Normalizer

    try:
        if meta["normalizer"] is None:
            normalizer = IdentityNormalizer()
        else:
            normalizer = Normalizer.from_dict(meta["normalizer"])
    except GalforgeError as exc:
        raise BundleError(f"{json_path}: bad 'normalizer': {exc}") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{json_path}: bad 'normalizer' ({exc!r}); {HINT}") from exc
    n_norm = getattr(normalizer, "channels", None)
    if isinstance(n_norm, int) and n_norm != len(meta["bands"]):
        raise BundleError(
            f"{json_path}: the normalizer has {n_norm} channels but the bundle lists "
            f"{len(meta['bands'])} bands {meta['bands']}; {HINT}"
        )
    return normalizer


def safe_module(module) -> str | None:
    """Only galforge's own modules may be imported on behalf of a bundle file."""
    if isinstance(module, str) and (module == "galforge" or module.startswith("galforge.")):
        return module
    return None


def _build_part(part: Part, where: Path) -> nn.Module:
    from galforge.models.registry import build_generator, known_families

    _spec_size(part, where)
    try:
        net = build_generator(part.family, dict(part.spec), module=safe_module(part.module))
    except (GalforgeError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        if part.family not in known_families():
            raise BundleError(
                f"{where}: unknown generator family {part.family!r}; known families: "
                f"{', '.join(known_families()) or 'none'} (was the bundle made by a newer "
                "galforge or a plug-in that is not installed?)"
            ) from exc
        raise BundleError(
            f"{where}: the {part.family!r} generator cannot be rebuilt: {exc}"
        ) from exc
    try:
        net.load_state_dict(dict(part.state_dict), strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise BundleError(
            f"{where}: the weights do not fit the generator described in {BUNDLE_JSON} ({first} "
            f"...); the files come from different models: re-export the bundle"
        ) from exc
    return net


def build_parts(
    parts: Mapping[str, Part], family: str, module: str | None, where: Path, device=None
) -> tuple[nn.Module, dict[str, nn.Module]]:
    """Rebuild every part (weights loaded, eval mode, frozen) and compose the sampler."""
    from galforge.models.capabilities import capabilities
    from galforge.models.registry import compose

    nets = {}
    for name, part in parts.items():
        net = _build_part(part, where / part_file(name))
        if device is not None:
            net.to(device)
        net.eval()
        for p in net.parameters():
            p.requires_grad_(False)
        nets[name] = net
    try:
        sampler = compose(family, nets, module=safe_module(module))
        capabilities(sampler)
    except GalforgeError as exc:
        raise BundleError(f"{where / BUNDLE_JSON}: {exc}") from exc
    sampler.eval()
    return sampler, nets


def probe_image_shape(sampler: nn.Module) -> tuple[int, ...]:
    """(C, H, W) of one sample of ``sampler`` (drawn for seed 0, index 0)."""
    from galforge.models.capabilities import CONDITIONAL, LATENT, capabilities

    caps = capabilities(sampler)
    if LATENT not in caps:
        raise BundleError(
            f"generator {type(sampler).__name__} does not declare the 'latent' capability; "
            "it cannot be sampled"
        )
    shape = tuple(int(s) for s in sampler.latent_shape(1)[1:])
    device = next(iter(sampler.parameters()), torch.empty(0)).device
    z = sample_latents(shape, 1, 0).to(device)
    with torch.inference_mode():
        if CONDITIONAL in caps:
            out = sampler(z, torch.zeros((1, len(sampler.condition_names)), device=device))
        else:
            out = sampler(z)
    return tuple(int(s) for s in out.shape[1:])


def resolve_device(device="auto", local_rank: int = 0) -> torch.device:
    """The torch device for ``--device``: ``auto`` (the default) -> CUDA when available, else
    Apple's MPS, else CPU; ``cpu``, ``cuda``, ``cuda:N`` and ``mps`` are checked to exist here
    (ConfigError in one line naming ``--device`` otherwise). ``local_rank`` picks the GPU of
    a data-parallel process for ``auto``/``cuda``."""
    if isinstance(device, torch.device):
        return device
    name = str(device or "auto").strip().lower()
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps is not None and mps.is_available())
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(local_rank))
        return torch.device("mps") if has_mps else torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(
            f"--device {name!r}: not a device; use auto, cpu, cuda, cuda:N or mps"
        ) from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"--device {name}: CUDA is not available here; use --device auto or cpu"
            )
        if dev.index is None:
            return torch.device("cuda", int(local_rank))
        if dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"--device {name}: this machine has {torch.cuda.device_count()} "
                "CUDA device(s); use --device auto or cuda:0"
            )
    elif dev.type == "mps":
        if not has_mps:
            raise ConfigError(
                f"--device {name}: Apple MPS is not available here; use --device auto or cpu"
            )
    elif dev.type != "cpu":
        raise ConfigError(f"--device {name!r}: use auto, cpu, cuda, cuda:N or mps")
    return dev


# --------------------------------------------------------------------------- writing


def describe_bundle(
    where,
    *,
    family: str,
    parts: Mapping[str, Part],
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
) -> tuple[dict, dict[str, bytes]]:
    """``(bundle.json contents, {file name: safetensors bytes})`` of a bundle, written nowhere.

    Every part is rebuilt from its family and spec and given its weights, and the family
    composes them, before anything is returned: a bundle that describes is a bundle that loads.
    """
    from safetensors.torch import save as save_tensors

    out_dir = Path(where)
    bands = [str(b) for b in bands]
    if not bands:
        raise BundleError(f"{out_dir}: a bundle needs the band names of its images")
    lo, hi = (float(v) for v in output_range)
    if not lo < hi:
        raise BundleError(f"{out_dir}: output_range {list(output_range)} must be (low, high)")
    if not parts:
        raise BundleError(f"{out_dir}: a bundle needs at least one part")
    clean: dict[str, Part] = {}
    for name, part in parts.items():
        tensors = {}
        for key, value in part.state_dict.items():
            if not isinstance(value, torch.Tensor):
                raise BundleError(f"{out_dir}: part {name!r} entry {key!r} is not a tensor")
            tensors[str(key)] = value.detach().to("cpu").contiguous().clone()
        _check_finite(
            tensors,
            f"{out_dir}: part {name!r}",
            "the weights are broken (a diverged run?): export an earlier kept "
            "snapshot (galforge export RUN --step N) or resume from one",
        )
        clean[str(name)] = Part(str(part.family), dict(part.spec), tensors, part.module)
    sampler, _ = build_parts(clean, family, module, out_dir, device=torch.device("cpu"))
    image_shape = probe_image_shape(sampler)
    if image_shape[0] != len(bands):
        raise BundleError(
            f"{out_dir}: the generator makes {image_shape[0]} channels but {len(bands)} bands "
            f"{bands} were given"
        )
    payloads: dict[str, bytes] = {}
    part_meta: dict[str, dict] = {}
    identity = hashlib.sha256()
    for name in sorted(clean):
        part = clean[name]
        # one metadata key only: safetensors does not keep the order of several keys
        payload = save_tensors(dict(part.state_dict), metadata={"format": "pt"})
        payloads[part_file(name)] = payload
        part_meta[name] = {
            "family": part.family,
            "module": part.module,
            "spec": part.spec,
            "file": part_file(name),
            "sha256": hashlib.sha256(payload).hexdigest(),
            "tensors": len(part.state_dict),
        }
        identity.update(f"{name}|{_tensor_digest(part.state_dict)}|".encode())
    meta = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_FORMAT_VERSION,
        "galforge_version": __version__,
        "family": str(family),
        "module": module,
        "parts": part_meta,
        "config": dict(config or {}),
        "hyperparameters": dict(hyperparameters or {}),
        "bands": bands,
        "units": str(units),
        "normalizer": _normalizer_dict(normalizer),
        "output_range": [lo, hi],
        "data_fingerprint": data_fingerprint,
        "image_shape": list(image_shape),
        "source": dict(source or {}),
    }
    try:
        meta = json.loads(_canonical(meta))
    except TypeError as exc:
        raise BundleError(f"{out_dir}: bundle description is not JSON-serialisable: {exc}") from exc
    described = {k: v for k, v in meta.items() if k != "parts"}
    described["parts"] = {
        n: {k: v for k, v in p.items() if k not in ("sha256", "tensors")}
        for n, p in meta["parts"].items()
    }
    identity.update(_canonical(described).encode())
    meta["bundle_id"] = identity.hexdigest()[:12]
    meta["created"] = created or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return meta, payloads


def write_bundle(dir, meta: dict, payloads: Mapping[str, bytes]) -> Path:
    """Write a described bundle (:func:`describe_bundle`) into ``dir`` atomically; return it."""
    out_dir = Path(dir)
    for name, payload in payloads.items():
        atomic_write_bytes(out_dir / name, payload)
    text = json.dumps(meta, indent=2, sort_keys=True) + "\n"
    atomic_write_bytes(out_dir / BUNDLE_JSON, text.encode("utf-8"))
    return out_dir


def save_bundle(
    dir,
    *,
    family: str,
    parts: Mapping[str, Part] | None = None,
    spec: dict | None = None,
    state_dict: Mapping[str, torch.Tensor] | None = None,
    module: str | None = None,
    **description,
) -> Path:
    """Write ``bundle.json`` and one safetensors file per part into ``dir``; return ``dir``.

    Give ``parts`` (by name), or for a family with the single part ``generator`` its
    ``spec`` and ``state_dict``. ``normalizer`` is the fitted Normalizer (or its dict;
    ``None``: samples stay in model space); ``output_range`` the generator head's
    model-space range; ``module`` the galforge module that registers ``family`` (when not
    ``galforge.models.<family>``); ``hyperparameters`` the recipe's own settings;
    ``source`` free JSON about where the weights come from; ``created`` an ISO time
    (default: now, UTC). Every file is written atomically.
    """
    if parts is None:
        if spec is None or state_dict is None:
            raise BundleError(f"{dir}: give the bundle's parts, or spec and state_dict")
        parts = {"generator": Part(family, dict(spec), state_dict, module)}
    meta, payloads = describe_bundle(dir, family=family, parts=parts, module=module, **description)
    return write_bundle(dir, meta, payloads)


# --------------------------------------------------------------------------- reading


@dataclass
class BundleFile:
    """A bundle as read and checked: its description, parts (with weights) and normalizer."""

    path: Path
    meta: dict
    parts: dict[str, Part]
    normalizer: object = field(default=None)

    @property
    def family(self) -> str:
        return self.meta["family"]

    def sampler(self, device="cpu") -> tuple[nn.Module, dict[str, nn.Module]]:
        """Rebuilt networks on ``device``: ``(sampler, parts by name)``."""
        return build_parts(
            self.parts,
            self.family,
            self.meta.get("module"),
            self.path,
            device=resolve_device(device),
        )


def _parts_meta(meta: dict, json_path: Path) -> dict[str, dict]:
    """The ``parts`` of a bundle description (format 1: the single part ``generator``)."""
    if meta.get("format_version", 1) == 1 or "parts" not in meta:
        weights = meta.get("weights") or {}
        if not isinstance(weights, dict):
            raise BundleError(f"{json_path}: 'weights' must be an object; {HINT}")
        if not isinstance(meta.get("spec"), dict):
            raise BundleError(f"{json_path}: 'spec' must be an object; {HINT}")
        return {
            "generator": {
                "family": meta["family"],
                "spec": meta["spec"],
                "module": meta.get("module"),
                "file": weights.get("file", WEIGHTS_FILE),
                "sha256": weights.get("sha256"),
            }
        }
    parts = meta["parts"]
    if not isinstance(parts, dict) or not parts:
        raise BundleError(f"{json_path}: 'parts' must be a non-empty object; {HINT}")
    for name, p in parts.items():
        if not isinstance(p, dict) or not isinstance(p.get("spec"), dict) or "family" not in p:
            raise BundleError(f"{json_path}: part {name!r} needs a 'family' and a 'spec'; {HINT}")
        for key in ("family", "file", "sha256", "module"):
            if p.get(key) is not None and not isinstance(p[key], str):
                raise BundleError(
                    f"{json_path}: part {name!r} '{key}' must be a string, not "
                    f"{type(p[key]).__name__}; {HINT}"
                )
    return parts


def _part_path(folder: Path, name: str, p: dict, json_path: Path) -> Path:
    """The weights file of a part: a file inside the bundle folder, never outside it."""
    rel = str(p.get("file") or part_file(name))
    root = folder.resolve()
    path = (folder / rel).resolve()
    if Path(rel).is_absolute() or not path.is_relative_to(root):
        raise BundleError(
            f"{json_path}: part {name!r} file {rel!r} lies outside the bundle "
            f"folder; a bundle's files must be inside it: {HINT}"
        )
    return folder / rel


def bundle_from_description(folder: Path, meta: dict, tensors: Mapping[str, dict]) -> BundleFile:
    """A :class:`BundleFile` from a description and the tensors of its parts (by name)."""
    json_path = folder / BUNDLE_JSON
    parts = {
        name: Part(p["family"], p["spec"], tensors[name], p.get("module"))
        for name, p in _parts_meta(meta, json_path).items()
    }
    return BundleFile(folder, meta, parts, _normalizer_from(meta, json_path))


def read_bundle(folder) -> BundleFile:
    """Read and check a bundle folder (checksums, keys, versions); writes nothing."""
    folder = Path(folder)
    json_path = folder / BUNDLE_JSON
    meta = read_json(json_path, HINT)
    missing = [k for k in _REQUIRED_KEYS if k not in meta]
    if missing:
        raise BundleError(f"{json_path}: missing key(s) {', '.join(missing)}; {HINT}")
    if meta.get("format", BUNDLE_FORMAT) != BUNDLE_FORMAT:
        raise BundleError(f"{json_path}: format {meta.get('format')!r} is not a galforge bundle")
    version = meta.get("format_version", 1)
    if not isinstance(version, int) or version > BUNDLE_FORMAT_VERSION:
        raise BundleError(
            f"{json_path}: bundle format version {version!r} is newer than this galforge "
            f"understands ({BUNDLE_FORMAT_VERSION}); upgrade galforge"
        )
    if not isinstance(meta["family"], str):
        raise BundleError(
            f"{json_path}: 'family' must be a string, not {type(meta['family']).__name__}; {HINT}"
        )
    if not isinstance(meta["bands"], list) or not all(isinstance(b, str) for b in meta["bands"]):
        raise BundleError(f"{json_path}: 'bands' must be a list of band names; {HINT}")
    if not isinstance(meta["units"], str):
        raise BundleError(f"{json_path}: 'units' must be a string; {HINT}")
    rng = meta["output_range"]
    if (
        not isinstance(rng, list)
        or len(rng) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in rng)
    ):
        raise BundleError(f"{json_path}: 'output_range' must be [low, high]; {HINT}")
    if meta["normalizer"] is not None and not isinstance(meta["normalizer"], dict):
        raise BundleError(f"{json_path}: 'normalizer' must be an object or null; {HINT}")
    if "bundle_id" not in meta:
        meta["bundle_id"] = hashlib.sha256(_canonical(meta).encode()).hexdigest()[:12]
    tensors = {}
    for name, p in _parts_meta(meta, json_path).items():
        _spec_size(Part(p["family"], p["spec"], {}, p.get("module")), json_path)
        path = _part_path(folder, name, p, json_path)
        if not path.is_file():
            raise BundleError(f"{path}: file missing; {HINT}")
        recorded = p.get("sha256")
        if recorded and sha256_file(path) != recorded:
            raise BundleError(
                f"{path}: contents do not match the checksum recorded in {json_path} "
                f"(file changed or corrupt); {HINT}"
            )
        tensors[name] = read_weights(path, HINT)
        _check_finite(
            tensors[name],
            path,
            "the weights are broken: re-export the bundle from "
            "an intact run (galforge export RUN, or --step N for a kept snapshot)",
        )
    return bundle_from_description(folder, meta, tensors)
