"""The reading model: the reader's crops of composed numbers labelled by what they hold, a
tiny fine-tune through the CLI, and the model found beside its digit model."""

import json
import shutil

import numpy as np
import pytest

from conftest import run_cli
from digitrec.checkpoint import read_meta
from digitrec.compose import Number
from digitrec.compose import compose as compose_number
from digitrec.predictor import Predictor
from digitrec.reading_model import labelled_crops
from digitrec.runs import reading_model_path, shipped_model_path


def first_of(mnist, label: int) -> np.ndarray:
    return mnist.train_images[int(np.flatnonzero(mnist.train_labels.numpy() == label)[0])].numpy()


def test_a_crop_of_one_whole_digit_is_that_digit_and_one_of_two_digits_is_none(mnist):
    rng = np.random.default_rng(0)
    number = compose_number([first_of(mnist, 1), first_of(mnist, 7)], rng, (2, 2), 60)
    images, labels = labelled_crops(number.framed(0.3, rng), [1, 7])
    assert labels == [1, 10, 7]  # the 1, both together, the 7
    assert all(im.shape == (28, 28) and im.dtype == np.uint8 and im.max() > 200 for im in images)


def test_a_crop_of_one_stroke_of_a_broken_digit_is_none(mnist):
    rng = np.random.default_rng(1)
    number = compose_number([first_of(mnist, 0), first_of(mnist, 4)], rng, (4, 4), 60)
    zero = np.flatnonzero((number.owner == 0).any(0))
    gap = slice(zero[0] + len(zero) // 2 - 2, zero[0] + len(zero) // 2 + 2)
    strokes, owner = number.strokes.copy(), number.owner.copy()
    strokes[:, gap], owner[:, gap] = 0, -1  # the 0 broken into a left and a right stroke
    number = Number(strokes, owner)
    _, labels = labelled_crops(number.framed(0.3, rng), [0, 4])
    assert labels.count(10) >= 2 and 0 in labels and 4 in labels  # halves none, whole 0


def test_a_line_of_touching_digits_gives_no_crops(mnist):
    rng = np.random.default_rng(1)
    zero = first_of(mnist, 0)
    number = compose_number([zero, zero, zero], rng, (0, 0), 60)  # the line model's
    assert labelled_crops(number.framed(0.3, rng), [0, 0, 0]) == ([], [])


@pytest.mark.slow
def test_train_reader_writes_a_model_with_a_none_class_that_read_finds(tmp_path):
    base = tmp_path / "m.safetensors"
    shutil.copy(shipped_model_path(), base)
    args = ["train-reader", "--model-path", str(base), "--numbers", "6", "--epochs", "0.001"]
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for row in ("digits read right", "digits called none", "number crops labelled right"):
        assert row in out
    reader = reading_model_path(base)
    assert reader.name == "m.reader.safetensors" and str(reader) in out
    meta = read_meta(reader)
    assert meta["classes"] == [str(d) for d in range(10)] + ["none"]
    assert meta["reading"]["numbers"] == 6 and meta["reading"]["base_sha256"]
    assert 0.9 < meta["reading"]["validation"]["digits_acc"] <= 1
    json.dumps(meta)  # the provenance is plain JSON

    predictor = Predictor.load(base, backend="torch")
    assert predictor.reading_model().path == reader
    assert predictor.reading_model() is predictor.reading_model()  # loaded once
    assert Predictor.load(reader, backend="torch").reading_model().path == reader  # no companion

    again = run_cli(*args)  # never overwritten without --force
    assert again.returncode == 2 and "already exists" in again.stderr


@pytest.mark.slow
def test_train_reader_refuses_an_export():
    onnx = shipped_model_path().with_suffix(".onnx")
    done = run_cli("train-reader", "--model-path", str(onnx))
    assert done.returncode == 2 and "not an export" in done.stderr


@pytest.mark.slow
def test_train_reader_refuses_an_out_it_cannot_write_before_training(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    done = run_cli("train-reader", "--out", str(blocker / "m.reader.safetensors"), timeout=60)
    assert done.returncode == 2 and "is not a writable directory" in done.stderr
    assert "crops of" not in done.stdout  # refused before composing a single number
