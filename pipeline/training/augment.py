"""On-the-fly augmentation of whole batches, a different random draw for every image.

Random affine warps and elastic distortion are folded into one sampling grid (one `grid_sample`
call); stroke-width variation thickens or thins each digit by a random fraction of a pixel. The
random draws come from a CPU generator; the images may be on any device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.params import AugmentParams

# Elastic distortion: random displacements drawn on a coarse grid and smoothly upsampled, so the
# warp bends strokes (as handwriting varies) instead of adding pixel noise.
ELASTIC_GRID = 4


def _uniform(
    shape: int | tuple[int, ...], low: float, high: float, generator: torch.Generator | None
) -> torch.Tensor:
    return torch.rand(shape, generator=generator) * (high - low) + low


def random_affine_matrices(
    n: int, params: AugmentParams, generator: torch.Generator | None = None
) -> torch.Tensor:
    """`n` random 2×3 matrices (rotation · shear · scale, then translation) for `affine_grid`."""
    angle = torch.deg2rad(_uniform(n, -params.degrees, params.degrees, generator))
    shear = torch.deg2rad(_uniform(n, -params.shear, params.shear, generator))
    scale = _uniform(n, *params.scale, generator)
    # affine_grid works in [-1, 1] coordinates, so a shift of `translate` image widths is 2×.
    shift = _uniform(2 * n, -params.translate, params.translate, generator).view(n, 2) * 2
    cos, sin, tan = torch.cos(angle), torch.sin(angle), torch.tan(shear)
    # rotation @ [[1, tan(shear)], [0, 1]], divided by scale: the grid samples the source image.
    a = torch.stack([cos, cos * tan - sin, sin, sin * tan + cos], dim=1).view(n, 2, 2)
    a = a / scale.view(n, 1, 1)
    return torch.cat([a, shift.view(n, 2, 1)], dim=2)


def elastic_offsets(
    n: int, size: int, pixels: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Smooth random displacement fields (N, size, size, 2) in `affine_grid` units, each point
    moved by up to about `pixels` pixels."""
    coarse = _uniform((n, 2, ELASTIC_GRID, ELASTIC_GRID), -1.0, 1.0, generator)
    field = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)
    return field.permute(0, 2, 3, 1) * (2 * pixels / size)


def vary_stroke_width(
    images: torch.Tensor, amount: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Thicken or thin each digit by a random fraction (up to `amount`) of a 3×3 dilation or
    erosion: MNIST's pen is one width, people's pens and fonts are not."""
    if amount == 0:
        return images
    strength = _uniform(images.shape[0], -amount, amount, generator).view(-1, 1, 1, 1).to(images)
    dilated = F.max_pool2d(images, 3, stride=1, padding=1)
    eroded = -F.max_pool2d(-images, 3, stride=1, padding=1)
    target = torch.where(strength > 0, dilated, eroded)
    return images + strength.abs() * (target - images)


def hollow_out(
    images: torch.Tensor, share: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw about `share` of the images hollow: each stroke replaced by its outline (the ink a
    one-pixel dilation adds), as outlined or "bubble" digits are drawn."""
    if share == 0:
        return images
    chosen = (torch.rand(images.shape[0], generator=generator) < share).view(-1, 1, 1, 1)
    outline = (F.max_pool2d(images, 3, stride=1, padding=1) - images).clamp(0, 1)
    return torch.where(chosen.to(images.device), outline, images)


def augment(
    images: torch.Tensor, params: AugmentParams, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Augment a (N, 1, H, W) batch in [0, 1]: stroke width, hollow strokes, then one warp
    (affine + elastic) per image. Uncovered pixels become 0 (background).

    torchvision's transforms draw one transform per call, which a batch would share; here every
    image gets its own, in one `grid_sample` call.
    """
    images = vary_stroke_width(images, params.stroke_width, generator)
    images = hollow_out(images, params.outline, generator)
    affine = params.degrees or params.translate or params.shear or params.scale != (1, 1)
    if not affine and not params.elastic:
        return images
    theta = random_affine_matrices(images.shape[0], params, generator).to(images)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    if params.elastic:
        offsets = elastic_offsets(images.shape[0], images.shape[-1], params.elastic, generator)
        grid = grid + offsets.to(grid)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
