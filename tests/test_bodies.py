"""Request bodies to images, without an app: what each form yields and how it is refused."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from digitrec.web.bodies import BadRequest, json_item, parse_json, pixels_to_array


def refused(fn, *args) -> tuple[int, str]:
    with pytest.raises(BadRequest) as err:
        fn(*args)
    return err.value.status_code, err.value.detail


def test_pixels_in_either_range_and_shape_become_one_28x28_in_0_1():
    ramp = np.arange(784) % 256
    a = pixels_to_array(ramp.tolist())
    b = pixels_to_array((ramp / 255).reshape(28, 28).tolist())
    assert a.shape == b.shape == (28, 28) and a.dtype == np.float32
    assert np.allclose(a, b) and a.max() == pytest.approx(1.0)
    assert refused(pixels_to_array, [0.5] * 783) == (
        422,
        "pixels has shape (783,); send 784 values or 28 rows of 28",
    )
    assert refused(pixels_to_array, [[1, 2], [3]])[0] == 422
    assert "NaN or infinite" in refused(pixels_to_array, [float("inf")] * 784)[1]


def test_json_items_are_base64_images_or_pixels():
    png = b"\x89PNG fake bytes"
    b64 = base64.b64encode(png).decode()
    assert json_item({"image": b64}, "x") == png
    assert json_item({"image": "data:image/png;base64," + b64}, "x") == png
    assert json_item({"pixels": [0] * 784}, "x").shape == (28, 28)
    assert refused(json_item, {"picture": b64}, "images[3]") == (
        422,
        'images[3] must be an object with "image" or "pixels"',
    )
    assert "only base64 data URLs" in refused(json_item, {"image": "data:image/png,x"}, "x")[1]


def test_json_that_would_break_the_parser_is_a_422():
    assert parse_json(b'{"pixels": [1, 2.5]}') == {"pixels": [1.0, 2.5]}
    assert refused(parse_json, b"[" * 5000 + b"]" * 5000)[0] == 422
    assert parse_json(b"[" + b"9" * 5000 + b"]") == [float("inf")]  # not past int()'s limit
    assert refused(parse_json, b"\xff\xfe not utf-8")[0] == 422
