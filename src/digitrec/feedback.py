"""Corrections users make to answers: the store they are kept in and what it can do.

A correction is an image, the 28x28 the model saw of it, what the model answered, and
the digit the user says it is. The store is SQLite by default (``feedback.sqlite3`` in
``digitrec_home()``; WAL, so server workers and a CLI can write at once) or PostgreSQL
when the URL says ``postgresql://``: ``--feedback-url``, then ``$DIGITREC_FEEDBACK_URL``,
then the default. The same SQL runs on both; a connection is opened per operation.
An image corrected twice is one record (its hash is unique): the latest label wins.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sqlite3
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from digitrec.errors import DigitrecError
from digitrec.files import write_bytes, write_text
from digitrec.home import digitrec_home
from digitrec.preprocess import MAX_IMAGE_BYTES, over_limit
from digitrec.records import now

FEEDBACK_URL_ENV = "DIGITREC_FEEDBACK_URL"
SOURCES = ("web", "gui", "cli")
COLUMNS = (
    "id",
    "created",
    "label",
    "predicted",
    "probabilities",
    "model_sha256",
    "source",
    "content_hash",
    "input",
    "original",
)
SCHEMA = """CREATE TABLE IF NOT EXISTS corrections (
    id {id} PRIMARY KEY,
    created TEXT NOT NULL,
    label INTEGER NOT NULL CHECK (label BETWEEN 0 AND 9),
    predicted INTEGER CHECK (predicted BETWEEN 0 AND 9),
    probabilities TEXT NOT NULL,
    model_sha256 TEXT NOT NULL,
    source TEXT NOT NULL,
    content_hash TEXT NOT NULL UNIQUE,
    input {blob} NOT NULL,
    original {blob}
)"""


class FeedbackError(DigitrecError):
    """The corrections store cannot be reached, or a correction is not valid."""


@dataclass
class Correction:
    label: int  # the digit the user says it is
    image: np.ndarray  # the 28x28 float32 the model saw
    predicted: int | None  # the model's answer (None: no digit, or "not a digit")
    probabilities: list[float]
    model_sha256: str
    source: str
    original: bytes | None = None  # the image as it came, when it came as a file
    id: int | None = None
    created: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_label(self.label)
        if self.source not in SOURCES:
            raise FeedbackError(f"source {self.source!r}: one of {', '.join(SOURCES)}")
        if self.original is not None and len(self.original) > MAX_IMAGE_BYTES:
            raise FeedbackError(over_limit("the image", len(self.original), MAX_IMAGE_BYTES))
        self.image = np.asarray(self.image, np.float32).reshape(28, 28)

    @property
    def content_hash(self) -> str:
        """What makes two corrections one: the same 28x28 (however the file was encoded)."""
        return hashlib.sha256(self.image.tobytes()).hexdigest()

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "created": self.created,
            "label": self.label,
            "predicted": self.predicted,
            "confidence": round(max(self.probabilities, default=0.0), 6),
            "model_sha256": self.model_sha256,
            "source": self.source,
            "content_hash": self.content_hash,
        }


def correction_of(
    pred: Any, label: int, model_sha256: str, source: str, original: bytes | None = None
) -> Correction:
    """The correction of a ``Prediction`` (what every front end stores)."""
    if pred.blank:
        raise FeedbackError("the image holds no digit: there is nothing to correct")
    return Correction(
        label, pred.image, pred.digit, pred.probabilities, model_sha256, source, original
    )


def listing(records: Sequence[Correction]) -> str:
    """``digitrec feedback list``: a line per record."""
    lines = [f"{'id':>5}  {'created':<24} {'label':>5}  {'model said':<12} {'source':<6} model"]
    for r in records:
        said = "no digit" if r.predicted is None else f"{r.predicted} ({max(r.probabilities):.0%})"
        lines.append(f"{r.id:>5}  {r.created:<24} {r.label:>5}  {said:<12} {r.source:<6} "
                     f"{r.model_sha256[:12]}")  # fmt: skip
    return "\n".join(lines)


def check_label(label: Any) -> int:
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label <= 9:
        raise FeedbackError(f"label {label!r}: give the digit it is, 0 to 9")
    return label


def png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def default_url() -> str:
    return f"sqlite:///{digitrec_home() / 'feedback.sqlite3'}"


def feedback_url(flag: str | None = None) -> str:
    """--feedback-url, then $DIGITREC_FEEDBACK_URL, then the SQLite file in digitrec's home."""
    return flag or os.environ.get(FEEDBACK_URL_ENV) or default_url()


class FeedbackStore:
    """The corrections in SQLite (``sqlite:///PATH``, or a plain path) or PostgreSQL
    (``postgresql://...``). Safe to share between threads and processes."""

    def __init__(self, url: str | None = None) -> None:
        self.url = feedback_url(url)
        if self.url.startswith(("postgresql://", "postgres://")):
            try:
                import psycopg
            except ImportError:
                raise FeedbackError(
                    f"{self.url}: PostgreSQL needs psycopg: pip install 'digitrec[postgres]'"
                ) from None
            self._db: Any = psycopg
            self.kind, self._mark, self._blob, self._id = "postgresql", "%s", "BYTEA", "BIGSERIAL"
        elif "://" in self.url and not self.url.startswith("sqlite:///"):
            raise FeedbackError(
                f"feedback URL {self.url!r}: give sqlite:///PATH, a file path or postgresql://..."
            )
        else:
            self.path = Path(self.url.removeprefix("sqlite:///")).expanduser()
            self._db, self.kind, self._mark = sqlite3, "sqlite", "?"
            self._blob, self._id = "BLOB", "INTEGER"
        self._ready = False

    def __repr__(self) -> str:
        return f"FeedbackStore({self.where!r})"

    @property
    def where(self) -> str:
        """The store for messages: the file, or the server without its password."""
        if self.kind == "sqlite":
            return str(self.path)
        head, _, tail = self.url.rpartition("@")
        return f"{head.split('//')[0]}//{tail}" if head else self.url

    def _connect(self) -> Any:
        try:
            if self.kind == "sqlite":
                self.path.parent.mkdir(parents=True, exist_ok=True)
                return sqlite3.connect(self.path, timeout=30)
            return self._db.connect(self.url, connect_timeout=10)
        except (OSError, self._db.Error) as exc:
            where = self.where
            raise FeedbackError(f"the corrections store {where} cannot be opened: {exc}") from None

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        """A cursor in one transaction: committed at the end, rolled back on an error."""
        with closing(self._connect()) as con:
            try:
                if not self._ready:
                    self._create(con)
                with closing(con.cursor()) as cur:
                    yield cur
                con.commit()
            except self._db.Error as exc:
                con.rollback()
                if isinstance(exc, self._db.IntegrityError):
                    raise
                raise FeedbackError(f"the corrections store {self.where}: {exc}") from None

    def _create(self, con: Any) -> None:
        with closing(con.cursor()) as cur:
            if self.kind == "sqlite":
                cur.execute("PRAGMA journal_mode=WAL")  # readers never wait for a writer
            else:  # two servers creating the table at once would collide
                cur.execute("SELECT pg_advisory_xact_lock(31)")
            cur.execute(SCHEMA.format(id=self._id, blob=self._blob))
        con.commit()
        self._ready = True

    def _sql(self, sql: str) -> str:
        return sql.replace("?", self._mark)

    def add(self, c: Correction) -> tuple[int, bool]:
        """Store a correction; an image already stored gets the new label. Returns the
        record's id and whether it is new."""

        c.created = now()
        values = (
            c.created,
            c.label,
            c.predicted,
            json.dumps([round(p, 6) for p in c.probabilities]),
            c.model_sha256,
            c.source,
            c.content_hash,
            c.image.tobytes(),
            c.original,
        )
        # Look first: an insert refused by the unique hash would use up a PostgreSQL id.
        if (found := self._relabel(c)) is not None:
            return found, False
        try:
            with self._transaction() as cur:
                cur.execute(
                    self._sql(
                        f"INSERT INTO corrections ({', '.join(COLUMNS[1:])}) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"
                    ),
                    values,
                )
                c.id = int(cur.fetchone()[0])
                return c.id, True
        except self._db.IntegrityError:  # the same image, stored by another writer meanwhile
            return self._relabel(c), False  # type: ignore[return-value]

    def _relabel(self, c: Correction) -> int | None:
        with self._transaction() as cur:
            cur.execute(
                self._sql(
                    "UPDATE corrections SET label = ?, created = ? "
                    "WHERE content_hash = ? RETURNING id"
                ),
                (c.label, c.created, c.content_hash),
            )
            row = cur.fetchone()
        c.id = None if row is None else int(row[0])
        return c.id

    def records(self, ids: Sequence[int] | None = None) -> list[Correction]:
        """Every correction (or those of ``ids``), oldest first, with its images."""
        where = f" WHERE id IN ({', '.join('?' * len(ids))})" if ids else ""
        with self._transaction() as cur:
            cur.execute(
                self._sql(f"SELECT {', '.join(COLUMNS)} FROM corrections{where} ORDER BY id"),
                tuple(ids or ()),
            )
            rows = cur.fetchall()
        return [_correction(dict(zip(COLUMNS, row, strict=True))) for row in rows]

    def get(self, record_id: int) -> Correction:
        found = self.records([record_id])
        if not found:
            raise FeedbackError(f"no correction #{record_id} in {self.where}")
        return found[0]

    def delete(self, record_id: int) -> None:
        with self._transaction() as cur:
            cur.execute(self._sql("DELETE FROM corrections WHERE id = ?"), (record_id,))
            if cur.rowcount == 0:
                raise FeedbackError(f"no correction #{record_id} in {self.where}")

    def count(self) -> int:
        with self._transaction() as cur:
            cur.execute("SELECT COUNT(*) FROM corrections")
            return int(cur.fetchone()[0])


def _correction(row: dict[str, Any]) -> Correction:
    return Correction(
        label=row["label"],
        image=np.frombuffer(bytes(row["input"]), np.float32).reshape(28, 28),
        predicted=row["predicted"],
        probabilities=json.loads(row["probabilities"]),
        model_sha256=row["model_sha256"],
        source=row["source"],
        original=None if row["original"] is None else bytes(row["original"]),
        id=row["id"],
        created=row["created"],
    )


def stats(records: Sequence[Correction]) -> dict[str, Any]:
    """What was collected: how many, of which digits, from where, and what the model had
    answered (a record whose label is the answer confirms it)."""
    wrong = [r for r in records if r.predicted != r.label]
    return {
        "records": len(records),
        "corrections": len(wrong),
        "confirmations": len(records) - len(wrong),
        "by_label": {str(d): n for d, n in sorted(Counter(r.label for r in records).items())},
        "by_source": dict(sorted(Counter(r.source for r in records).items())),
        "models": len({r.model_sha256 for r in records}),
        "misread_as": dict(
            Counter(
                f"{r.label} read as {'none' if r.predicted is None else r.predicted}" for r in wrong
            ).most_common(10)
        ),
    }


def export(records: Sequence[Correction], out: Path) -> int:
    """One PNG of the 28x28 per record in ``out/<label>/<id>.png`` (a dataset in folders),
    each original as it came in ``out/originals/``, and ``out/corrections.csv``."""
    rows = []
    for r in records:
        write_bytes(out / str(r.label) / f"{r.id}.png", png(r.image))
        original = ""
        if r.original is not None:
            original = f"originals/{r.id}.{_suffix(r.original)}"
            write_bytes(out / original, r.original)
        rows.append({**r.summary(), "file": f"{r.label}/{r.id}.png", "original": original})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["id"])
    writer.writeheader()
    writer.writerows(rows)
    write_text(out / "corrections.csv", buf.getvalue())
    return len(rows)


def _suffix(data: bytes) -> str:
    try:
        with Image.open(io.BytesIO(data)) as im:
            return (im.format or "bin").lower().replace("jpeg", "jpg")
    except Exception:  # kept as it came, whatever it is
        return "bin"
