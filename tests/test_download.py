"""The downloader against a real HTTP server on 127.0.0.1, serving good and corrupted files."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from pathlib import Path

import pytest

from conftest import free_port, run_cli
from digitrec import data
from digitrec.errors import DataError

SPEC = data.DATASETS["mnist"]


@pytest.fixture(scope="module")
def mirrors(tmp_path_factory, mnist):
    """Two mirrors on one local server: /good/ with the real files, /bad/ with corrupted ones."""
    root = tmp_path_factory.mktemp("mirror")
    src = Path(mnist.files["train_images"]["path"]).parent
    (root / "good").mkdir()
    (root / "bad").mkdir()
    (root / "partial").mkdir()  # the test labels only
    shutil.copy(src / SPEC.files["test_labels"].name, root / "partial")
    for f in SPEC.files.values():
        shutil.copy(src / f.name, root / "good" / f.name)
        blob = bytearray((src / f.name).read_bytes())
        blob[len(blob) // 2] ^= 0xFF
        (root / "bad" / f.name).write_bytes(bytes(blob))
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    yield {
        "good": f"{base}/good/",
        "bad": f"{base}/bad/",
        "partial": f"{base}/partial/",
        "missing": f"{base}/nothing/",
    }
    server.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}/"


def test_download_verifies_and_loads(mirrors, tmp_path, mnist):
    data.download(SPEC, tmp_path, mirrors=[mirrors["good"]], log=lambda s: None)
    ds = data.load_dataset("mnist", tmp_path, download_missing=False)
    assert ds.train_labels.tolist() == mnist.train_labels.tolist()
    assert not list((tmp_path / "mnist").glob(".*"))  # no temporary files left


def test_corrupt_mirror_falls_through_to_the_next(mirrors, tmp_path):
    logs = []
    data.download(
        SPEC, tmp_path, ["test_labels"], mirrors=[mirrors["bad"], mirrors["good"]], log=logs.append
    )
    assert (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").is_file()
    assert len(logs) == 2


def test_checksum_mismatch_deletes_the_partial_file(mirrors, tmp_path):
    with pytest.raises(DataError, match="checksum mismatch") as err:
        data.download(SPEC, tmp_path, ["test_labels"], mirrors=[mirrors["bad"]], log=lambda s: 0)
    assert "the partial file was deleted" in str(err.value)
    assert list(tmp_path.iterdir()) == []  # nor the folder made for it


def test_a_failed_download_removes_only_the_folders_it_made(mirrors, tmp_path):
    typo = tmp_path / "typo" / "data"
    with pytest.raises(DataError):
        data.download(SPEC, typo, ["test_labels"], mirrors=[mirrors["missing"]], log=print)
    assert not (tmp_path / "typo").exists()
    # one file arrives, the other does not: the file and its folder stay
    with pytest.raises(DataError, match="missing t10k-images"):
        data.download(SPEC, typo, ["test_labels", "test_images"], mirrors=[mirrors["partial"]],
                      log=print)  # fmt: skip
    assert [f.name for f in (typo / "mnist").iterdir()] == ["t10k-labels-idx1-ubyte.gz"]


def test_offline_message_lists_files_mirrors_and_where_to_put_them(mirrors, tmp_path):
    dead = closed_port_url()
    with pytest.raises(DataError) as err:
        data.download(
            SPEC,
            tmp_path,
            ["test_images", "test_labels"],
            mirrors=[dead, mirrors["missing"]],
            timeout=5,
            log=lambda s: None,
        )
    msg = str(err.value)
    assert "t10k-images-idx3-ubyte.gz" in msg and "t10k-labels-idx1-ubyte.gz" in msg
    assert dead in msg and mirrors["missing"] in msg
    assert "404" in msg
    assert str(tmp_path / "mnist") in msg and "DIGITREC_DATA_DIR" in msg


@pytest.mark.slow
def test_cli_download_from_a_mirror(mirrors, tmp_path):
    r = run_cli("data", "download", "--data-dir", str(tmp_path), "--mirror", mirrors["good"])
    assert r.returncode == 0, r.stderr
    assert "all files present and verified" in r.stdout
    r = run_cli("data", "verify", "--data-dir", str(tmp_path))
    assert r.returncode == 0 and "5421" in r.stdout  # the count of fives in the training set


@pytest.mark.slow
def test_cli_download_failure_is_one_clear_error(tmp_path):
    r = run_cli("data", "download", "--data-dir", str(tmp_path), "--mirror", closed_port_url())
    assert r.returncode == 2
    assert r.stderr.startswith("error: Could not download")
    assert "Traceback" not in r.stderr
