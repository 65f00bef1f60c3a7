from pathlib import Path

import pytest

from robustops.catalog import load_config, resolve
from robustops.config import Config, DataSource, flatten, parse_overrides, to_yaml
from robustops.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_default_yaml_equals_built_in_defaults():
    # configs/default.yaml documents every key; it must not drift from the one place of defaults.
    assert load_config(ROOT / "configs/default.yaml") == resolve(Config())


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_every_shipped_config_validates(name):
    cfg = load_config(ROOT / "configs" / name)
    assert isinstance(cfg, Config)


def test_set_overrides_any_field_with_yaml_typed_values():
    cfg = load_config(
        ROOT / "configs/default.yaml",
        ["train.epochs=5", "evaluation.eps=[0.3, 0.1]", "train.progress=false", "data.image_size=16"],
    )
    assert cfg.train.epochs == 5
    assert cfg.evaluation.eps == [0.1, 0.3]
    assert cfg.train.progress is False
    assert cfg.data.image_size == (16, 16)


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        (["train.epoch=5"], "train.epoch: unknown key"),
        (["trian.epochs=5"], "trian: unknown key"),
        (["train.epochs=-1"], "train.epochs"),
        (["train.epochs=many"], "train.epochs"),
        (["train.optimizer=adamw"], "train.optimizer"),
        (["model.name=resnet9000"], "unknown model 'resnet9000'"),
        (["evaluation.eps=[0.1, 2]"], "evaluation.eps"),
        (["data.source=npz"], "data.path is not set"),
        (["data.val_fraction=0.45", "data.test_fraction=0.45"], "at least 20% for training"),
    ],
)
def test_bad_key_or_value_names_the_key(overrides, names):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert names in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("item", ["train.epochs", "=5", "train..epochs=5", "train.epochs=[1,"])
def test_malformed_set_is_an_error(item):
    with pytest.raises(ConfigError, match="bad --set"):
        parse_overrides([item])


def test_set_into_a_scalar_is_an_error():
    with pytest.raises(ConfigError, match="train.epochs is not a section"):
        load_config(None, ["train.epochs=5", "train.epochs.x=1"])


def test_yaml_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(scalar)
    python_tag = tmp_path / "tag.yaml"
    python_tag.write_text("seed: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):  # safe_load refuses code tags
        load_config(python_tag)


def test_resolved_config_round_trips_and_flattens():
    cfg = load_config(None, ["data.source=npz", "data.path=x.npz"])
    assert cfg.data.source is DataSource.NPZ
    import yaml

    assert resolve(Config.model_validate(yaml.safe_load(to_yaml(cfg)))) == cfg
    flat = flatten(cfg)
    assert flat["train.epochs"] == str(cfg.train.epochs)
    assert flat["data.path"] == "x.npz"


def test_default_yaml_lists_every_key():
    """configs/default.yaml documents the whole config: every key of the defaults appears in it."""
    import yaml

    written = yaml.safe_load((ROOT / "configs/default.yaml").read_text())

    def keys(node, prefix=""):
        if isinstance(node, dict):
            for k, v in node.items():
                yield f"{prefix}{k}"
                yield from keys(v, f"{prefix}{k}.")

    missing = set(keys(Config().model_dump(mode="json", exclude={"defences"}))) - set(keys(written))
    missing = {k for k in missing if not any(k.startswith(m + ".") for m in missing)}
    assert not missing, f"add to configs/default.yaml: {sorted(missing)}"


def test_set_applies_to_the_defaults_whatever_the_source(tmp_path):
    """--set into the default defence list works without --config, as it does with the shipped file;
    an index out of range says so (issue 15, item 2)."""
    bare = load_config(None, ["defences.0.eps=0.2"])
    shipped = load_config(Path("configs/default.yaml"), ["defences.0.eps=0.2"])
    assert bare.defences[0].eps == 0.2 and bare == shipped
    assert [d.name for d in bare.defences] == [d.name for d in Config().defences]  # the others kept
    with pytest.raises(ConfigError, match="index 7 is out of range: defences has items 0 to 4"):
        load_config(None, ["defences.7.eps=0.2"])
    with pytest.raises(ConfigError, match="defences is a list: index it by number, e.g. defences.0.eps"):
        load_config(None, ["defences.first.eps=0.2"])
    mine = tmp_path / "mine.yaml"
    mine.write_text("defences: [trades]\n")
    assert load_config(mine, ["defences.0.beta=3"]).defences[0].beta == 3  # the file's list, not the defaults


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.epoch=3"], "train.epoch: unknown key (did you mean train.epochs?"),
        (["trian.epochs=3"], "trian: unknown key (did you mean train?"),
        (["evaluation.autoattack.epz=[0.1]"], "did you mean evaluation.autoattack.eps?"),
        (["runner.threads_per_worker=2"], "did you mean runner.torch_threads?"),
        (["defences=[{name: pgd_at, epz: 0.2}]"], "epz: unknown key (did you mean eps?"),
        (
            ["evaluation.eps=0.1"],
            "evaluation.eps: expects a list, got 0.1: write [0.1] (--set evaluation.eps=[0.1]",
        ),
        (["gate.spec_checks=edge_blank"], 'write ["edge_blank"]'),
        (["defences=pgd_at"], "write a list, e.g. defences: [pgd_at]"),
    ],
)
def test_errors_suggest_the_key_and_how_to_write_a_list(overrides, message):
    """Issue 15, item 14."""
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    assert message in str(e.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["defences=[{name: fgsm_rs, guard_samples: 64}]"], "defences.0: guard_samples: unknown key (did you mean overfit_samples?"),
        (["defences.1.guard_drop=0.4"], "defences.1: guard_drop: unknown key (did you mean overfit_drop?"),
        (["defences=[pgd_at, {name: fgsm_rs, guard_gap: 0.2}]"], "defences.1: guard_gap: unknown key (did you mean overfit_gap?"),
        (["defences=[{name: fgsm_rs, guard_min: 0.2}]"], "guard_min: unknown key (did you mean overfit_min?"),
    ],
)  # fmt: skip
def test_an_old_fgsm_rs_overfitting_key_names_its_new_name(overrides, message):
    """Issue 16, point 7: FGSM-RS's guard_* settings are now overfit_*; an old key is refused with
    the new one named. A defence without the new key is not sent to it."""
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    assert message in str(e.value)
    with pytest.raises(ConfigError) as e:
        load_config(None, ["defences=[{name: pgd_at, guard_samples: 64}]"])
    assert "overfit_samples" not in str(e.value)
