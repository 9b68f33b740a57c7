"""Training checkpoints: safetensors for tensors, JSON for everything else, written atomically.

A checkpoint is a folder with three files:

* ``state.safetensors`` — every tensor: module weights and buffers (``module.<name>.<key>``),
  EMA weights (``ema.<key>``) and optimiser state tensors (``optim.<name>.<param>.<key>``);
* ``state.json`` — the rest: step, epoch, optimiser hyper-parameters, schedule, recipe and
  augmentation state, the best in-training metric, the run config;
* ``sha256.json`` — the sha256 of the two others, checked when the checkpoint is read (with
  every floating-point tensor checked finite); resume falls back to the newest intact
  checkpoint (:func:`read_newest_intact`).

No random-generator state is saved: every draw of a run comes from a stream keyed by
``(seed, step, ...)`` (:mod:`galforge.seeding`), so a resumed run redraws exactly.

The folder is written under a temporary name and renamed into place, so a crash while
saving leaves the previous checkpoint intact.  Nothing is unpickled when loading.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from galforge.errors import TrainingError
from galforge.fileio import atomic_folder
from galforge.runfolder import CHECKPOINT_META as META
from galforge.runfolder import CHECKPOINT_TENSORS as TENSORS

# ----------------------------------------------------------------------------- files

SUMS = "sha256.json"  # {file name: sha256} of the checkpoint's other files


def _plain(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies (safetensors refuses shared or non-contiguous storage)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}


def non_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors holding NaN or infinity."""
    return [
        k
        for k, v in tensors.items()
        if torch.is_floating_point(v) and not bool(torch.isfinite(v).all())
    ]


def write_checkpoint(ckpt_dir: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write ``state.safetensors`` + ``state.json`` + their sha256 into ``ckpt_dir`` atomically.

    The files are written into a temporary sibling folder which then replaces
    ``ckpt_dir`` (:func:`galforge.fileio.atomic_folder`); the old folder is kept as
    ``.<name>.old`` until the new one is in place.
    """
    payload = save(_plain(tensors))
    text = json.dumps(meta, indent=1).encode("utf-8")
    sums = {TENSORS: hashlib.sha256(payload).hexdigest(), META: hashlib.sha256(text).hexdigest()}
    with atomic_folder(ckpt_dir) as tmp:
        for name, data in (
            (TENSORS, payload),
            (META, text),
            (SUMS, json.dumps(sums, indent=1).encode("utf-8")),
        ):
            with open(tmp / name, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
    return Path(ckpt_dir)


def find_checkpoint(ckpt_dir: str | Path) -> Path | None:
    """The complete checkpoint folder at ``ckpt_dir`` (or its kept ``.old`` copy), or None."""
    ckpt_dir = Path(ckpt_dir)
    for cand in (ckpt_dir, ckpt_dir.parent / f".{ckpt_dir.name}.old"):
        if (cand / TENSORS).is_file() and (cand / META).is_file():
            return cand
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_checkpoint(ckpt_dir: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Load the tensors and the JSON of a checkpoint folder (no pickle involved).

    The files are checked against their recorded sha256 (checkpoints written before the
    checksums existed are read without) and every floating-point tensor must be finite;
    a TrainingError naming the folder otherwise.
    """
    found = find_checkpoint(ckpt_dir)
    if found is None:
        raise TrainingError(
            f"no complete checkpoint in {ckpt_dir}: expected {TENSORS} and "
            f"{META}; start a new run without --resume"
        )
    try:
        if (found / SUMS).is_file():
            sums = json.loads((found / SUMS).read_text())
            for name in (TENSORS, META):
                if not isinstance(sums, dict) or _sha256(found / name) != sums.get(name):
                    raise TrainingError(
                        f"checkpoint {found}: {name} does not match its recorded "
                        "sha256 (corrupt or changed); restore the folder"
                    )
        tensors = load_file(str(found / TENSORS))
        meta = json.loads((found / META).read_text())
    except (OSError, ValueError, RecursionError, SafetensorError) as exc:
        raise TrainingError(
            f"checkpoint {found} cannot be read ({exc}); start a new run or restore the folder"
        ) from exc
    if not isinstance(meta, dict) or "step" not in meta:
        raise TrainingError(f"checkpoint {found}: {META} holds no step; restore the folder")
    bad = non_finite(tensors)
    if bad:
        raise TrainingError(
            f"checkpoint {found}: {len(bad)} tensor(s) hold NaN or infinity "
            f"({bad[0]}, ...); restore the folder"
        )
    return tensors, meta


def checkpoint_step(ckpt_dir: Path) -> int | None:
    """The step recorded in a checkpoint folder's JSON (None when it cannot be read)."""
    found = find_checkpoint(ckpt_dir)
    if found is None:
        return None
    try:
        step = json.loads((found / META).read_text()).get("step")
        return int(step)
    except (OSError, ValueError, TypeError, AttributeError, RecursionError):
        return None


def read_newest_intact(candidates: list[Path]) -> tuple[Path, dict, dict, list[str]]:
    """The newest checkpoint among ``candidates`` (in order of preference) that checks out.

    Returns ``(folder, tensors, meta, problems)``: ``problems`` lists one line per newer
    candidate that was skipped (corrupt, truncated, non-finite).  TrainingError when none is
    intact, naming the first problem.
    """
    steps = {c: checkpoint_step(c) for c in candidates if find_checkpoint(c) is not None}
    # the first candidate (latest) first, whatever it holds, then the others newest first
    # (among equal steps in the order given: a stable sort)
    first = [c for c in candidates[:1] if c in steps]
    order = first + sorted(
        (c for c in steps if c not in first),
        key=lambda c: -(steps[c] if steps[c] is not None else -1),
    )
    problems: list[str] = []
    for cand in order:
        try:
            tensors, meta = read_checkpoint(cand)
        except TrainingError as exc:
            problems.append(str(exc))
            continue
        return cand, tensors, meta, problems
    if problems:
        raise TrainingError(f"--resume: no intact checkpoint left: {problems[0]}")
    raise TrainingError(
        f"no complete checkpoint in {candidates[0] if candidates else '?'}; "
        "start a new run without --resume"
    )


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
        sd = {k[len(pre) :]: v for k, v in tensors.items() if k.startswith(pre)}
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
