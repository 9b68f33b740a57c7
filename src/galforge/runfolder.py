"""The run folder: its layout, ``run.json`` (written and parsed here only) and bundle export.

::

    RUN/config.yaml                resolved config of the run
    RUN/run.json                   what a bundle needs (RunInfo below), step and epoch
    RUN/<part>.safetensors         weights to export, one file per part (generator.safetensors;
                                   the EMA weights when the run uses EMA), at every checkpoint
    RUN/checkpoints/latest/        state.safetensors + state.json (galforge.training.checkpoint)
    RUN/checkpoints/step-XXXXXXXX/ kept snapshots (train.snapshot_every)
    RUN/checkpoints/best/          the checkpoint of the best in-training metric so far
    RUN/samples/step-XXXXXXXX.png  fixed-latent sample grids, in physical units
    RUN/log.jsonl                  one JSON object per logged step
    RUN/loss.png                   loss curves
    RUN/tensorboard/               TensorBoard scalars (when enabled and installed)
    RUN/bundle/                    the exported bundle (:meth:`RunFolder.export`)

The trainer writes it through :class:`RunFolder`; ``galforge export``, ``galforge.load`` and
``galforge field --ensemble`` read it through the same class.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from galforge import __version__
from galforge.bundle import (
    BUNDLE_JSON,
    BundleFile,
    Part,
    bundle_from_description,
    describe_bundle,
    part_file,
    read_bundle,
    read_json,
    read_weights,
    sha256_file,
    write_bundle,
)
from galforge.errors import BundleError
from galforge.fileio import atomic_write_json

RUN_JSON = "run.json"
CONFIG_YAML = "config.yaml"
CHECKPOINT_TENSORS = "state.safetensors"
CHECKPOINT_META = "state.json"
_HINT = "is this the --out folder of galforge train, and has it written a checkpoint yet?"
# DDP and torch.compile wrap modules; their key prefixes never belong in a bundle
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")

__all__ = [
    "CHECKPOINT_META",
    "CHECKPOINT_TENSORS",
    "CONFIG_YAML",
    "RUN_JSON",
    "RunFolder",
    "RunInfo",
]


@dataclass
class RunInfo:
    """The contents of ``run.json``: everything a bundle export needs, plus progress."""

    family: str
    parts: dict[str, dict]  # name -> {"family": ..., "spec": ..., "module": ...}
    bands: list[str]
    units: str
    normalizer: dict | None
    output_range: list[float]
    data_fingerprint: str | None = None
    model: str = ""
    module: str | None = None  # module that registers the family (plug-ins)
    step: int = 0
    epoch: int = 0
    steps_per_epoch: int = 1
    ema: bool = False
    hyperparameters: dict = field(default_factory=dict)
    config: dict | None = None
    parent: dict | None = None  # the run or bundle this run was initialised from (--init)
    galforge_version: str = __version__

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping, where: Path) -> RunInfo:
        """Parse ``run.json`` (also the 0.1 layout: ``spec`` + ``export_module``)."""
        data = dict(data)
        parts = data.pop("parts", None)
        spec = data.pop("spec", None)
        export_module = data.pop("export_module", None)
        if parts is None:
            if not isinstance(spec, dict):
                raise BundleError(f"{where}: missing key(s) parts (or spec); {_HINT}")
            parts = {
                "generator": {"family": data.get("family"), "spec": spec, "module": export_module}
            }
        data.setdefault("module", export_module)
        known = {f.name for f in dataclasses.fields(cls)}
        required = [
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
            and f.name != "parts"
        ]
        missing = [k for k in required if k not in data]
        if missing:
            raise BundleError(f"{where}: missing key(s) {', '.join(missing)}; {_HINT}")
        return cls(parts=dict(parts), **{k: v for k, v in data.items() if k in known})


class RunFolder:
    """Paths of a run folder and the reading/writing of what is in it."""

    def __init__(self, path):
        self.path = Path(path).expanduser()

    # ------------------------------------------------------------------ layout
    @property
    def run_json(self) -> Path:
        return self.path / RUN_JSON

    @property
    def config_yaml(self) -> Path:
        return self.path / CONFIG_YAML

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def latest(self) -> Path:
        return self.checkpoints / "latest"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best"

    def snapshot(self, step: int) -> Path:
        return self.checkpoints / f"step-{int(step):08d}"

    def snapshots(self) -> list[Path]:
        """Kept snapshots ``checkpoints/step-XXXXXXXX``, oldest first."""
        if not self.checkpoints.is_dir():
            return []
        return sorted(
            p for p in self.checkpoints.iterdir() if p.is_dir() and p.name.startswith("step-")
        )

    @property
    def samples(self) -> Path:
        return self.path / "samples"

    def sample_grid(self, step: int) -> Path:
        return self.samples / f"step-{int(step):08d}.png"

    @property
    def log(self) -> Path:
        return self.path / "log.jsonl"

    @property
    def loss_plot(self) -> Path:
        return self.path / "loss.png"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    @property
    def bundle_dir(self) -> Path:
        return self.path / "bundle"

    def part_weights(self, name: str = "generator") -> Path:
        return self.path / part_file(name)

    def is_run(self) -> bool:
        return self.run_json.is_file()

    # ------------------------------------------------------------------ run.json, weights
    def write_info(self, info: RunInfo) -> Path:
        return atomic_write_json(self.run_json, info.to_dict())

    def read_info(self) -> RunInfo:
        if not self.path.is_dir():
            raise BundleError(
                f"{self.path}: no such run folder; pass the --out folder of galforge train"
            )
        return RunInfo.from_dict(read_json(self.run_json, _HINT), self.run_json)

    def write_weights(self, parts: Mapping[str, Mapping[str, torch.Tensor]]) -> None:
        """Write the export weights of every part (atomically)."""
        from safetensors.torch import save as save_tensors

        from galforge.fileio import atomic_write_bytes

        for name, state in parts.items():
            plain = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
            atomic_write_bytes(self.part_weights(name), save_tensors(plain))

    def read_weights(self, name: str) -> dict[str, torch.Tensor]:
        state = read_weights(self.part_weights(name), _HINT)
        for prefix in _WRAPPER_PREFIXES:
            if state and all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
        return state

    def snapshot_weights(
        self, snapshot: Path, template: Mapping[str, torch.Tensor], part: str = "generator"
    ) -> dict[str, torch.Tensor]:
        """Weights of a kept snapshot matching ``template``'s keys: EMA first, then any network.

        ``part`` names a bundle part that is a sub-network of the trained generator (a
        chain's ``stage2``): its weights are looked for under ``<network>.<part>.`` too.
        """
        candidates = [snapshot / part_file(part), snapshot / CHECKPOINT_TENSORS]
        path = next((p for p in candidates if p.exists()), None)
        if path is None:
            raise BundleError(f"{snapshot}: no {candidates[0].name} or {CHECKPOINT_TENSORS} in it")
        tensors = read_weights(path, "the kept snapshot is damaged; export another --step")
        networks = ["ema."] + sorted(
            {".".join(k.split(".")[:2]) + "." for k in tensors if k.startswith("module.")}
        )
        prefixes = [q for n in networks for q in (n, f"{n}{part}.")] + [""]
        for prefix in prefixes:
            picked = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            if (
                picked
                and set(template) <= set(picked)
                and all(picked[k].shape == template[k].shape for k in template)
            ):
                return {k: picked[k] for k in template}
        raise BundleError(
            f"{path}: holds no weights of this generator (keys like {next(iter(tensors), '')!r})"
        )

    # ------------------------------------------------------------------ bundles
    def _config(self, info: RunInfo) -> dict:
        if info.config is not None or not self.config_yaml.is_file():
            return info.config if isinstance(info.config, dict) else {}
        import yaml

        try:
            config = yaml.safe_load(self.config_yaml.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise BundleError(f"{self.config_yaml}: not valid YAML ({exc}); {_HINT}") from exc
        return config if isinstance(config, dict) else {}

    def describe_bundle(
        self, where: Path | None = None, step: int | None = None
    ) -> tuple[dict, dict[str, bytes], dict]:
        """The bundle of the run's present weights, in memory: (meta, payloads, tensors);
        of kept snapshot ``step`` when given (see :meth:`export`)."""
        info = self.read_info()
        tensors = {name: self.read_weights(name) for name in info.parts}
        source = {"model": info.model, "step": info.step, "epoch": info.epoch}
        if step is not None:
            snap = self.kept_snapshot(step)
            tensors = {
                name: self.snapshot_weights(snap, tensors[name], name) for name in info.parts
            }
            spe = info.steps_per_epoch
            source.update(
                step=int(step), snapshot=snap.name, epoch=int(step) // int(spe) if spe else None
            )
        parts = {
            name: Part(p["family"], p["spec"], tensors[name], p.get("module"))
            for name, p in info.parts.items()
        }
        if info.parent:
            source["parent"] = info.parent
        if step is None:
            source["run_weights_sha256"] = {
                name: sha256_file(self.part_weights(name)) for name in info.parts
            }
        else:  # the snapshot's file: never "current", the run's present weights are not these
            digest = sha256_file(snap / CHECKPOINT_TENSORS)
            source["run_weights_sha256"] = {name: digest for name in info.parts}
        if list(info.parts) == ["generator"]:
            source["run_weights_sha256"] = source["run_weights_sha256"]["generator"]
        meta, payloads = describe_bundle(
            where or self.bundle_dir,
            family=info.family,
            parts=parts,
            normalizer=info.normalizer,
            bands=info.bands,
            units=info.units,
            output_range=info.output_range,
            config=self._config(info),
            data_fingerprint=info.data_fingerprint,
            module=info.module,
            source=source,
            hyperparameters=info.hyperparameters,
        )
        return meta, payloads, tensors

    def snapshot_bundle_dir(self, step: int) -> Path:
        """Default folder of the bundle exported from kept snapshot ``step``."""
        return self.path / f"bundle-step-{int(step):08d}"

    def kept_snapshot(self, step: int) -> Path:
        """The kept snapshot of ``step``; a one-line error naming the kept steps otherwise."""
        snap = self.snapshot(step)
        if (snap / CHECKPOINT_TENSORS).is_file():
            return snap
        kept = [int(p.name[5:]) for p in self.snapshots() if p.name[5:].isdigit()]
        listed = ", ".join(str(k) for k in kept) if kept else "none (train.snapshot_every=0?)"
        raise BundleError(
            f"{self.path}: no kept snapshot of step {int(step)}; kept steps: {listed}"
        )

    def export(self, out=None, step: int | None = None, overwrite: bool = False) -> Path:
        """Write the bundle of the run's present weights to ``RUN/bundle`` (or ``out``).

        ``step`` exports a kept snapshot (``checkpoints/step-XXXXXXXX``) instead, by default
        to ``RUN/bundle-step-XXXXXXXX``: the generator it was training then, its EMA copy
        (with the batch-norm statistics of its own weights) when the run uses EMA.
        The bundle folder is an owned output (:mod:`galforge.outputs`): ``out`` holding
        anything is refused unless ``overwrite``, which replaces only a bundle galforge
        recorded writing there; the run's own default folders are replaced that way always.
        """
        from galforge import outputs

        if out is not None:
            out_dir = Path(out)
        else:
            out_dir = self.bundle_dir if step is None else self.snapshot_bundle_dir(step)
            overwrite = True
            if out_dir.is_dir():  # the run's own bundle, written before output manifests
                outputs.adopt(
                    out_dir,
                    [
                        p.name
                        for p in out_dir.iterdir()
                        if p.name == BUNDLE_JSON or p.suffix == ".safetensors"
                    ],
                )
        meta, payloads, _ = self.describe_bundle(out_dir, step=step)
        with outputs.claim_folder(out_dir, overwrite=overwrite, command="export"):
            return write_bundle(out_dir, meta, payloads)

    def bundle_is_current(self) -> bool:
        """Whether ``RUN/bundle`` was exported from the run's present weights."""
        if not (self.bundle_dir / BUNDLE_JSON).is_file():
            return False
        try:
            info = self.read_info()
            meta = read_json(self.bundle_dir / BUNDLE_JSON, _HINT)
            recorded = meta["source"]["run_weights_sha256"]
        except (BundleError, KeyError, TypeError):
            return False
        if isinstance(recorded, str):
            recorded = {"generator": recorded}
        weights = [self.part_weights(name) for name in info.parts]
        if not all(w.is_file() for w in weights):
            return True  # nothing newer to export from
        return all(
            recorded.get(name) == sha256_file(w)
            for name, w in zip(info.parts, weights, strict=True)
        )

    def bundle_file(self) -> BundleFile:
        """The run's bundle as it would be exported now; reads only, writes nothing."""
        if self.bundle_is_current():
            return read_bundle(self.bundle_dir)
        meta, _, tensors = self.describe_bundle()
        return bundle_from_description(self.path, meta, tensors)
