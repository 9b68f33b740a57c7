"""Starting a run from another model's weights: ``galforge train ... --init RUN_OR_BUNDLE``.

From a **run folder** the new run starts from its latest checkpoint's generator,
discriminator and generator EMA; from a **bundle** (``pretrained:NAME`` included) from its
generator only, with a freshly initialised discriminator.  The two models must have the same
architecture (the same model options); the data's bands must be the init model's bands, or
be mapped onto them with ``--band-map DATA=MODEL,...`` (``R=i,G=r,B=g`` trains a model of
g, r, i galaxies on an R, G, B composite: the generator's output channels and the
discriminator's input channels are reordered accordingly).  The normaliser is fitted anew on
the new data, so the fine-tuned model generates in the new data's units.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from galforge import pretrained
from galforge.errors import ConfigError, TrainingError


def _wavelength_order(bands: Sequence[str]) -> list[int] | None:
    """Indices of ``bands`` from blue to red, or None when a band's wavelength is unknown."""
    from galforge.data.display import band_wavelength

    if set(bands) <= {"R", "G", "B"}:  # an RGB composite: B < G < R
        keys = [{"B": 0, "G": 1, "R": 2}[b] for b in bands]
    else:
        keys = [band_wavelength(b) for b in bands]
        if any(k is None for k in keys):
            return None
    return sorted(range(len(bands)), key=lambda i: keys[i])


def _suggest_pairs(data_bands: list[str], model_bands: list[str]) -> list[tuple[str, str]]:
    """Data band -> model band pairs for an error hint: by wavelength order when both sets'
    wavelengths are known, else by position."""
    od, om = _wavelength_order(data_bands), _wavelength_order(model_bands)
    if od is None or om is None or len(od) != len(om):
        return list(zip(data_bands, model_bands, strict=False))
    pairs = {data_bands[i]: model_bands[j] for i, j in zip(od, om, strict=True)}
    return [(d, pairs[d]) for d in data_bands]


def parse_band_map(
    text: str | None, data_bands: Sequence[str], model_bands: Sequence[str]
) -> list[int]:
    """Index into ``model_bands`` of each data band (``text``: ``"R=i,G=r,B=g"``)."""
    data_bands, model_bands = list(data_bands), list(model_bands)
    if not text:
        if data_bands != model_bands:
            hint = ",".join(f"{d}={m}" for d, m in _suggest_pairs(data_bands, model_bands))
            raise ConfigError(
                f"--init: the model's bands ({', '.join(model_bands)}) differ from the data's "
                f"({', '.join(data_bands)}); map them with --band-map, e.g. --band-map {hint}"
            )
        return list(range(len(data_bands)))
    pairs = {}
    for item in str(text).split(","):
        if item.count("=") != 1 or not all(s.strip() for s in item.split("=")):
            raise ConfigError(
                f"--band-map {text!r}: write DATA_BAND=MODEL_BAND pairs separated "
                "by commas, e.g. R=i,G=r,B=g"
            )
        d, m = (s.strip() for s in item.split("="))
        pairs[d] = m
    missing = [d for d in data_bands if d not in pairs]
    unknown = [d for d in pairs if d not in data_bands]
    bad = [m for m in pairs.values() if m not in model_bands]
    if missing or unknown or bad:
        raise ConfigError(
            f"--band-map {text!r}: map every data band ({', '.join(data_bands)}) to a model band "
            f"({', '.join(model_bands)})"
            + (f"; unmapped: {', '.join(missing)}" if missing else "")
            + (f"; not data bands: {', '.join(unknown)}" if unknown else "")
            + (f"; not model bands: {', '.join(bad)}" if bad else "")
        )
    targets = [pairs[d] for d in data_bands]
    if len(set(targets)) != len(targets) or len(targets) != len(model_bands):
        raise ConfigError(f"--band-map {text!r}: each model band must be used exactly once")
    return [model_bands.index(m) for m in targets]


def _image_layers(net: nn.Module, channels: int, *, output: bool) -> nn.Module:
    """The convolution that makes (``output``) or reads the image channels of ``net``."""
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    if output:
        for m in reversed(convs):
            if m.out_channels == channels:
                return m
    else:
        for m in convs:
            if m.in_channels == channels:
                return m
    side = "output" if output else "input"
    raise TrainingError(f"--band-map: no convolution with {channels} {side} channels found")


def _permute_image_channels(net: nn.Module, perm: list[int], *, output: bool) -> None:
    """Reorder the image channels of ``net``'s first (input) or last (output) convolution
    (or through the network's own ``permute_image_channels(perm)``)."""
    own = getattr(net, "permute_image_channels", None)
    if callable(own):
        own(perm)
        return
    m = _image_layers(net, len(perm), output=output)
    idx = torch.as_tensor(perm)
    with torch.no_grad():
        if output:
            dim = 1 if isinstance(m, nn.ConvTranspose2d) else 0
            m.weight.copy_(m.weight.index_select(dim, idx))
            if m.bias is not None:
                m.bias.copy_(m.bias.index_select(0, idx))
        else:
            dim = 0 if isinstance(m, nn.ConvTranspose2d) else 1
            m.weight.copy_(m.weight.index_select(dim, idx))


def _load_into(net: nn.Module, state: dict[str, Tensor], what: str, source: str, hint: str) -> None:
    own = net.state_dict()
    # paths a network declares optional (a discriminator's added profile path) may be
    # present on one side only: they start fresh, or the init model's copy is left out
    fresh = tuple(f"{p}." for p in getattr(net, "INIT_FRESH", ()))
    missing = [k for k in own if k not in state and not k.startswith(fresh)]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    # a part the init model has and this one lacks would be dropped without a word
    missing += [k for k in state if k not in own and not k.startswith(fresh)]
    if missing or wrong:
        k = (wrong or missing)[0]
        there = "×".join(map(str, state[k].shape)) if k in state else "absent"
        here = "×".join(map(str, own[k].shape)) if k in own else "absent"
        raise ConfigError(
            f"--init {source}: its {what} does not fit this model ({k}: {there} in the init "
            f"model, {here} here); train with the init model's options{hint}"
        )
    net.load_state_dict({k: state[k] for k in own if k in state}, strict=not fresh)


def _spec_hint(spec: dict | None) -> str:
    if not spec:
        return ""
    keys = [
        k
        for k in ("width", "upsample", "kernel_size", "latent_dim", "widths", "scene_blur")
        if k in spec
    ]
    sets = [f"--set model.{k}={spec[k]}" for k in keys]
    sets.append(f"--set model.sky_noise={'true' if spec.get('sky_noise') else 'false'}")
    return " (" + ", ".join(sets) + ")"


def initialise_from(
    recipe, source: str, data_bands: Sequence[str], band_map: str | None = None
) -> tuple[dict, nn.Module | None]:
    """Load ``source``'s weights into ``recipe``'s networks (see the module docstring).

    Returns ``(parent, ema)``: what the run records about its parent (source, bundle id or
    run step, bands, band map) and the init model's generator EMA weights as a module (None
    from a bundle, whose generator is the EMA one and is loaded as G).
    """
    from galforge.bundle import BUNDLE_JSON, read_bundle
    from galforge.runfolder import CHECKPOINT_TENSORS, RunFolder

    path = Path(pretrained.resolve(source)).expanduser()
    if path.is_file() and path.name == BUNDLE_JSON:
        path = path.parent
    modules = recipe.modules()
    gen = recipe.generator()
    run = RunFolder(path)
    ckpt = run.latest / CHECKPOINT_TENSORS
    if run.is_run() and ckpt.is_file():
        info = run.read_info()
        if info.family != recipe.family:
            raise ConfigError(
                f"--init {source}: a {info.family!r} run cannot start a {recipe.family!r} model"
            )
        perm = parse_band_map(band_map, data_bands, info.bands)
        tensors = load_file(str(ckpt))
        hint = _spec_hint(info.parts.get("generator", {}).get("spec"))
        for name, net in modules.items():
            state = {
                k[len(f"module.{name}.") :]: v
                for k, v in tensors.items()
                if k.startswith(f"module.{name}.")
            }
            if state:
                _load_into(net, state, f"network {name}", source, hint)
        ema_state = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
        ema = None
        if ema_state:
            import copy

            ema = copy.deepcopy(gen)
            _load_into(ema, ema_state, "generator EMA", source, hint)
        parent = {"source": str(source), "kind": "run", "step": info.step, "bands": info.bands}
    else:
        if not (path / BUNDLE_JSON).is_file() and (run.bundle_dir / BUNDLE_JSON).is_file():
            path = run.bundle_dir
        bundle = read_bundle(path)
        if bundle.family != recipe.family or "generator" not in bundle.parts:
            raise ConfigError(
                f"--init {source}: a {bundle.family!r} bundle cannot start a "
                f"{recipe.family!r} model"
            )
        bands = list(bundle.meta["bands"])
        perm = parse_band_map(band_map, data_bands, bands)
        part = bundle.parts["generator"]
        _load_into(gen, dict(part.state_dict), "generator", source, _spec_hint(part.spec))
        ema = None
        parent = {
            "source": str(source),
            "kind": "bundle",
            "bundle_id": bundle.meta["bundle_id"],
            "bands": bands,
        }
    if perm != list(range(len(perm))):
        for net in [gen] + ([ema] if ema is not None else []):
            _permute_image_channels(net, perm, output=True)
        if parent["kind"] == "run":  # a bundle's discriminator is fresh: nothing to reorder
            for net in modules.values():
                if net is not gen:
                    _permute_image_channels(net, perm, output=False)
    if band_map:
        parent["band_map"] = band_map
    return parent, ema
