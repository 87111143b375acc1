import gzip
import shutil
import struct

import numpy as np
import pytest
import torch

from conftest import missing_system_package
from digitrec import data
from digitrec.errors import DataError


def idx_bytes(arr: np.ndarray) -> bytes:
    return (
        struct.pack(">HBB", 0, 0x08, arr.ndim)
        + struct.pack(f">{arr.ndim}I", *arr.shape)
        + (arr.astype(np.uint8).tobytes())
    )


def test_parse_idx_round_trip():
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    np.testing.assert_array_equal(data.parse_idx(idx_bytes(images)), images)
    labels = np.array([3, 1, 4], dtype=np.uint8)
    np.testing.assert_array_equal(data.parse_idx(idx_bytes(labels)), labels)


@pytest.mark.parametrize(
    "blob, words",
    [
        (b"", "too short"),
        (b"\x00\x00", "too short"),
        (b"PK\x03\x04" + bytes(100), "bad IDX magic"),
        (b"\x00\x00\x08\x03\x00\x00", "truncated IDX header"),
        (idx_bytes(np.zeros((3, 28, 28)))[:-5], "truncated"),
        (idx_bytes(np.zeros((3,))) + b"\x01", "trailing bytes"),
    ],
)
def test_parse_idx_rejects_malformed(blob, words):
    with pytest.raises(DataError, match=words) as err:
        data.parse_idx(blob, "train-labels-idx1-ubyte")
    assert "train-labels-idx1-ubyte" in str(err.value)


def test_read_idx_gzip_and_truncated_gzip(tmp_path):
    labels = np.array([1, 2, 3], dtype=np.uint8)
    good = tmp_path / "l.gz"
    good.write_bytes(gzip.compress(idx_bytes(labels)))
    np.testing.assert_array_equal(data.read_idx(good), labels)
    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress(idx_bytes(np.zeros(5000)))[:40])
    with pytest.raises(DataError, match="corrupt or truncated gzip") as err:
        data.read_idx(bad)
    assert "bad.gz" in str(err.value)


def test_real_mnist_shapes_and_counts(mnist):
    assert mnist.train_images.shape == (60000, 28, 28)
    assert mnist.train_images.dtype == torch.uint8
    assert mnist.test_images.shape == (10000, 28, 28)
    assert mnist.train_labels.bincount().tolist() == [
        5923,
        6742,
        5958,
        6131,
        5842,
        5421,
        5918,
        6265,
        5851,
        5949,
    ]
    assert mnist.test_labels.bincount().tolist() == [
        980,
        1135,
        1032,
        1010,
        982,
        892,
        958,
        1028,
        974,
        1009,
    ]
    assert {f["md5"] for f in mnist.files.values()} == {
        f.md5 for f in data.DATASETS["mnist"].files.values()
    }


def _mnist_source_dir(mnist) -> str:
    return str(data.Path(mnist.files["train_images"]["path"]).parent)


def test_decompressed_copies_verify_by_content(mnist, tmp_path):
    src = data.Path(_mnist_source_dir(mnist))
    (tmp_path / "mnist").mkdir()
    for f in data.DATASETS["mnist"].files.values():
        raw = gzip.decompress((src / f.name).read_bytes())
        (tmp_path / "mnist" / f.name.removesuffix(".gz")).write_bytes(raw)
    ds = data.load_dataset("mnist", tmp_path, download_missing=False)
    assert torch.equal(ds.test_images, mnist.test_images)
    assert {f["verified"] for f in ds.files.values()} == {"content MD5"}


def test_checksum_mismatch_is_a_clear_error(mnist, tmp_path):
    src = data.Path(_mnist_source_dir(mnist))
    (tmp_path / "mnist").mkdir()
    for f in data.DATASETS["mnist"].files.values():
        shutil.copy(src / f.name, tmp_path / "mnist" / f.name)
    labels = tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[100] = (raw[100] + 1) % 10  # one label changed: still a valid IDX file
    labels.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataError, match="checksum mismatch") as err:
        data.load_dataset("mnist", tmp_path, download_missing=False)
    assert "t10k-labels-idx1-ubyte.gz" in str(err.value)
    assert "digitrec data download" in str(err.value)


def test_missing_files_without_download(tmp_path):
    with pytest.raises(DataError, match="not found") as err:
        data.load_dataset("mnist", tmp_path, download_missing=False)
    assert "train-images-idx3-ubyte.gz" in str(err.value)
    assert "DIGITREC_DATA_DIR" in str(err.value)


def test_data_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("DIGITREC_DATA_DIR", str(tmp_path / "env"))
    assert data.resolve_data_dir(tmp_path / "flag") == tmp_path / "flag"
    assert data.resolve_data_dir() == tmp_path / "env"
    monkeypatch.delenv("DIGITREC_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data.resolve_data_dir() == tmp_path / "cache" / "digitrec" / "data"


def test_split_is_seeded_and_disjoint():
    train, val = data.split_indices(60000, 5000, seed=0)
    assert len(train) == 55000 and len(val) == 5000
    assert len(set(train.tolist()) | set(val.tolist())) == 60000
    assert torch.equal(val, data.split_indices(60000, 5000, seed=0)[1])
    assert not torch.equal(val, data.split_indices(60000, 5000, seed=1)[1])
    with pytest.raises(DataError):
        data.split_indices(100, 100, seed=0)


def test_unknown_dataset():
    with pytest.raises(DataError, match="fashion-mnist"):
        data.get_spec("cifar")


def test_fashion_mnist_loads():
    spec = data.get_spec("fashion-mnist")
    if not any(data.find_file(spec, "test_labels", d) for d in [data.resolve_data_dir()]):
        missing_system_package("Fashion-MNIST (Debian: dataset-fashion-mnist)")
    ds = data.load_dataset("fashion-mnist", download_missing=False)
    assert ds.train_images.shape == (60000, 28, 28)
    assert ds.test_labels.bincount().tolist() == [1000] * 10
    assert ds.spec.classes[9] == "Ankle boot"
