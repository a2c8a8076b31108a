"""Opaque ids for log entries and page cursors: base64url of version + row key + check.

Both are 12 bytes (1 version byte, 8-byte big-endian row key, 3-byte BLAKE2b check),
so always 16 base64url characters without padding: every 16-character string over the
alphabet decodes to exactly one byte string, and a valid token round-trips unchanged.
Ids and cursors use different version bytes and check keys, so one is never taken
for the other. Everything is checked here, before any lookup.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Literal

from starlette.convertors import Convertor, register_url_convertor

from service.errors import ExstreamError

TokenKind = Literal["entry_id", "cursor"]

TOKEN_LENGTH = 16
TOKEN_PATTERN = f"[A-Za-z0-9_-]{{{TOKEN_LENGTH}}}"
MAX_KEY = 2**63 - 1  # SQLite rowids are signed 64-bit
_TOKEN_RE = re.compile(TOKEN_PATTERN)
_KEY_BYTES = 8
_CHECK_BYTES = 3
_VERSION = {"entry_id": 0x01, "cursor": 0x41}
_PERSON = {"entry_id": b"exstream/id", "cursor": b"exstream/cursor"}


class InvalidToken(ExstreamError):
    """A malformed entry id or cursor; `kind` is the metric label."""

    status_code = 400
    kind: TokenKind = "entry_id"

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)

    def __str__(self) -> str:
        return f"malformed {self.kind.replace('_', ' ')}: {self.reason}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reason={self.reason!r})"


class InvalidEntryId(InvalidToken):
    code = "invalid_entry_id"
    kind: TokenKind = "entry_id"


class InvalidCursor(InvalidToken):
    code = "invalid_cursor"
    kind: TokenKind = "cursor"


_ERRORS: dict[TokenKind, type[InvalidToken]] = {
    "entry_id": InvalidEntryId,
    "cursor": InvalidCursor,
}


def _check(kind: TokenKind, body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=_CHECK_BYTES, person=_PERSON[kind]).digest()


def encode(kind: TokenKind, key: int) -> str:
    if not 0 <= key <= MAX_KEY:
        raise ValueError(f"row key out of range: {key}")
    body = bytes([_VERSION[kind]]) + key.to_bytes(_KEY_BYTES, "big")
    return base64.urlsafe_b64encode(body + _check(kind, body)).decode("ascii")


def decode(kind: TokenKind, text: str) -> int:
    """The row key of a token; InvalidToken naming the first thing wrong with it."""
    error = _ERRORS[kind]
    if len(text) != TOKEN_LENGTH:
        raise error(f"expected {TOKEN_LENGTH} characters, got {len(text)}")
    if not _TOKEN_RE.fullmatch(text):
        raise error("characters outside the base64url alphabet")
    raw = base64.urlsafe_b64decode(text)
    body, check = raw[: 1 + _KEY_BYTES], raw[1 + _KEY_BYTES :]
    if body[0] != _VERSION[kind]:
        raise error(f"unknown version {body[0]}")
    if check != _check(kind, body):
        raise error("check failed")
    key = int.from_bytes(body[1:], "big")
    if key > MAX_KEY:  # the check is not a secret: a forged token can get here
        raise error("row key out of range")
    return key


def encode_id(key: int) -> str:
    return encode("entry_id", key)


def encode_cursor(key: int) -> str:
    return encode("cursor", key)


class EntryIdConvertor(Convertor[str]):
    """Matches only well-formed ids in a path; the check is verified by decode()."""

    regex = TOKEN_PATTERN

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("entry_id", EntryIdConvertor())
