"""The run folder: run.json in one schema (0.1 layout read too), weights, snapshots, export."""

from __future__ import annotations

import json

import pytest
import torch

from galforge.errors import BundleError
from galforge.models.dcgan import DCGANGenerator
from galforge.runfolder import RunFolder, RunInfo

SPEC = {"image_size": 64, "channels": 1, "latent_dim": 4, "width": 2}


def _info(**kw):
    base = dict(
        family="dcgan",
        parts={"generator": {"family": "dcgan", "spec": SPEC}},
        bands=["r"],
        units="adu",
        normalizer=None,
        output_range=[-1.0, 1.0],
        step=2,
    )
    base.update(kw)
    return RunInfo(**base)


def test_run_json_round_trip_and_the_0_1_layout(tmp_path):
    run = RunFolder(tmp_path / "run")
    run.path.mkdir()
    run.write_info(_info(model="dcgan64"))
    info = run.read_info()
    assert info == _info(model="dcgan64")
    old = {
        "family": "dcgan",
        "spec": SPEC,
        "bands": ["r"],
        "units": "adu",
        "normalizer": None,
        "output_range": [-1, 1],
        "export_module": "galforge.models.dcgan",
        "step": 3,
        "epoch": 1,
        "galforge_version": "0.1.0",
    }
    run.run_json.write_text(json.dumps(old))
    info = run.read_info()
    assert info.parts == {
        "generator": {"family": "dcgan", "spec": SPEC, "module": "galforge.models.dcgan"}
    }
    assert info.step == 3 and info.module == "galforge.models.dcgan"
    run.run_json.write_text(json.dumps({"family": "dcgan", "spec": SPEC}))
    with pytest.raises(BundleError, match="bands"):
        run.read_info()


def test_layout_weights_export_and_snapshots(tmp_path):
    run = RunFolder(tmp_path / "run")
    run.path.mkdir()
    g = DCGANGenerator(**SPEC)
    run.write_info(_info())
    # DDP-wrapped keys are unwrapped when read
    run.write_weights({"generator": {f"module.{k}": v for k, v in g.state_dict().items()}})
    assert run.part_weights() == run.path / "generator.safetensors"
    assert set(run.read_weights("generator")) == set(g.state_dict())
    assert not run.bundle_is_current()
    out = run.export()
    assert out == run.bundle_dir and run.bundle_is_current()
    assert (
        run.bundle_file().meta["bundle_id"]
        == json.loads((out / "bundle.json").read_text())["bundle_id"]
    )
    # a kept snapshot holds the EMA weights first
    from safetensors.torch import save_file

    snap = run.snapshot(4)
    snap.mkdir(parents=True)
    ema = {f"ema.{k}": torch.zeros_like(v) for k, v in g.state_dict().items()}
    raw = {f"module.G.{k}": v for k, v in g.state_dict().items()}
    save_file({**ema, **raw}, str(snap / "state.safetensors"))
    assert run.snapshots() == [snap] and snap.name == "step-00000004"
    picked = run.snapshot_weights(snap, g.state_dict())
    assert all(float(v.abs().sum()) == 0 for v in picked.values())
