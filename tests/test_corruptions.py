"""Properties of every registered corruption at every severity, on gray and RGB images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from robustops.corruptions import CORRUPTIONS, SEVERITIES, add_gaussian_noise, corrupt, describe

NAMES = CORRUPTIONS.names()
# Corruptions that draw random numbers: a different seed must give a different result.
RANDOM = {"gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "motion_blur", "fog", "cutout",
          "elastic", "affine", "glass_blur", "snow", "frost"}  # fmt: skip
# The fifteen kinds of CIFAR-10-C and ImageNet-C, by robustops' names.
BENCHMARK_KINDS = {"gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
                   "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic", "pixelate", "jpeg"}  # fmt: skip


def _rgb(n: int = 12, size: int = 16) -> torch.Tensor:
    """Smooth random colour images with edges, so blur and compression have something to change."""
    g = torch.Generator().manual_seed(0)
    low = torch.rand(n, 3, 4, 4, generator=g)
    x = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    x[:, :, size // 3 : size // 2] = 0.9
    return (0.1 + 0.8 * x).clamp(0, 1)


@pytest.fixture(scope="module", params=["gray8", "rgb16"])
def images(request, digits):
    return torch.from_numpy(digits.x[:12]) if request.param == "gray8" else _rgb()


def test_the_suite_is_complete():
    assert set(NAMES) >= BENCHMARK_KINDS, BENCHMARK_KINDS - set(NAMES)
    for c in describe():
        assert len(c["params"]) == 5 and c["unit"] and c["family"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("severity", SEVERITIES)
def test_shape_dtype_range_and_determinism(name, severity, images):
    c = CORRUPTIONS.get(name)
    out = c(images, severity, seed=3)
    assert out.shape == images.shape and out.dtype == images.dtype
    assert out.min() >= 0 and out.max() <= 1 and torch.isfinite(out).all()
    assert torch.equal(out, c(images, severity, seed=3))
    if name in RANDOM:
        assert not torch.equal(out, c(images, severity, seed=4))


@pytest.mark.parametrize("name", NAMES)
def test_damage_grows_with_severity(name, images):
    c = CORRUPTIONS.get(name)
    if name == "elastic":
        pytest.skip("CIFAR-10-C's elastic trades a shrinking affine move for a growing elastic one: "
                    "test_elastic_is_an_affine_map_then_a_smooth_displacement checks each part")  # fmt: skip
    if name == "snow" and images.shape[-1] < 16:
        pytest.skip("at 8x8 the reference's longest streaks (14 px at 32x32) cross the whole image "
                    "and thin the flakes out; rgb16 checks the growth")  # fmt: skip
    if name == "frost":
        # The reference's frost dims the image as it adds more frost, so the mean change need not
        # grow; what the image loses does: its correlation with the clean image falls.
        def damage(out: torch.Tensor) -> float:
            a, b = (
                out.flatten(1) - out.flatten(1).mean(1, keepdim=True),
                images.flatten(1) - images.flatten(1).mean(1, keepdim=True),
            )
            return float(1 - ((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))).mean())
    else:

        def damage(out: torch.Tensor) -> float:
            return float((out - images).abs().mean())

    mad = [damage(c(images, s, seed=0)) for s in SEVERITIES]
    assert mad[4] > mad[0]
    assert all(b >= a - 0.01 for a, b in zip(mad, mad[1:], strict=False)), mad  # non-decreasing, small slack


@pytest.mark.parametrize("name", NAMES)
def test_bad_severity_and_shape_raise(name, images):
    c = CORRUPTIONS.get(name)
    for bad in (0, 6, 2.5):
        with pytest.raises(ValueError, match="severity"):
            c(images, bad)
    with pytest.raises(ValueError, match="C = 1 or 3"):
        c(images[:, :1].repeat(1, 2, 1, 1), 1)


@settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from(NAMES),
    severity=st.sampled_from(SEVERITIES),
    n=st.integers(0, 3),
    c=st.sampled_from([1, 3]),
    h=st.integers(4, 40),
    w=st.integers(4, 40),
    seed=st.integers(0, 2**31 - 1),
)
def test_any_size_and_channel_count(name, severity, n, c, h, w, seed):
    x = torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed))
    out = CORRUPTIONS.get(name)(x, severity, seed)
    assert out.shape == x.shape and (n == 0 or (out.min() >= 0 and out.max() <= 1))


def test_seed_example_add_gaussian_noise_on_one_numpy_image(digits):
    image = digits.x[0]
    noisy = add_gaussian_noise(image, 3)
    assert isinstance(noisy, np.ndarray) and noisy.shape == image.shape
    assert noisy.min() >= 0 and noisy.max() <= 1 and not np.array_equal(noisy, image)
    np.testing.assert_array_equal(noisy, corrupt(image, "gaussian_noise", 3))
    spread = np.std(add_gaussian_noise(np.full((1, 32, 32), 0.5, np.float32), 5) - 0.5)
    assert spread == pytest.approx(0.10, rel=0.1)  # severity 5 is sigma 0.10


@pytest.mark.parametrize("level", [0.01, 0.5])  # 0.01: exact Poisson path; 0.5: normal approximation
def test_shot_noise_has_poisson_mean_and_variance(level):
    photons = CORRUPTIONS.get("shot_noise").params[0]  # severity 1
    x = torch.full((4, 1, 64, 64), level)
    counts = CORRUPTIONS.get("shot_noise")(x, 1, seed=0) * photons
    lam = level * photons
    assert float(counts.mean()) == pytest.approx(lam, rel=0.03)
    assert float(counts.var()) == pytest.approx(lam, rel=0.08)
    assert torch.allclose(counts, counts.round(), atol=1e-3) and counts.min() >= 0  # whole photon counts


def test_impulse_noise_hits_its_share_half_salt_half_pepper():
    amount = CORRUPTIONS.get("impulse_noise").params[4]
    out = CORRUPTIONS.get("impulse_noise")(torch.full((8, 1, 64, 64), 0.5), 5, seed=0)
    salt, pepper = float((out == 1).float().mean()), float((out == 0).float().mean())
    assert salt + pepper == pytest.approx(amount, rel=0.1)
    assert salt == pytest.approx(pepper, rel=0.15)


def test_snow_frost_and_glass_blur_do_what_the_reference_does():
    x = _rgb(8, 32)
    snow = CORRUPTIONS.get("snow")
    assert x.mean() < snow(x, 1).mean() < snow(x, 5).mean()  # flakes and a whitened scene
    black = torch.zeros(8, 3, 32, 32)
    frost = CORRUPTIONS.get("frost")(black, 5)  # frost weight 0.45 on nothing: the frost itself
    r, g, b = frost.mean(dim=(0, 2, 3)).tolist()
    assert r < g < b  # bluish white, as the photographs
    assert 0.45 * 0.5 < frost.mean() < 0.45 * 0.8
    glass = CORRUPTIONS.get("glass_blur")(x, 5)
    assert abs(float(glass.mean() - x.mean())) < 0.02  # moves pixels, keeps their values
    # Moves are local (at most 2 px at severity 5): the inside of _rgb's flat band (rows 10-15)
    # keeps its value, its edges do not.
    change = (glass - x).abs().mean(dim=(0, 1, 3))
    assert change[12:15].max() < 0.01 and change[[10, 16]].min() > 0.1


def test_elastic_is_an_affine_map_then_a_smooth_displacement():
    # A linear ramp stays linear under an affine map sampled bilinearly, so its second differences
    # vanish away from the reflected borders; the elastic field of the higher severities bends it.
    i, j = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    ramp = (0.2 + 0.6 * (0.6 * i + 0.4 * j) / 31).expand(4, 3, 32, 32).contiguous()

    def bend(out: torch.Tensor) -> float:
        inner = out[..., 6:-6, 6:-6]
        return float(max((inner[..., 2:, :] - 2 * inner[..., 1:-1, :] + inner[..., :-2, :]).abs().max(),
                         (inner[..., 2:] - 2 * inner[..., 1:-1] + inner[..., :-2]).abs().max()))  # fmt: skip

    c = CORRUPTIONS.get("elastic")
    affine = c(ramp, 1, seed=0)  # severity 1: the affine part alone, moving points up to 2.56 px
    assert (affine - ramp).abs().max() > 0.01
    assert bend(affine) < 1e-4
    assert bend(c(ramp, 5, seed=0)) > 100 * bend(affine) + 1e-3
