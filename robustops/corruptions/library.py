"""Twenty corruptions in the spirit of ImageNet-C / CIFAR-10-C, batched on torch: all fifteen kinds
of CIFAR-10-C / ImageNet-C and five more.

Parameters follow CIFAR-10-C (Hendrycks & Dietterich, 2019) where it has them. Spatial parameters
(blur sizes, shifts, displacements) are given in pixels of a 32x32 image and scaled by
``spatial_scale`` so an 8x8 digit and a 224x224 photo see a comparable corruption; the scale is
floored at 0.5 so tiny images still change visibly. Written on torch rather than wrapping the
imagecorruptions package: that works one image at a time in numpy/OpenCV and needs fixed sizes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from robustops.corruptions.base import Family, register


def spatial_scale(x: torch.Tensor) -> float:
    return max(min(x.shape[-2:]) / 32.0, 0.5)


def _rand(shape, gen: torch.Generator, x: torch.Tensor) -> torch.Tensor:
    return torch.rand(shape, generator=gen).to(x.device, x.dtype)


def _randn(shape, gen: torch.Generator, x: torch.Tensor) -> torch.Tensor:
    return torch.randn(shape, generator=gen).to(x.device, x.dtype)


def _conv(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Same-size convolution of every channel with one 2-D kernel, or one kernel per image (N, k, k)."""
    n, c, h, w = x.shape
    k = kernel if kernel.ndim == 3 else kernel[None].expand(n, -1, -1)
    kh, kw = k.shape[-2:]
    ph, pw = kh // 2, kw // 2
    mode = "reflect" if ph < h and pw < w else "replicate"
    xp = F.pad(x, (pw, pw, ph, ph), mode=mode)
    # Grouped conv: one group per (image, channel), so per-image kernels need no Python loop.
    weight = k.repeat_interleave(c, dim=0)[:, None].to(x.dtype)
    out = F.conv2d(xp.reshape(1, n * c, h + 2 * ph, w + 2 * pw), weight, groups=n * c)
    return out.reshape(n, c, h, w)


def _gaussian_kernel(sigma: float, device) -> torch.Tensor:
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=torch.float32, device=device)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    k = g[:, None] * g[None, :]
    return k / k.sum()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    return _conv(x, _gaussian_kernel(sigma, x.device)) if sigma > 0 else x


def warp(
    x: torch.Tensor, theta: torch.Tensor | None = None, flow: torch.Tensor | None = None
) -> torch.Tensor:
    """Resamples x through an affine map (N, 2, 3) and/or a flow in normalized coordinates (N, H, W, 2)."""
    n, _, h, w = x.shape
    if theta is None:
        theta = torch.eye(2, 3, dtype=x.dtype, device=x.device).expand(n, 2, 3)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    if flow is not None:
        grid = grid + flow
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# ---- noise ------------------------------------------------------------------------------------


@register("gaussian_noise", Family.NOISE, (0.04, 0.06, 0.08, 0.09, 0.10), "noise std")
def _gaussian_noise(x, sigma, gen):
    return x + sigma * _randn(x.shape, gen, x)


@register("shot_noise", Family.NOISE, (500, 250, 100, 75, 50), "photons at full intensity")
def _shot_noise(x, photons, gen):
    lam = (x * photons).float().cpu()
    # torch.poisson is much slower than randn on the CPU. From 10 expected photons up, a rounded
    # normal N(lam, lam) has the Poisson mean and variance and lies within 0.04 of its law in
    # total variation, so only the dark pixels pay for exact sampling.
    counts = (lam + lam.sqrt() * torch.randn(lam.shape, generator=gen)).round_().clamp_(min=0)
    dark = lam < 10
    counts[dark] = torch.poisson(lam[dark], generator=gen)
    return counts.to(x.device, x.dtype) / photons


@register("impulse_noise", Family.NOISE, (0.01, 0.02, 0.03, 0.05, 0.07), "share of salt-and-pepper pixels")
def _impulse_noise(x, amount, gen):
    # One uniform draw decides both: below amount / 2 pepper, below amount salt.
    u = _rand(x.shape, gen, x)
    return x.masked_fill(u < amount, 1.0).masked_fill_(u < amount / 2, 0.0)


@register("speckle_noise", Family.NOISE, (0.06, 0.10, 0.12, 0.16, 0.20), "multiplicative noise std")
def _speckle_noise(x, sigma, gen):
    return x + x * sigma * _randn(x.shape, gen, x)


# ---- blur -------------------------------------------------------------------------------------


@register("gaussian_blur", Family.BLUR, (0.4, 0.6, 0.7, 0.8, 1.0), "sigma, px at 32x32")
def _gaussian_blur(x, sigma, gen):
    return gaussian_blur(x, sigma * spatial_scale(x))


@register("defocus_blur", Family.BLUR, ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
          "(disk radius, alias blur sigma), px at 32x32 (CIFAR-10-C)")  # fmt: skip
def _defocus_blur(x, param, gen):
    radius, alias = param
    # The reference's kernel at 32x32: the pixels within the radius (below 1 px only the centre)
    # on a 17x17 grid, smoothed by a 3x3 Gaussian of the alias sigma.
    t = torch.arange(-8, 9, dtype=torch.float32)
    disk = (t[:, None] ** 2 + t[None, :] ** 2 <= radius**2).float()
    g = torch.exp(-torch.tensor([1.0, 0.0, 1.0]) / (2 * alias**2))
    kernel = F.conv2d(disk[None, None], (g[:, None] * g[None, :])[None, None], padding=1)
    scale = spatial_scale(x)
    if scale != 1:
        # Resized with the image's scale rather than rebuilt from a scaled radius: a sub-pixel
        # disk on a small image would be its centre alone, and blur nothing.
        size = 2 * max(1, round(8 * scale)) + 1
        kernel = F.interpolate(
            kernel, size=(size, size), mode="bilinear", antialias=scale < 1, align_corners=True
        )
    kernel = kernel[0, 0].clamp_min(0)
    return _conv(x, (kernel / kernel.sum()).to(x.device))


@register("motion_blur", Family.BLUR, ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
          "(streak radius, streak sigma), px at 32x32 (CIFAR-10-C)")  # fmt: skip
def _motion_blur(x, param, gen):
    radius, sigma = (v * spatial_scale(x) for v in param)
    degrees = _rand((x.shape[0],), gen, x) * 90 - 45  # the reference's -45..45 degrees
    return _streak(x, radius, sigma, degrees)


@register("zoom_blur", Family.BLUR, (1.06, 1.11, 1.16, 1.21, 1.26), "largest zoom factor")
def _zoom_blur(x, zmax, gen):
    n = x.shape[0]
    out = x.clone()
    zooms = torch.linspace(1, zmax, 6)[1:]
    for z in zooms:
        theta = torch.zeros(n, 2, 3, device=x.device)
        theta[:, 0, 0] = theta[:, 1, 1] = 1 / z
        out += warp(x, theta)
    return out / (len(zooms) + 1)


@register("glass_blur", Family.BLUR, ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
          "(blur sigma, largest pixel move, rounds), px at 32x32 (CIFAR-10-C)")  # fmt: skip
def _glass_blur(x, param, gen):
    sigma, delta, rounds = param
    scale = spatial_scale(x)
    d = max(1, round(delta * scale))
    n, _, h, w = x.shape
    out = (gaussian_blur(x, sigma * scale) * 255).round() / 255  # the reference blurs to 8 bits
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    for _ in range(rounds):
        # Every pixel takes a neighbour's value at an offset drawn from [-d, d), as the
        # reference's offsets are; it swaps pixels one at a time, which also carries a pixel
        # along several moves in one round. Gathering in one step keeps this batched on torch.
        dy = torch.randint(-d, d, (n, h, w), generator=gen).to(x.device)
        dx = torch.randint(-d, d, (n, h, w), generator=gen).to(x.device)
        src = (rows + dy).clamp(0, h - 1) * w + (cols + dx).clamp(0, w - 1)
        flat = out.flatten(2)
        out = flat.gather(2, src.flatten(1)[:, None].expand(-1, flat.shape[1], -1)).view_as(out)
    return gaussian_blur(out, sigma * scale)


# ---- weather ----------------------------------------------------------------------------------


@register("fog", Family.WEATHER, ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
          "(fog strength, roughness decay) (CIFAR-10-C)")  # fmt: skip
def _fog(x, param, gen):
    strength, decay = param
    n, _, h, w = x.shape
    fog = torch.zeros(n, 1, h, w, dtype=x.dtype, device=x.device)
    # Smooth noise from 2 cells up to half the image's side, each finer octave weaker by the
    # decay: the reference's plasma fractal (diamond-square) divides its noise by it per level.
    cells = [2**i for i in range(1, max(2, int(math.log2(max(h, w)))))]
    for octave, c in enumerate(cells):
        coarse = _rand((n, 1, c, c), gen, x) * 2 - 1
        fog += F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False) / decay**octave
    lo = fog.amin(dim=(2, 3), keepdim=True)
    hi = fog.amax(dim=(2, 3), keepdim=True)
    fog = (fog - lo) / (hi - lo + 1e-6)
    peak = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x + strength * fog) * peak / (peak + strength)


def _grey(x: torch.Tensor) -> torch.Tensor:
    """Luminance (ITU-R 601 weights, as OpenCV's RGB2GRAY), one channel."""
    if x.shape[1] == 1:
        return x
    return (x * torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)).sum(
        1, keepdim=True
    )


def _streak(x: torch.Tensor, radius: float, sigma: float, degrees: torch.Tensor) -> torch.Tensor:
    """A one-sided motion blur per image (ImageMagick's, which the reference's snow uses):
    Gaussian weights of ``sigma`` on the 2 * radius + 1 pixels of a line in the direction
    ``degrees`` (ImageMagick's kernel width for a radius)."""
    k = 2 * max(1, math.ceil(radius))
    t = torch.arange(0, k + 1, dtype=torch.float32, device=x.device)
    weight = torch.exp(-(t**2) / (2 * sigma**2))
    a = torch.deg2rad(degrees.float())
    size = 2 * k + 1
    kern = torch.zeros(len(a), size, size, device=x.device)
    # Each tap lands on the nearest pixel of the line; taps sharing a pixel add up.
    r = (k + (t[None] * torch.sin(a)[:, None])).round().long().clamp(0, size - 1)
    c = (k + (t[None] * torch.cos(a)[:, None])).round().long().clamp(0, size - 1)
    kern.view(len(a), -1).scatter_add_(1, r * size + c, weight[None].expand(len(a), -1).contiguous())
    # _conv correlates: flip so each output pixel averages the pixels behind it on the streak.
    kern = kern.flip(1, 2)
    return _conv(x, kern / kern.sum(dim=(1, 2), keepdim=True))


@register("snow", Family.WEATHER,
          ((0.1, 0.2, 1.0, 0.6, 8, 3, 0.95), (0.1, 0.2, 1.0, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
           (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)),
          "(flake mean, flake std, zoom, threshold, streak radius px, streak sigma px, image weight) (CIFAR-10-C)")  # fmt: skip
def _snow(x, param, gen):
    loc, spread, zoom, threshold, radius, sigma, keep = param
    n, _, h, w = x.shape
    scale = spatial_scale(x)
    flakes = loc + spread * _randn((n, 1, h, w), gen, x)
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / zoom  # the centre, enlarged: bigger flakes
    flakes = warp(flakes, theta)
    flakes = torch.where(flakes < threshold, torch.zeros_like(flakes), flakes).clamp(0, 1)
    degrees = _rand((n,), gen, x) * 90 - 135  # falling, as the reference's -135..-45 degrees
    flakes = _streak(flakes, radius * scale, sigma * scale, degrees)
    flakes = (flakes * 255).round() / 255
    whitened = keep * x + (1 - keep) * torch.maximum(x, _grey(x) * 1.5 + 0.5)
    return whitened + flakes + flakes.flip(-2, -1)


# Mean (R, G, B) and contrast of the reference's frost photographs (the five CIFAR-10-C draws
# from), at the size it crops them.
FROST_RGB = (0.572, 0.656, 0.702)
FROST_STD = (0.06, 0.17)


@register("frost", Family.WEATHER, ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),
          "(image weight, frost weight) (CIFAR-10-C)")  # fmt: skip
def _frost(x, param, gen):
    """Procedural frost: the reference overlays crops of six photographs of frosted glass; this
    draws a ridged multi-scale noise of thin bright veins instead, tinted and scaled per image to
    the photographs' mean colour (bluish white) and their range of contrast. It matches their
    brightness and contrast, not the shapes of real ice crystals, and needs no image files."""
    a, b = param
    n, c, h, w = x.shape
    veins = torch.zeros(n, 1, h, w, dtype=x.dtype, device=x.device)
    for octave, cells in enumerate((4, 8, 16)):  # features a fixed share of the image, as a crop's
        coarse = _rand((n, 1, cells, cells), gen, x)
        smooth = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
        veins += (1 - (2 * smooth - 1).abs()).clamp(0, 1) ** 4 / 2**octave  # ridges: thin bright lines
    veins = (veins - veins.mean(dim=(2, 3), keepdim=True)) / veins.std(dim=(2, 3), keepdim=True).clamp_min(
        1e-6
    )
    contrast = FROST_STD[0] + (FROST_STD[1] - FROST_STD[0]) * _rand((n, 1, 1, 1), gen, x)
    level = _rand((n, 1, 1, 1), gen, x) * 0.3 - 0.15  # the photographs' spread of brightness
    tint = torch.tensor(FROST_RGB, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    frost = (tint + level + contrast * veins).clamp(0, 1)
    if c == 1:
        frost = _grey(frost)
    return a * x + b * frost


# ---- digital ----------------------------------------------------------------------------------


@register("contrast", Family.DIGITAL, (0.75, 0.5, 0.4, 0.3, 0.15), "contrast factor")
def _contrast(x, c, gen):
    # Per channel, as the reference: a colour cast survives the loss of contrast.
    mean = x.mean(dim=(2, 3), keepdim=True)
    return (x - mean) * c + mean


@register("brightness", Family.DIGITAL, (0.05, 0.1, 0.15, 0.2, 0.3), "added HSV value (CIFAR-10-C)")
def _brightness(x, b, gen):
    # The reference adds to V of HSV (the largest channel) and keeps hue and saturation: every
    # channel scales by V'/V; a black pixel (V = 0, saturation 0) turns grey at V'.
    v = x.amax(dim=1, keepdim=True)
    lifted = (v + b).clamp(max=1.0)
    return torch.where(v > 0, x * lifted / v.clamp_min(1e-12), lifted.expand_as(x))


@register("gamma", Family.DIGITAL, (1.4, 1.8, 2.2, 2.7, 3.3), "gamma exponent (darkens)")
def _gamma(x, g, gen):
    return x.clamp(0, 1) ** g


@register("pixelate", Family.DIGITAL, (0.95, 0.9, 0.85, 0.75, 0.65), "resolution factor (CIFAR-10-C)")
def _pixelate(x, f, gen):
    # Box filters down and back up, as the reference's PIL BOX resizes.
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(max(2, int(h * f)), max(2, int(w * f))), mode="area")
    return F.interpolate(small, size=(h, w), mode="area")


_JPEG_LUMA = torch.tensor(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    dtype=torch.float32,
)


def _dct_matrix(n: int = 8) -> torch.Tensor:
    k = torch.arange(n, dtype=torch.float32)
    m = torch.cos(math.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n)) * math.sqrt(2 / n)
    m[0] /= math.sqrt(2)
    return m  # orthonormal DCT-II


@register("jpeg", Family.DIGITAL, (80, 65, 58, 50, 40), "JPEG quality")
def _jpeg(x, quality, gen):
    """8x8 block DCT quantized with the JPEG luminance table at the given quality."""
    n, c, h, w = x.shape
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    q = ((_JPEG_LUMA * scale + 50) // 100).clamp(min=1).to(x.device, x.dtype)
    ph, pw = (-h) % 8, (-w) % 8
    xp = F.pad(x * 255 - 128, (0, pw, 0, ph), mode="replicate")
    hh, ww = xp.shape[-2:]
    blocks = xp.reshape(n, c, hh // 8, 8, ww // 8, 8).permute(0, 1, 2, 4, 3, 5)
    d = _dct_matrix().to(x.device, x.dtype)
    coef = d @ blocks @ d.T
    blocks = d.T @ (torch.round(coef / q) * q) @ d
    out = blocks.permute(0, 1, 2, 4, 3, 5).reshape(n, c, hh, ww)[..., :h, :w]
    return (out + 128) / 255


@register("cutout", Family.DIGITAL, (0.2, 0.3, 0.4, 0.5, 0.6), "square side / image side")
def _cutout(x, frac, gen):
    n, _, h, w = x.shape
    sh, sw = max(1, round(h * frac)), max(1, round(w * frac))
    top = (_rand((n,), gen, x) * (h - sh + 1)).long().clamp(max=h - sh)
    left = (_rand((n,), gen, x) * (w - sw + 1)).long().clamp(max=w - sw)
    rows = torch.arange(h, device=x.device)[None, :, None]
    cols = torch.arange(w, device=x.device)[None, None, :]
    top, left = top[:, None, None], left[:, None, None]
    hole = (rows >= top) & (rows < top + sh) & (cols >= left) & (cols < left + sw)
    return x.masked_fill(hole[:, None], 0.0)


# ---- geometric --------------------------------------------------------------------------------


@register("elastic", Family.GEOMETRIC,
          ((0, 0, 2.56), (1.6, 6.4, 2.24), (2.56, 1.92, 1.92), (3.2, 1.28, 1.6), (3.2, 0.96, 0.96)),
          "(displacement scale, displacement smoothing sigma, affine point move), px at 32x32 (CIFAR-10-C)")  # fmt: skip
def _elastic(x, param, gen):
    """The reference's elastic transform: a random affine map (three points a third of the side
    from the centre, each moved by up to the point move), then a displacement field of uniform
    noise smoothed by a Gaussian and scaled, both resampled bilinearly with reflected borders."""
    alpha, sigma, move = (v * spatial_scale(x) for v in param)
    n, _, h, w = x.shape
    cy, cx, side = h // 2, w // 2, min(h, w) // 3
    src = torch.tensor(
        [[cx + side, cy + side], [cx - side, cy + side], [cx - side, cy - side]], dtype=torch.float64
    )
    dst = src + (torch.rand((n, 3, 2), generator=gen, dtype=torch.float64) * 2 - 1) * move
    # The map takes dst back to src (the image is sampled where the moved points came from).
    ones = torch.ones(n, 3, 1, dtype=torch.float64)
    inv = torch.linalg.solve(torch.cat([dst, ones], 2), src).transpose(1, 2)  # (N, 2, 3), pixels
    # In grid_sample's normalized coordinates (align_corners=False): u = (2p + 1) / size - 1.
    to_n = torch.tensor([[2 / w, 0, 1 / w - 1], [0, 2 / h, 1 / h - 1], [0, 0, 1]], dtype=torch.float64)
    from_n = torch.linalg.inv(to_n)
    full = torch.cat([inv, torch.tensor([[[0, 0, 1]]], dtype=torch.float64).expand(n, 1, 3)], 1)
    theta = (to_n @ full @ from_n)[:, :2].to(x.device, x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    if alpha > 0:
        noise = _rand((n, 2, h, w), gen, x) * 2 - 1
        field = gaussian_blur(noise, sigma) * alpha  # pixels
        grid = grid + field.permute(0, 2, 3, 1) * torch.tensor([2 / w, 2 / h], device=x.device, dtype=x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


@register("affine", Family.GEOMETRIC, ((4, 0.02), (8, 0.04), (12, 0.06), (16, 0.08), (20, 0.10)),
          "(rotation degrees, shift / side)")  # fmt: skip
def _affine(x, param, gen):
    deg, shift = param
    n = x.shape[0]
    sign = torch.where(_rand((n, 3), gen, x) < 0.5, -1.0, 1.0).to(x.device, x.dtype)
    a = math.radians(deg) * sign[:, 0]
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 1] = torch.cos(a), -torch.sin(a)
    theta[:, 1, 0], theta[:, 1, 1] = torch.sin(a), torch.cos(a)
    theta[:, :, 2] = 2 * shift * sign[:, 1:]  # normalized coordinates span 2
    return warp(x, theta)
