"""The pages' own scripts and style sheet: the files of service/web/static/ by name, read
once; nothing else is served from the disk. URLs carry a digest of the content
(`?v=`), so a browser may keep a file as long as the service keeps that version.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

DIRECTORY = Path(__file__).with_name("static")
MEDIA_TYPES = {
    ".css": "text/css",
    ".js": "text/javascript",
    ".txt": "text/plain",
}


@dataclass(frozen=True, slots=True)
class StaticFile:
    body: bytes
    media_type: str
    digest: str


@functools.cache
def files() -> dict[str, StaticFile]:
    found = {}
    # Third-party files, as published, are kept apart under vendor/.
    paths = [*sorted(DIRECTORY.iterdir()), *sorted((DIRECTORY / "vendor").iterdir())]
    for path in paths:
        media_type = MEDIA_TYPES.get(path.suffix)
        if media_type is not None and path.is_file():
            body = path.read_bytes()
            digest = hashlib.sha256(body).hexdigest()[:16]
            found[path.relative_to(DIRECTORY).as_posix()] = StaticFile(body, media_type, digest)
    return found


def version(name: str) -> str:
    return files()[name].digest


async def static(request: Request) -> Response:
    found = files().get(request.path_params["name"])
    if found is None:
        raise HTTPException(404, "no such static file")
    headers = {
        "X-Content-Type-Options": "nosniff",
        "ETag": f'"{found.digest}"',
        "Cache-Control": "public, max-age=86400",
    }
    if request.headers.get("if-none-match") == headers["ETag"]:
        return Response(status_code=304, headers=headers)
    return Response(found.body, headers=headers, media_type=found.media_type)
