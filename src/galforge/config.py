"""Typed run configuration: data, model, train and output sections, YAML in and out.

A run's configuration is resolved from, lowest priority first:

1. the defaults below and the chosen model recipe's defaults (``model.*``);
2. a YAML file (``--config FILE.yaml``);
3. command-line flags (``--steps``, ``--batch``, ...);
4. ``--set dotted.key=value`` overrides (repeatable; values are read as YAML scalars, so
   ``--set model.width=32 --set train.amp=true --set data.rotate=null`` work).

Unknown keys, bad values and unreadable YAML raise :class:`galforge.errors.ConfigError`
naming the key or file (and line) and listing what is valid.  The resolved configuration is
written to ``RUN/config.yaml`` and can be printed with ``--dry-run``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from galforge.errors import ConfigError
from galforge.fileio import atomic_write_text

#: Reader options that :class:`DataConfig` sets itself (the one crop/resize route).
CROP_RESIZE_OPTIONS = ("size", "resize", "crop", "resize_method", "method")


@dataclass
class DataConfig:
    """Where the training images come from and how they are prepared.

    Crop and resize have one route: ``crop_fraction``/``crop_pixels``, ``resize`` and
    ``resize_method`` become the reader's ``crop``/``size``/``resize_method`` options (applied
    to every image as it is read); ``options`` holds the other reader options and may not set
    those.  A run's ``config.yaml`` records what was done: the size images were resized to,
    the stretch of the normalizer used, the pixel scale found in the data.
    """

    source: str = ""  # folder, file, prepared set or builtin: spec
    resize: int | None = None  # None: the model's image size
    resize_method: str = "nearest"  # nearest (paper) | bicubic | area
    crop_fraction: float | None = None  # centre crop before resizing, fraction in (0, 1]
    crop_pixels: int | None = None  # ... or in pixels (one of the two)
    clip_percentile: float = 99.99  # Normalizer percentile clip
    stretch: str | None = None  # linear | asinh; None: asinh for physical units
    # (counts, nanomaggies), linear for 8/16-bit levels
    asinh_softening: float | None = None
    pixel_scale: float | None = None  # arcsec/pixel of the images trained on; None: from
    # the data's WCS (FITS) when it has one
    zeropoint: float | None = None  # AB mag of one pixel unit (MAGZP of generated FITS);
    # None: from the data's MAGZP/ZEROPT cards
    flips: bool = True  # augmentation: random flips, p = 0.5 each
    rot90: bool = True  # augmentation: random 90° rotations
    rotate: str | None = None  # arbitrary-angle rotation fill: constant | reflect
    options: dict = field(default_factory=dict)  # passed on to galforge.data.load_images

    def read_options(self, image_size: int | None = None) -> dict:
        """The :func:`galforge.data.load_images` options of this section: ``options`` plus
        the centre crop and the resize (to ``resize``, else to ``image_size``)."""
        opts = dict(self.options)
        if self.crop_fraction is not None:
            opts["crop"] = float(self.crop_fraction)
        elif self.crop_pixels is not None:
            opts["crop"] = int(self.crop_pixels)
        size = self.resize if self.resize is not None else image_size
        if size is not None:
            opts["size"] = int(size) if isinstance(size, int) else tuple(int(v) for v in size)
            opts["resize_method"] = self.resize_method
        return opts


@dataclass
class ModelConfig:
    """The model name (``dcgan64``, ``dcgan128``, ...) and its recipe's hyper-parameters.

    ``params`` holds the recipe's keys; in YAML and ``--set`` they sit directly under
    ``model`` (``model.width``), beside ``model.name``.
    """

    name: str = "dcgan64"
    params: dict = field(default_factory=dict)


@dataclass
class TrainConfig:
    """The training loop."""

    steps: int | None = None  # total optimisation steps (or give epochs)
    epochs: int | None = None  # total epochs
    batch: int = 64
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    amp: bool = False  # mixed precision, CUDA only
    amp_dtype: str = "bf16"  # bf16 | fp16 (fp16 uses a gradient scaler)
    sync_bn: bool = False  # DDP runs: SyncBatchNorm (global-batch statistics,
    # CUDA only)
    ema: float | None = None  # EMA decay of the generator (0: off; None: the
    # model config's default); warm-up
    # min(ema, (1 + t) / (10 + t)) at step t
    lr_schedule: str = "none"  # none | step
    lr_step_epochs: int = 10  # step schedule: every k epochs ...
    lr_gamma: float = 0.5  # ... multiply the learning rates by gamma
    sample_every: int = 500  # fixed-latent sample grid every k steps
    n_samples: int = 36  # images in a sample grid
    checkpoint_every: int = 1000  # checkpoints/latest every k steps (and at the end)
    snapshot_every: int | None = None  # keep checkpoints/step-XXXXXXXX every k steps
    # (0: none; None: the model's default)
    log_every: int = 10  # log.jsonl line every k steps
    progress: bool = True  # progress bar
    threads: int | None = None  # torch CPU threads (None: torch's default)
    init: str | None = None  # start from this run/bundle/pretrained:NAME
    band_map: str | None = None  # with init: DATA=MODEL band pairs, e.g. R=i,G=r,B=g
    freeze_g: int = 0  # keep the first N synthesis layers of G fixed
    freeze_d: int = 0  # keep the first M blocks of D fixed (highest res.)
    metric_every: int = 0  # FGD and KID (galaxy encoder) every k steps (0: off)
    metric_n: int = 256  # images per set for the in-training metrics
    keep_best: str = "fgd"  # fgd | kid: the metric that keeps checkpoints/best


@dataclass
class OutputConfig:
    """Where the run goes and what is written besides checkpoints."""

    out: str = "runs/run"
    export_bundle: bool = True  # export RUN/bundle at the end
    tensorboard: bool = True  # TensorBoard scalars when tensorboard is installed
    loss_plot: bool = True  # loss.png


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "train": TrainConfig,
    "output": OutputConfig,
}


@dataclass
class RunConfig:
    """The whole configuration of a training run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def to_dict(self) -> dict:
        """Nested plain dict (``model`` flattened: ``{"name": ..., **params}``)."""
        return {
            "data": dataclasses.asdict(self.data),
            "model": {"name": self.model.name, **copy.deepcopy(self.model.params)},
            "train": dataclasses.asdict(self.train),
            "output": dataclasses.asdict(self.output),
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)

    def save(self, path: str | Path) -> Path:
        """Write the config as YAML (atomically) and return the path."""
        return atomic_write_text(path, self.to_yaml())

    @classmethod
    def from_dict(
        cls, d: Mapping, model_defaults: Mapping[str, Mapping] | None = None, origin: str = "config"
    ) -> RunConfig:
        """Validate a nested dict against the schema (see :func:`resolve_config`)."""
        return resolve_config(base=d, model_defaults=model_defaults, origin=origin)


# ----------------------------------------------------------------------------- YAML


def load_yaml(path: str | Path) -> dict:
    """Read a YAML config file into a dict; ConfigError names the file (and line) on failure."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(
            f"config file {path} is a folder: give a YAML file (e.g. {path / 'config.yaml'})"
        )
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist: give a readable YAML file")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(
            f"config file {path}{where}: invalid YAML ({problem}); fix the syntax there"
        ) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping of sections (data, model, train, output), "
            f"not a {type(data).__name__}"
        )
    return data


def parse_set(items: Iterable[str]) -> dict:
    """Turn ``["model.width=32", "train.amp=true"]`` into a nested dict of YAML scalars."""
    out: dict = {}
    for item in items or ():
        if "=" not in item:
            raise ConfigError(
                f"--set {item!r} is not of the form dotted.key=value (e.g. --set model.width=32)"
            )
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set {item!r}: empty key; use e.g. --set model.width=32")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
            if isinstance(value, str):
                value = _number_or_text(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: the value is not a YAML scalar ({exc})") from exc
        _set_dotted(out, key, value)
    return out


def _number_or_text(text: str):
    """``"1e-4"`` -> 1e-4 (YAML 1.1 reads exponents without a dot as text)."""
    try:
        return float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        return text


def _set_dotted(d: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    for p in parts[:-1]:
        nxt = d.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            d[p] = nxt
        d = nxt
    d[parts[-1]] = value


def flags_to_dict(flags: Mapping[str, Any]) -> dict:
    """``{"train.steps": 10, "train.batch": None}`` -> nested dict without the None values."""
    out: dict = {}
    for key, value in flags.items():
        if value is not None:
            _set_dotted(out, key, value)
    return out


def deep_merge(base: Mapping, over: Mapping) -> dict:
    """Recursive merge: values of ``over`` win; nested dicts are merged, not replaced.

    The ``options`` dicts (free-form) are merged key by key as well.
    """
    out = copy.deepcopy(dict(base))
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


# ----------------------------------------------------------------------------- validation


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str, origin: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (bool/int/float/str/dict and Optional)."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key, origin)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    return _coerce_to(value, tp, key, origin)


def _coerce_to(value: Any, tp: Any, key: str, origin: str) -> Any:
    def bad() -> ConfigError:
        return ConfigError(f"{origin}: {key}={value!r} must be of type {_type_name(tp)}")

    if tp is Any or tp is None:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad()
    if tp is int:
        if isinstance(value, bool):
            raise bad()
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise bad()
    if tp is float:
        if isinstance(value, str):
            value = _number_or_text(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad()
        return float(value)
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad()
    if tp is dict or typing.get_origin(tp) is dict:
        if isinstance(value, dict):
            return dict(value)
        raise bad()
    if tp is list or typing.get_origin(tp) is list:
        if isinstance(value, (list, tuple)):
            return list(value)
        raise bad()
    return value


def _coerce_like(value: Any, default: Any, key: str, origin: str) -> Any:
    """Check a recipe parameter against the type of its default (None: anything)."""
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        return _coerce_to(value, bool, key, origin)
    if isinstance(default, int):
        return _coerce_to(value, int, key, origin)
    if isinstance(default, float):
        return _coerce_to(value, float, key, origin)
    if isinstance(value, str) and isinstance(default, (int, float)):
        value = _number_or_text(value)
    if isinstance(default, str):
        return _coerce_to(value, str, key, origin)
    if isinstance(default, (list, tuple)):
        return _coerce_to(value, list, key, origin)
    if isinstance(default, dict):
        return _coerce_to(value, dict, key, origin)
    return value


def _unknown(key: str, valid: Iterable[str], origin: str) -> ConfigError:
    return ConfigError(
        f"{origin}: unknown config key {key!r}; valid keys: {', '.join(sorted(valid))}"
    )


def _check_keys(
    layer: Mapping, origin: str, sections: list[str], model_keys: list[str] | None
) -> None:
    """Unknown keys of one config layer, reported with the layer's name (file, --set)."""
    for sec, values in layer.items():
        if sec not in sections:
            raise _unknown(str(sec), sections, origin)
        if not isinstance(values, Mapping):
            raise ConfigError(f"{origin}: section {sec!r} must be a mapping of keys to values")
        if sec == "model":
            valid = model_keys
        else:
            valid = [f.name for f in dataclasses.fields(SECTIONS[sec])]
        if valid is None:
            continue
        for k in values:
            if k not in valid:
                raise _unknown(f"{sec}.{k}", [f"{sec}.{v}" for v in valid], origin)


def _build_section(cls: type, values: Mapping, section: str, origin: str):
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    if not isinstance(values, Mapping):
        raise ConfigError(f"{origin}: section {section!r} must be a mapping of keys to values")
    kwargs = {}
    for k, v in values.items():
        if k not in names:
            raise _unknown(f"{section}.{k}", [f"{section}.{n}" for n in names], origin)
        kwargs[k] = _coerce(v, hints[k], f"{section}.{k}", origin)
    return cls(**kwargs)


def resolve_config(
    *,
    base: Mapping | None = None,
    yaml_file: str | Path | None = None,
    flags: Mapping[str, Any] | None = None,
    sets: Iterable[str] | None = None,
    model_defaults: Mapping[str, Mapping] | None = None,
    model_configs: Mapping[str, Mapping[str, Mapping]] | None = None,
    origin: str = "config",
) -> RunConfig:
    """Resolve a :class:`RunConfig` from base dict < YAML file < flags < ``--set`` items.

    ``flags`` maps dotted keys to values (``None`` = flag not given).  ``model_defaults``
    maps each known model name to its recipe's default hyper-parameters; it fixes which
    ``model.*`` keys are valid and the defaults of those not given.  Without it any
    ``model.*`` keys are accepted as they are.

    ``model_configs`` maps a model name to its named configurations (``{"paper": {...},
    "cpu": {...}}``): the one chosen by ``model.config`` sets the defaults of its keys, and
    keys given explicitly still win (``--set model.config=paper --set model.width=64``).
    """
    merged: dict = dict(copy.deepcopy(base)) if base else {}
    layers: list[tuple[str, dict]] = []
    if yaml_file is not None:
        layers.append((str(yaml_file), load_yaml(yaml_file)))
    if flags:
        layers.append(("command-line flags", flags_to_dict(flags)))
    if sets:
        layers.append(("--set", parse_set(sets)))
    for _, layer in layers:
        merged = deep_merge(merged, layer)

    valid_sections = ["data", "model", "train", "output"]
    name = (
        (merged.get("model") or {}).get("name", ModelConfig.name)
        if isinstance(merged.get("model"), Mapping)
        else ModelConfig.name
    )
    model_keys = None
    if model_defaults is not None and isinstance(name, str) and name in model_defaults:
        model_keys = ["name", *model_defaults[name]]
    for layer_origin, layer in layers:
        _check_keys(layer, layer_origin, valid_sections, model_keys)
    for sec in merged:
        if sec not in valid_sections:
            raise _unknown(str(sec), valid_sections, origin)

    sections = {}
    for sec, cls in SECTIONS.items():
        sections[sec] = _build_section(cls, merged.get(sec) or {}, sec, origin)

    model_raw = dict(merged.get("model") or {})
    name = model_raw.pop("name", ModelConfig.name)
    if not isinstance(name, str):
        raise ConfigError(f"{origin}: model.name={name!r} must be a model name string")
    params: dict = {}
    if model_defaults is not None:
        if name not in model_defaults:
            raise ConfigError(
                f"unknown model {name!r} (--model / model.name); known models: "
                f"{', '.join(sorted(model_defaults))}"
            )
        defaults = dict(model_defaults[name])
        for k, v in model_raw.items():
            if k not in defaults:
                raise _unknown(
                    f"model.{k}", ["model.name"] + [f"model.{d}" for d in defaults], origin
                )
            params[k] = _coerce_like(v, defaults[k], f"model.{k}", origin)
        named = (model_configs or {}).get(name)
        if named and "config" in defaults:
            chosen = params.get("config", defaults["config"])
            if chosen not in named:
                raise ConfigError(
                    f"{origin}: model.config={chosen!r} is not a configuration of {name}; "
                    f"choose one of {', '.join(sorted(named))}"
                )
            defaults.update(named[chosen])
        params = {**defaults, **params}
    else:
        params = model_raw
    cfg = RunConfig(
        data=sections["data"],
        model=ModelConfig(name=name, params=params),
        train=sections["train"],
        output=sections["output"],
    )
    _check_values(cfg, origin)
    return cfg


# ----------------------------------------------------------------------------- ranges
# A range is written as the user reads it: "> 0", ">= 1", "(0, 1)", "[0, 1)", "[0, 1]";
# a tuple of strings is a choice.  Every numeric option is checked against one, in the config
# (tables below) and on the command line (:func:`check_ranges`), with one message form.

#: ranges of the section keys not checked one by one in :func:`_check_values`
RANGES: dict[str, str | tuple] = {
    "train.seed": ">= 0",
    "train.threads": ">= 1",
    "train.freeze_g": ">= 0",
    "train.freeze_d": ">= 0",
    "train.metric_every": ">= 0",
    "train.metric_n": ">= 2",
    "train.keep_best": ("fgd", "kid"),
    "data.clip_percentile": "(0, 100]",
    "data.asinh_softening": "> 0",
}

#: ranges of recipe hyper-parameters (``model.*``), by name, whichever model has them
MODEL_RANGES: dict[str, str] = {
    # a learning rate of 0 keeps a network as it is (an --init check, a frozen part)
    **dict.fromkeys(("lr", "lr_d", "lr_g", "gal_lr", "pos_lr"), ">= 0"),
    **dict.fromkeys(("gamma", "lr_decay", "eps", "conv_clamp", "thresh", "kde_scale"), "> 0"),
    **dict.fromkeys(
        (
            "ema",
            "beta1",
            "beta2",
            "gal_beta1",
            "pos_beta1",
            "dropout",
            "label_smoothing",
            "style_mixing",
            "pl_decay",
        ),
        "[0, 1)",
    ),
    **dict.fromkeys(("ada_target", "ada_cutout"), "[0, 1]"),
    **dict.fromkeys(
        (
            "width",
            "latent_dim",
            "z_dim",
            "w_dim",
            "image_size",
            "kernel_size",
            "mapping_layers",
            "n_res",
            "pack",
            "patch",
            "patch_batch",
            "grid",
            "cell",
            "stamp",
            "render",
            "sample_size",
            "channel_base",
            "channel_max",
            "d_width",
            "gal_width",
            "pos_width",
            "up_width",
            "gal_latent_dim",
            "pos_latent_dim",
            "start_resolution",
            "mbstd_group",
            "pl_batch_shrink",
            "ada_interval",
            "pl_interval",
            "r1_interval",
            "lr_decay_epochs",
            "minarea",
            "amp_res",
        ),
        "[1, 65536]",
    ),
    **dict.fromkeys(
        (
            "r1_gamma",
            "gp_lambda",
            "pl_weight",
            "scene_blur",
            "adv_weight",
            "pixel_weight",
            "drift",
            "ada_kimg",
            "ema_kimg",
            "fade_kimg",
            "stable_kimg",
            "ada_noise_std",
            "ada_scale_std",
            "ada_sky_std",
            "ada_xfrac_std",
            "ada_max_shift",
            "lambda_k",
            "leaky_slope",
            "min_snr",
            "k0",
            "d_profile_group",
            "color_scatter",
        ),
        ">= 0",
    ),
    "d_mbstd_group": "[0, 65536]",  # the DCGAN's minibatch std map; 0: off (its default)
}


def in_range(value, rule: str | tuple) -> bool:
    """Whether ``value`` satisfies ``rule`` (see :data:`RANGES`); ``None`` always does."""
    if value is None:
        return True
    if isinstance(rule, tuple):
        return value in rule
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return False
    rule = rule.strip()
    if rule[0] in "<>":
        op, bound = rule.split()
        bound = float(bound)
        return {">": value > bound, ">=": value >= bound, "<": value < bound, "<=": value <= bound}[
            op
        ]
    lo, hi = (float(v) for v in rule[1:-1].split(","))
    above = value > lo if rule[0] == "(" else value >= lo
    below = value < hi if rule[-1] == ")" else value <= hi
    return above and below


def range_text(rule: str | tuple) -> str:
    if isinstance(rule, tuple):
        return "one of " + ", ".join(map(str, rule))
    if rule.strip()[0] in "<>":
        return rule.strip()
    return f"in {rule.strip()}"


#: the command-line flag of a config key, named beside it in range messages
KEY_FLAGS = {
    "train.seed": "--seed",
    "train.freeze_g": "--freeze-g",
    "train.freeze_d": "--freeze-d",
    "train.metric_every": "--metric-every",
    "train.metric_n": "--metric-n",
    "train.keep_best": "--keep-best",
}


def check_range(option: str, value, rule: str | tuple, origin: str = "") -> None:
    """ConfigError ``"<origin>: <option>=<value> must be <rule>"`` when ``value`` is out of it."""
    if not in_range(value, rule):
        where = f"{origin}: " if origin else ""
        sep = "=" if option[:1] != "-" else " "
        flag = f" ({KEY_FLAGS[option]})" if option in KEY_FLAGS else ""
        raise ConfigError(f"{where}{option}{sep}{value!r} must be {range_text(rule)}{flag}")


def check_ranges(items: dict[str, tuple], origin: str = "") -> None:
    """:func:`check_range` for ``{option: (value, rule)}`` (command-line options)."""
    for option, (value, rule) in items.items():
        check_range(option, value, rule, origin)


def _check_values(cfg: RunConfig, origin: str) -> None:
    t = cfg.train
    sections = {"train": cfg.train, "data": cfg.data, "output": cfg.output}
    for key, rule in RANGES.items():
        sec, name = key.split(".")
        check_range(key, getattr(sections[sec], name), rule, origin)
    for name, value in cfg.model.params.items():
        if name in MODEL_RANGES and isinstance(value, (int, float)):
            check_range(f"model.{name}", value, MODEL_RANGES[name], origin)

    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ConfigError(f"{origin}: {msg}")

    need(t.steps is None or t.steps >= 1, f"train.steps={t.steps} must be >= 1")
    need(t.epochs is None or t.epochs >= 1, f"train.epochs={t.epochs} must be >= 1")
    need(t.batch >= 1, f"train.batch={t.batch} must be >= 1")
    need(
        t.ema is None or 0.0 <= t.ema < 1.0,
        f"train.ema={t.ema} must be in [0, 1) (0 switches EMA off; null: the model's default)",
    )
    need(
        t.lr_schedule in ("none", "step"),
        f"train.lr_schedule={t.lr_schedule!r} must be one of: none, step",
    )
    need(t.lr_step_epochs >= 1, f"train.lr_step_epochs={t.lr_step_epochs} must be >= 1")
    need(t.lr_gamma > 0, f"train.lr_gamma={t.lr_gamma} must be > 0")
    need(t.amp_dtype in ("bf16", "fp16"), f"train.amp_dtype={t.amp_dtype!r} must be bf16 or fp16")
    need(
        t.device in ("auto", "cpu", "mps") or t.device.startswith("cuda"),
        f"train.device={t.device!r} must be auto, cpu, cuda[:N] or mps",
    )
    for k in ("sample_every", "checkpoint_every", "log_every"):
        need(getattr(t, k) >= 1, f"train.{k}={getattr(t, k)} must be >= 1")
    need(
        t.snapshot_every is None or t.snapshot_every >= 0,
        f"train.snapshot_every={t.snapshot_every} must be >= 0 (or null: the model's default)",
    )
    need(t.n_samples >= 1, f"train.n_samples={t.n_samples} must be >= 1")
    need(
        cfg.data.resize_method in ("nearest", "bicubic", "area"),
        f"data.resize_method={cfg.data.resize_method!r} must be nearest, bicubic or area",
    )
    d = cfg.data
    need(
        d.stretch in (None, "linear", "asinh"),
        f"data.stretch={d.stretch!r} must be linear, asinh or null (asinh for physical "
        "units, linear for 8/16-bit levels)",
    )
    need(
        d.crop_fraction is None or 0.0 < d.crop_fraction <= 1.0,
        f"data.crop_fraction={d.crop_fraction} must be a fraction in (0, 1] (0.5 keeps the "
        "central half of each side); a size in pixels goes in data.crop_pixels",
    )
    need(
        d.crop_pixels is None or d.crop_pixels >= 8,
        f"data.crop_pixels={d.crop_pixels} must be at least 8 pixels",
    )
    need(
        d.crop_fraction is None or d.crop_pixels is None,
        "data.crop_fraction and data.crop_pixels are both set: keep one",
    )
    need(d.resize is None or d.resize >= 8, f"data.resize={d.resize} must be at least 8 pixels")
    need(
        d.pixel_scale is None or d.pixel_scale > 0,
        f"data.pixel_scale={d.pixel_scale} must be > 0 (arcsec per pixel)",
    )
    need(
        d.zeropoint is None
        or (isinstance(d.zeropoint, (int, float)) and math.isfinite(d.zeropoint)),
        f"data.zeropoint={d.zeropoint} must be a finite number (AB mag of one pixel unit)",
    )
    taken = [k for k in d.options if k in CROP_RESIZE_OPTIONS]
    need(
        not taken,
        f"data.options.{taken[0] if taken else ''} is set through data.resize, "
        "data.resize_method, data.crop_fraction or data.crop_pixels (one crop/resize route); "
        "move it there",
    )
    need(
        cfg.data.rotate in (None, "constant", "reflect"),
        f"data.rotate={cfg.data.rotate!r} must be null, constant or reflect",
    )


def changed_keys(a: Mapping, b: Mapping, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts."""
    out = []
    for k in sorted(set(a) | set(b), key=str):
        va, vb = a.get(k), b.get(k)
        key = f"{prefix}{k}"
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            out += changed_keys(va, vb, key + ".")
        elif va != vb:
            out.append(key)
    return out
