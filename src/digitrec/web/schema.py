"""What the API's OpenAPI document (and so ``/docs``) says about its bodies and errors.

The endpoints read the request themselves (one endpoint takes multipart, raw image bytes
and JSON alike, which a single typed parameter cannot express) and return plain dicts
(no per-request validation cost), so these models only document: the request bodies
each endpoint reads, the response fields, and every error status with its JSON shape.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from digitrec.preprocess import FORMAT_NAMES, FORMATS


class ErrorBody(BaseModel):
    detail: str = Field(description="What was wrong, in one sentence, and what to send instead")


class ModelRef(BaseModel):
    name: str
    version: str = Field(description="The run and epoch the weights come from")
    sha256: str = Field(description="The model's id: the SHA-256 of its checkpoint")
    registry_version: int | None = Field(
        description="Its number in the model registry (0: the shipped model); null: none"
    )


class PredictionBody(BaseModel):
    prediction_id: str = Field(
        description="Names this answer for POST /api/feedback (remembered for 10 minutes)"
    )
    digit: int | None = Field(
        description="0-9, or null when the image holds no digit (blank, or not a digit)"
    )
    label: str
    confidence: float = Field(
        description="The probability of the likeliest digit, calibrated: of answers given "
        "at 90%, about 9 in 10 are right (the model's temperature, GET /api/model)"
    )
    probabilities: list[float] = Field(description="One per class, 0 to 9, summing to 1")
    uncertain: bool = Field(
        description="'Not sure': confidence under the model's threshold, measured on "
        "validation (GET /api/model), or a blank image, or not a digit"
    )
    blank: bool
    not_a_digit: bool = Field(
        description="Junk, not a digit (a scribble, a letter or symbol, a blot, a dot, a "
        "photo of something else): the 'not a digit' detector's score over its threshold, "
        "chosen on validation (GET /api/model). Then digit is null; probabilities and "
        "confidence still say what the digit model made of it"
    )
    preprocessing: dict[str, Any] = Field(
        description="What the pipeline did: inverted, ink box in the source, scale, steps"
    )
    image: str = Field(description="The 28x28 image the model saw, a base64 PNG")
    model: ModelRef
    latency_ms: float = Field(description="Server-side time for this request")


class CharBody(BaseModel):
    char: str = Field(description="A digit, or '.', ',' or '-' where written")
    confidence: float = Field(description="The digit's probability (1 for a mark)")
    probabilities: list[float] | None = Field(
        description="One per digit, summing to 1 (the mean of the digit model's and its "
        "reading model's; in a line of touching digits, the line model's); null for a mark"
    )
    box: list[int] = Field(description="x0, y0, x1, y1 in the uploaded image's pixels")
    line: int = Field(description="Which line of writing, 0 at the top")


class ReadingBody(BaseModel):
    text: str = Field(description="The number as written; several lines joined by newlines")
    confidence: float = Field(description="That every digit is right: their product")
    uncertain: bool = Field(description="Some digit under the 'not sure' threshold, or none")
    blank: bool = Field(description="No digits found")
    source_size: list[int] = Field(description="The image's width and height")
    digits: list[CharBody] = Field(description="Every character, line by line, left to right")
    model: ModelRef
    latency_ms: float = Field(description="Server-side time for this request")


class FeedbackBody(BaseModel):
    id: int = Field(description="The record's number in the corrections store")
    new: bool = Field(description="False when this image was stored before: its label updated")
    label: int = Field(description="The digit the image is, as sent")
    predicted: int | None = Field(description="What the model had answered (null: no digit)")


class BatchBody(BaseModel):
    predictions: list[PredictionBody] = Field(description="In the order the images were sent")


def error_doc(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


ERRORS: dict[int | str, dict[str, Any]] = {
    413: error_doc(
        "The body is over the byte limit, an image over the pixel limit, or the request's "
        "images together over its budget of decoded pixels"
    ),
    415: error_doc("A content type the endpoint does not read"),
    422: error_doc(
        f"Not a readable image ({FORMAT_NAMES} are read), bad base64 or JSON, or pixels of "
        "the wrong count/range"
    ),
    500: error_doc("A failure of digitrec itself (a bug): logged; the connection stays usable"),
    503: error_doc(
        "The model is still loading (or, for /api/read, a model that reads numbers is missing "
        "or damaged; for /api/feedback, the corrections store cannot be reached: the reason "
        "is given)"
    ),
}

_BINARY = {"type": "string", "format": "binary"}
_PIXELS = {
    "type": "array",
    "description": "784 values, or 28 rows of 28, in [0, 1] or [0, 255], light digit on dark",
    "items": {"anyOf": [{"type": "number"}, {"type": "array", "items": {"type": "number"}}]},
}
_IMAGE_JSON = {
    "oneOf": [
        {
            "type": "object",
            "properties": {"image": {"type": "string", "description": "base64 or a data URL"}},
            "required": ["image"],
        },
        {"type": "object", "properties": {"pixels": _PIXELS}, "required": ["pixels"]},
    ]
}


def request_body(batch: bool) -> dict[str, Any]:
    """The ``requestBody`` of /api/predict (``batch=False``) or /api/predict/batch."""
    field = "files" if batch else "file"
    upload = {"type": "array", "items": _BINARY} if batch else _BINARY
    content: dict[str, Any] = {
        "multipart/form-data": {
            "schema": {"type": "object", "properties": {field: upload}, "required": [field]}
        },
    }
    if batch:
        content["application/json"] = {
            "schema": {
                "type": "object",
                "properties": {"images": {"type": "array", "items": _IMAGE_JSON}},
                "required": ["images"],
            }
        }
    else:
        for f in FORMATS:
            content[f.mime] = {"schema": _BINARY}
        content["application/json"] = {"schema": _IMAGE_JSON}
    return {"requestBody": {"required": True, "content": content}}


def feedback_body() -> dict[str, Any]:
    """The ``requestBody`` of /api/feedback: a label with an answer's id, or with the image
    in any of /api/predict's forms (a raw image body takes the label as ``?label=``)."""
    label = {"type": "integer", "minimum": 0, "maximum": 9, "description": "The digit it is"}
    pid = {"type": "string", "description": "From an /api/predict answer"}
    by_id = {
        "type": "object",
        "properties": {"label": label, "prediction_id": pid},
        "required": ["label", "prediction_id"],
    }
    with_image = [
        {
            "type": "object",
            "properties": {"label": label, **form["properties"]},
            "required": ["label", *form["required"]],
        }
        for form in _IMAGE_JSON["oneOf"]
    ]
    upload = {
        "type": "object",
        "properties": {"label": label, "file": _BINARY, "prediction_id": pid},
        "required": ["label"],
    }
    content: dict[str, Any] = {
        "application/json": {"schema": {"oneOf": [by_id, *with_image]}},
        "multipart/form-data": {"schema": upload},
    }
    return {"requestBody": {"required": True, "content": content}}
