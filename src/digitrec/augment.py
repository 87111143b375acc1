"""Batched data augmentation as tensor ops on the training device.

One random affine transform per image (rotation, scale, shear, translation),
applied to the whole batch with a single ``affine_grid`` + ``grid_sample`` call:
no per-image Python, no torchvision. Randomness comes from an explicit generator
so a run (and a resumed run) is reproducible.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augment:
    rotate: float = 10.0  # degrees, uniform in [-rotate, rotate]
    translate: float = 0.1  # fraction of the image size
    scale: tuple[float, float] = (0.9, 1.1)
    shear: float = 8.0  # degrees

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def is_identity(self) -> bool:
        return (
            self.rotate == 0
            and self.translate == 0
            and self.shear == 0
            and tuple(self.scale) == (1.0, 1.0)
        )


def random_matrices(n: int, aug: Augment, generator: torch.Generator) -> torch.Tensor:
    """(n, 2, 3) affine matrices mapping output to input coordinates in [-1, 1]."""

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=generator)

    angle = uniform(-aug.rotate, aug.rotate) * (math.pi / 180)
    shear = uniform(-aug.shear, aug.shear) * (math.pi / 180)
    scale = uniform(*aug.scale)
    tx = uniform(-aug.translate, aug.translate) * 2  # [-1, 1] spans the image: 2 units
    ty = uniform(-aug.translate, aug.translate) * 2
    cos, sin, tan = torch.cos(angle), torch.sin(angle), torch.tan(shear)
    # Forward map A = R(angle) @ Shear(x) * scale; grid_sample needs its inverse.
    a, b = cos * scale, (cos * tan - sin) * scale
    c, d = sin * scale, (sin * tan + cos) * scale
    det = a * d - b * c
    inv = torch.stack([torch.stack([d, -b], -1), torch.stack([-c, a], -1)], -2) / det[:, None, None]
    t = -(inv @ torch.stack([tx, ty], -1)[..., None])
    return torch.cat([inv, t], dim=-1)


def augment_batch(x: torch.Tensor, aug: Augment, generator: torch.Generator) -> torch.Tensor:
    """Randomly transform a (N, C, H, W) batch; the background (0) fills uncovered pixels."""
    if aug.is_identity:
        return x
    theta = random_matrices(x.shape[0], aug, generator).to(x.device, x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
