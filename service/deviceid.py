"""HDHomeRun device ids: 8 hex digits whose last is a check digit, made once and kept.

Clients tell tuners apart by this id (Jellyfin keeps it with the tuner, Plex with the
DVR), so it must not change when the service restarts or its data directory moves:
it is made at random once and kept in the data directory, next to the stores.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

from loguru import logger

ID_FILE = "hdhomerun-device-id"
WILDCARD = 0xFFFFFFFF  # "every device" in a discovery request
# libhdhomerun's hdhomerun_discover_validate_device_id: nibbles 7, 5, 3 and 1 (from the
# top) go through this table, the others are taken as they are; all XORed give 0.
_CHECK_TABLE = (0xA, 0x5, 0xF, 0x6, 0x7, 0xC, 0x1, 0xB, 0x9, 0x2, 0x8, 0xD, 0x4, 0x3, 0xE, 0x0)
# Ids of first-generation tuners, which clients talk to in an older way.
_LEGACY_PREFIXES = frozenset({0x101, 0x102, 0x103, 0x111, 0x121, 0x122})
_LEGACY_BELOW = {0x100: 0x10040000, 0x120: 0x12030000}


def _checksum(device_id: int) -> int:
    checksum = 0
    for index, shift in enumerate(range(28, -1, -4)):
        nibble = (device_id >> shift) & 0xF
        checksum ^= _CHECK_TABLE[nibble] if index % 2 == 0 else nibble
    return checksum


def is_valid(device_id: int) -> bool:
    """True when the check digit is right and the id names one device (not 0, not the
    wildcard, not a first-generation tuner's)."""
    prefix = device_id >> 20
    legacy = prefix in _LEGACY_PREFIXES or device_id < _LEGACY_BELOW.get(prefix, 0)
    return 0 < device_id < WILDCARD and not legacy and _checksum(device_id) == 0


def with_check_digit(body: int) -> int:
    """The id whose first seven digits are `body` (28 bits) and whose last makes it valid."""
    device_id = (body & 0xFFFFFFF) << 4
    return device_id | _checksum(device_id)


def parse(text: str) -> int | None:
    """The id written as 8 hex digits (any case), or None when it is not a valid one."""
    if len(text) != 8 or not all(c in "0123456789abcdefABCDEF" for c in text):
        return None
    device_id = int(text, 16)
    return device_id if is_valid(device_id) else None


def is_valid_text(text: str) -> bool:
    return parse(text) is not None


def generate(randbits: Callable[[int], int] = secrets.randbits) -> int:
    while True:
        device_id = with_check_digit(randbits(28))
        if is_valid(device_id):
            return device_id


def text(device_id: int) -> str:
    return f"{device_id:08X}"


def kept_device_id(data_dir: Path, randbits: Callable[[int], int] = secrets.randbits) -> int:
    """The id kept in `data_dir`; made and kept there the first time.

    A data directory that cannot be written does not stop the service: the id is kept
    in memory until the next start, and a WARNING says that clients will then see a new
    tuner.
    """
    path = data_dir / ID_FILE
    try:
        saved = path.read_bytes().decode("ascii", "replace").strip()
    except FileNotFoundError:
        saved = None
    except OSError as exc:
        made = generate(randbits)
        _warn_not_kept(f"cannot read {path} ({_reason(exc)})", path, made)
        return made
    if saved is not None:
        kept = parse(saved)
        if kept is not None:
            return kept
        logger.bind(path=str(path)).warning(
            "{} does not hold a valid HDHomeRun device id ({!r}): making a new one; clients"
            " will see a new tuner",
            path, saved[:40],
        )  # fmt: skip
    device_id = generate(randbits)
    try:
        _write_atomically(path, text(device_id) + "\n")
    except OSError as exc:
        _warn_not_kept(f"cannot write {path} ({_reason(exc)})", path, device_id)
    else:
        logger.bind(path=str(path)).info(
            "HDHomeRun device id {} made and kept in {}", text(device_id), path
        )
    return device_id


def _warn_not_kept(problem: str, path: Path, device_id: int) -> None:
    logger.bind(path=str(path)).warning(
        "{}: HDHomeRun device id {} is kept in memory until the service restarts, when"
        " clients will see a new tuner; set [hdhomerun] device_id to keep one",
        problem, text(device_id),
    )  # fmt: skip


def _write_atomically(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with partial.open("w", encoding="ascii") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def _reason(exc: Exception) -> str:
    return (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
