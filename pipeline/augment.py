"""On-the-fly random affine augmentation, one transform per image, applied to a whole batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.params import AugmentParams


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, generator=generator) * (high - low) + low


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


def random_affine(
    images: torch.Tensor, params: AugmentParams, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Warp each image of a (N, C, H, W) batch in [0, 1] by its own random affine transform.

    torchvision's `RandomAffine` draws one transform per call, which a batch would share; here
    every image gets its own, in one `grid_sample` call. Uncovered pixels become 0 (background).
    """
    if (
        params.degrees == 0
        and params.translate == 0
        and params.shear == 0
        and params.scale == (1, 1)
    ):
        return images
    theta = random_affine_matrices(images.shape[0], params, generator).to(images)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
