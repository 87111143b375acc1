"""Batched data augmentation as tensor ops on the training device.

One random affine transform per image (rotation, scale, shear, translation),
applied to the whole batch with a single ``affine_grid`` + ``grid_sample`` call,
then the variations real input has after preprocessing and MNIST lacks: stroke
width (a blend towards a dilated or eroded image), blur, and sensor noise. No
per-image Python, no torchvision. Randomness comes from an explicit generator
so a run (and a resumed run) is reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from digitrec.preprocess import disk


@dataclass(frozen=True)
class Augment:
    rotate: float = 10.0  # degrees, uniform in [-rotate, rotate]
    translate: float = 0.1  # fraction of the image size
    scale: tuple[float, float] = (0.9, 1.1)
    shear: float = 8.0  # degrees
    stroke: float = 0.5  # fraction of images made bolder or thinner by up to a pixel
    blur: float = 0.2  # fraction of images blurred (sigma up to about a pixel)
    noise: float = 0.2  # fraction of images with Gaussian noise (std up to 0.08)
    specks: float = 0.1  # fraction of images with salt-and-pepper specks (up to 3% of pixels)
    erase: float = 0.2  # fraction of images with a random bar erased (occlusion, a gap in a stroke)
    # Off by default: they cost a 10-epoch `best` validation accuracy (docs/results.md#measured).
    elastic: float = 0.0  # fraction of images warped by a smooth random field (up to ~2 px)
    strays: float = 0.0  # fraction of images with a stray pen line across them
    outline: float = 0.0  # fraction of images reduced to the outline of their strokes
    pen: float = 0.0  # fraction of images redrawn with an even pen along their strokes' skeleton
    styles: float = 0.0  # fraction of 1s given a flag (half of them a foot too), of 7s a bar

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def is_identity(self) -> bool:
        extras = (
            self.stroke, self.blur, self.noise, self.specks, self.erase, self.strays,
            self.outline, self.pen, self.styles,
        )  # fmt: skip
        return self.is_affine_identity and not any(extras)

    @property
    def is_affine_identity(self) -> bool:
        return (
            self.rotate == 0
            and self.translate == 0
            and self.shear == 0
            and tuple(self.scale) == (1.0, 1.0)
            and self.elastic == 0
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


def augment_batch(
    x: torch.Tensor, aug: Augment, generator: torch.Generator, labels: torch.Tensor | None = None
) -> torch.Tensor:
    """Randomly transform a (N, C, H, W) batch; the background (0) fills uncovered pixels.
    ``labels`` (MNIST's digits) are needed for the writing styles only."""
    if aug.is_identity:
        return x
    n = x.shape[0]
    if aug.styles and labels is not None:
        x = styled(x, labels, aug.styles, generator)
    if aug.pen:  # first: the redrawn digit is then moved and warped like any other
        on = torch.rand(n, generator=generator) < aug.pen
        widths = torch.randint(1, 4, (n,), generator=generator)
        if on.any():
            x, idx = x.clone(), on.nonzero().squeeze(1).to(x.device)
            x[idx] = redrawn(x[idx], widths[on].to(x.device))
    if not aug.is_affine_identity:
        theta = random_matrices(n, aug, generator).to(x.device, x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        if aug.elastic:
            grid = grid + elastic_field(x, aug.elastic, generator)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def per_image(p: float, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
        """A strength in [lo, hi] for a fraction p of the images, 0 for the rest."""
        on = torch.rand(n, generator=generator) < p
        strength = lo + (hi - lo) * torch.rand(n, generator=generator)
        return (on * strength).to(x.device, x.dtype).view(n, 1, 1, 1)

    if aug.stroke:
        amount = per_image(aug.stroke, -1.0, 1.0)  # < 0 thinner, > 0 bolder
        bold = max3x3(x)
        x = x + amount.clamp(min=0) * (bold - x) + (-amount).clamp(min=0) * (eroded(x) - x)
    if aug.outline:
        x = torch.where(per_image(aug.outline) > 0, outlined(x), x)
    if aug.blur:
        amount = per_image(aug.blur)
        kernel = torch.tensor([0.25, 0.5, 0.25], device=x.device, dtype=x.dtype)
        kernel = (kernel[:, None] * kernel[None, :]).view(1, 1, 3, 3).repeat(x.shape[1], 1, 1, 1)
        blurred = F.conv2d(x, kernel, padding=1, groups=x.shape[1])
        x = x + amount * (blurred - x)
    if aug.noise:
        std = per_image(aug.noise, 0.0, 0.08)
        noise = torch.randn(x.shape, generator=generator).to(x.device, x.dtype)
        x = (x + std * noise).clamp(0.0, 1.0)
    if aug.specks:
        rate = per_image(aug.specks, 0.0, 0.03)
        u = torch.rand(x.shape, generator=generator).to(x.device, x.dtype)
        x = torch.where(u < rate / 2, torch.zeros_like(x), x)
        x = torch.where(u > 1 - rate / 2, torch.ones_like(x), x)
    if aug.erase:
        x = x * (1 - bars(x, per_image(aug.erase) > 0, generator))
    if aug.strays:
        x = torch.maximum(x, stray_lines(x, per_image(aug.strays) > 0, generator))
    return x


def max3x3(x: torch.Tensor) -> torch.Tensor:
    """Each pixel's 3x3 maximum: ``F.max_pool2d(x, 3, 1, 1)``, to the bit.

    As two passes of shifted maxima: many times faster than max_pool2d's stride-1 kernel
    on a CPU (docs/results.md#measured).
    """
    p = F.pad(x, (1, 1, 1, 1), value=float("-inf"))
    rows = torch.maximum(torch.maximum(p[..., :-2], p[..., 1:-1]), p[..., 2:])
    return torch.maximum(torch.maximum(rows[..., :-2, :], rows[..., 1:-1, :]), rows[..., 2:, :])


def eroded(x: torch.Tensor) -> torch.Tensor:
    """Each pixel's 3x3 minimum: strokes a pixel thinner on every side."""
    return -max3x3(-x)


def outlined(x: torch.Tensor) -> torch.Tensor:
    """The ink less its erosion, at full strength: a hollow digit, as people draw in
    bubble letters and as an edge detector or a tracing leaves a scanned one. Strokes
    too thin to have an inside stay as they are."""
    return ((x - eroded(x)) * 1.5).clamp(max=1.0)


def skeleton(mask: torch.Tensor) -> torch.Tensor:
    """Zhang & Suen's thinning (1984) of a (N, 1, H, W) 0/1 uint8 batch: border pixels whose
    removal keeps each shape connected are peeled in two alternating passes, down to
    lines one pixel wide with the digit's pieces and loops."""
    m = F.pad(mask, (1, 1, 1, 1))
    for _ in range(mask.shape[-1]):  # each round peels a pixel off every side
        changed = False
        for first in (True, False):
            c = m[..., 1:-1, 1:-1]
            # Neighbours clockwise from north: P2, P3, ..., P9.
            nb = [m[..., :-2, 1:-1], m[..., :-2, 2:], m[..., 1:-1, 2:], m[..., 2:, 2:],
                  m[..., 2:, 1:-1], m[..., 2:, :-2], m[..., 1:-1, :-2],
                  m[..., :-2, :-2]]  # fmt: skip
            count = sum(nb)
            rises = sum((1 - nb[i]) & nb[(i + 1) % 8] for i in range(8))
            p2, p4, p6, p8 = nb[0], nb[2], nb[4], nb[6]
            side = (p2 & p4 & p6) | (p4 & p6 & p8) if first else (p2 & p4 & p8) | (p2 & p6 & p8)
            drop = c & (count >= 2) & (count <= 6) & (rises == 1) & (1 - side)
            if drop.any():
                m[..., 1:-1, 1:-1] = c & (1 - drop)
                changed = True
        if not changed:
            break
    return m[..., 1:-1, 1:-1]


def redrawn(x: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
    """Each digit drawn again with an even pen: its strokes' skeleton (found at twice the
    size) widened by ``widths`` (1 to 3) half-pixels each side. This is what the input
    pipeline makes of a fine-pen drawing (thickened to MNIST's width), which MNIST's
    strokes, wide where the pen pressed and thin where it lifted, never look like. An
    image with no ink above half strength has no strokes to trace and is left as it was."""
    big = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    line = skeleton((big > 0.5).to(torch.uint8)).to(x.dtype)
    out = torch.empty_like(big)
    for r in widths.unique().tolist():
        pen = torch.from_numpy(disk(r)).to(x.device, x.dtype)  # the pipeline's own pen
        sel = widths == r
        out[sel] = (F.conv2d(line[sel], pen.view(1, 1, *pen.shape), padding=r) > 0).to(x.dtype)
    out = F.avg_pool2d(out, 2)
    traced = out.flatten(1).any(1).view(-1, 1, 1, 1)
    return torch.where(traced, out, x)


def elastic_field(x: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """(N, H, W, 2) grid offsets for a fraction p of the images: random 4x4 displacements
    smoothly upsampled, so strokes bend the way different hands bend them (the
    elastic distortion of Simard et al. 2003) rather than jitter pixel by pixel."""
    n, _, h, w = x.shape
    on = (torch.rand(n, generator=generator) < p).float().view(n, 1, 1, 1)
    coarse = torch.randn(n, 2, 4, 4, generator=generator) * on * (2.0 / 28)  # ~1 px std
    field = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)
    return field.permute(0, 2, 3, 1).to(x.device, x.dtype)


def segment_distance(p0: torch.Tensor, p1: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(N, H, W): each pixel centre's distance to the segment from ``p0`` to ``p1`` ((N, 2)
    points, x then y, in pixels)."""
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32),
                            torch.arange(w, dtype=torch.float32), indexing="ij")  # fmt: skip
    pts = torch.stack([xs, ys], -1).view(1, h * w, 2)
    seg = (p1 - p0)[:, None, :]
    t = (((pts - p0[:, None]) * seg).sum(-1) / (seg * seg).sum(-1).clamp(min=1e-6)).clamp(0, 1)
    return (pts - (p0[:, None] + t[..., None] * seg)).norm(dim=-1).view(-1, h, w)


def stray_lines(x: torch.Tensor, on: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """An image per input (1 on the line): a random anti-aliased segment about a pixel
    wide, the stray pen mark or ruled line real input carries and MNIST never does."""
    n, _, h, w = x.shape
    p0, p1 = torch.rand(n, 2, generator=generator), torch.rand(n, 2, generator=generator)
    p0, p1 = 2 + p0 * (w - 4), 2 + p1 * (w - 4)
    line = (1.2 - segment_distance(p0, p1, h, w)).clamp(0, 1).view(n, 1, h, w)
    return (line * on.view(n, 1, 1, 1).cpu()).to(x.device, x.dtype)


def styled(x: torch.Tensor, labels: torch.Tensor, p: float, g: torch.Generator) -> torch.Tensor:
    """A share ``p`` of the 1s and 7s written as much of Europe writes them, which MNIST's
    writers seldom did: a 1 with a long flag down to the left of its top (half of them
    with a foot too), a 7 with a bar across its stem. Strokes 1.6-2.8 px, MNIST's."""
    n, _, h, w = x.shape
    u = torch.rand(n, 7, generator=g)
    on, y = u[:, 0] < p, labels.cpu()
    ones, sevens, feet = on & (y == 1), on & (y == 7), on & (y == 1) & (u[:, 1] < 0.5)
    if not (ones.any() or sevens.any()):
        return x
    ink = x[:, 0].detach().cpu().float() > 0.5
    rows, idx = ink.any(2), torch.arange(h)
    top = torch.where(rows, idx, h - 1).min(1).values
    bottom = torch.where(rows, idx, 0).max(1).values
    tall = (bottom - top + 1).float()

    def centre(r: torch.Tensor) -> torch.Tensor:  # the mean inked column of row r
        row = ink[torch.arange(n), r.clamp(0, h - 1)].float()
        return (row * torch.arange(w)).sum(1) / row.sum(1).clamp(min=1)

    def pt(px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
        return torch.stack([px.clamp(1, w - 2), py.clamp(1, h - 2)], -1)

    tx, bx, bar_y = centre(top), centre(bottom), (top + (0.45 + 0.15 * u[:, 4]) * tall).long()
    # The flag leaves the stem 30-55 degrees down from it, whichever way the 1 leans.
    stem = torch.atan2(tall, tx - bx)
    angle = (stem - (30 + 25 * u[:, 2]) * math.pi / 180).clamp(min=10 * math.pi / 180)
    reach = (0.3 + 0.3 * u[:, 3]) * tall
    sx, half = centre(bar_y), (0.15 + 0.12 * u[:, 4]) * tall
    width = (1.6 + 1.2 * u[:, 5]).view(n, 1, 1)
    strokes = [  # (which images, start, end)
        (ones, pt(tx, top.float()), pt(tx - reach * angle.cos(), top + reach * angle.sin())),
        (feet, pt(bx - half, bottom.float()), pt(bx + half, bottom.float())),
        (sevens, pt(sx - half, bar_y + 0.1 * half), pt(sx + half, bar_y - 0.1 * half)),
    ]
    out = x[:, 0].detach().cpu().float()
    for which, a, b in strokes:
        line = ((width / 2 + 0.75 - segment_distance(a, b, h, w)) / 1.5).clamp(0, 1)
        out = torch.where(which.view(n, 1, 1), torch.maximum(out, line), out)
    return out[:, None].to(x.device, x.dtype)


def bars(x: torch.Tensor, on: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A mask per image (1 inside): a random horizontal or vertical bar 2-4 px thick."""
    n, _, h, w = x.shape
    pos = torch.rand(n, generator=generator) * 24 + 2
    thick = torch.randint(2, 5, (n,), generator=generator).float()
    vertical = torch.rand(n, generator=generator) < 0.5
    grid = torch.arange(h, dtype=torch.float32)
    band = ((grid[None] >= pos[:, None]) & (grid[None] < (pos + thick)[:, None])).float()
    mask = torch.where(vertical[:, None, None], band[:, None, :].expand(n, h, w),
                       band[:, :, None].expand(n, h, w))  # fmt: skip
    return (mask[:, None] * on.view(n, 1, 1, 1).cpu()).to(x.device, x.dtype)


def tta_matrices(shift_px: float = 1.5, degrees: float = 8.0) -> torch.Tensor:
    """The fixed views test-time augmentation averages: the image itself, shifted by
    ``shift_px`` pixels in four directions, and rotated both ways."""
    t = 2 * shift_px / 28  # pixels -> [-1, 1] grid units
    a = math.radians(degrees)
    views = [(0.0, 0.0, 0.0), (t, 0, 0), (-t, 0, 0), (0, t, 0), (0, -t, 0), (0, 0, a), (0, 0, -a)]
    return torch.tensor(
        [[[math.cos(r), -math.sin(r), x], [math.sin(r), math.cos(r), y]] for x, y, r in views]
    )


def tta_views(x: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (V * N, C, H, W): every view of every image, view-major."""
    theta = matrices.to(x.device, x.dtype).repeat_interleave(len(x), dim=0)
    xs = x.repeat(len(matrices), 1, 1, 1)
    grid = F.affine_grid(theta, list(xs.shape), align_corners=False)
    return F.grid_sample(xs, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def tta_probabilities(
    logits_of: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, matrices: torch.Tensor
) -> torch.Tensor:
    """Class probabilities of each image in ``x``, averaged over its views (probabilities,
    not logits: one confident view should not outvote the rest)."""
    probs = torch.softmax(logits_of(tta_views(x, matrices)).float(), dim=1)
    return probs.view(len(matrices), len(x), -1).mean(0)
