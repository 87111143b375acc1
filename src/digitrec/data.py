"""MNIST-format datasets: IDX parsing, checksum-verified download, in-memory tensors.

The whole of MNIST is 55 MB as uint8, so every dataset lives in memory as one
tensor: no DataLoader, no per-sample Python. Files are looked up in the data
directory (flag, then ``DIGITREC_DATA_DIR``, then the user cache), then in the
places system packages install them, and only then downloaded from the official
mirrors, each file verified by MD5 before it is renamed into place.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from digitrec.errors import DataError

DATA_DIR_ENV = "DIGITREC_DATA_DIR"
FILE_KINDS = ("train_images", "train_labels", "test_images", "test_labels")

# IDX type codes -> numpy dtypes (big-endian, as the format stores them).
_IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


@dataclass(frozen=True)
class FileSpec:
    """One file of a dataset: its canonical name, the MD5 the mirrors publish for the
    gzip file, and the MD5 of its decompressed IDX bytes (which survives re-compression,
    e.g. by a distribution package)."""

    name: str
    md5: str
    raw_md5: str


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    title: str
    classes: tuple[str, ...]
    files: dict[str, FileSpec]
    mirrors: tuple[str, ...]
    mean: float
    std: float
    system_dirs: tuple[str, ...] = ()


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        title="MNIST handwritten digits",
        classes=tuple(str(d) for d in range(10)),
        files={
            "train_images": FileSpec(
                "train-images-idx3-ubyte.gz",
                "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "6bbc9ace898e44ae57da46a324031adb",
            ),
            "train_labels": FileSpec(
                "train-labels-idx1-ubyte.gz",
                "d53e105ee54ea40749a09fcbcd1e9432",
                "a25bea736e30d166cdddb491f175f624",
            ),
            "test_images": FileSpec(
                "t10k-images-idx3-ubyte.gz",
                "9fb629c4189551a2d022fa330f9573f3",
                "2646ac647ad5339dbf082846283269ea",
            ),
            "test_labels": FileSpec(
                "t10k-labels-idx1-ubyte.gz",
                "ec29112dd5afa0611ce80d1b7f02629c",
                "27ae3e4e09519cfbb04c329615203637",
            ),
        },
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        mean=0.1307,
        std=0.3081,
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        title="Fashion-MNIST (Zalando)",
        classes=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        files={
            "train_images": FileSpec(
                "train-images-idx3-ubyte.gz",
                "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "f4a8712d7a061bf5bd6d2ca38dc4d50a",
            ),
            "train_labels": FileSpec(
                "train-labels-idx1-ubyte.gz",
                "25c81989df183df01b3e8a0aad5dffbe",
                "9018921c3c673c538a1fc5bad174d6f9",
            ),
            "test_images": FileSpec(
                "t10k-images-idx3-ubyte.gz",
                "bef4ecab320f06d8554ea6380940ec79",
                "8181f5470baa50b63fa0f6fddb340f0a",
            ),
            "test_labels": FileSpec(
                "t10k-labels-idx1-ubyte.gz",
                "bb300cfdad3c16e7a12a480ee83cd310",
                "15d484375f8d13e6eb1aabb0c3f46965",
            ),
        },
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        mean=0.2860,
        std=0.3530,
        # Debian/Ubuntu: apt install dataset-fashion-mnist
        system_dirs=("/usr/share/datasets/fashion-mnist",),
    ),
}


def get_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"Unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}") from None


# ---------------------------------------------------------------------------- IDX


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes, checking the magic number and that the length matches the header."""
    if len(data) < 4:
        raise DataError(f"{source}: only {len(data)} bytes, too short for an IDX header")
    zero, type_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or type_code not in _IDX_DTYPES or ndim == 0:
        raise DataError(
            f"{source}: bad IDX magic number 0x{data[:4].hex()} "
            "(expected 0x0000 then a type code and a dimension count); not an IDX file"
        )
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataError(f"{source}: truncated IDX header ({len(data)} of {header_len} bytes)")
    dims = struct.unpack(f">{ndim}I", data[4:header_len])
    dtype = _IDX_DTYPES[type_code]
    expected = header_len + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise DataError(
            f"{source}: {what}: header says shape {tuple(dims)} ({expected} bytes), "
            f"file has {len(data)} bytes. Delete it so it can be downloaded again."
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=False)


def read_file_bytes(path: Path) -> bytes:
    """The file's IDX bytes, decompressing gzip when the file starts with its magic."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(
                f"{path}: corrupt or truncated gzip ({exc}). "
                "Delete it so it can be downloaded again."
            ) from None
    return raw


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    path = Path(path)
    return parse_idx(read_file_bytes(path), str(path))


# ------------------------------------------------------------------ locating files


def default_data_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(cache) / "digitrec" / "data"


def resolve_data_dir(flag: str | os.PathLike[str] | None = None) -> Path:
    """--data-dir, then $DIGITREC_DATA_DIR, then ~/.cache/digitrec/data."""
    if flag:
        return Path(flag).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return default_data_dir()


def candidate_dirs(spec: DatasetSpec, data_dir: Path) -> list[Path]:
    return [data_dir / spec.name, data_dir, *map(Path, spec.system_dirs)]


def find_file(spec: DatasetSpec, kind: str, data_dir: Path) -> Path | None:
    """Where a dataset file already is: gzip or decompressed, in any candidate directory."""
    fname = spec.files[kind].name
    for d in candidate_dirs(spec, data_dir):
        for name in (fname, fname.removesuffix(".gz")):
            if (d / name).is_file():
                return d / name
    return None


# --------------------------------------------------------------------- download


def md5_bytes(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def download_file(url: str, dest: Path, md5: str, timeout: float = 30.0) -> None:
    """Stream ``url`` to ``dest``, verifying its MD5 before the atomic rename.

    A mismatch deletes the partial file and raises: a bad mirror never leaves a
    corrupt file where the loader would find it.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            while chunk := resp.read(1 << 16):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        got = digest.hexdigest()
        if got != md5:
            raise DataError(
                f"{url}: checksum mismatch (MD5 {got}, expected {md5}); "
                "the partial file was deleted"
            )
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)


def download(
    spec: DatasetSpec,
    data_dir: Path,
    kinds: list[str] | None = None,
    mirrors: list[str] | tuple[str, ...] | None = None,
    timeout: float = 30.0,
    log=print,
) -> None:
    """Download the missing ``kinds`` into ``data_dir/<dataset>/``, trying each mirror in turn."""
    kinds = list(kinds if kinds is not None else FILE_KINDS)
    mirrors = tuple(mirrors) if mirrors else spec.mirrors
    target_dir = data_dir / spec.name
    # Folders this call makes, deepest first: a download that fails leaves none behind
    # (a mistyped --data-dir left an empty tree).
    made = [d for d in (target_dir, *target_dir.parents) if not d.exists()]
    failures: dict[str, list[str]] = {}
    for kind in kinds:
        f = spec.files[kind]
        errors = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + f.name
            log(f"downloading {url}")
            try:
                download_file(url, target_dir / f.name, f.md5, timeout=timeout)
                break
            except DataError as exc:
                errors.append(str(exc))
            except urllib.error.HTTPError as exc:
                errors.append(f"{url}: HTTP {exc.code} {exc.reason}")
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                errors.append(f"{url}: {getattr(exc, 'reason', exc)}")
        else:
            failures[f.name] = errors
    if failures:
        for d in made:
            try:
                d.rmdir()
            except OSError:  # a file did arrive there
                break
        tried = "\n".join(f"  {e}" for errs in failures.values() for e in errs)
        raise DataError(
            f"Could not download {spec.title}: missing {', '.join(failures)}.\n"
            f"Tried:\n{tried}\n"
            f"Without a network, copy the files (gzip or decompressed) into {target_dir} "
            f"by hand, or point --data-dir or ${DATA_DIR_ENV} at a directory holding "
            f"{spec.name}/."
        )


# ------------------------------------------------------------------------- load


@dataclass
class Dataset:
    """A dataset held entirely in memory as uint8 image and int64 label tensors."""

    spec: DatasetSpec
    train_images: torch.Tensor  # (60000, 28, 28) uint8
    train_labels: torch.Tensor  # (60000,) int64
    test_images: torch.Tensor
    test_labels: torch.Tensor
    files: dict[str, dict[str, str]] = field(default_factory=dict)  # kind -> path, md5

    @property
    def num_classes(self) -> int:
        return len(self.spec.classes)


def _verify(spec: DatasetSpec, kind: str, path: Path) -> tuple[bytes, str, str]:
    """IDX bytes of a local file after checking it is the canonical one: the file's MD5
    or, for a re-compressed or decompressed copy, the MD5 of its IDX content."""
    f = spec.files[kind]
    raw = path.read_bytes()
    file_md5 = md5_bytes(raw)
    if file_md5 == f.md5:
        return read_file_bytes(path), file_md5, "file MD5"
    idx = read_file_bytes(path)
    if md5_bytes(idx) == f.raw_md5:
        return idx, file_md5, "content MD5"
    raise DataError(
        f"{path}: checksum mismatch (MD5 {file_md5}, expected {f.md5} for the official "
        f"{f.name}). The file is corrupt or not the official data; delete it and run "
        "`digitrec data download` to fetch it again."
    )


def load_dataset(
    name: str = "mnist",
    data_dir: str | os.PathLike[str] | None = None,
    download_missing: bool = True,
    log=print,
) -> Dataset:
    spec = get_spec(name)
    root = resolve_data_dir(data_dir)
    missing = [k for k in FILE_KINDS if find_file(spec, k, root) is None]
    if missing:
        if not download_missing:
            names = ", ".join(spec.files[k].name for k in missing)
            raise DataError(
                f"{spec.title}: {names} not found in {root / spec.name}. "
                "Run `digitrec data download`, or point --data-dir or "
                f"${DATA_DIR_ENV} at a directory holding {spec.name}/."
            )
        download(spec, root, missing, log=log)
    arrays: dict[str, np.ndarray] = {}
    files: dict[str, dict[str, str]] = {}
    for kind in FILE_KINDS:
        path = find_file(spec, kind, root)
        assert path is not None
        idx, file_md5, verified = _verify(spec, kind, path)
        arrays[kind] = parse_idx(idx, str(path))
        files[kind] = {"path": str(path.resolve()), "md5": file_md5, "verified": verified}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(
                f"{spec.title} {split}: images {images.shape} and labels {labels.shape} "
                "do not pair up (expected (N, 28, 28) and (N,))"
            )
    return Dataset(
        spec=spec,
        train_images=torch.from_numpy(arrays["train_images"].copy()),
        train_labels=torch.from_numpy(arrays["train_labels"].astype(np.int64)),
        test_images=torch.from_numpy(arrays["test_images"].copy()),
        test_labels=torch.from_numpy(arrays["test_labels"].astype(np.int64)),
        files=files,
    )


def split_indices(n: int, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded (train, validation) split of range(n): the validation set is what model
    selection sees, so the test set stays untouched until the final report."""
    if not 0 <= val_size < n:
        raise DataError(f"validation size {val_size} must be between 0 and {n - 1}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[val_size:].sort().values, perm[:val_size].sort().values


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28) in [0, 1], the models' input."""
    return images.unsqueeze(1).float().div_(255.0)
