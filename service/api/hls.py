"""HLS per channel, cut from the same stream as `/stream/{number}.ts`.

- `GET /stream/{number}/index.m3u8`: the multivariant playlist; its one variant's URI
  carries a new session token (`../{number}.m3u8?session=...`), so it is never cached.
- `GET /stream/{number}.m3u8[?session=...]`: the live media playlist; each request
  keeps the session alive (without a token, the client's address, as a trusted proxy
  forwards it, and User-Agent name it). The body is the same for every session: caches
  may share it for half a target duration.
- `GET /stream/{number}/{run}-{sequence}.ts`: a segment from memory; its URL never
  changes meaning, so it is cacheable as immutable.

`HEAD` of a playlist answers its headers and starts nothing (no session, no channel).
"""

from __future__ import annotations

import re
from typing import cast

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.hls.errors import InvalidSession, SegmentNotFound
from service.hls.playlist import Variant
from service.hls.service import HlsService
from service.types import app_state

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
SEGMENT_TYPE = "video/mp2t"
SESSION = re.compile(r"[A-Za-z0-9_-]{8,64}")
SEGMENT_NAME = re.compile(r"[0-9a-f]{1,32}-[0-9]{1,18}")
# Transport overhead on top of the encoder's rates until segments have been measured.
TS_OVERHEAD = 1.1


def hls_of(request: Request) -> HlsService:
    return cast(HlsService, request.state.hls)


def _session_key(request: Request) -> str:
    token = request.query_params.get("session")
    if token is not None:
        if SESSION.fullmatch(token) is None:
            raise InvalidSession(token)
        return token
    client = request.client.host if request.client else "-"
    return f"{client} {request.headers.get('user-agent', '')}"


def _count(request: Request, kind: str, outcome: str) -> None:
    number: int = request.path_params["number"]
    hls = hls_of(request)
    if number not in hls.feeds:
        return  # no series for channels that do not exist
    hls.count(number, kind, outcome)


def _head(request: Request) -> Response:
    """HEAD of a playlist: the headers GET would have, and no session, start or wait."""
    hls_of(request).check(request.path_params["number"])
    return Response(headers={"Cache-Control": "no-cache"}, media_type=PLAYLIST_TYPE)


async def media_playlist(request: Request) -> Response:
    if request.method == "HEAD":
        return _head(request)
    number: int = request.path_params["number"]
    hls = hls_of(request)
    try:
        feed = await hls.watch(number, _session_key(request))
    except Exception:
        _count(request, "playlist", "refused")
        raise
    body, tag = feed.playlist.rendered(f"{number}/")
    headers = {
        "Cache-Control": f"public, max-age={feed.target // 2}",
        "ETag": tag,
    }
    if tag in request.headers.get("if-none-match", ""):
        _count(request, "playlist", "not_modified")
        return Response(status_code=304, headers=headers)
    _count(request, "playlist", "ok")
    return Response(body, headers=headers, media_type=PLAYLIST_TYPE)


async def multivariant_playlist(request: Request) -> Response:
    if request.method == "HEAD":
        return _head(request)
    number: int = request.path_params["number"]
    hls = hls_of(request)
    session = hls.new_session()
    try:
        feed = await hls.watch(number, session)
    except Exception:
        _count(request, "multivariant", "refused")
        raise
    ffmpeg = app_state(request).settings.ffmpeg
    nominal = (ffmpeg.video_bitrate + ffmpeg.audio_bitrate) * TS_OVERHEAD
    codec = feed.playlist.segments[-1].codec or "avc1.640028"
    variant = Variant(
        uri=f"../{number}.m3u8?session={session}",
        bandwidth=round(max(nominal, feed.playlist.peak_bits_per_second())),
        width=ffmpeg.width,
        height=ffmpeg.height,
        fps=ffmpeg.fps,
        codecs=(codec, "mp4a.40.2"),
    )
    _count(request, "multivariant", "ok")
    return Response(
        variant.render(),
        headers={"Cache-Control": "private, no-store"},
        media_type=PLAYLIST_TYPE,
    )


async def segment(request: Request) -> Response:
    number: int = request.path_params["number"]
    name: str = request.path_params["name"]
    feed = hls_of(request).feed(number)
    found = feed.playlist.find(f"{name}.ts") if SEGMENT_NAME.fullmatch(name) else None
    if found is None:
        _count(request, "segment", "not_found")
        raise SegmentNotFound(number, name)
    _count(request, "segment", "ok")
    max_age = feed.playlist.window * feed.target
    return Response(
        found.data,
        headers={"Cache-Control": f"public, max-age={max_age}, immutable"},
        media_type=SEGMENT_TYPE,
    )


ROUTES = [
    Route("/stream/{number:int}.m3u8", media_playlist, methods=["GET"]),
    Route("/stream/{number:int}/index.m3u8", multivariant_playlist, methods=["GET"]),
    Route("/stream/{number:int}/{name}.ts", segment, methods=["GET"]),
]
