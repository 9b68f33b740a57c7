"""Power spectra, pixel histograms, the galaxy encoder and the Inception plumbing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from galforge.errors import EvaluationError
from galforge.evaluation import features


def test_power_spectrum_of_white_noise_is_flat_at_the_variance():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 2.0, size=(64, 1, 32, 32)).astype(np.float32)
    k, p = features.power_spectra(x)
    assert p.shape == (64, 1, 16) and k.shape == (16,)
    assert k[0] == pytest.approx(1 / 32) and k[-1] == pytest.approx(0.5)
    mean = p.mean(axis=(0, 1))
    np.testing.assert_allclose(mean, 4.0, rtol=0.15)


def test_power_spectrum_peaks_at_a_sinusoid_frequency():
    yy, xx = np.mgrid[:32, :32]
    img = np.sin(2 * np.pi * 5 * xx / 32)[None, None].astype(np.float32)
    k, p = features.power_spectra(img)
    assert k[np.argmax(p[0, 0])] == pytest.approx(5 / 32)
    # smoothing removes high-k power
    blurred = (img + np.roll(img, 1, -1) + np.roll(img, -1, -1)) / 3
    _, pb = features.power_spectra(np.concatenate([img, blurred]))
    assert pb[1, 0].max() < pb[0, 0].max()


def test_pixel_histograms_are_normalised_on_shared_edges():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(20, 2, 8, 8)).astype(np.float32)
    edges = features.histogram_edges(real, bins=10)
    assert edges.shape == (2, 11)
    assert np.all(np.diff(edges, axis=1) > 0)
    h = features.pixel_histograms(real, edges)
    assert h.shape == (20, 2, 10)
    np.testing.assert_allclose(h.sum(axis=2), 1.0)
    # values beyond the edges land in the end bins
    h2 = features.pixel_histograms(np.full((1, 2, 8, 8), 1e6, np.float32), edges)
    assert h2[0, :, -1].tolist() == [1.0, 1.0]
    f = features.realism_features(real, edges, max_k=4)
    assert f.shape == (20, 2 * 4 + 2 * 10)


def test_quantised_images_get_increasing_edges():
    x = np.zeros((5, 1, 8, 8), np.float32)
    x[:, :, :2] = 255
    edges = features.histogram_edges(x, bins=8)
    assert np.all(np.diff(edges[0]) > 0)


def test_band_reduce_and_bad_band():
    x = np.stack([np.full((4, 4), v, np.float32) for v in (1, 3)])[None]
    assert features.band_reduce(x)[0, 0, 0] == 2.0
    assert features.band_reduce(x, ("g", "r"), "r")[0, 0, 0] == 3.0
    with pytest.raises(EvaluationError, match="--band"):
        features.band_reduce(x, ("g", "r"), "z")


def test_encoder_inputs_resize_and_scale():
    x = np.random.default_rng(0).normal(size=(3, 2, 40, 40)).astype(np.float32)
    t = features.encoder_inputs(x, scale=features.set_scale(x))
    assert t.shape == (3, 1, 64, 64) and t.dtype == torch.float32
    big = features.encoder_inputs(np.ones((1, 1, 128, 128), np.float32), scale=1.0)
    assert big.shape == (1, 1, 64, 64)


def test_encoder_architecture_shapes():
    enc = features.GalaxyEncoder(width=8, num_features=16)
    x = torch.zeros(2, 1, 64, 64)
    assert enc(x).shape == (2, 16)
    assert enc.predict(x).shape == (2, len(features.ENCODER_PARAMS))
    assert enc.num_features == 16


def test_shipped_encoder_loads_and_documents_its_errors():
    enc = features.load_galaxy_encoder()
    card = features.galaxy_encoder_card()
    assert card["parameters"] == list(features.ENCODER_PARAMS)
    for name in features.ENCODER_PARAMS:
        v = card["validation"][name]
        assert 0 <= v["rms"] < v["truth_std"]  # better than guessing the mean
    assert enc.num_features == card["architecture"]["num_features"]
    with torch.no_grad():
        out = enc(torch.zeros(1, 1, 64, 64))
    assert out.shape == (1, enc.num_features) and torch.isfinite(out).all()


def test_encoder_reads_ellipticity_of_a_simple_galaxy():
    enc = features.load_galaxy_encoder()
    card = features.galaxy_encoder_card()
    mu, sd = np.asarray(card["target_mean"]), np.asarray(card["target_std"])
    y, x = np.mgrid[:64, :64] - 31.5
    imgs = []
    for q in (1.0, 0.4):
        prof = np.exp(-0.5 * (x**2 + (y / q) ** 2) / 4.0**2)
        imgs.append(prof / prof.max() * card["training"]["set_scale"])
    imgs = np.asarray(imgs, np.float32)[:, None]
    t = features.encoder_inputs(imgs, scale=card["training"]["set_scale"])
    with torch.no_grad():
        pred = enc.predict(t).numpy() * sd + mu
    eps = pred[:, features.ENCODER_PARAMS.index("eps")]
    assert eps[1] > eps[0] + 0.3


def test_missing_encoder_weights_is_an_error(tmp_path):
    with pytest.raises(EvaluationError, match="not found"):
        features.load_galaxy_encoder(tmp_path / "none.safetensors")


class _TinyFeatures(nn.Module):
    def forward(self, x):
        return torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)


def test_inception_plumbing_with_an_exported_program(tmp_path):
    path = tmp_path / "feat.pt2"
    batch = torch.export.Dim("batch", min=1, max=1024)
    prog = torch.export.export(
        _TinyFeatures(), (torch.zeros(2, 3, 32, 32),), dynamic_shapes={"x": {0: batch}}
    )
    torch.export.save(prog, str(path))
    net = features.load_inception(path)
    x = features.inception_inputs(
        np.random.default_rng(0).random((3, 3, 16, 16)), ("g", "r", "i"), size=32
    )
    assert x.shape == (3, 3, 32, 32) and float(x.min()) >= 0 and float(x.max()) <= 1
    out = net(x)
    assert out.shape == (3, 12)


def test_inception_unavailable_says_what_to_pass(tmp_path):
    with pytest.raises(EvaluationError, match="--inception-weights"):
        features.load_inception(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    with pytest.raises(EvaluationError, match="TorchScript"):
        features.load_inception(bad)
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        with pytest.raises(EvaluationError, match="unavailable: pass --inception-weights"):
            features.load_inception(None)
