"""The corrections store: what a record keeps, de-duplication, deletion, export, several
writers at once, and the same answers from SQLite and from a real PostgreSQL server."""

from __future__ import annotations

import base64
import csv
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from conftest import encode
from digitrec.cli import main
from digitrec.export import sha256
from digitrec.feedback import Correction, FeedbackError, FeedbackStore, export, stats
from digitrec.predictor import Predictor
from digitrec.runs import shipped_model_path
from digitrec.web.app import create_app
from digitrec.web.settings import Limits


def correction(seed: int, label: int = 7, predicted: int | None = 1, **kw) -> Correction:
    rng = np.random.default_rng(seed)
    image = rng.random((28, 28), dtype=np.float32)
    probs = np.full(10, 0.01)
    if predicted is not None:
        probs[predicted] = 0.91
    original = encode((image * 255).astype(np.uint8))
    kw = {"source": "cli", "original": original, **kw}
    return Correction(label, image, predicted, probs.tolist(), "ab" * 32, **kw)


def stores(tmp_path, postgres_url=None):
    yield FeedbackStore(f"sqlite:///{tmp_path / 'feedback.sqlite3'}")
    if postgres_url:
        yield FeedbackStore(postgres_url)


def test_a_correction_keeps_the_image_what_the_model_said_and_the_label(tmp_path):
    store = FeedbackStore(str(tmp_path / "f.sqlite3"))
    c = correction(0, label=7, predicted=1, source="web")
    record_id, new = store.add(c)
    assert new and record_id == 1
    [got] = store.records()
    assert (got.id, got.label, got.predicted, got.source) == (1, 7, 1, "web")
    np.testing.assert_array_equal(got.image, c.image)
    assert got.original == c.original and got.model_sha256 == "ab" * 32
    assert got.probabilities[1] == pytest.approx(0.91) and got.created
    assert got.content_hash == c.content_hash


def test_the_same_image_twice_is_one_record_with_the_latest_label(tmp_path):
    store = FeedbackStore(str(tmp_path / "f.sqlite3"))
    assert store.add(correction(0, label=7)) == (1, True)
    assert store.add(correction(0, label=9, original=None)) == (1, False)
    assert store.add(correction(1, label=7)) == (2, True)
    assert [(r.id, r.label) for r in store.records()] == [(1, 9), (2, 7)]


def test_delete_removes_a_record_and_an_unknown_one_is_named(tmp_path):
    store = FeedbackStore(str(tmp_path / "f.sqlite3"))
    store.add(correction(0))
    store.delete(1)
    assert store.count() == 0
    with pytest.raises(FeedbackError, match="no correction #1 in"):
        store.delete(1)


def test_bad_corrections_are_refused_with_what_to_give():
    for label in (10, -1, "7", True):
        with pytest.raises(FeedbackError, match="give the digit it is, 0 to 9"):
            correction(0, label=label)
    with pytest.raises(FeedbackError, match="over the 10 MB limit"):
        correction(0, original=b"x" * (10 * 2**20 + 1))
    with pytest.raises(FeedbackError, match="source 'phone'"):
        correction(0, source="phone")
    with pytest.raises(FeedbackError, match="give sqlite:///PATH"):
        FeedbackStore("mysql://somewhere/db")


def test_an_unreachable_store_is_one_clear_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(FeedbackError, match="cannot be opened"):
        FeedbackStore(str(tmp_path / "file" / "f.sqlite3")).count()
    (tmp_path / "not-a-database").write_text("a text file, not SQLite")
    with pytest.raises(FeedbackError, match=r"the corrections store .*not-a-database"):
        FeedbackStore(str(tmp_path / "not-a-database")).count()


def test_export_writes_a_png_per_record_in_label_folders_and_a_csv(tmp_path):
    store = FeedbackStore(str(tmp_path / "f.sqlite3"))
    store.add(correction(0, label=7))
    store.add(correction(1, label=3, predicted=3, original=None))
    assert export(store.records(), tmp_path / "out") == 2
    with Image.open(tmp_path / "out" / "7" / "1.png") as im:
        assert im.size == (28, 28)
    assert (tmp_path / "out" / "3" / "2.png").is_file()
    assert (tmp_path / "out" / "originals" / "1.png").read_bytes() == correction(0).original
    with open(tmp_path / "out" / "corrections.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["id"], r["label"], r["predicted"], r["file"]) for r in rows] == [
        ("1", "7", "1", "7/1.png"),
        ("2", "3", "3", "3/2.png"),
    ]
    s = stats(store.records())
    assert (s["records"], s["corrections"], s["confirmations"]) == (2, 1, 1)
    assert s["misread_as"] == {"7 read as 1": 1} and s["by_label"] == {"3": 1, "7": 1}


WRITER = """
import sys
sys.path.insert(0, sys.argv[3])
from test_feedback import correction
from digitrec.feedback import FeedbackStore
store = FeedbackStore(sys.argv[1])
for i in range(int(sys.argv[2]), int(sys.argv[2]) + 150):
    store.add(correction(i % 200))  # the two writers share 100 images
"""


@pytest.mark.slow
@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_two_processes_writing_at_once_lose_no_record(tmp_path, db, request):
    url = request.getfixturevalue("postgres_db") if db == "postgresql" else str(tmp_path / "f")
    code = textwrap.dedent(WRITER)
    writers = [
        subprocess.Popen([sys.executable, "-c", code, url, str(start), str(Path(__file__).parent)])
        for start in (0, 50)
    ]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    records = FeedbackStore(url).records()
    assert len(records) == 200
    assert len({r.content_hash for r in records}) == 200


@pytest.mark.slow
def test_postgresql_and_sqlite_give_the_same_answers(tmp_path, postgres_db):
    answers = []
    for store in stores(tmp_path, postgres_db):
        steps = [
            store.add(correction(0, label=7)),
            store.add(correction(1, label=2)),
            store.add(correction(0, label=4)),
            store.add(correction(2, predicted=None)),
        ]
        store.delete(2)
        records = store.records()
        export(records, tmp_path / store.kind)
        answers.append(
            (
                steps,
                [(r.label, r.predicted, r.source, r.content_hash, r.original) for r in records],
                [r.image.tobytes() for r in records],
                {k: v for k, v in stats(records).items()},
                sorted(
                    p.relative_to(tmp_path / store.kind).as_posix()
                    for p in (tmp_path / store.kind).rglob("*.png")
                ),
            )
        )
    assert [s.kind for s in stores(tmp_path, postgres_db)] == ["sqlite", "postgresql"]
    assert answers[0] == answers[1]


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """The app on the shipped model, its corrections in a store of its own."""
    url = str(tmp_path_factory.mktemp("api") / "feedback.sqlite3")
    limits = Limits(max_body_bytes=2_000_000)
    app = create_app(Predictor.load(shipped_model_path()), limits=limits, feedback_url=url)
    with TestClient(app) as client:
        yield client, FeedbackStore(url)


@pytest.fixture(scope="module")
def four(mnist) -> bytes:
    """A test 4, dark on a white canvas, as a PNG file."""
    i = int((mnist.test_labels == 4).nonzero()[0])
    return encode(255 - mnist.test_images[i].numpy())


def test_an_answer_is_corrected_by_its_prediction_id(api, four):
    client, store = api
    answer = client.post("/api/predict", content=four, headers={"content-type": "image/png"})
    assert answer.json()["digit"] == 4 and answer.json()["prediction_id"]
    r = client.post(
        "/api/feedback", json={"prediction_id": answer.json()["prediction_id"], "label": 9}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["label"], body["predicted"]) == (9, 4)
    record = store.get(body["id"])
    assert (record.label, record.predicted, record.source) == (9, 4, "web")
    assert record.original == four and record.model_sha256 == sha256(shipped_model_path())
    np.testing.assert_allclose(record.probabilities, answer.json()["probabilities"], atol=1e-6)
    # the same image again, by upload this time: one record, relabelled
    r = client.post(
        "/api/feedback", files={"file": ("4.png", four, "image/png")}, data={"label": "4"}
    )
    assert r.json() == {**body, "label": 4, "new": False}
    assert store.get(body["id"]).label == 4


def test_every_image_form_takes_a_label(api, mnist):
    client, store = api
    images = [255 - mnist.test_images[i].numpy() for i in range(3)]
    forms = [
        {
            "content": encode(images[0]),
            "headers": {"content-type": "image/png"},
            "params": {"label": "1"},
        },
        {"json": {"image": base64.b64encode(encode(images[1])).decode(), "label": 2}},
        {"json": {"pixels": mnist.test_images[2].numpy().tolist(), "label": 3}},
    ]
    ids = []
    for kw in forms:
        r = client.post("/api/feedback", **kw)
        assert r.status_code == 200 and r.json()["new"], r.text
        ids.append(r.json()["id"])
    assert [store.get(i).label for i in ids] == [1, 2, 3]
    assert store.get(ids[2]).original is None  # pixels have no file


@pytest.mark.parametrize(
    ("kwargs", "status", "words"),
    [
        ({"json": {"prediction_id": "0" * 32, "label": 3}}, 404, "no recent answer"),
        ({"json": {"prediction_id": "x", "label": 10}}, 422, "give the digit the image is"),
        ({"json": {"prediction_id": "x", "label": "seven"}}, 422, "0 to 9"),
        ({"json": {"prediction_id": "x", "label": 2.5}}, 422, "0 to 9"),
        ({"json": {"prediction_id": "x"}}, 422, '"label" None'),
        ({"json": {"label": 3}}, 422, 'send "prediction_id"'),
        ({"json": {"prediction_id": 7, "label": 3}}, 422, "must be the string"),
        ({"json": [1, 2]}, 422, '{"label": 0-9'),
        ({"json": {"pixels": [0] * 784, "label": 3}}, 422, "holds no digit"),
        ({"json": {"image": "bm90IGFuIGltYWdl", "label": 3}}, 422, "not a"),
        (
            {
                "content": b"x" * 2_100_000,
                "headers": {"content-type": "image/png"},
                "params": {"label": "3"},
            },
            413,
            "limit",
        ),
        ({"content": b"label=3", "headers": {"content-type": "text/plain"}}, 415, "not accepted"),
    ],
)
def test_bad_corrections_get_a_4xx_that_says_what_to_send(api, kwargs, status, words):
    client, store = api
    before = store.count()
    r = client.post("/api/feedback", **kwargs)
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]
    assert store.count() == before


def test_a_store_that_cannot_be_written_is_a_503_and_predictions_go_on(tmp_path, four):
    (tmp_path / "file").write_text("")
    app = create_app(
        Predictor.load(shipped_model_path()), feedback_url=str(tmp_path / "file" / "f.sqlite3")
    )
    with TestClient(app) as client:
        r = client.post(
            "/api/feedback", files={"file": ("4.png", four, "image/png")}, data={"label": "4"}
        )
        assert r.status_code == 503 and "cannot be stored now" in r.json()["detail"]
        r = client.post("/api/predict", content=four, headers={"content-type": "image/png"})
        assert r.json()["digit"] == 4


def test_correct_then_list_stats_export_and_delete_from_the_command_line(
    tmp_path, four, capsys, monkeypatch
):
    monkeypatch.setenv("DIGITREC_FEEDBACK_URL", str(tmp_path / "f.sqlite3"))
    (tmp_path / "4.png").write_bytes(four)
    assert main(["correct", str(tmp_path / "4.png"), "9"]) == 0
    assert "corrected as a 9 (the model said 4 (100%)); record #1" in capsys.readouterr().out
    assert main(["correct", str(tmp_path / "4.png"), "4"]) == 0
    assert "confirmed as a 4" in capsys.readouterr().out
    assert main(["feedback", "list"]) == 0
    assert re.search(r"\n\s+1\s+\S+\s+4\s+4 \(100%\)\s+cli", capsys.readouterr().out)
    assert main(["feedback", "stats", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["confirmations"] == 1
    assert main(["feedback", "export", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "4" / "1.png").is_file()
    assert main(["feedback", "delete", "1", "5"]) == 2  # one unknown: none deleted
    assert "error: no correction #5 in" in capsys.readouterr().err
    assert main(["feedback", "delete", "1"]) == 0
    assert main(["feedback", "delete", "1"]) == 2
    assert "error: no correction #1 in" in capsys.readouterr().err
    assert main(["feedback", "list"]) == 0
    assert "no corrections in" in capsys.readouterr().out
    (tmp_path / "empty.png").write_bytes(encode(np.full((50, 50), 255, np.uint8)))
    assert main(["correct", str(tmp_path / "empty.png"), "3"]) == 2
    assert "holds no digit" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["correct", str(tmp_path / "4.png"), "10"])
    assert "'10': give the digit it is, 0 to 9" in capsys.readouterr().err
