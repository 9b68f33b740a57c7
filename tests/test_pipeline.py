"""Data needs, batches as pure functions of (seed, step), and preparing a run's data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from galforge.config import resolve_config
from galforge.errors import TrainingError
from galforge.training.pipeline import (
    Fields,
    PairedStamps,
    StampBatches,
    Stamps,
    batch_source,
    prepare_data,
)


def test_stamp_batches_are_a_function_of_seed_and_step():
    data = torch.rand(10, 1, 8, 8)
    a, b = StampBatches(data, 4, seed=1), StampBatches(data, 4, seed=1)
    assert a.steps_per_epoch == 2
    assert torch.equal(a.batch(5), b.batch(5)) and not torch.equal(a.batch(5), a.batch(4))


def test_paired_batches_hold_the_same_images_at_each_size():
    base = torch.rand(6, 1, 16, 16)
    small = torch.nn.functional.avg_pool2d(base, 2)
    src = batch_source(PairedStamps((8, 16)), {8: small, 16: base}, 3, seed=2)
    batch = src.batch(1)
    assert set(batch) == {8, 16}
    assert torch.allclose(torch.nn.functional.avg_pool2d(batch[16], 2), batch[8], atol=1e-6)
    with pytest.raises(TrainingError, match="make_batches"):
        batch_source(Fields(), base, 3, seed=0)


def test_prepare_data_resizes_for_the_need_and_checks_the_fingerprint(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "d.npy", rng.gamma(2.0, 3.0, (5, 2, 32, 32)).astype(np.float32))

    def cfg_():  # reading records in cfg.data what it did (e.g. the resize): one per read
        return resolve_config(base={"data": {"source": str(tmp_path / "d.npy")}})

    cfg = cfg_()
    d = prepare_data(cfg, Stamps(16), (-1.0, 1.0))
    assert d.data.shape == (5, 2, 16, 16) and d.data.min() >= -1 and d.data.max() <= 1
    assert cfg.data.resize == 16 and any("resized" in n for n in d.notes)
    whole = prepare_data(cfg_(), Fields(), (0.0, 1.0))
    assert whole.data.shape == (5, 2, 32, 32) and whole.data.min() >= 0
    paired = prepare_data(cfg_(), PairedStamps((8, 16)), (-1.0, 1.0))
    assert {k: v.shape for k, v in paired.data.items()} == {8: (5, 2, 8, 8), 16: (5, 2, 16, 16)}
    # resuming on other data is refused
    from galforge.runfolder import RunFolder, RunInfo

    run = RunFolder(tmp_path / "run")
    run.path.mkdir()
    run.write_info(
        RunInfo(
            family="x",
            parts={"generator": {"family": "x", "spec": {}}},
            bands=["a", "b"],
            units="adu",
            normalizer=None,
            output_range=[-1, 1],
            data_fingerprint="not-these-data",
        )
    )
    with pytest.raises(TrainingError, match="fingerprint"):
        prepare_data(cfg_(), Stamps(16), (-1.0, 1.0), run_dir=run.path, resume=True)


def test_conditions_come_from_each_images_meta_and_travel_with_the_batch():
    from galforge.data import ImageSet
    from galforge.errors import DataError
    from galforge.training.pipeline import condition_table

    images = np.random.default_rng(1).random((6, 1, 8, 8)).astype(np.float32)
    meta = [{"id": str(i), "mag": str(18 + i), "hlr": 0.5 * i} for i in range(6)]
    iset = ImageSet(images=images, bands=("r",), meta=meta)
    table = condition_table(iset, ("mag", "hlr"))
    assert table.dtype == np.float32 and table[4].tolist() == [22.0, 2.0]
    src = batch_source(
        Stamps(8, conditions=("mag", "hlr")),
        {"images": torch.from_numpy(images), "conditions": torch.from_numpy(table)},
        3,
        seed=0,
    )
    batch = src.batch(1)
    idx = src.indices(1)
    assert torch.equal(batch["conditions"], torch.from_numpy(table)[idx])
    assert batch["images"].shape == (3, 1, 8, 8)
    meta[2]["mag"] = "n/a"
    with pytest.raises(DataError, match="mag"):
        condition_table(iset, ("mag",))


def test_prepare_data_reads_conditions_from_the_catalogue_columns():
    cfg = resolve_config(base={"data": {"source": "builtin:galsim?n=6&size=16&seed=2"}})
    d = prepare_data(cfg, Stamps(16, conditions=("hlr", "sersic_n")), (-1.0, 1.0))
    assert set(d.data) == {"images", "conditions"}
    assert d.data["images"].shape == (6, 3, 16, 16) and d.data["conditions"].shape == (6, 2)
    hlr = [float(m["hlr"]) for m in d.iset.meta]
    np.testing.assert_allclose(d.data["conditions"][:, 0], hlr, rtol=1e-6)
