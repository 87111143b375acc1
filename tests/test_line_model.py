"""The line model: lines of touching and overlapping digits read whole, with each digit's
box on its own ink; trained by `digitrec train-lines`, found beside its digit model, else
the shipped one."""

import json
import shutil

import numpy as np
import pytest

from conftest import run_cli
from digitrec.checkpoint import read_meta
from digitrec.compose import compose as compose_number
from digitrec.errors import CheckpointError
from digitrec.models import LineModel
from digitrec.predictor import Predictor
from digitrec.preprocess import ink_map
from digitrec.preprocess.segment import find_lines
from digitrec.reading import READ_SIDE, ctc_runs, read
from digitrec.runs import companion_or_shipped, shipped_model_path


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.load(shipped_model_path())


def test_ctc_decoding_merges_repeats_and_needs_a_blank_between_equal_digits():
    runs = ctc_runs(np.array([0, 4, 4, 0, 4, 6, 6, 0, 0]))
    assert runs == [(4, [1, 2]), (4, [4]), (6, [5, 6])]
    assert ctc_runs(np.zeros(5, int)) == []


@pytest.mark.parametrize(
    ("text", "gaps"),
    [("4096", (0, 0)), ("2718", (0, 0)), ("1357", (0, 0)), ("8642", (0, 0)),
     ("2024", (-1, -1)), ("5274", (-2, -2)), ("3850", (-2, -2)), ("7230", (-3, -3))],
)  # fmt: skip
def test_touching_and_overlapping_digits_are_read_whole_each_boxed_on_its_ink(
    predictor, glyphs, text, gaps
):
    rng = np.random.default_rng(0)
    number = compose_number([glyphs[int(ch)] for ch in text], rng, gaps, 60).framed(0.3, rng)
    ink = ink_map(number.canvas(), READ_SIDE)
    assert [ln.touching for ln in find_lines(ink.ink > ink.threshold)] == [True]
    reading = read(predictor, number.png())
    assert reading.text == text
    for k, ch in enumerate(reading.chars):  # the box's centre lies on columns of its digit
        x0, _, x1, _ = ch.box
        cols = np.flatnonzero((number.owner == k).any(0))
        assert cols[0] <= (x0 + x1) / 2 <= cols[-1], (k, ch.box, cols[[0, -1]])
        assert abs(sum(ch.probabilities) - 1) < 1e-5


def test_a_digit_model_without_its_own_line_model_uses_the_shipped_one(tmp_path):
    assert companion_or_shipped(
        tmp_path / "m.safetensors", "lines"
    ) == shipped_model_path().with_name("default.lines.safetensors")
    assert isinstance(Predictor.load().line_model(), LineModel)


def test_a_line_model_that_is_not_one_is_refused_with_its_name(tmp_path):
    base = tmp_path / "m.safetensors"
    shutil.copy(shipped_model_path(), base)
    shutil.copy(shipped_model_path(), tmp_path / "m.lines.safetensors")
    with pytest.raises(CheckpointError, match=r"m\.lines\.safetensors is not a line model"):
        Predictor.load(base, backend="torch").line_model()


@pytest.mark.slow
def test_train_lines_writes_a_line_model_that_read_finds(tmp_path):
    base = tmp_path / "m.safetensors"
    shutil.copy(shipped_model_path(), base)
    args = ["train-lines", "--model-path", str(base), "--lines", "500", "--epochs", "0.1",
            "--workers", "1"]  # fmt: skip
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "m.lines.safetensors"
    assert "lines read exactly" in done.stdout and str(out) in done.stdout
    meta = read_meta(out)
    assert meta["model"] == "lines" and meta["classes"] == ["blank", *"0123456789"]
    assert 400 < meta["training"]["lines"] <= 500 and meta["training"]["seed"] == 0
    assert set(meta["training"]["validation"]) == {"lines_exact", "digits_in_place", "lines"}
    json.dumps(meta)  # the provenance is plain JSON
    assert companion_or_shipped(base, "lines") == out
    assert isinstance(Predictor.load(base, backend="torch").line_model(), LineModel)

    again = run_cli(*args)  # never overwritten without --force
    assert again.returncode == 2 and "already exists" in again.stderr
