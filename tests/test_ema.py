"""The generator EMA: its update and the batch-norm statistics of the EMA copy."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from galforge.training.ema import batchnorm_layers, ema_update, recalibrate_batchnorm


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 4)
        self.bn = nn.BatchNorm1d(4)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(self.bn(self.lin(x)))


def test_ema_update_averages_parameters_and_copies_buffers():
    torch.manual_seed(0)
    gen, ema = _Net(), _Net()
    gen.bn.running_mean.fill_(3.0)
    want = {k: 0.75 * v + 0.25 * dict(gen.named_parameters())[k] for k, v in ema.named_parameters()}
    ema_update(ema, gen, 0.75)
    for k, v in ema.named_parameters():
        assert torch.allclose(v, want[k].detach())
    assert torch.equal(ema.bn.running_mean, gen.bn.running_mean)


def test_recalibration_is_the_plain_average_of_the_batch_statistics():
    torch.manual_seed(1)
    net = _Net()
    net.bn.running_mean.fill_(100.0)  # stale statistics, e.g. copied from another net
    xs = [torch.randn(8, 3) * (i + 1) + i for i in range(3)]
    n = recalibrate_batchnorm(net, batchnorm_layers(net), lambda i: ((xs[i],), {}), batches=3)
    assert n == 1
    h = [net.lin(x).detach() for x in xs]
    mean = torch.stack([t.mean(0) for t in h]).mean(0)
    var = torch.stack([t.var(0, unbiased=True) for t in h]).mean(0)
    assert torch.allclose(net.bn.running_mean, mean, atol=1e-5)
    assert torch.allclose(net.bn.running_var, var, rtol=1e-5)
    # the layer's own momentum is back, the net is in eval mode and dropout drew nothing
    assert net.bn.momentum == pytest.approx(0.1) and not net.training and not net.bn.training


def test_recalibration_leaves_other_layers_alone():
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 4), nn.BatchNorm1d(4))
    frozen = copy.deepcopy(net[1].state_dict())
    x = torch.randn(6, 3)
    recalibrate_batchnorm(net, [net[3]], lambda i: ((x,), {}), batches=2)
    assert all(torch.equal(v, net[1].state_dict()[k]) for k, v in frozen.items())
    assert not torch.equal(net[3].running_mean, torch.zeros(4))


def test_exported_ema_generator_has_statistics_of_its_own_weights(tmp_path):
    """A DCGAN trained with EMA exports the EMA weights with batch-norm statistics
    recomputed for them, not the raw generator's; the checkpoint keeps resuming exactly."""
    from test_trainer import _trainer

    torch.set_num_threads(1)
    run = tmp_path / "run"
    t = _trainer(run, steps=4, ema=0.5)
    t.fit()
    exported = load_file(str(run / "generator.safetensors"))
    raw = t.recipe.generator().state_dict()
    bn_means = [k for k in exported if k.endswith("running_mean")]
    assert bn_means
    assert any(not torch.equal(exported[k], raw[k]) for k in bn_means)
    # those statistics describe the exported network: the input of its first batch-norm
    # layer, over fresh latents, has the recorded mean (the raw generator's does not)
    from galforge.models import build_generator
    from galforge.runfolder import RunFolder

    part = RunFolder(run).read_info().parts["generator"]
    gen = build_generator(part["family"], part["spec"])
    gen.load_state_dict(exported)
    gen.eval()
    first = batchnorm_layers(gen)[0]
    seen = []
    first.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach()))
    with torch.no_grad():
        gen(torch.randn(4096, *gen.latent_shape(1)[1:], generator=torch.Generator().manual_seed(9)))
    mean = seen[0].mean(dim=(0, 2, 3))
    err_ema = (mean - first.running_mean).abs().max()
    name = next(n for n, m in gen.named_modules() if m is first)
    err_raw = (mean - raw[f"{name}.running_mean"]).abs().max()
    assert err_ema < 0.01 and err_ema < 0.2 * err_raw
    for k, v in exported.items():
        if not k.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert torch.equal(v, t.ema.state_dict()[k])


def test_snapshots_hold_the_ema_weights_with_their_own_statistics(tmp_path):
    """A kept snapshot's EMA generator (what quality benchmarks and --ensemble load) is the
    exported one, and resuming from a checkpoint written that way stays exact."""
    from test_trainer import _trainer

    from galforge.generation.field import load_snapshot_generator

    a, b = tmp_path / "a", tmp_path / "b"
    t = _trainer(a, steps=4, ema=0.5, snapshot_every=4)
    t.fit()
    snap = load_snapshot_generator(a / "checkpoints" / "step-00000004", t.ema)
    exported = load_file(str(a / "generator.safetensors"))
    assert all(torch.equal(v, exported[k]) for k, v in snap.state_dict().items())
    _trainer(b, steps=2, ema=0.5).fit()
    _trainer(b, steps=4, ema=0.5, resume=True).fit()
    assert (a / "generator.safetensors").read_bytes() == (b / "generator.safetensors").read_bytes()
