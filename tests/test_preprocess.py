"""The input pipeline on cases with a known answer."""

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw
from scipy import ndimage

from digitrec.errors import ImageError
from digitrec.predictor import Predictor
from digitrec.preprocess import (
    MAX_PIXELS,
    background_map,
    center_of_mass,
    drop_unused_channels,
    flatten,
    grow,
    hue_distance,
    otsu,
    preprocess,
    quantiles,
    shrink,
    stroke_width,
)
from digitrec.runs import shipped_model_path


def png(page: np.ndarray) -> bytes:
    """A grey page in [0, 1] as an 8-bit PNG file."""
    buf = io.BytesIO()
    Image.fromarray(np.clip(np.rint(page * 255), 0, 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def big_digit(digit28: np.ndarray, size=280, offset=(0, 0), canvas=(400, 400), dark_on_light=False):
    """An MNIST digit scaled up and pasted into a larger canvas, as a person would draw it."""
    img = Image.fromarray(digit28).resize((size, size), Image.Resampling.BILINEAR)
    bg = Image.new("L", canvas, 0)
    bg.paste(img, offset)
    a = np.asarray(bg)
    return 255 - a if dark_on_light else a


def test_mnist_digit_passes_through_nearly_unchanged(mnist):
    for i in range(20):
        digit = mnist.test_images[i].numpy()
        out = preprocess(digit)
        assert not out.blank and not out.inverted
        assert np.abs(out.image - digit / 255.0).mean() < 0.03, i


def test_inverted_off_center_digit_is_restored(mnist):
    digit = mnist.test_images[0].numpy()
    out = preprocess(big_digit(digit, 140, offset=(250, 10), dark_on_light=True))
    assert out.inverted and not out.blank
    cy, cx = center_of_mass(out.image)
    assert abs(cy - 14) < 1 and abs(cx - 14) < 1
    rows = np.flatnonzero(out.image.max(1) > 0.1)
    cols = np.flatnonzero(out.image.max(0) > 0.1)
    assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 in (19, 20, 21)
    assert np.corrcoef(out.image.ravel(), digit.ravel())[0, 1] > 0.8


def test_blank_and_nearly_blank_images():
    assert preprocess(np.full((200, 200), 255, np.uint8)).blank
    assert preprocess(np.zeros((50, 50), np.uint8)).blank
    noise = np.random.default_rng(0).integers(250, 256, (100, 100)).astype(np.uint8)
    assert preprocess(noise).blank


def test_a_light_pencil_on_a_noisy_scan_is_read_and_the_same_paper_bare_is_blank(mnist):
    """6-9% contrast: under the blank level, and under the margin that tells dark ink
    from light (before: 'no digit', or the noise read as light ink); a person reads it."""
    rng = np.random.default_rng(0)
    pages, labels = [], mnist.test_labels[:12].tolist()
    for i, contrast in enumerate(np.linspace(0.06, 0.09, 12)):
        ink = big_digit(mnist.test_images[i].numpy(), 200, (100, 40), (400, 300)) / 255.0
        pages.append(png(0.92 * (1 - contrast * ink) + rng.normal(0, 0.012, ink.shape)))
        out = preprocess(pages[-1])
        assert out.inverted and not out.blank, (contrast, out.steps)
        assert preprocess(png(0.92 + rng.normal(0, 0.012, ink.shape))).blank
    read = [p.digit for p in Predictor.load(shipped_model_path()).predict(pages)]
    assert sum(r == y for r, y in zip(read, labels, strict=True)) >= 11, (read, labels)


def test_transparent_canvas_with_white_or_black_strokes(mnist):
    digit = mnist.test_images[1].numpy()
    alpha = big_digit(digit)
    for color in (255, 0):
        rgba = np.zeros((*alpha.shape, 4), np.uint8)
        rgba[..., :3] = color
        rgba[..., 3] = alpha
        out = preprocess(Image.fromarray(rgba, "RGBA"))
        assert not out.blank
        assert np.corrcoef(out.image.ravel(), digit.ravel())[0, 1] > 0.8, color


def test_color_and_file_inputs(mnist, tmp_path):
    digit = big_digit(mnist.test_images[2].numpy(), dark_on_light=True)
    rgb = np.stack([digit, digit // 2 + 100, digit], -1).astype(np.uint8)
    path = tmp_path / "d.jpg"
    Image.fromarray(rgb).save(path, quality=90)
    from_file = preprocess(path)
    from_bytes = preprocess(path.read_bytes())
    assert np.array_equal(from_file.image, from_bytes.image)
    assert from_file.inverted and from_file.image.max() > 0.8


@pytest.mark.parametrize(
    "bad, words",
    [
        (b"", "empty"),
        (b"definitely not an image", "not a readable image"),
        (np.zeros((0, 5), np.uint8), "no pixels"),
        (np.full((4, 4), np.nan), "NaN"),
        (np.zeros((4, 4, 7), np.uint8), "not an image"),
    ],
)
def test_malformed_input_gives_a_clear_error(bad, words):
    with pytest.raises(ImageError, match=words):
        preprocess(bad)


def test_an_empty_file_and_empty_bytes_get_the_same_words(tmp_path):
    (tmp_path / "blank.png").write_bytes(b"")
    with pytest.raises(ImageError) as by_path:
        preprocess(tmp_path / "blank.png")
    with pytest.raises(ImageError) as by_bytes:
        preprocess(b"")
    assert str(by_path.value) == f"{tmp_path / 'blank.png'} is empty (0 bytes)"
    assert str(by_bytes.value) == "The uploaded image is empty (0 bytes)"


def test_sizes_and_limits_are_said_in_the_units_people_read():
    from digitrec.preprocess import MAX_IMAGE_BYTES, over_limit, size_text

    assert [size_text(n) for n in (300, 2048, 1536 * 1024, MAX_IMAGE_BYTES)] == [
        "300 bytes", "2 KB", "1.5 MB", "10 MB"]  # fmt: skip
    said = over_limit("x.png", 12 * 2**20, MAX_IMAGE_BYTES)
    assert said == "x.png is 12 MB, over the 10 MB limit"
    assert over_limit("the body", None, MAX_IMAGE_BYTES) == "the body is over the 10 MB limit"


def test_truncated_png():
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), np.uint8)).save(buf, "PNG")
    with pytest.raises(ImageError, match="truncated or corrupt"):
        preprocess(buf.getvalue()[:200])


def test_huge_image_is_refused_before_decoding():
    side = int(MAX_PIXELS**0.5) + 10
    buf = io.BytesIO()
    Image.new("1", (side, side)).save(buf, "PNG")  # small file, huge canvas
    with pytest.raises(ImageError, match="pixel limit"):
        preprocess(buf.getvalue())


def test_one_pixel_image():
    assert preprocess(np.array([[255]], np.uint8)).blank


def test_polarity_on_grey_paper_under_a_dim_lamp(mnist):
    """Grey paper darker than 0.5 with darker ink: a fixed brightness rule calls this
    light-on-dark; the histogram-and-border rule does not."""
    digit = big_digit(mnist.test_images[3].numpy()).astype(np.float32) / 255
    photo = (0.45 * (1 - 0.8 * digit) * 255).astype(np.uint8)
    out = preprocess(photo)
    assert out.inverted and not out.blank
    assert np.corrcoef(out.image.ravel(), mnist.test_images[3].numpy().ravel())[0, 1] > 0.8
    assert not preprocess(photo, robust=False).inverted  # what the textbook rule gets wrong


def test_lighting_gradient_is_removed(mnist):
    digit = big_digit(mnist.test_images[4].numpy()).astype(np.float32) / 255
    ramp = np.linspace(0.35, 1.0, digit.shape[1])[None, :]
    photo = (ramp * (1 - 0.85 * digit) * 255).astype(np.uint8)
    evenly_lit = preprocess(((1 - 0.85 * digit) * 255).astype(np.uint8)).image.ravel()
    out = preprocess(photo)
    assert "uneven background removed" in out.steps
    assert np.corrcoef(out.image.ravel(), evenly_lit)[0, 1] > 0.75
    textbook = preprocess(photo, robust=False).image.ravel()
    assert np.corrcoef(textbook, evenly_lit)[0, 1] < 0.5  # the shadow side read as ink


def test_specks_and_border_marks_are_dropped(mnist):
    digit = big_digit(mnist.test_images[5].numpy(), size=200, offset=(100, 100))
    noisy = digit.copy()
    noisy[5:9, 380:384] = 255  # a speck far from the digit
    noisy[:, :6] = 255  # the edge of the paper along the left border
    clean = preprocess(digit).image
    assert np.abs(preprocess(noisy).image - clean).mean() < 0.02
    assert np.abs(preprocess(noisy, robust=False).image - clean).mean() > 0.05


def test_thin_strokes_are_thickened(mnist):
    from scipy import ndimage

    strokes = big_digit(mnist.test_images[6].numpy(), size=250) > 128
    hairline = ndimage.binary_erosion(strokes, iterations=9).astype(np.uint8) * 255
    out = preprocess(hairline)
    assert any(step.startswith("thickened") for step in out.steps)
    assert (out.image > 0.5).sum() > 1.5 * (preprocess(hairline, robust=False).image > 0.5).sum()
    off = preprocess(hairline, normalize_strokes=False)
    assert not any(step.startswith("thickened") for step in off.steps)


def test_a_line_of_many_even_dashes_is_measured_and_thickened():
    """No dash holds 5% of the ink, the share that keeps specks out of the measure: the
    width was the mean of nothing (NaN, with a warning), and the line was left thin."""
    from digitrec.preprocess import normalize_stroke, stroke_width

    a = np.zeros((80, 80), np.float32)
    for t in np.linspace(0, 2 * np.pi, 24, endpoint=False):  # a 0 of 24 two-pixel dashes
        a[int(40 + 35 * np.sin(t)), int(40 + 25 * np.cos(t)) :][:2] = 1.0
    assert stroke_width(a) == 1.0
    out, note = normalize_stroke(a)
    assert note is not None and note.startswith("thickened") and out.sum() > 10 * a.sum()


def test_strokes_at_mnist_size_are_left_as_drawn(mnist):
    """At 28x28 a thin stroke is MNIST's own (or noise): never thickened."""
    digit = mnist.test_images[6].numpy().copy()
    pinholes = np.random.default_rng(0).random(digit.shape) < 0.1
    digit[pinholes] = 255 - digit[pinholes]  # impulse noise: specks and holes
    assert not any(s.startswith("thickened") for s in preprocess(digit).steps)


def test_a_small_digit_in_a_fat_pen_is_thinned_even_below_the_thickening_size():
    """A 3 drawn 40 px tall with the page's 20 px pen (60 px of ink), as a screenshot of
    it at 128 px: 27 px tall there, under the size at which thin strokes are thickened,
    but its strokes a third of its height: thinned towards MNIST's boldest."""
    img = Image.new("L", (280, 280), 255)
    path = [(0, 1), (6, 0), (12, 3), (10, 13), (4, 15), (13, 20), (12, 28), (5, 30), (-1, 27)]
    ImageDraw.Draw(img).line([(130 + 4 * x / 3, 120 + 4 * y / 3) for x, y in path],
                             fill=17, width=20, joint="curve")  # fmt: skip
    out = preprocess(img.resize((128, 128), Image.Resampling.LANCZOS))
    assert any(step.startswith("thinned") for step in out.steps), out.steps


def test_a_fine_line_is_brightened_to_mnist_ink(mnist):
    """A 1 px pen line on a 250 px canvas fades to grey at 20 px; MNIST's ink is solid."""
    from scipy import ndimage

    strokes = big_digit(mnist.test_images[0].numpy(), size=250) > 128  # a 7
    line = (strokes & ~ndimage.binary_erosion(strokes)).astype(np.uint8) * 255  # outline
    out = preprocess(line, normalize_strokes=False)
    assert "faint strokes brightened" in out.steps
    assert np.quantile(out.image[out.image > 0.05], 0.9) > 0.9
    textbook = preprocess(line, robust=False).image
    assert np.quantile(textbook[textbook > 0.05], 0.9) < 0.7
    # an MNIST digit is solid already: left as it is
    assert "faint strokes brightened" not in preprocess(mnist.test_images[0].numpy()).steps


def test_faint_ink_links_the_pieces_of_a_broken_stroke():
    from digitrec.preprocess import keep_digit

    mask = np.zeros((100, 100), bool)
    mask[20:80, 40:44] = True  # the digit's main stroke
    mask[5:8, 85:95] = True  # a small piece far from it: dropped as a speck on its own
    faint = mask.copy()
    faint[8:21, 88] = True  # ... unless faint ink runs from it to the stroke
    faint[20, 44:89] = True
    assert not keep_digit(mask)[6, 90]
    assert keep_digit(mask, faint)[6, 90]
    assert not keep_digit(mask, mask | np.eye(100, dtype=bool))[6, 90]  # not linked


def test_a_dashed_loop_is_kept_dash_by_dash():
    """A fine pen's 9: a stem, and a loop of short dashes reaching out to its left. Each
    dash is near what is already kept, though most are far from the stem's own box."""
    from digitrec.preprocess import keep_digit

    mask = np.zeros((120, 120), bool)
    mask[20:100, 80:83] = True  # the stem
    centre, r = (40, 57), 22  # its right side touches the stem
    for a in np.linspace(0, 2 * np.pi, 24, endpoint=False):  # 24 dashes round the loop
        y, x = round(centre[0] + r * np.sin(a)), round(centre[1] + r * np.cos(a))
        mask[y - 1 : y + 2, x - 1 : x + 2] = True
    mask[110:113, 5:8] = True  # a speck well away from the digit
    kept = keep_digit(mask)
    assert kept[20:100, 80:83].all()
    assert kept[centre[0], centre[1] - r] and kept[centre[0] - r, centre[1]]  # far dashes
    assert not kept[111, 6]


def test_a_fine_pens_pieces_a_gap_away_are_kept_even_at_the_border():
    """A fine pen breaks where strokes meet. A 9's tail that starts a few pixels below its
    loop and runs off the bottom edge is the digit's, not a paper edge; so is a short
    hook beside a narrow stem, outside the stem's box. A mark along the far edge and a
    speck well away from both stay out."""
    from digitrec.preprocess import keep_digit

    ys, xs = np.mgrid[0:120, 0:120]
    mask = np.abs(np.hypot(ys - 35, xs - 60) - 18) < 1.5  # the loop
    mask[50:120, 77:80] = True  # the tail: 4 px below the loop, down to the border
    mask[:, 0:3] = True  # the paper's edge
    assert keep_digit(mask)[100, 78] and not keep_digit(mask)[60, 1]

    stem = np.zeros((120, 120), bool)
    stem[20:100, 60:63] = True
    stem[96:98, 66:76] = True  # a hook 3 px to the right of the stem
    stem[30:32, 90:92] = True  # a speck
    kept = keep_digit(stem)
    assert kept[97, 70] and not kept[30, 90]


def test_deskew_straightens_a_slanted_bar():
    bar = np.zeros((28, 28), np.uint8)
    for r in range(4, 24):
        c = 8 + (r - 4) // 2  # leaning right
        bar[r, c : c + 3] = 255
    straight = preprocess(bar, deskew_digit=True).image
    cols = np.flatnonzero(straight.max(0) > 0.5)
    assert cols[-1] - cols[0] <= 5
    assert "deskewed" in preprocess(bar, deskew_digit=True).steps


def test_a_line_across_the_digit_is_erased_and_both_halves_kept():
    """A ruled line (or MNIST-C's stripe) through a ring: the line goes, and the two arcs it
    cut apart both stay, so the ring is still a 0 and not a ')' or a '('."""
    ys, xs = np.mgrid[0:200, 0:200]
    r = np.hypot(ys - 100, (xs - 100) * 1.4)
    ring = (np.abs(r - 60) < 7).astype(np.uint8) * 255
    lined = ring.copy()
    lined[:, 97:110] = 255 - lined[:, 97:110]  # a stripe, inverted where it crosses the ring
    out = preprocess(lined)
    clean = preprocess(ring)
    assert any("line" in s for s in out.steps), out.steps
    assert out.image[:, :10].max() > 0.5 and out.image[:, 18:].max() > 0.5  # both arcs
    rows = np.flatnonzero(out.image.max(1) > 0.1)
    assert rows[-1] - rows[0] + 1 >= 19  # fitted by the ring's height, not the line's
    width = np.ptp(np.flatnonzero(out.image.max(0) > 0.1))
    assert abs(width - np.ptp(np.flatnonzero(clean.image.max(0) > 0.1))) <= 1
    assert np.corrcoef(out.image.ravel(), clean.image.ravel())[0, 1] > 0.5  # a gap, no more


def test_a_small_digit_in_a_large_photo_is_looked_at_again_at_full_resolution(mnist):
    """A 140 px digit on a 2000x1500 page is 7 px at the working size; the second look at
    the source around it gives back its detail."""
    digit = mnist.test_images[0].numpy()
    page = np.full((1500, 2000), 230, np.uint8)
    strokes = np.asarray(Image.fromarray(digit).resize((140, 140), Image.Resampling.BICUBIC))
    page[1150:1290, 1190:1330] -= (strokes.astype(np.float32) * 0.8).astype(np.uint8)
    out = preprocess(page)
    first_look = preprocess(page, refine=False)
    assert any(s.startswith("refined") for s in out.steps), out.steps
    x0, y0, x1, y1 = out.box
    assert 1180 <= x0 < x1 <= 1340 and 1140 <= y0 < y1 <= 1300
    match = np.corrcoef(out.image.ravel(), digit.ravel())[0, 1]
    before = np.corrcoef(first_look.image.ravel(), digit.ravel())[0, 1]
    assert match > 0.8 and match > before + 0.1, (match, before)


def photo_jpeg(page: np.ndarray, orientation: int = 1) -> bytes:
    """``page`` as a phone stores it: a JPEG, sideways when ``orientation`` (EXIF) says so."""
    img = Image.fromarray(page)
    undo = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}
    if orientation != 1:
        img = img.transpose(undo[orientation])  # stored so that the tag turns it upright
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(img, "JPEG", quality=92, exif=exif.tobytes())


def a_page(digit: np.ndarray, size, side: int, at: tuple[int, int]) -> np.ndarray:
    """Dark ink on white paper, (H, W) = ``size``, the digit ``side`` px tall at (x, y)."""
    page = np.full(size, 235, np.uint8)
    strokes = np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC))
    x, y = at
    page[y : y + side, x : x + side] -= (strokes * 0.8).astype(np.uint8)
    return page


@pytest.mark.parametrize("orientation", [6, 8])
def test_a_portrait_photo_stored_sideways_is_turned_upright(mnist, orientation):
    digit = mnist.test_images[0].numpy()
    page = a_page(digit, (600, 400), 300, (50, 150))
    out = preprocess(photo_jpeg(page, orientation))
    assert out.source_size == (400, 600)
    assert np.corrcoef(out.image.ravel(), preprocess(page).image.ravel())[0, 1] > 0.97
    x0, y0, x1, y1 = out.box
    assert 40 <= x0 < x1 <= 360 and 140 <= y0 < y1 <= 460, out.box


def test_a_large_jpeg_is_decoded_at_reduced_scale_and_mapped_back(mnist):
    """A 12-megapixel photo is decoded at half scale (its longer side still 2,016 px): the
    digit reads as from the full decode, and the box and size are the photo's own."""
    digit = mnist.test_images[0].numpy()
    page = a_page(digit, (3024, 4032), 1200, (2000, 900))
    out = preprocess(photo_jpeg(page))
    assert out.steps[0] == "decoded at 1/2 scale", out.steps
    assert out.source_size == (4032, 3024)
    full = preprocess(page)  # the same pixels as an array: decoded at full size
    assert np.corrcoef(out.image.ravel(), full.image.ravel())[0, 1] > 0.98
    assert np.allclose(out.box, full.box, atol=3) and out.scale == pytest.approx(full.scale, 0.01)


@pytest.mark.parametrize("orientation", [1, 6])
def test_a_small_digit_in_a_large_jpeg_is_refined_and_mapped_back(mnist, orientation):
    """The second look crops the reduced decode; its box comes back in the photo's own
    (upright) coordinates."""
    digit = mnist.test_images[0].numpy()
    page = a_page(digit, (3000, 2400), 160, (1700, 2300))
    out = preprocess(photo_jpeg(page, orientation))
    assert out.source_size == (2400, 3000)
    assert out.steps[0] == "decoded at 1/2 scale" and any(
        s.startswith("refined") for s in out.steps
    ), out.steps
    x0, y0, x1, y1 = out.box
    assert 1690 <= x0 < x1 <= 1870 and 2290 <= y0 < y1 <= 2470, out.box
    assert np.corrcoef(out.image.ravel(), preprocess(page).image.ravel())[0, 1] > 0.95


def lamp_lit_photo(
    digit: np.ndarray | None, slope=(0.3, 0.1), seed=0, side: int = 60
) -> np.ndarray:
    """A 2000x1500 photo of warm-tinted paper under a lamp (brightness 0.7 +- 0.15 across),
    with sensor noise and, if given, a digit ``side`` px tall in dark ink at (1200, 500)."""
    h, w = 1500, 2000
    rng = np.random.default_rng(seed)
    ys, xs = np.ogrid[0:h, 0:w]
    light = 0.7 + slope[0] * (xs / w - 0.5) + slope[1] * (ys / h - 0.5)
    ink = np.zeros((h, w))
    if digit is not None:
        strokes = Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC)
        ink[500 : 500 + side, 1200 : 1200 + side] = np.asarray(strokes) / 255
    page = light * (1 - 0.75 * ink) + rng.normal(0, 0.015, (h, w))
    rgb = np.repeat(page[..., None], 3, axis=2) * [0.98, 1.0, 0.92]
    return (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)


@pytest.mark.parametrize("slope", [(0.3, 0.1), (-0.3, 0.2), (0.2, -0.2)])
def test_a_small_digit_on_a_lamp_lit_tinted_photo_is_found(mnist, slope):
    """3% of the photo's height, the digit is a faint smudge at 128 px. The lamp's
    gradient on tinted paper once read as colour contrast (the corners became the digit),
    and the 32 px polarity vote, blind to so small a digit, then found nothing."""
    digit = mnist.test_images[0].numpy()
    out = preprocess(lamp_lit_photo(digit, slope))
    assert not out.blank and "colour contrast" not in out.steps, out.steps
    x0, y0, x1, y1 = out.box
    assert 1195 <= x0 < x1 <= 1265 and 495 <= y0 < y1 <= 565, out.box
    assert np.corrcoef(out.image.ravel(), digit.ravel())[0, 1] > 0.9


@pytest.mark.parametrize("slope", [(0.3, 0.1), (-0.3, 0.2), (0.0, 0.3)])
def test_a_ballpoint_8_on_a_lamp_lit_photo_is_dark_strokes_not_filled_loops(slope):
    """A 5 px line in a 2000 px photo vanished at the 32 px of the polarity vote, which
    the lamp's gradient then decided: the paper inside the loops became light "ink"."""
    pen = Image.new("L", (2000, 1500), 0)
    draw = ImageDraw.Draw(pen)
    draw.ellipse((900, 400, 1100, 600), outline=255, width=5)
    draw.ellipse((880, 590, 1120, 830), outline=255, width=5)
    ink = np.asarray(pen, np.float32) / 255
    ys, xs = np.ogrid[0:1500, 0:2000]
    light = 0.7 + slope[0] * (xs / 2000 - 0.5) + slope[1] * (ys / 1500 - 0.5)
    page = light * (1 - 0.75 * ink) + np.random.default_rng(0).normal(0, 0.015, ink.shape)
    out = preprocess((np.clip(page, 0, 1) * 255).round().astype(np.uint8))
    assert out.inverted, out.steps
    assert out.image[9:11, 13:15].max() < 0.1 and out.image[17:19, 13:15].max() < 0.1
    assert out.image.max() > 0.9


@pytest.mark.parametrize("side", [40, 80])
def test_a_digit_too_faint_at_the_working_size_is_looked_for_closer(mnist, side):
    """A digit 1-3% of a 12-megapixel photo's height is 1-3 faint pixels at 128 px and
    read as "no digit"; at 512 px it is found, then refined on the photo itself."""
    digit = mnist.test_images[0].numpy()
    out = preprocess(photo_jpeg(a_page(digit, (3024, 4032), side, (2500, 700))))
    assert not out.blank, out.steps
    assert out.steps[:2] == ["decoded at 1/2 scale", "nothing at 128 px: looked again at 512 px"]
    assert any(s.startswith("refined") for s in out.steps), out.steps
    x0, y0, x1, y1 = out.box
    assert 2495 <= x0 < x1 <= 2505 + side and 695 <= y0 < y1 <= 705 + side, out.box
    assert np.corrcoef(out.image.ravel(), digit.ravel())[0, 1] > 0.8


@pytest.mark.parametrize("slope", [(0.3, 0.1), (-0.3, 0.2), (0.2, -0.2)])
def test_a_tiny_digit_on_a_lamp_lit_photo_is_not_outweighed_by_the_lamps_edge(mnist, slope):
    """A 30 px digit in a 2000x1500 photo under a lamp. The background map cut the
    gradient's peak off at the photo's edge, and the band left there was read as the digit
    (or, at 128 px, outweighed it into "no digit")."""
    digit = mnist.test_images[0].numpy()
    out = preprocess(lamp_lit_photo(digit, slope, side=30))
    x0, y0, x1, y1 = out.box
    assert 1195 <= x0 < x1 <= 1235 and 495 <= y0 < y1 <= 535, (out.box, out.steps)
    assert np.corrcoef(out.image.ravel(), digit.ravel())[0, 1] > 0.8


def test_the_background_map_follows_a_gradient_to_the_edge():
    ys, xs = np.mgrid[0:300, 0:400]
    for slope in [(0.3, 0.1), (-0.3, 0.2), (0.0, -0.4)]:
        ramp = (0.5 + slope[0] * (xs / 400 - 0.5) + slope[1] * (ys / 300 - 0.5)).astype(np.float32)
        assert np.abs(background_map(ramp) - ramp).max() < 0.005


def test_a_lamp_lit_tinted_photo_of_blank_paper_is_blank():
    """Its lit half is a large light region too, but no sheet: its edge is no step."""
    for seed, slope in enumerate([(0.3, 0.1), (-0.3, 0.2), (0.2, -0.2), (0.5, 0.0), (0.0, 0.6)]):
        out = preprocess(lamp_lit_photo(None, slope, seed))
        assert out.blank, out.steps


def test_hue_distance_ignores_brightness_and_sees_colour():
    paper = np.array([0.98, 1.0, 0.92]) * 0.7
    shades = paper * np.linspace(0.2, 1.4, 7)[:, None]  # the same paper, darker to brighter
    assert np.allclose(hue_distance(shades[None], paper), 0, atol=1e-9)
    red = np.array([[[0.8, 0.1, 0.1]]])
    assert hue_distance(red, paper)[0, 0] > 0.3
    black = np.full(3, 2e-4)  # no colour to follow: the plain distance
    plain = np.linalg.norm(red - black) / np.sqrt(3)
    assert hue_distance(red, black)[0, 0] == pytest.approx(plain)


def sheet_on_desk(digit: np.ndarray | None, angle: float = 8.0, slope: float = 0.2) -> np.ndarray:
    """A 2000x1500 photo of a sheet of paper (60% of the frame, tilted by ``angle``) on
    a dark wooden desk under a lamp, with a 300 px digit written on it, if given."""
    h, w = 1500, 2000
    paper = np.zeros((h, w), np.float32)
    paper[300:1200, 400:1600] = 1
    ink = np.zeros((h, w), np.float32)
    if digit is not None:
        ink[500:800, 900:1200] = np.asarray(Image.fromarray(digit).resize((300, 300))) / 255
    tilt = [
        np.asarray(Image.fromarray(a).rotate(angle, Image.Resampling.BILINEAR))
        for a in (paper, ink)
    ]
    paper, ink = ndimage.gaussian_filter(tilt[0], 2)[..., None], tilt[1][..., None]
    light = 0.75 + slope * (np.arange(w) / w - 0.5)[None, :, None]
    img = light * (paper * [0.97, 0.97, 0.93] + (1 - paper) * [0.3, 0.2, 0.12]) * (1 - 0.8 * ink)
    noise = np.random.default_rng(0).normal(0, 0.015, img.shape)
    return (np.clip(img + noise, 0, 1) * 255).round().astype(np.uint8)


@pytest.mark.parametrize("angle", [0.0, 8.0, -12.0])
def test_the_writing_on_a_sheet_lying_on_a_desk_is_read_not_the_sheet(mnist, angle):
    """The desk all round the border made the paper the light "ink": the sheet itself was
    read as a 0. The writing on it is read instead, and its box is the digit's."""
    digit = mnist.test_images[1].numpy()  # a 2
    out = preprocess(encode(Image.fromarray(sheet_on_desk(digit, angle)), "JPEG", quality=90))
    assert any(s.startswith("a sheet of paper") for s in out.steps), out.steps
    assert out.on_sheet and out.inverted and not out.blank
    x0, y0, x1, y1 = out.box
    assert 850 <= x0 < x1 <= 1250 and 450 <= y0 < y1 <= 850, out.box
    upright = np.pad(digit, 14)  # the writing turns with the sheet: compare it turned
    turned = np.asarray(Image.fromarray(upright).rotate(angle, Image.Resampling.BILINEAR))
    assert np.corrcoef(out.image.ravel(), preprocess(turned).image.ravel())[0, 1] > 0.85


def test_a_sheet_on_a_desk_in_a_16_bit_scan(mnist):
    """The sheet's crop is scaled to 8 bits like the whole image (PIL's own conversion
    clips 16-bit greys to white: the writing was lost)."""
    digit = mnist.test_images[1].numpy()
    grey = sheet_on_desk(digit).mean(axis=2)
    out = preprocess(encode(Image.fromarray((grey * 257).astype(np.uint16)), "PNG"))
    assert any(s.startswith("a sheet of paper") for s in out.steps) and not out.blank, out.steps
    x0, y0, x1, y1 = out.box
    assert 850 <= x0 < x1 <= 1250 and 450 <= y0 < y1 <= 850, out.box


@pytest.mark.parametrize("angle, slope", [(0.0, 0.5), (8.0, -0.4), (-12.0, 0.5)])
def test_a_sheet_on_a_desk_under_a_steep_lamp(mnist, angle, slope):
    """Brightness from 0.5 to 1.0 across the photo: the desk's border is then uneven, and
    the background map (a window far narrower than the sheet) took the sheet for
    background; what was left of its edges was read as the digit."""
    digit = mnist.test_images[1].numpy()
    out = preprocess(sheet_on_desk(digit, angle, slope))
    assert any(s.startswith("a sheet of paper") for s in out.steps), out.steps
    x0, y0, x1, y1 = out.box
    assert 850 <= x0 < x1 <= 1250 and 450 <= y0 < y1 <= 850, out.box
    turned = np.asarray(Image.fromarray(np.pad(digit, 14)).rotate(angle, Image.Resampling.BILINEAR))
    assert np.corrcoef(out.image.ravel(), preprocess(turned).image.ravel())[0, 1] > 0.85
    assert preprocess(sheet_on_desk(None, angle, slope)).blank


@pytest.mark.parametrize("angle, slope", [(0.0, 0.3), (0.0, -0.3), (8.0, 0.2), (-12.0, -0.3)])
def test_a_blank_sheet_on_a_desk_is_blank(angle, slope):
    """No writing on it, under a lamp's gradient: "no digit" (the desk painted over with
    a flat colour once left an edge against the lit paper that read as a stroke). The
    sheet was the closer look: no second one at 512 px."""
    out = preprocess(sheet_on_desk(None, angle, slope))
    assert out.blank and out.on_sheet, out.steps
    assert any(s.startswith("a sheet of paper") for s in out.steps), out.steps
    assert not any("looked again" in s for s in out.steps), out.steps


def test_a_bold_chalk_digit_filling_a_photo_is_not_a_sheet(mnist):
    """Light strokes on a dark board, as bold as MNIST's boldest and filling the frame:
    read as the digit, not cut out as a sheet of paper."""
    digit = mnist.test_images[1].numpy()
    strokes = ndimage.grey_dilation(digit, size=(3, 3))  # bold
    board = np.asarray(Image.fromarray(strokes).resize((1400, 1400))).astype(np.float32)
    photo = np.full((1500, 2000), 40.0)
    photo[50:1450, 300:1700] += board * 0.7
    out = preprocess(photo.astype(np.uint8))
    assert not any(s.startswith("a sheet") for s in out.steps), out.steps
    assert np.corrcoef(out.image.ravel(), preprocess(strokes).image.ravel())[0, 1] > 0.9


def test_quantiles_are_nearest_rank_with_and_without_ties():
    """The fast path for ties (a blank background) must give np.percentile's
    nearest-rank answer, whether the quantile falls in the ties or above them."""
    rng = np.random.default_rng(0)
    qs = [0.0, 0.1, 0.5, 0.9, 0.995, 1.0]
    for zeros in (0.0, 0.3, 0.9, 0.999, 1.0):
        a = rng.random(5000).astype(np.float32)
        a[: int(zeros * a.size)] = 0.0
        rng.shuffle(a)
        expected = np.percentile(a, [100 * q for q in qs], method="nearest")
        assert quantiles(a, qs) == pytest.approx(expected.tolist(), abs=0), zeros


def test_grow_and_shrink_match_the_binary_morphology_they_replace():
    rng = np.random.default_rng(1)
    for shape in [(1, 1), (3, 7), (40, 33), (128, 128)]:
        for r in (1, 2, 3, 5):
            m = rng.random(shape) < 0.1
            square = np.ones((2 * r + 1, 2 * r + 1), bool)
            assert np.array_equal(grow(m, r), ndimage.binary_dilation(m, square))
            assert np.array_equal(shrink(m, r), ndimage.binary_erosion(m, square, border_value=0))


def test_otsu_maximizes_the_between_class_variance():
    """Against the textbook formula over every bin edge (empty classes skipped)."""
    rng = np.random.default_rng(2)
    for _ in range(50):
        v = np.concatenate([rng.normal(0.2, 0.05, 300), rng.normal(rng.uniform(0.4, 0.9), 0.1, 80)])
        v = np.clip(v, 0, 1).astype(np.float32)
        hist = np.bincount(np.minimum((v * 64).astype(int), 63), minlength=64) / v.size
        centers = (np.arange(64) + 0.5) / 64
        scores = []
        for k in range(64):
            w0 = hist[: k + 1].sum()
            m0 = (hist[: k + 1] * centers[: k + 1]).sum()
            spread = w0 * (1 - w0)
            mean = (hist * centers).sum()
            scores.append((mean * w0 - m0) ** 2 / spread if spread > 1e-12 else -1)
        # Empty bins between the classes tie: any of them is a right answer.
        chosen = int(np.flatnonzero(np.isclose(centers, otsu(v)))[0])
        assert scores[chosen] == pytest.approx(max(scores), rel=1e-9)
    assert otsu(np.full(10, 0.6, np.float32)) == pytest.approx(0.3)


def test_unused_channels_are_dropped_without_changing_the_grey_values(mnist):
    """A browser canvas is an opaque RGBA PNG even when grey: it becomes one channel
    with the same values. Transparency and colour are kept."""
    grey = 255 - big_digit(mnist.test_images[3].numpy(), 150, canvas=(160, 160))
    rgba = np.dstack([grey, grey, grey, np.full_like(grey, 255)])
    out = drop_unused_channels(Image.fromarray(rgba, "RGBA"))
    assert out.mode == "L" and np.array_equal(np.asarray(out), grey)
    assert np.allclose(flatten(out)[0], flatten(Image.fromarray(rgba, "RGBA"))[0], atol=1e-6)

    see_through = rgba.copy()
    see_through[0, 0, 3] = 0
    assert drop_unused_channels(Image.fromarray(see_through, "RGBA")).mode == "RGBA"
    tinted = rgba.copy()  # opaque, one pixel not grey: the alpha goes, the colour stays
    tinted[0, 0, 0] ^= 1
    assert drop_unused_channels(Image.fromarray(tinted, "RGBA")).mode == "RGB"
    red = rgba[..., :3].copy()
    red[grey < 128, 0] = 200
    assert drop_unused_channels(Image.fromarray(red, "RGB")).mode == "RGB"
    same_page = preprocess(Image.fromarray(rgba, "RGBA"))
    assert np.array_equal(same_page.image, preprocess(grey).image)


@pytest.mark.parametrize("mode", ["P", "PA", "CMYK", "I;16", "F", "HxWx1"])
def test_every_image_mode_above_the_working_size_reads_as_the_same_digit(mnist, mode):
    """GIF palettes (with transparency too), CMYK JPEGs, 16-bit PNG scans, float images
    and (H, W, 1) arrays take their own paths into the pipeline before the 128 px
    downscale. (16-bit greys were clipped at 255 by PIL: the digit read as blank.)"""
    digit = mnist.test_images[4].numpy()
    page = 255 - big_digit(digit, 200, offset=(50, 40), canvas=(300, 300))
    reference = preprocess(page)
    img = Image.fromarray(page)
    if mode == "P":
        src = encode(img.convert("P"), "GIF")
    elif mode == "PA":  # the paper transparent, as a GIF exporter writes it
        src = encode(img.convert("P"), "GIF", transparency=img.convert("P").getpixel((0, 0)))
    elif mode == "CMYK":
        src = encode(img.convert("CMYK"), "JPEG", quality=95)
    elif mode == "I;16":
        src = encode(Image.fromarray(page.astype(np.uint16) * 257), "PNG")
        assert Image.open(io.BytesIO(src)).mode == "I;16"
    elif mode == "F":
        src = Image.fromarray(page.astype(np.float32) / 255)
    else:
        src = page[..., None]
    out = preprocess(src)
    assert not out.blank and out.steps[0] == "downscaled to 128x128", out.steps
    assert np.corrcoef(out.image.ravel(), reference.image.ravel())[0, 1] > 0.95


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_ink_as_bright_as_its_paper_is_found_by_colour():
    """Red ink on green paper of nearly the same luminance: no grey contrast to speak of,
    so the digit is found by its colour distance from the paper."""
    yy, xx = np.mgrid[:200, :200]
    r = np.hypot(yy - 100, xx - 100)
    rgb = np.zeros((200, 200, 3), np.uint8)
    rgb[:] = (0, 150, 0)  # luminance 88
    rgb[(r > 45) & (r < 60)] = (255, 0, 0)  # luminance 76
    out = preprocess(rgb)
    assert "colour contrast" in out.steps and not out.blank
    ring = out.image > 0.5
    assert ring.any() and not ring[12:16, 12:16].any()  # a ring (a 0), hollow at the centre
    assert preprocess(rgb, robust=False).steps.count("colour contrast") == 0


def test_a_stroke_filling_its_crop_is_measured_not_thinned_away():
    """Found by fuzzing: a hard-edged bar fills its crop, and with no background inside
    the crop its width read as the crop's; thinning then erased it and centring divided
    by zero (a 500 from the server)."""
    assert stroke_width(np.ones((12, 80), np.float32)) == pytest.approx(11, abs=1)
    strip = np.zeros((64, 500), np.uint8)
    strip[27:33, 230:270] = 255
    out = preprocess(strip)
    assert not out.blank and out.box == (230, 27, 270, 33)
    assert out.image.max() > 0.5 and np.isfinite(out.image).all()


def test_a_thin_strip_maps_its_box_back_inside_the_image():
    """300x3 works at 1x128 px: the two axes scale by 1/3 and 0.43, and one factor for
    both put the digit's box past the bottom edge (the second look then crashed)."""
    strip = np.zeros((300, 3), np.uint8)
    strip[290:296] = 255
    out = preprocess(strip)
    assert out.box is not None and out.box[3] <= 300 and out.box[1] == 290
