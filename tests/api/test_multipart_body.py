"""The multipart reader on its own: an upload's plain fields are read, its `model` value replaced without
touching a byte around it, and a body that is not a well-formed upload is a 400 of its own."""

from __future__ import annotations

import pytest

from api.openai import multipart_body
from api.services.errors import InvalidInput

BOUNDARY = "x-boundary"


def upload(*parts: tuple[str, str | None, bytes], boundary: str = BOUNDARY) -> bytes:
    return b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"'.encode()
                    + (f'; filename="{filename}"'.encode() if filename else b"") + b"\r\n\r\n" + value + b"\r\n"
                    for name, filename, value in parts) + f"--{boundary}--\r\n".encode()


def test_fields_are_read_and_only_the_models_value_changes() -> None:
    audio = b"\r\n--x-bound\x00\xff" * 100  # a file that looks a little like a delimiter
    raw = upload(("file", "a.wav", audio), ("model", None, b"my-alias"), ("prompt", None, "héllo".encode()))
    body = multipart_body.parse(raw, f'multipart/form-data; boundary="{BOUNDARY}"')
    assert body.fields == {"model": "my-alias", "prompt": "héllo"} and body.files == ("file",)
    assert body.with_model("whisper-large") == raw.replace(b"my-alias", b"whisper-large")


@pytest.mark.parametrize(("raw", "content_type", "code"), [
    (b"{}", "application/json", "invalid_content_type"),
    (b"", "", "invalid_content_type"),
    (upload(("model", None, b"m")), "multipart/form-data", "invalid_multipart"),
    (b"no delimiter at all", f"multipart/form-data; boundary={BOUNDARY}", "invalid_multipart"),
    (upload(("model", None, b"m"))[:-20], f"multipart/form-data; boundary={BOUNDARY}", "invalid_multipart"),
    (upload(("file", "a.wav", b"x")), f"multipart/form-data; boundary={BOUNDARY}", "missing_field"),
])
def test_what_is_not_an_upload_with_a_model_is_refused(raw: bytes, content_type: str, code: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        multipart_body.parse(raw, content_type)
    assert refused.value.code == code
