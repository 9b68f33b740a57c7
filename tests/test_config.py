"""Run configuration: YAML + flags + --set merging, validation, dry run."""

from __future__ import annotations

import pytest
import yaml

from galforge.cli import main
from galforge.cli.train_cmd import resolve_train_config
from galforge.config import RunConfig, load_yaml, parse_set, resolve_config
from galforge.errors import ConfigError
from galforge.training.recipes import model_configs, model_defaults


def _yaml(tmp_path, text, name="run.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_paper_config_gives_paper_values():
    cfg = resolve_config(
        sets=["model.config=paper"], model_defaults=model_defaults(), model_configs=model_configs()
    )
    assert cfg.model.name == "dcgan64"
    p = cfg.model.params
    assert (p["width"], p["latent_dim"], p["kernel_size"], p["lr"], p["beta1"], p["beta2"]) == (
        128,
        100,
        4,
        2e-4,
        0.5,
        0.999,
    )
    assert (p["upsample"], p["ema"]) == ("transposed", 0.0)
    assert cfg.data.resize_method == "nearest"


def test_default_config_is_the_cpu_one_and_explicit_keys_win():
    cfg = resolve_config(model_defaults=model_defaults(), model_configs=model_configs())
    p = cfg.model.params
    assert (p["config"], p["width"], p["upsample"], p["ema"]) == ("cpu", 32, "resize", 0.999)
    assert (p["lr"], p["beta1"], p["kernel_size"]) == (2e-4, 0.5, 4)
    cfg = resolve_config(
        sets=["model.config=paper", "model.width=64"],
        model_defaults=model_defaults(),
        model_configs=model_configs(),
    )
    assert (cfg.model.params["width"], cfg.model.params["upsample"]) == (64, "transposed")
    with pytest.raises(ConfigError, match="model.config='fast'.*cpu, paper"):
        resolve_config(
            sets=["model.config=fast"],
            model_defaults=model_defaults(),
            model_configs=model_configs(),
        )


def test_yaml_then_flags_then_set(tmp_path):
    f = _yaml(
        tmp_path,
        "model:\n  name: dcgan128\n  width: 16\ntrain:\n  batch: 8\n  seed: 3\n  steps: 10\n",
    )
    cfg = resolve_train_config(
        "builtin:galsim",
        out=str(tmp_path / "run"),
        batch=4,
        config=f,
        sets=["train.batch=2", "model.label_smoothing=0.1", "train.amp=false", "data.rotate=null"],
    )
    assert cfg.model.name == "dcgan128"
    assert cfg.model.params["width"] == 16  # from YAML
    assert cfg.model.params["dropout_until_epoch"] == 200  # dcgan128 default
    assert cfg.train.seed == 3  # YAML, no flag
    assert cfg.train.batch == 2  # --set beats the flag, which beat YAML
    assert cfg.model.params["label_smoothing"] == 0.1
    assert cfg.data.source == "builtin:galsim"
    # a flag beats YAML
    cfg2 = resolve_train_config("x", config=f, batch=4, seed=9)
    assert (cfg2.train.batch, cfg2.train.seed) == (4, 9)
    # --epochs on the command line replaces the YAML's steps
    cfg3 = resolve_train_config("x", config=f, epochs=2)
    assert (cfg3.train.steps, cfg3.train.epochs) == (None, 2)


def test_parse_set_reads_yaml_scalars():
    d = parse_set(["a.b=32", "a.c=true", "a.d=null", "a.e=1e-3", "f.g=hello"])
    assert d == {"a": {"b": 32, "c": True, "d": None, "e": 1e-3}, "f": {"g": "hello"}}
    with pytest.raises(ConfigError, match="dotted.key=value"):
        parse_set(["nokey"])


def test_unknown_key_is_named_with_valid_keys():
    with pytest.raises(ConfigError) as e:
        resolve_config(sets=["model.widht=3"], model_defaults=model_defaults())
    msg = str(e.value)
    assert "model.widht" in msg and "model.width" in msg and "--set" in msg
    with pytest.raises(ConfigError, match="train.stepz"):
        resolve_config(sets=["train.stepz=3"])
    with pytest.raises(ConfigError, match="valid keys: data, model, output, train"):
        resolve_config(sets=["trian.steps=3"])


def test_unknown_model_lists_known_models():
    with pytest.raises(ConfigError) as e:
        resolve_train_config("x", model="dcgan256")
    assert "dcgan256" in str(e.value) and "dcgan64" in str(e.value) and "dcgan128" in str(e.value)


def test_bad_yaml_names_file_and_line(tmp_path):
    f = _yaml(tmp_path, "train:\n  steps: 3\n  batch: [1, 2\nmodel:\n  width: 8\n", "bad.yaml")
    with pytest.raises(ConfigError) as e:
        load_yaml(f)
    assert "bad.yaml" in str(e.value) and "line 4" in str(e.value)
    g = _yaml(tmp_path, "- just\n- a list\n", "list.yaml")
    with pytest.raises(ConfigError, match="list.yaml"):
        load_yaml(g)


def test_bad_types_and_values():
    with pytest.raises(ConfigError, match="train.steps"):
        resolve_config(sets=["train.steps=abc"])
    with pytest.raises(ConfigError, match="model.batch_norm"):
        resolve_config(sets=["model.batch_norm=3"], model_defaults=model_defaults())
    with pytest.raises(ConfigError, match="lr_schedule"):
        resolve_config(sets=["train.lr_schedule=cosine"])
    with pytest.raises(ConfigError, match="--steps and --epochs"):
        resolve_train_config("x", steps=3, epochs=2)


def test_yaml_round_trip():
    cfg = resolve_config(sets=["model.width=8", "train.steps=5"], model_defaults=model_defaults())
    again = RunConfig.from_dict(yaml.safe_load(cfg.to_yaml()), model_defaults())
    assert again == cfg


def test_cli_dry_run_prints_resolved_config(capsys, tmp_path):
    rc = main(
        [
            "train",
            "builtin:galsim?n=4",
            "--model",
            "dcgan64",
            "--out",
            str(tmp_path / "r"),
            "--steps",
            "7",
            "--dry-run",
            "--set",
            "model.width=32",
        ]
    )
    assert rc == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["width"] == 32 and printed["train"]["steps"] == 7
    assert printed["data"]["source"] == "builtin:galsim?n=4"
    assert not (tmp_path / "r").exists()  # a dry run writes nothing


def test_cli_errors_exit_2(capsys, tmp_path):
    f = _yaml(tmp_path, "train: {steps: [}\n", "broken.yaml")
    assert main(["train", "x", "--config", str(f), "--dry-run"]) == 2
    assert "broken.yaml" in capsys.readouterr().err
    assert main(["train", "x", "--model", "nope", "--dry-run"]) == 2
    assert "known models" in capsys.readouterr().err
    assert main(["train", "x", "--set", "model.foo=1", "--dry-run"]) == 2
    assert "model.foo" in capsys.readouterr().err
