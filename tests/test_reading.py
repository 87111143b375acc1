"""Reading whole numbers: real MNIST digits composed into numbers, read back as text with
each digit's box in the image's own pixels; through the API as through the library."""

import base64
import shutil

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from conftest import compose, encode
from digitrec.compose import compose as compose_number
from digitrec.predictor import Predictor
from digitrec.reading import read
from digitrec.runs import shipped_model_path
from digitrec.web.app import create_app


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.load()


def test_a_number_reads_as_its_digits_with_their_boxes_in_source_pixels(predictor, glyphs):
    img, boxes = compose(glyphs, ["4096"])
    r = read(predictor, encode(img))
    assert r.text == "4096" and not r.blank and r.source_size == img.size
    assert [c.line for c in r.chars] == [0] * 4
    for c, (x0, y0, x1, y1) in zip(r.chars, boxes, strict=True):
        cx, cy = (c.box[0] + c.box[2]) / 2, (c.box[1] + c.box[3]) / 2
        assert x0 <= cx <= x1 and y0 <= cy <= y1, (c.box, (x0, y0, x1, y1))
        assert len(c.probabilities) == 10 and c.confidence == max(c.probabilities)
        assert sum(c.probabilities) == pytest.approx(1, abs=1e-5)
    assert r.confidence == pytest.approx(np.prod([c.confidence for c in r.chars]))


def test_every_digit_in_order(predictor, glyphs):
    img, _ = compose(glyphs, ["1234567890"])
    assert read(predictor, encode(img)).text == "1234567890"


def test_two_lines_read_top_to_bottom(predictor, glyphs):
    img, _ = compose(glyphs, ["2026", "731"])
    r = read(predictor, encode(img))
    assert r.text == "2026\n731" and [c.line for c in r.chars] == [0] * 4 + [1] * 3


def test_a_decimal_point_is_a_point_not_a_one(predictor, glyphs):
    img, _ = compose(glyphs, ["3.14"])
    r = read(predictor, encode(img))
    assert r.text == "3.14"
    point = r.chars[1]
    assert point.char == "." and point.probabilities is None


def test_a_comma_has_a_tail_and_a_point_a_little_low_is_still_a_point(predictor, glyphs):
    assert read(predictor, encode(compose(glyphs, ["3,14"])[0])).text == "3,14"
    img, boxes = compose(glyphs, ["314"], gap=14)
    (_, _, x1, y1), (x0, *_) = boxes[:2]
    ImageDraw.Draw(img).ellipse([(x1 + x0) / 2 - 5, y1 - 3, (x1 + x0) / 2 + 5, y1 + 7], fill=0)
    assert read(predictor, encode(img)).text == "3.14"  # its bottom 7 px below the digits'


def test_one_digit_reads_as_that_digit_and_a_blank_as_nothing(predictor, glyphs):
    img, _ = compose(glyphs, ["7"])
    assert read(predictor, encode(img)).text == "7"
    r = read(predictor, encode(Image.new("L", (300, 100), 255)))
    assert r.blank and r.text == "" and r.uncertain and r.confidence == 0.0


def test_a_digit_drawn_in_two_strokes_is_one_digit(predictor):
    """A 7 whose bar and stem are two strokes, a 1 after it: the pieces that overlap
    across belong together."""
    img = Image.new("L", (300, 160), 255)
    d = ImageDraw.Draw(img)
    d.line([(30, 30), (100, 30)], fill=0, width=9)  # the 7's bar, lifted pen
    d.line([(100, 42), (60, 130)], fill=0, width=9)  # its stem, not touching the bar
    d.line([(190, 30), (190, 130)], fill=0, width=9)  # a 1
    assert read(predictor, encode(img)).text == "71"


def test_specks_and_a_ruled_line_are_ignored(predictor, glyphs):
    img, _ = compose(glyphs, ["58"])
    a = np.asarray(img).copy()
    a[a.shape[0] - 6 : a.shape[0] - 4, :] = 40  # a ruled line across the page
    a[5:7, 5:7] = 0  # specks
    a[5:7, -8:-6] = 0
    assert read(predictor, encode(Image.fromarray(a))).text == "58"


@pytest.fixture(scope="module")
def client(predictor):
    with TestClient(create_app(predictor)) as c:
        yield c


def test_the_api_reads_numbers_in_every_input_form(client, glyphs):
    img, boxes = compose(glyphs, ["42"])
    png = encode(img)
    forms = [
        {"files": {"file": ("n.png", png, "image/png")}},
        {"content": png, "headers": {"content-type": "image/png"}},
        {"json": {"image": base64.b64encode(png).decode()}},
    ]
    for kw in forms:
        r = client.post("/api/read", **kw)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["text"] == "42" and body["source_size"] == list(img.size)
        assert [d["char"] for d in body["digits"]] == ["4", "2"]
        assert body["digits"][0]["box"][2] <= boxes[1][0] + 6  # the 4 ends before the 2
        assert body["model"]["name"] and body["latency_ms"] > 0


@pytest.mark.parametrize(
    ("kw", "status", "words"),
    [
        ({"content": b"not an image", "headers": {"content-type": "image/png"}}, 422, "image"),
        ({"json": {"image": "%%%"}}, 422, "base64"),
        ({"json": {"nothing": 1}}, 422, "image"),
    ],
)
def test_bad_input_to_read_is_a_4xx_with_a_reason(client, kw, status, words):
    r = client.post("/api/read", **kw)
    assert r.status_code == status and words in r.json()["detail"], r.text


def test_read_is_documented(client):
    spec = client.get("/openapi.json").json()
    op = spec["paths"]["/api/read"]["post"]
    assert {"413", "422"} <= set(op["responses"]) and "multipart/form-data" in str(op)
    assert "ReadingBody" in spec["components"]["schemas"]


def test_a_damaged_line_model_is_a_503_naming_the_file_and_spares_lines_apart(tmp_path, glyphs):
    base = tmp_path / "m.safetensors"
    shutil.copy(shipped_model_path(), base)
    (tmp_path / "m.lines.safetensors").write_bytes(b"not a model")
    rng = np.random.default_rng(0)
    touching = compose_number([glyphs[4], glyphs[2]], rng, (0, 0), 60).framed(0.3, rng)
    png = {"headers": {"content-type": "image/png"}}
    with TestClient(create_app(Predictor.load(base))) as c:
        r = c.post("/api/read", content=touching.png(), **png)
        assert r.status_code == 503 and "m.lines.safetensors" in r.json()["detail"], r.text
        apart = c.post("/api/read", content=encode(compose(glyphs, ["42"])[0]), **png)
        assert apart.status_code == 200 and apart.json()["text"] == "42"


def test_a_line_the_line_model_reads_nothing_in_is_an_answer_not_an_error(mnist):
    """A 7 scribbled in touching horizontal strokes (as the page's tests draw digits):
    the line model finds no character in it; that was a 500 from /api/read."""
    from strokes import ink_runs

    img = Image.new("L", (128, 128), 255)
    pen, cell = ImageDraw.Draw(img), 128 / 28
    for r, c0, c1 in ink_runs(mnist.test_images[0].numpy()):
        pen.line([(c0 * cell, r * cell), (c1 * cell, r * cell)], fill=17, width=9)
    reading = read(Predictor.load(), img)  # raised before
    assert len(reading.chars) == len(reading.text.replace("\n", ""))
