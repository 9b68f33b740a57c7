"""Option objects: choices checked from their ``Literal`` annotations, and the old keyword calls
giving what the option objects give."""

from __future__ import annotations

import dataclasses
import json
from typing import ClassVar, Literal

import numpy as np
import pytest
import torch

from galforge.errors import ConfigError, EvaluationError
from galforge.options import Options


@dataclasses.dataclass(frozen=True)
class _Demo(Options):
    CALLER: ClassVar[str] = "demo"

    mode: Literal["fast", "exact"] = "fast"
    level: Literal[1, 2] | None = None
    compile: bool | Literal["auto"] = "auto"
    flag: Literal["a", "b"] = dataclasses.field(default="a", metadata={"option": "--flag"})


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_choices_are_checked_from_the_annotation():
    assert _Demo(mode="exact", level=2, compile=True).level == 2
    assert _Demo(level=None, compile="auto").compile == "auto"
    with pytest.raises(ConfigError) as exc:
        _Demo(mode="slow")
    assert _one_line(exc) == "mode='slow': choose one of fast, exact"
    with pytest.raises(ConfigError) as exc:
        _Demo(compile="yes")
    assert _one_line(exc) == "compile='yes': choose one of auto, True, False"
    with pytest.raises(ConfigError) as exc:  # the flag of the field names it
        _Demo(flag="c")
    assert _one_line(exc) == "--flag 'c': choose one of a, b"
    with pytest.raises(ConfigError, match="level=True"):  # True == 1, but is no choice of 1
        _Demo(level=True)


def test_build_lays_keywords_over_an_options_object_and_refuses_unknown_ones():
    base = _Demo(mode="exact")
    assert _Demo.build(base) is base
    assert _Demo.build(base, level=1) == _Demo(mode="exact", level=1)
    assert _Demo.build({"mode": "exact"}) == base
    assert _Demo.build(None) == _Demo()
    with pytest.raises(ConfigError) as exc:
        _Demo.build(base, speed=3)
    assert _one_line(exc).startswith("unknown demo option(s) speed; choose from mode, level")
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.mode = "fast"


# ----------------------------------------------------------------------------- FieldOptions
def test_field_options_refuse_a_bad_choice_in_one_line():
    from galforge.generation.field import FieldOptions

    with pytest.raises(ConfigError) as exc:
        FieldOptions(fmt="tiff")
    assert _one_line(exc) == "--format 'tiff': choose one of zarr, fits, npy"
    with pytest.raises(ConfigError) as exc:
        FieldOptions(zarr_format=4)
    assert _one_line(exc) == "--zarr-format 4: choose 3 (zarr-python 3) or 2 (older clients)"
    with pytest.raises(ConfigError, match="--workers 0: give at least 1"):
        FieldOptions(workers=0)
    assert FieldOptions(fmt="FITS").fmt == "fits"
    assert FieldOptions(zarr_format="2").zarr_format == 2


def test_field_keywords_and_options_object_make_the_same_field(tmp_path):
    from galforge.generation.field import FieldOptions, generate_field, read_field
    from galforge.models.sgan import SGANGenerator

    torch.manual_seed(0)
    gen = SGANGenerator(3, (8, 8, 4, 4)).eval()
    bands = ("g", "r", "i")
    a = generate_field(
        gen, None, bands, tmp_path / "a.npy", "40x56", tile=16, seed=4, progress=False
    )
    opts = FieldOptions(tile=16, seed=4, progress=False)
    b = generate_field(gen, None, bands, tmp_path / "b.npy", "40x56", opts)
    # an options object with keywords laid over it
    c = generate_field(gen, None, bands, tmp_path / "c.npy", "40x56", opts.replace(seed=9), seed=4)
    pa, ma = read_field(a.path)
    pb, mb = read_field(b.path)
    pc, _ = read_field(c.path)
    assert np.array_equal(pa, pb) and np.array_equal(pa, pc)
    assert ma == mb
    with pytest.raises(ConfigError, match="unknown generate_field option"):
        generate_field(gen, None, bands, tmp_path / "d.npy", "40x56", tiles=16)


# ----------------------------------------------------------------------------- EvaluateOptions
def test_evaluate_options_refuse_a_bad_choice_in_one_line():
    from galforge.evaluation.options import DEFAULTS, EvaluateOptions

    with pytest.raises(EvaluationError) as exc:
        EvaluateOptions(isophote_engine="iraf")
    assert _one_line(exc) == "isophote_engine='iraf': choose one of galforge, photutils"
    with pytest.raises(EvaluationError, match="unknown threshold"):
        EvaluateOptions(thresholds={"no_such_rule": 1.0})
    settings = EvaluateOptions().settings()
    assert settings == DEFAULTS
    assert "measures" not in settings and "thresholds" not in settings


def test_evaluate_keywords_and_options_object_give_the_same_metrics(tmp_path):
    from galforge.evaluation.options import EvaluateOptions
    from galforge.evaluation.runner import evaluate

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:24, :24] - 11.5
    blob = np.exp(-(xx**2 + yy**2) / 18.0).astype(np.float32)
    real = blob * rng.uniform(50, 100, (8, 1, 1, 1)).astype(np.float32)
    fake = blob * rng.uniform(40, 90, (8, 1, 1, 1)).astype(np.float32)
    real += rng.normal(0, 1, real.shape).astype(np.float32)
    fake += rng.normal(0, 1, fake.shape).astype(np.float32)
    kw = dict(bands=("r",), units="counts", measures=["moments"], progress=False, cache=False)
    a = evaluate(real, fake, tmp_path / "a", scheduler="synchronous", **kw)
    opts = EvaluateOptions(scheduler="synchronous", **kw)
    b = evaluate(real, fake, tmp_path / "b", opts)
    for key in ("summary", "results", "settings", "thresholds", "measures"):
        assert json.dumps(a[key], sort_keys=True) == json.dumps(b[key], sort_keys=True)


# ----------------------------------------------------------------------------- GalSimOptions
def test_galsim_options_refuse_a_bad_choice_in_one_line():
    from galforge.data.builtin import GalSimOptions

    with pytest.raises(ConfigError) as exc:
        GalSimOptions(noise="poisson")
    assert _one_line(exc) == (
        "galsim_galaxies: noise='poisson': choose one of gaussian, correlated, none"
    )
    with pytest.raises(ConfigError) as exc:
        GalSimOptions(psf="airy")
    assert _one_line(exc) == "galsim_galaxies: psf='airy': choose one of moffat, gaussian"
    with pytest.raises(ConfigError, match="q must lie in"):
        GalSimOptions(q=(0.0, 2.0))
    o = GalSimOptions(bands="gri", noise=None, psf="Gaussian")
    assert (o.bands, o.noise, o.psf) == (("g", "r", "i"), "none", "gaussian")


def test_galsim_keywords_positions_and_options_object_draw_the_same_galaxies():
    from galforge.data.builtin import GalSimOptions, galsim_galaxies

    a, ta = galsim_galaxies(3, size=16, bands=("r",), seed=5, snr=(30, 60), psf="gaussian")
    opts = GalSimOptions(size=16, bands=("r",), seed=5, snr=(30, 60), psf="gaussian")
    b, tb = galsim_galaxies(3, options=opts)
    c, tc = galsim_galaxies(3, 16, ("r",), 5, options=GalSimOptions(snr=(30, 60), psf="gaussian"))
    assert np.array_equal(a.images, b.images) and np.array_equal(a.images, c.images)
    assert ta == tb == tc and a.source == b.source
    with pytest.raises(ConfigError, match="unknown galsim_galaxies option"):
        galsim_galaxies(3, sise=16)
    with pytest.raises(ConfigError, match="size given by position and by name"):
        galsim_galaxies(3, 16, size=16)


# ----------------------------------------------------------------------------- SamplingOptions
def test_sampling_options_refuse_a_bad_choice_in_one_line():
    from galforge.generation.sampling import SamplingOptions

    with pytest.raises(ConfigError) as exc:
        SamplingOptions(noise_mode="fresh")
    assert _one_line(exc) == "--noise-mode 'fresh': choose one of random, const, none"
    assert SamplingOptions(noise_mode="CONST", start=np.int64(3)).noise_mode == "const"


def test_sampling_keywords_and_options_object_draw_the_same_samples(tmp_path):
    from galforge.generation.sampling import SamplingOptions, iter_samples, load_bundle, sample
    from galforge.generation.writers import write_samples

    bundle = load_bundle("pretrained:galsim-stylegan2-64", device="cpu")  # has noise inputs
    kw = dict(start=1, truncation=0.7, truncation_cutoff=2, noise_mode="const")
    a = bundle.sample(3, seed=2, batch=2, **kw)
    o = SamplingOptions(**kw)
    assert np.array_equal(a, bundle.sample(3, 2, 2, o))
    assert np.array_equal(a, sample(bundle, 3, 2, 2, o, progress=False))
    chunks = iter_samples(bundle, 3, 2, 2, o.replace(start=0), start=1, progress=False)
    assert np.array_equal(a, np.concatenate([images for _, images in chunks]))
    write_samples(bundle, tmp_path / "w", 3, 2, o, fmt="npy", batch=2, progress=False)
    assert np.array_equal(a, np.load(tmp_path / "w" / "samples.npy"))
    with pytest.raises(ConfigError, match="unknown sampling option"):
        sample(bundle, 1, noise="const")
