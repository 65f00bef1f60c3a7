import pytest
import torch

from robustops.models import MODELS, Normalize, build_model
from robustops.registry import Registry


@pytest.mark.parametrize("name", MODELS.names())
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32), (1, 28, 28), (3, 5, 7)])
def test_every_model_fits_every_shape(name, shape):
    model = build_model(name, shape, num_classes=7)
    out = model(torch.rand(4, *shape))
    assert out.shape == (4, 7)
    assert torch.isfinite(out).all()


def test_normalize_uses_training_statistics():
    norm = Normalize(torch.tensor([0.5]), torch.tensor([0.25]))
    x = torch.full((1, 1, 2, 2), 0.75)
    assert torch.allclose(norm(x), torch.ones_like(x))
    assert "mean" in norm.state_dict()  # saved with the weights, so serving normalizes too


def test_registry_refuses_duplicates_and_names_known_entries():
    reg: Registry[int] = Registry("widget")
    reg.register("a")(1)
    with pytest.raises(ValueError, match="duplicate widget name 'a'"):
        reg.register("a")(2)
    with pytest.raises(KeyError, match="unknown widget 'b'; known: a"):
        reg.get("b")
    assert "a" in reg and list(reg) == ["a"] and len(reg) == 1
