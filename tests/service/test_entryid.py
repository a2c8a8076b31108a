from __future__ import annotations

import base64
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service import entryid
from service.entryid import (
    MAX_KEY,
    TOKEN_LENGTH,
    InvalidCursor,
    InvalidEntryId,
    InvalidToken,
    TokenKind,
    decode,
    encode,
)

kinds = st.sampled_from(["entry_id", "cursor"])
keys = st.integers(min_value=0, max_value=MAX_KEY)
b64url = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
    min_size=TOKEN_LENGTH,
    max_size=TOKEN_LENGTH,
)


@given(kinds, keys)
def test_round_trip(kind: TokenKind, key: int) -> None:
    token = encode(kind, key)
    assert len(token) == TOKEN_LENGTH
    assert re.fullmatch(entryid.TOKEN_PATTERN, token)
    assert decode(kind, token) == key


@given(kinds, st.one_of(st.text(), b64url))
def test_any_text_round_trips_or_is_rejected(kind: TokenKind, text: str) -> None:
    try:
        key = decode(kind, text)
    except InvalidToken as exc:
        assert exc.kind == kind
        assert exc.status_code == 400
    else:
        assert encode(kind, key) == text


@given(keys)
def test_an_id_is_never_a_cursor_and_back(key: int) -> None:
    with pytest.raises(InvalidCursor):
        decode("cursor", encode("entry_id", key))
    with pytest.raises(InvalidEntryId):
        decode("entry_id", encode("cursor", key))


@given(keys, st.integers(min_value=0, max_value=TOKEN_LENGTH - 1), st.sampled_from("AQgw_-"))
def test_a_changed_character_fails_the_check(key: int, position: int, char: str) -> None:
    token = encode("entry_id", key)
    changed = token[:position] + char + token[position + 1 :]
    if changed != token:
        with pytest.raises(InvalidEntryId):
            decode("entry_id", changed)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("entries", "expected 16 characters"),
        ("", "expected 16 characters"),
        ("A" * 17, "expected 16 characters"),
        ("AAAAAAAAAAAAAAA=", "base64url alphabet"),
        ("AAAAAAAAAAAAAA+/", "base64url alphabet"),
        ("AAAAAAAAAAAAAAAA", "unknown version 0"),
    ],
)
def test_rejection_reasons(text: str, reason: str) -> None:
    with pytest.raises(InvalidEntryId, match=reason) as caught:
        decode("entry_id", text)
    assert caught.value.code == "invalid_entry_id"


def test_forged_check_beyond_the_key_range_is_rejected() -> None:
    body = bytes([0x01]) + (2**64 - 1).to_bytes(8, "big")
    check = entryid._check("entry_id", body)
    forged = base64.urlsafe_b64encode(body + check).decode()
    with pytest.raises(InvalidEntryId, match="out of range"):
        decode("entry_id", forged)


def test_convertor_regex_matches_only_well_formed_ids() -> None:
    pattern = re.compile(entryid.EntryIdConvertor.regex)
    assert pattern.fullmatch(encode("entry_id", 42))
    for text in ("entries", "stream", "A" * 15, "A" * 17, "AAAAAAAAAAAAAA=="):
        assert not pattern.fullmatch(text)


def test_encode_refuses_out_of_range_keys() -> None:
    with pytest.raises(ValueError, match="out of range"):
        encode("cursor", -1)
