import math

import pytest
import torch
from scipy import ndimage

from digitrec.augment import (
    Augment,
    augment_batch,
    eroded,
    max3x3,
    random_matrices,
    redrawn,
    skeleton,
)

AFFINE_ONLY = {
    "stroke": 0,
    "blur": 0,
    "noise": 0,
    "specks": 0,
    "erase": 0,
    "elastic": 0,
    "strays": 0,
    "outline": 0,
}
NONE = Augment(0, 0, (1, 1), 0, **AFFINE_ONLY)


def disk(n: int = 6) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    img = (((ys - 13.5) ** 2 + (xs - 13.5) ** 2) < 49).float()
    return img.expand(n, 1, 28, 28).clone()


def test_identity_leaves_the_batch_alone():
    x = torch.rand(5, 1, 28, 28)
    assert torch.equal(augment_batch(x, NONE, torch.Generator().manual_seed(0)), x)


def test_shape_range_and_reproducibility():
    x = torch.rand(16, 1, 28, 28)
    a = augment_batch(x, Augment(), torch.Generator().manual_seed(1))
    b = augment_batch(x, Augment(), torch.Generator().manual_seed(1))
    c = augment_batch(x, Augment(), torch.Generator().manual_seed(2))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    same = augment_batch(x[:1].expand(4, 1, 28, 28), Augment(), torch.Generator().manual_seed(0))
    assert not torch.allclose(same[0], same[1])  # each image gets its own transform


def test_rotation_and_shear_preserve_area():
    theta = random_matrices(100, Augment(30, 0.1, (1, 1), 20), torch.Generator().manual_seed(0))
    assert torch.allclose(torch.linalg.det(theta[:, :, :2]), torch.ones(100), atol=1e-5)


def test_scaling_by_two_halves_the_sampling_step():
    theta = random_matrices(3, Augment(0, 0, (2.0, 2.0), 0), torch.Generator())
    expected = torch.tensor([[0.5, 0, 0], [0, 0.5, 0]]).expand(3, 2, 3)
    assert torch.allclose(theta, expected, atol=1e-6)


def test_a_centered_disk_survives_rotation():
    x = disk()
    out = augment_batch(
        x,
        Augment(rotate=45, translate=0, scale=(1, 1), shear=0, **AFFINE_ONLY),
        torch.Generator().manual_seed(0),
    )
    assert (out - x).abs().mean() < 0.02
    assert math.isclose(out.sum().item(), x.sum().item(), rel_tol=0.03)


def test_translation_moves_the_mass():
    x = disk(50)
    out = augment_batch(
        x, Augment(0, 0.2, (1, 1), 0, **AFFINE_ONLY), torch.Generator().manual_seed(0)
    )
    cols = torch.arange(28.0)
    shift = (out.sum(2).squeeze(1) * cols).sum(1) / out.sum((1, 2, 3)) - 13.5
    assert shift.abs().max() <= 0.2 * 28 + 0.5
    assert shift.abs().mean() > 1.0


def test_stroke_width_changes_both_ways_and_stays_in_range():
    x = disk(400) * 0.0
    x[:, :, 10:18, 13:15] = 1.0  # a 2-pixel-wide bar
    only_stroke = Augment(0, 0, (1, 1), 0, **{**AFFINE_ONLY, "stroke": 1.0})
    out = augment_batch(x, only_stroke, torch.Generator().manual_seed(0))
    mass = out.sum((1, 2, 3)) / x.sum((1, 2, 3))
    assert mass.max() > 1.5 and mass.min() < 0.5  # bolder and thinner images both occur
    assert out.min() >= 0 and out.max() <= 1


def test_3x3_maximum_and_minimum_match_the_pooling_they_replace():
    x = torch.rand(5, 2, 28, 17, generator=torch.Generator().manual_seed(0)) - 0.5
    pooled = torch.nn.functional.max_pool2d(x, 3, 1, 1)
    assert torch.equal(max3x3(x), pooled)  # borders included: outside counts as nothing
    assert torch.equal(eroded(x), -torch.nn.functional.max_pool2d(-x, 3, 1, 1))
    assert torch.equal(max3x3(x.contiguous(memory_format=torch.channels_last)), pooled)


def test_noise_and_blur_keep_the_range():
    x = torch.rand(64, 1, 28, 28)
    out = augment_batch(
        x, Augment(0, 0, (1, 1), 0, **{**AFFINE_ONLY, "blur": 1.0, "noise": 1.0}), torch.Generator()
    )
    assert out.min() >= 0 and out.max() <= 1 and not torch.equal(out, x)


def test_erased_bars_and_specks():
    x = torch.ones(32, 1, 28, 28)
    erased = augment_batch(x, Augment(0, 0, (1, 1), 0, **{**AFFINE_ONLY, "erase": 1.0}),
                           torch.Generator().manual_seed(0))  # fmt: skip
    zero_rows = (erased == 0).all(3).sum((1, 2))
    zero_cols = (erased == 0).all(2).sum((1, 2))
    bar = torch.maximum(zero_rows, zero_cols)
    assert ((bar >= 2) & (bar <= 4)).all()  # one bar of 2-4 pixels in every image
    x = torch.full((32, 1, 28, 28), 0.5)
    specked = augment_batch(x, Augment(0, 0, (1, 1), 0, **{**AFFINE_ONLY, "specks": 1.0}),
                            torch.Generator().manual_seed(0))  # fmt: skip
    changed = (specked != 0.5).float().mean().item()
    assert 0.002 < changed < 0.03 and set(specked.unique().tolist()) == {0.0, 0.5, 1.0}


def test_elastic_warp_bends_but_keeps_the_digit():
    x = disk(64)
    only_elastic = Augment(0, 0, (1, 1), 0, **{**AFFINE_ONLY, "elastic": 1.0})
    out = augment_batch(x, only_elastic, torch.Generator().manual_seed(0))
    changed = (out - x).abs().sum((1, 2, 3))
    assert (changed > 1.0).all()  # every image warped
    mass = out.sum((1, 2, 3)) / x.sum((1, 2, 3))
    assert (mass - 1).abs().max() < 0.4  # bent, not destroyed or moved off the image
    half = Augment(0, 0, (1, 1), 0, **{**AFFINE_ONLY, "elastic": 0.5})
    out = augment_batch(disk(200), half, torch.Generator().manual_seed(1))
    untouched = ((out - disk(200)).abs().sum((1, 2, 3)) < 1e-3).float().mean()
    assert 0.3 < untouched < 0.7


def test_stray_lines_add_a_thin_segment_and_nothing_else():
    x = torch.zeros(100, 1, 28, 28)
    only_strays = Augment(0, 0, (1, 1), 0, **{**AFFINE_ONLY, "strays": 1.0})
    out = augment_batch(x, only_strays, torch.Generator().manual_seed(0))
    ink = out.sum((1, 2, 3))
    assert (ink > 2).all() and (ink < 28 * 2.5).all()  # a line, about a pixel wide
    assert out.max() == 1 and out.min() == 0
    assert (augment_batch(disk(4), only_strays, torch.Generator()) >= disk(4)).all()


def test_outline_hollows_thick_strokes_and_keeps_thin_ones():
    only_outline = Augment(0, 0, (1, 1), 0, **{**AFFINE_ONLY, "outline": 1.0})
    out = augment_batch(disk(2), only_outline, torch.Generator().manual_seed(0))
    assert out[:, 0, 13, 13].eq(0).all()  # the inside of the disk is gone
    ring = out[0, 0]
    assert ring[13, 7] == 1 and ring[13, 20] == 1 and ring[7, 13] == 1  # its rim is not
    assert 30 < ring.sum() < 70  # about the circumference (2 pi 7 = 44), not the area (154)
    line = torch.zeros(1, 1, 28, 28)
    line[0, 0, 4:24, 14] = 1.0  # a one-pixel line has no inside
    assert torch.equal(augment_batch(line, only_outline, torch.Generator()), line)
    half = Augment(0, 0, (1, 1), 0, **{**AFFINE_ONLY, "outline": 0.5})
    out = augment_batch(disk(200), half, torch.Generator().manual_seed(0))
    hollow = out[:, 0, 13, 13].eq(0).float().mean()
    assert 0.35 < hollow < 0.65


def test_skeleton_is_one_pixel_wide_and_keeps_pieces_and_loops():
    ys, xs = torch.meshgrid(torch.arange(40.0), torch.arange(40.0), indexing="ij")
    r = ((ys - 14) ** 2 + (xs - 14) ** 2).sqrt()
    ring = (r > 5) & (r < 11)  # a loop 6 px thick
    bar = (ys > 30) & (ys < 36) & (xs > 4) & (xs < 36)  # and a separate bar
    mask = (ring | bar).to(torch.uint8)[None, None]
    line = skeleton(mask.clone())[0, 0].numpy().astype(bool)
    assert not (line & ~(ring | bar).numpy()).any()  # only ever removes ink
    assert ndimage.label(line, structure=[[1, 1, 1]] * 3)[1] == 2  # the two pieces
    assert ndimage.label(~line)[1] == 2  # the loop still encloses its hole
    blocks = line[:-1, :-1] & line[1:, :-1] & line[:-1, 1:] & line[1:, 1:]
    assert not blocks.any() and line.sum() < 0.35 * mask.sum()  # lines, not areas
    assert torch.equal(skeleton(skeleton(mask.clone())), skeleton(mask.clone()))  # idempotent


def test_pen_redraws_uneven_strokes_at_one_width():
    x = torch.zeros(3, 1, 28, 28)
    x[:, 0, 4:24, 8:10] = 1.0  # a stroke 2 px wide
    x[:, 0, 4:24, 16:22] = 1.0  # and one 6 px wide
    out = redrawn(x, torch.tensor([1, 2, 3]))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    width = (out[:, 0, 14] > 0.25).float()  # the ink across row 14
    thin, thick = width[:, :13].sum(1), width[:, 13:].sum(1)
    assert torch.equal(thin, thick)  # both strokes now as wide as each other
    assert thin[0] < thin[1] < thin[2]  # and as wide as asked
    faint = x * 0.4  # no ink above half strength: nothing to trace, left alone
    assert torch.equal(redrawn(faint, torch.tensor([1, 2, 3])), faint)
    only_pen = Augment(0, 0, (1, 1), 0, **{**AFFINE_ONLY, "pen": 1.0})
    a = augment_batch(x, only_pen, torch.Generator().manual_seed(0))
    assert torch.equal(a, augment_batch(x, only_pen, torch.Generator().manual_seed(0)))
    assert not torch.equal(a, x)
    half = Augment(0, 0, (1, 1), 0, **{**AFFINE_ONLY, "pen": 0.5})
    many = x[:1].expand(200, 1, 28, 28)
    changed = (augment_batch(many, half, torch.Generator().manual_seed(0)) != many).flatten(1)
    assert 0.35 < changed.any(1).float().mean() < 0.65


def test_augmentation_settings_come_from_the_training_config():
    from digitrec.recipes import make_config
    from digitrec.train import augmentation

    assert augmentation(make_config("best", None, {})) == Augment()
    cfg = make_config(
        "best", None, {"rotate": 15.0, "elastic": 0.5, "strays": 0.1, "outline": 0.2, "pen": 0.3}
    )
    a = augmentation(cfg)
    assert (a.rotate, a.elastic, a.strays, a.outline, a.pen) == (15.0, 0.5, 0.1, 0.2, 0.3)
    assert cfg.to_dict()["elastic"] == 0.5  # recorded in the run's config.json


def test_styles_flag_ones_and_bar_sevens_and_leave_other_digits_alone(mnist):
    """A European 1: a flag down to the left of its top (some with a foot); a 7 with a bar
    across its stem. Only where the labels say 1 or 7, and only with labels."""
    from digitrec.augment import styled

    y = mnist.train_labels[:300]
    keep = (y == 1) | (y == 7) | (y == 3)
    x, y = mnist.train_images[:300][keep].float()[:, None] / 255, y[keep]
    out = styled(x, y, 1.0, torch.Generator().manual_seed(0))
    added = (out - x).clamp(min=0)[:, 0] > 0.5
    assert (out >= x).all() and not added[y == 3].any()
    rows = torch.arange(28)[None, :, None]
    top = torch.where(x[:, 0] > 0.5, rows, 28).amin((1, 2))
    seen = []  # (the digit, whether its new stroke is where the style puts it)
    for img, d, t, new in zip(x[:, 0], y, top, added, strict=True):
        ys, xs = new.nonzero(as_tuple=True)
        if d == 1:  # a flag: from the top, down to the left of it
            tip = (img[t] > 0.5).nonzero().float().mean()
            seen.append((1, len(ys) >= 3 and ys.min() <= t + 2 and xs.min() < tip - 2))
        elif d == 7:  # a bar across the stem, below the top
            seen.append((7, len(ys) >= 1 and ys.float().mean() > t + 4))
    for d in (1, 7):  # (an MNIST 1 may have a flag already, a 7 a bar)
        assert sum(ok for k, ok in seen if k == d) >= 0.9 * sum(k == d for k, _ in seen), d
    assert torch.equal(styled(x, y, 0.0, torch.Generator()), x)
    only = Augment(0, 0, (1, 1), 0, **{**AFFINE_ONLY, "styles": 1.0})
    assert torch.equal(augment_batch(x, only, torch.Generator()), x)  # no labels: no styles


def test_styles_are_for_mnist_only():
    from digitrec.errors import DigitrecError
    from digitrec.recipes import make_config

    assert make_config("best", None, {"styles": 0.3}).styles == 0.3
    with pytest.raises(DigitrecError, match="MNIST only"):
        make_config("best", None, {"styles": 0.3, "dataset": "fashion"})
