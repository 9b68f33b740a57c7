"""Training checkpoints: safetensors for tensors, JSON for everything else, written atomically.

A checkpoint is a folder with two files:

* ``state.safetensors`` — every tensor: module weights and buffers (``module.<name>.<key>``),
  EMA weights (``ema.<key>``) and optimiser state tensors (``optim.<name>.<param>.<key>``);
* ``state.json`` — the rest: step, epoch, optimiser hyper-parameters, schedule, recipe and
  augmentation state, the best in-training metric, the run config.

No random-generator state is saved: every draw of a run comes from a stream keyed by
``(seed, step, ...)`` (:mod:`galforge.seeding`), so a resumed run redraws exactly.

The folder is written under a temporary name and renamed into place, so a crash while
saving leaves the previous checkpoint intact.  Nothing is unpickled when loading.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from galforge.errors import TrainingError
from galforge.runfolder import CHECKPOINT_META as META
from galforge.runfolder import CHECKPOINT_TENSORS as TENSORS

# ----------------------------------------------------------------------------- files






def save_tensors_atomic(path: str | Path, tensors: dict[str, torch.Tensor],
                        metadata: dict[str, str] | None = None) -> Path:
    """``safetensors`` file written through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_file(_plain(tensors), str(tmp), metadata=metadata)
    os.replace(tmp, path)
    return path


def _plain(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies (safetensors refuses shared or non-contiguous storage)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}


def write_checkpoint(ckpt_dir: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write ``state.safetensors`` + ``state.json`` into ``ckpt_dir`` atomically.

    The files are written into a temporary sibling folder which then replaces
    ``ckpt_dir``; the old folder is kept as ``<name>.old`` until the new one is in place.
    """
    ckpt_dir = Path(ckpt_dir)
    parent = ckpt_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".{ckpt_dir.name}.tmp-{os.getpid()}"
    old = parent / f".{ckpt_dir.name}.old"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file(_plain(tensors), str(tmp / TENSORS))
    with open(tmp / META, "w") as fh:
        json.dump(meta, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    if old.exists():
        shutil.rmtree(old)
    if ckpt_dir.exists():
        os.replace(ckpt_dir, old)
    os.replace(tmp, ckpt_dir)
    if old.exists():
        shutil.rmtree(old)
    return ckpt_dir


def find_checkpoint(ckpt_dir: str | Path) -> Path | None:
    """The complete checkpoint folder at ``ckpt_dir`` (or its kept ``.old`` copy), or None."""
    ckpt_dir = Path(ckpt_dir)
    for cand in (ckpt_dir, ckpt_dir.parent / f".{ckpt_dir.name}.old"):
        if (cand / TENSORS).is_file() and (cand / META).is_file():
            return cand
    return None


def read_checkpoint(ckpt_dir: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Load the tensors and the JSON of a checkpoint folder (no pickle involved)."""
    found = find_checkpoint(ckpt_dir)
    if found is None:
        raise TrainingError(f"no complete checkpoint in {ckpt_dir}: expected {TENSORS} and "
                            f"{META}; start a new run without --resume")
    try:
        tensors = load_file(str(found / TENSORS))
        meta = json.loads((found / META).read_text())
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        raise TrainingError(f"checkpoint {found} cannot be read ({exc}); start a new run "
                            "or restore the folder") from exc
    return tensors, meta


# ----------------------------------------------------------------------------- packing


def pack_modules(modules: dict[str, torch.nn.Module], prefix: str = "module") -> dict:
    out = {}
    for name, mod in modules.items():
        for k, v in mod.state_dict().items():
            out[f"{prefix}.{name}.{k}"] = v
    return out


def unpack_modules(modules: dict[str, torch.nn.Module], tensors: dict, prefix: str = "module"):
    for name, mod in modules.items():
        pre = f"{prefix}.{name}."
        sd = {k[len(pre):]: v for k, v in tensors.items() if k.startswith(pre)}
        try:
            mod.load_state_dict(sd, strict=True)
        except RuntimeError as exc:
            raise TrainingError(
                f"checkpoint does not match network {name!r} ({str(exc).splitlines()[0]}); "
                "resume with the model options the run was started with"
            ) from exc


def pack_optimizers(optims: dict[str, torch.optim.Optimizer]) -> tuple[dict, dict]:
    """Split optimiser state dicts into tensors (for safetensors) and JSON."""
    tensors, meta = {}, {}
    for name, opt in optims.items():
        sd = opt.state_dict()
        state_json = {}
        for pid, st in sd["state"].items():
            entry = {}
            for k, v in st.items():
                if torch.is_tensor(v):
                    tensors[f"optim.{name}.{pid}.{k}"] = v
                    entry[k] = {"tensor": True}
                else:
                    entry[k] = v
            state_json[str(pid)] = entry
        meta[name] = {"state": state_json, "param_groups": sd["param_groups"]}
    return tensors, meta


def unpack_optimizers(optims: dict[str, torch.optim.Optimizer], tensors: dict, meta: dict):
    for name, opt in optims.items():
        if name not in meta:
            raise TrainingError(f"checkpoint has no state for optimiser {name!r}")
        m = meta[name]
        state = {}
        for pid, entry in m["state"].items():
            st = {}
            for k, v in entry.items():
                if isinstance(v, dict) and v.get("tensor"):
                    st[k] = tensors[f"optim.{name}.{pid}.{k}"]
                else:
                    st[k] = v
            state[int(pid)] = st
        groups = []
        for g in m["param_groups"]:
            g = dict(g)
            if isinstance(g.get("betas"), list):
                g["betas"] = tuple(g["betas"])
            groups.append(g)
        opt.load_state_dict({"state": state, "param_groups": groups})
