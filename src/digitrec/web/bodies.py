"""Request bodies to images: multipart uploads, raw image bodies and JSON (base64 or
pixels), read within the limits. Every problem is a ``BadRequest`` whose detail says what
to send instead (413 over a limit, 415 for another content type, 422 for the rest)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncGenerator
from typing import Any

import numpy as np
from fastapi import HTTPException, Request
from starlette.datastructures import FormData
from starlette.formparsers import MultiPartException, MultiPartParser

from digitrec.preprocess import over_limit
from digitrec.web.settings import Limits


class BadRequest(HTTPException):
    """An HTTPException whose detail is one plain sentence."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(status_code=status, detail=detail)


def decode_base64_image(value: Any, where: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise BadRequest(422, f"{where} must be a non-empty base64 string or data URL")
    if value.startswith("data:"):
        head, _, value = value.partition(",")
        if ";base64" not in head:
            raise BadRequest(422, f"{where}: only base64 data URLs are accepted")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(422, f"{where} is not valid base64") from None


def pixels_to_array(value: Any) -> np.ndarray:
    """784 numbers or 28 rows of 28, in [0, 1] or [0, 255], light digit on dark."""
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise BadRequest(422, "pixels must be numbers: 784 values or 28 rows of 28") from None
    if a.size != 784 or a.shape not in ((784,), (28, 28)):
        raise BadRequest(422, f"pixels has shape {a.shape}; send 784 values or 28 rows of 28")
    if not np.isfinite(a).all():
        raise BadRequest(422, "pixels contains NaN or infinite values")
    if a.min() < 0 or a.max() > 255:
        raise BadRequest(422, "pixels must lie in [0, 1] or [0, 255]")
    a = a.reshape(28, 28)
    return (a / 255.0 if a.max() > 1 else a).astype(np.float32)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BadRequest(413, over_limit("the body", int(declared), limit))
    return b"".join([chunk async for chunk in limited_stream(request, limit)])


async def limited_stream(request: Request, limit: int) -> AsyncGenerator[bytes, None]:
    """The body's chunks, cut off with 413 once they pass ``limit`` bytes (a chunked
    upload declares no length to check beforehand)."""
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest(413, over_limit("the body", None, limit))
        yield chunk


def parse_json(body: bytes) -> Any:
    try:
        # Numbers as floats: an integer of over 4,300 digits is then infinite (and refused
        # as a pixel value), where int() raised a ValueError past Python's digit limit.
        return json.loads(body, parse_int=float)
    except RecursionError:
        raise BadRequest(422, "the JSON body is nested too deeply to be an image") from None
    except ValueError as exc:  # includes JSONDecodeError and UnicodeDecodeError
        raise BadRequest(422, f"the body is not valid JSON ({exc})") from None


def json_item(item: Any, where: str) -> bytes | np.ndarray:
    if not isinstance(item, dict) or not ({"image", "pixels"} & item.keys()):
        raise BadRequest(422, f'{where} must be an object with "image" or "pixels"')
    if "pixels" in item:
        return pixels_to_array(item["pixels"])
    return decode_base64_image(item["image"], f"{where}.image")


async def read_form(request: Request, limits: Limits) -> FormData:
    """The multipart form, parsed from the body cut off at its limit, its parser's
    errors in our words."""
    parser = MultiPartParser(
        request.headers,
        limited_stream(request, limits.max_body_bytes),
        max_files=limits.max_batch,
        max_part_size=limits.max_body_bytes,
    )
    try:
        return await parser.parse()
    except MultiPartException as exc:
        if "Too many files" in exc.message:
            raise BadRequest(422, f"send at most {limits.max_batch} files") from None
        raise BadRequest(
            422, f"the multipart upload cannot be read ({exc.message}); send a standard form"
        ) from None


async def items_from(request: Request, batch: bool, limits: Limits) -> list[bytes | np.ndarray]:
    """The images a request sends: bytes to decode, or 28x28 pixel arrays."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limits.max_body_bytes:
            raise BadRequest(413, over_limit("the upload", int(declared), limits.max_body_bytes))
        form = await read_form(request, limits)
        try:
            field = "files" if batch else "file"
            files = [f for f in form.getlist(field) if hasattr(f, "read")]
            if not files:
                raise BadRequest(422, f'send the image in a multipart field named "{field}"')
            return [await f.read() for f in files]
        finally:
            await form.close()
    body = await read_body(request, limits.max_body_bytes)
    if ctype.startswith("image/") and not batch:
        return [body]
    if ctype == "application/json":
        data = parse_json(body)
        if batch:
            if not isinstance(data, dict) or not isinstance(data.get("images"), list):
                raise BadRequest(422, 'send {"images": [{"image": ...} or {"pixels": ...}]}')
            if not data["images"] or len(data["images"]) > limits.max_batch:
                raise BadRequest(422, f"send between 1 and {limits.max_batch} images")
            return [json_item(it, f"images[{i}]") for i, it in enumerate(data["images"])]
        return [json_item(data, "the body")]
    accepted = (
        "multipart/form-data or application/json"
        if batch
        else ("multipart/form-data, image/png, image/jpeg, ... or application/json")
    )
    raise BadRequest(415, f"content type {ctype or '(none)'} is not accepted; send {accepted}")


def label_from(value: Any) -> int:
    """The digit a correction says the image is: 0-9, as a JSON number or form text."""
    try:
        n = float(value)
    except (TypeError, ValueError):
        n = float("nan")
    if value is None or isinstance(value, bool) or not (n.is_integer() and 0 <= n <= 9):
        raise BadRequest(422, f'"label" {value!r}: give the digit the image is, 0 to 9')
    return int(n)


async def correction_from(
    request: Request, limits: Limits
) -> tuple[int, str | None, bytes | np.ndarray | None]:
    """A correction: its label and either the ``prediction_id`` of an answer or the image,
    in any form /api/predict reads (JSON fields, form fields, or for a raw image body the
    query's ``?label=``)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    fields: dict[str, Any] = dict(request.query_params)
    item: bytes | np.ndarray | None = None
    if ctype == "multipart/form-data":
        form = await read_form(request, limits)
        try:
            fields |= {k: v for k, v in form.items() if isinstance(v, str)}
            if hasattr(upload := form.get("file"), "read"):
                item = await upload.read()  # type: ignore[union-attr]
        finally:
            await form.close()
    else:
        body = await read_body(request, limits.max_body_bytes)
        if ctype == "application/json":
            data = parse_json(body)
            if not isinstance(data, dict):
                raise BadRequest(422, 'send {"label": 0-9, "prediction_id": ...} or an image')
            fields |= data
            item = json_item(data, "the body") if {"image", "pixels"} & data.keys() else None
        elif ctype.startswith("image/"):
            item = body
        elif body:
            raise BadRequest(
                415,
                f"content type {ctype or '(none)'} is not accepted; send "
                "application/json, multipart/form-data or image/...",
            )
    pid = fields.get("prediction_id")
    if item is None and not pid:
        raise BadRequest(
            422, 'send "prediction_id" (from an /api/predict answer) or the image, with "label"'
        )
    if pid is not None and not isinstance(pid, str):
        raise BadRequest(422, '"prediction_id" must be the string an /api/predict answer gave')
    return label_from(fields.get("label")), pid, item
