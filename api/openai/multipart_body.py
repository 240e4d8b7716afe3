"""A multipart/form-data upload (an audio file and its fields) read just enough to route it: its plain fields
(`model`, `stream`, `prompt`) and where the `model` value lies, so that the body can go upstream byte for byte
with only that value replaced (no re-encoding of the file, the boundary or the other fields)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from api.services.errors import InvalidInput

BOUNDARY = re.compile(r'boundary=(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)
FIELD_NAME = re.compile(rb'\bname="([^"]*)"', re.IGNORECASE)
# Plain fields larger than this are not read (a prompt is short; a file part is never decoded).
MAX_FIELD_BYTES = 65_536


@dataclass(frozen=True)
class MultipartBody:
    raw: bytes
    content_type: str
    fields: dict[str, str]  # the parts without a filename, decoded
    files: tuple[str, ...]  # the names of the parts that carry a file
    model_span: tuple[int, int] | None  # where the `model` field's value lies in ``raw``

    def with_model(self, model: str) -> bytes:
        assert self.model_span is not None
        start, end = self.model_span
        return self.raw[:start] + model.encode() + self.raw[end:]


def parse(raw: bytes, content_type: str) -> MultipartBody:
    """The upload's fields; `InvalidInput` (400) for a body that is not multipart/form-data."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise InvalidInput("this endpoint takes a multipart/form-data upload (the file and its fields); got "
                           f"{content_type.split(';')[0] or 'no content type'}", code="invalid_content_type")
    found = BOUNDARY.search(content_type)
    if found is None:
        raise InvalidInput("the multipart content type names no boundary", code="invalid_multipart")
    delimiter = b"--" + (found.group(1) or found.group(2)).encode("latin-1")
    fields: dict[str, str] = {}
    files: list[str] = []
    model_span: tuple[int, int] | None = None
    position = raw.find(delimiter)
    if position < 0:
        raise InvalidInput("the multipart body has no part", code="invalid_multipart")
    while True:
        start = position + len(delimiter)
        if raw[start:start + 2] == b"--":
            break  # the closing delimiter
        head_end = raw.find(b"\r\n\r\n", start)
        following = raw.find(b"\r\n" + delimiter, start)
        if head_end < 0 or following < 0 or head_end > following:
            raise InvalidInput("the multipart body is cut or malformed", code="invalid_multipart")
        headers, value_start = raw[start:head_end], head_end + 4
        name = FIELD_NAME.search(headers)
        if name is not None:
            field = name.group(1).decode("utf-8", "replace")
            if b"filename=" in headers.lower():
                files.append(field)
            elif following - value_start <= MAX_FIELD_BYTES:
                fields[field] = raw[value_start:following].decode("utf-8", "replace")
                if field == "model":
                    model_span = (value_start, following)
        position = following + 2
    if not fields.get("model") or model_span is None:
        raise InvalidInput("the upload names no model (a `model` form field)", param="model", code="missing_field")
    return MultipartBody(raw, content_type, fields, tuple(files), model_span)
