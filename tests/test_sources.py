"""A user's model: weights read safely into their architecture, and their preprocessing folded in."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustops.errors import ModelSourceError
from robustops.sources import Preprocess, build_model, load_weights, read_state_dict, with_preprocess
from tests.helpers.user_model import SmallResNet


def _trained() -> SmallResNet:
    torch.manual_seed(0)
    m = SmallResNet()
    with torch.no_grad():  # buffers that differ from a fresh model's, so a skipped load shows
        m.bn.running_mean.uniform_(-1, 1)
        m.bn.running_var.uniform_(0.5, 2)
    return m.eval()


def _same(a: nn.Module, b: nn.Module) -> bool:
    x = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return torch.equal(a.eval()(x), b.eval()(x))


@pytest.mark.parametrize(
    "layout",
    [
        lambda sd: sd,
        lambda sd: {f"module.{k}": v for k, v in sd.items()},  # nn.DataParallel
        lambda sd: {f"_orig_mod.{k}": v for k, v in sd.items()},  # torch.compile
        lambda sd: {"epoch": 90, "state_dict": sd, "best_acc": 0.93},
        lambda sd: {"net": {f"module.{k}": v for k, v in sd.items()}, "optimizer_lr": 0.1},
    ],
    ids=["plain", "dataparallel", "compiled", "checkpoint", "checkpoint-net-dataparallel"],
)
def test_every_common_layout_loads_to_the_same_model(tmp_path, layout):
    m = _trained()
    torch.save(layout(m.state_dict()), tmp_path / "w.pt")
    fresh = SmallResNet()
    assert not _same(fresh, m)
    load_weights(fresh, read_state_dict(tmp_path / "w.pt"))
    assert _same(fresh, m)


def test_a_named_key_is_used_and_a_wrong_one_lists_the_keys(tmp_path):
    m = _trained()
    torch.save({"ema_weights": m.state_dict(), "step": 3}, tmp_path / "w.pt")
    assert _same(load_weights(SmallResNet(), read_state_dict(tmp_path / "w.pt", key="ema_weights")), m)
    with pytest.raises(ModelSourceError, match=r"no key 'weights' \(found: ema_weights, step\)"):
        read_state_dict(tmp_path / "w.pt", key="weights")
    with pytest.raises(
        ModelSourceError, match=r"holds no state_dict \(found: ema_weights, step\).*weights_key"
    ):
        read_state_dict(tmp_path / "w.pt")


def test_bad_files_are_refused_without_running_them(tmp_path):
    m = _trained()
    torch.save(m, tmp_path / "pickled.pt")  # the whole module: unpickling would run code
    with pytest.raises(ModelSourceError, match=r"holds Python objects \([\w.]*SmallResNet\).*state_dict"):
        read_state_dict(tmp_path / "pickled.pt")
    torch.save(m.state_dict(), tmp_path / "w.pt")
    data = (tmp_path / "w.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.pt").write_bytes(b"not a torch file at all")
    (tmp_path / "empty.pt").write_bytes(b"")
    for name in ("truncated.pt", "text.pt", "empty.pt"):
        with pytest.raises(ModelSourceError, match="not a readable torch weights file"):
            read_state_dict(tmp_path / name)
    with pytest.raises(ModelSourceError, match="weights file not found"):
        read_state_dict(tmp_path / "nope.pt")


def test_keys_and_shapes_that_do_not_fit_are_named():
    sd = _trained().state_dict()
    sd.pop("head.bias")
    sd["extra.weight"] = torch.zeros(1)
    with pytest.raises(ModelSourceError, match=r"missing 1: head.bias; unexpected 1: extra.weight"):
        load_weights(SmallResNet(), sd)
    with pytest.raises(
        ModelSourceError, match=r"wrong shape: head.weight \(4, 8\) where the model has \(10, 8\)"
    ):
        load_weights(SmallResNet(classes=10), _trained().state_dict())
    many = {f"layer{i}.weight": torch.zeros(1) for i in range(9)}
    with pytest.raises(
        ModelSourceError, match=r"unexpected 9: layer0.weight, .*layer4.weight \.\.\. and 4 more"
    ):
        load_weights(SmallResNet(), _trained().state_dict() | many)


def test_preprocessing_is_the_declared_transform_and_passes_gradients():
    x = torch.rand(2, 3, 8, 8, requires_grad=True)
    mean, std = [0.4914, 0.4822, 0.4465], [0.247, 0.243, 0.261]
    pre = Preprocess(3, mean=mean, std=std)
    want = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(pre(x), want)
    bgr = Preprocess(3, scale=255.0, mean=[104.0, 117.0, 124.0], channel_order="bgr")
    assert torch.allclose(bgr(x)[:, 0], x[:, 2] * 255 - 104)
    assert Preprocess(3, size=(16, 16))(x).shape == (2, 3, 16, 16)
    model = with_preprocess(_trained(), pre)
    model(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # attacks in pixel space reach the input
    assert {"0.mean", "0.std"} <= set(model.state_dict())  # saved with the weights


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mean": [0.5, 0.5]}, "mean has 2 values but the data has 3 channel"),
        ({"std": [0.0, 1.0, 1.0]}, "std must be positive"),
        ({"channel_order": "gbr"}, "rgb or bgr"),
    ],
)
def test_preprocessing_that_cannot_fit_the_data_is_refused(kwargs, message):
    with pytest.raises(ModelSourceError, match=message):
        Preprocess(3, **kwargs)
    with pytest.raises(ModelSourceError, match="bgr needs 3 channels"):
        Preprocess(1, channel_order="bgr")


USER_FILE = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, classes=10, width=4):
        super().__init__()
        if width < 1:
            raise ValueError("width must be at least 1")
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def build(**kwargs):
    return Net(**kwargs)


not_a_factory = 3


def returns_a_dict():
    return {"conv": 1}
"""


def test_a_factory_from_the_users_file_or_a_package_builds_the_model(tmp_path):
    (tmp_path / "model.py").write_text(USER_FILE)
    model = build_model(f"{tmp_path / 'model.py'}:build", {"classes": 7})
    assert model(torch.rand(2, 3, 8, 8)).shape == (2, 7)
    assert (
        type(model).__name__ == "Net" and build_model(f"{tmp_path / 'model.py'}:Net").head.out_features == 10
    )
    linear = build_model("torch.nn:Linear", {"in_features": 3, "out_features": 2})
    assert isinstance(linear, nn.Linear) and linear.out_features == 2


@pytest.mark.parametrize(
    ("spec", "kwargs", "message"),
    [
        ("model.py", {}, r"give it as package\.module:callable or path/to/file\.py:callable"),
        ("no_such_pkg_xyz.models:resnet18", {}, r"no module named 'no_such_pkg_xyz'; install the package"),
        ("{dir}/absent.py:build", {}, r"absent\.py not found"),
        ("{dir}/model.py:biuld", {}, r"has no attribute 'biuld'; did you mean build\?"),
        ("{dir}/model.py:not_a_factory", {}, r"not_a_factory is not callable \(int\)"),
        (
            "{dir}/model.py:build",
            {"width": 0},
            r"raised ValueError: width must be at least 1; check model\.kwargs",
        ),
        ("{dir}/model.py:build", {"depth": 3}, r"raised TypeError: .*depth"),
        ("{dir}/model.py:returns_a_dict", {}, r"returned a dict, not a torch\.nn\.Module"),
        ("{dir}/broken.py:build", {}, r"importing .*broken\.py failed \(NameError: name 'undefined_name'"),
    ],
)
def test_a_factory_that_cannot_build_the_model_says_why(tmp_path, spec, kwargs, message):
    (tmp_path / "model.py").write_text(USER_FILE)
    (tmp_path / "broken.py").write_text("x = undefined_name\n")
    with pytest.raises(ModelSourceError, match=message):
        build_model(spec.format(dir=tmp_path), kwargs)
