"""What a caller learns without the API token: the bind address decides the default.

Bound to loopback, every caller is on this machine, so with no token configured the
API shows full media paths. Bound to any other address with no token, or with a token
the caller did not present, media paths are shown as file names and directories are
cut out of failure texts: the layout of the library on disk is nobody else's business.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from pathlib import PurePosixPath

from service.auth import authorized
from service.config import ServerSettings

LOOPBACK_NAMES = frozenset({"localhost", "localhost."})
# The directory part of an absolute path inside free text (ffprobe's and ffmpeg's
# messages name their input); not after a word character, ':' or '/' (URLs stay).
_DIRECTORIES = re.compile(r"(?<![\w.:/~-])/(?:[^/\s\"'<>|]+/)+")


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    name = host.strip().lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_warning(server: ServerSettings) -> str | None:
    """The start-up warning for a bind beyond loopback with no token; None when safe."""
    if server.api_token or is_loopback(server.host):
        return None
    # No "TOKEN:" in the text: the log redaction would take the next word for a secret.
    return (
        f"listening on {server.host} with no EXSTREAM_API_TOKEN set, so anyone who can reach"
        f" port {server.port} can restart channels; the logs API is refused and media paths"
        " are shown as file names until a token is set"
    )


def shows_paths(server: ServerSettings, authorization: str | None) -> bool:
    """Whether a caller presenting `authorization` (the header) may see full media paths."""
    if server.api_token:
        return authorized(authorization, server.api_token)
    return is_loopback(server.host)


def file_name(path: str) -> str:
    return PurePosixPath(path).name or path


def without_directories(text: str, known: Iterable[str] = ()) -> str:
    """`text` with the directories cut out of every path: of the paths in `known` (files,
    directories or glob patterns; names with spaces too) and of any other absolute path
    (up to its first space)."""
    for path in sorted({_static_part(p) for p in known if p}, key=len, reverse=True):
        if path in text:
            text = text.replace(path + "/", "").replace(path, file_name(path))
    return _DIRECTORIES.sub("", text)


def _static_part(pattern: str) -> str:
    """The path itself, or for a glob pattern the directory its matches are under."""
    wild = min((i for i in map(pattern.find, "*?[") if i >= 0), default=-1)
    return pattern if wild < 0 else pattern[:wild].rpartition("/")[0]
