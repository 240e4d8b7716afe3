"""Authenticated encryption for data at rest (the WebSocket session buffers now, provider keys later).

AES-256-GCM from `cryptography`, with a key derived from the server's secret key by HKDF-SHA256 per purpose, so
one purpose's ciphertexts never open under another's key. Each sealed value is ``nonce (12 bytes) || ciphertext
|| tag``, and is bound to ``context`` (associated data: for a buffered event, its session and sequence number), so a
row copied to another session or position does not open either.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

NONCE_BYTES = 12


class Unsealable(Exception):
    """A sealed value that was tampered with, truncated, moved, or sealed under another key."""


class Sealer:
    def __init__(self, secret_key: str, purpose: str) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                   info=f"llmws/{purpose}".encode()).derive(secret_key.encode())
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes, context: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)  # random 96-bit nonces: safe far beyond this table's row counts
        return nonce + self._aead.encrypt(nonce, plaintext, context)

    def open(self, sealed: bytes, context: bytes) -> bytes:
        if len(sealed) < NONCE_BYTES + 16:
            raise Unsealable("too short to be a sealed value")
        try:
            return self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], context)
        except InvalidTag as exc:
            raise Unsealable("the value does not authenticate") from exc
