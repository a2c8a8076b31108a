"""`GET /openapi.json`: the REST surface of the service, kept equal to the routes by a test."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from service import __version__
from service.entryid import TOKEN_PATTERN
from service.logstore import LEVELS

JSON = "application/json"
Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(kind: str, **more: Any) -> Schema:
    return {"type": kind, "nullable": True, **more}


def content(schema: Schema, media_type: str = JSON) -> Schema:
    return {"content": {media_type: {"schema": schema}}}


def error(description: str) -> Schema:
    return {"description": description, **content(ref("Error"))}


def text(description: str, media_type: str) -> Schema:
    return {"description": description, **content({"type": "string"}, media_type)}


def parameter(name: str, where: str, schema: Schema, description: str) -> Schema:
    # Path parameters are always required in OpenAPI; ours in the query never are.
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "schema": schema,
        "description": description,
    }


def query(name: str, schema: Schema, description: str) -> Schema:
    return parameter(name, "query", schema, description)


def path_param(name: str, schema: Schema, description: str) -> Schema:
    return parameter(name, "path", schema, description)


CHANNEL_NUMBER = path_param("number", {"type": "integer", "minimum": 0}, "Channel number.")
ENTRY_ID = path_param(
    "entry_id",
    {"type": "string", "pattern": f"^{TOKEN_PATTERN}$"},
    "Opaque entry id (16 base64url characters). Malformed ids answer 400 invalid_entry_id.",
)
LOG_FILTERS = [
    query("level", {"type": "string", "enum": list(LEVELS)}, "This level and above."),
    query(
        "channel",
        {"type": "string", "pattern": "^[0-9]{1,5}$"},
        "Only entries of this channel (its number, 1-99999).",
    ),
    query("since", {"type": "string", "format": "date-time"}, "RFC 3339, inclusive."),
    query("until", {"type": "string", "format": "date-time"}, "RFC 3339, exclusive."),
    query("q", {"type": "string"}, "Substring of the message, ignoring ASCII case."),
    query("trace_id", {"type": "string", "pattern": "^[0-9a-fA-F]{32}$"}, "Trace id."),
]
LOGS_AUTH: list[dict[str, list[str]]] = [{"bearer": []}]
UNAUTHORIZED = error("Bearer token missing or wrong (only when EXSTREAM_API_TOKEN is set).")
LOG_STORE_UNAVAILABLE = error(
    "log_store_unavailable: the log store is off (read-only or full disk) or its damaged"
    " file is being created again; detail says why. Streaming is not affected."
)
CROSS_SITE = error(
    "cross_site_request: a browser's request for another site's page; send"
    " Content-Type: application/json, or call from this origin."
)
TOKEN_REQUIRED = error(
    "token_required: bound beyond loopback with no EXSTREAM_API_TOKEN set, the logs API is refused."
)
PATH = {
    "type": "string",
    "description": "Full path for the token's holder (or anyone, bound to loopback with no"
    " token set); otherwise the file name only.",
}

HLS_PLAYLIST = "application/vnd.apple.mpegurl"
HLS_UNAVAILABLE = error(
    "channel_unavailable (with Retry-After): the channel failed or gave no segment in time;"
    " too_many_sessions: `[hls] max_sessions` sessions are open."
)


def get(summary: str, responses: Schema, **more: Any) -> Schema:
    return {"get": {"summary": summary, "responses": responses, **more}}


def log_entry(summary: str, **more: Any) -> Schema:
    return get(
        summary,
        {
            "200": {"description": "The entry", **content(ref("LogEntry"))},
            "400": error("Malformed id."),
            "401": UNAUTHORIZED,
            "403": TOKEN_REQUIRED,
            "404": error("Well-formed id of no stored entry."),
            "503": LOG_STORE_UNAVAILABLE,
        },
        parameters=[ENTRY_ID],
        security=LOGS_AUTH,
        **more,
    )


SCHEMAS: dict[str, Schema] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}, "detail": {}},
    },
    "LogEntry": {
        "type": "object",
        "required": ["id", "time", "level", "message", "extra"],
        "properties": {
            "id": {"type": "string", "pattern": f"^{TOKEN_PATTERN}$"},
            "time": {"type": "string", "format": "date-time"},
            "level": {"type": "string"},
            "message": {"type": "string"},
            "logger": nullable("string"),
            "channel": nullable("string"),
            "trace_id": nullable("string"),
            "span_id": nullable("string"),
            "extra": {"type": "object"},
        },
    },
    "LogPage": {
        "type": "object",
        "required": ["entries", "next_cursor"],
        "properties": {
            "entries": {"type": "array", "items": ref("LogEntry")},
            "next_cursor": nullable("string", pattern=f"^{TOKEN_PATTERN}$"),
        },
    },
    "Cluster": {
        "type": "object",
        "required": ["instance", "members"],
        "properties": {
            "instance": {"type": "string"},
            "members": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "url", "live", "channels"],
                    "properties": {
                        "name": {"type": "string"},
                        "url": nullable("string"),
                        "live": {"type": "boolean"},
                        "channels": {"type": "array", "items": {"type": "integer"}},
                    },
                },
            },
        },
    },
    "Channel": {
        "type": "object",
        "required": ["number", "name", "mode", "state", "viewers", "stream_url"],
        "properties": {
            "number": {"type": "integer"},
            "name": {"type": "string"},
            "mode": {"type": "string", "enum": ["on_demand", "always_on"]},
            "state": {"type": "string"},
            "viewers": {"type": "integer"},
            "pid": nullable("integer"),
            "uptime_seconds": nullable("number"),
            "process": nullable(
                "object",
                description="The ffmpeg of the moment; null between two processes.",
                properties={
                    "pid": {"type": "integer"},
                    "uptime_seconds": {"type": "number"},
                    "plays": {"type": "string", "enum": ["item", "slate"]},
                    "path": {"nullable": True, **PATH},
                    "seek_seconds": nullable("number"),
                },
            ),
            "restarts": {"type": "integer"},
            "failure": {
                "nullable": True,
                "description": "Why it failed; directories cut out unless paths are shown.",
            },
            "last_output_at": nullable("string"),
            "last_crash": nullable(
                "object",
                description="The last crash (kept after the channel healed): reason, detail"
                " (ffmpeg's last stderr lines; directories cut out unless paths are shown),"
                " when.",
                properties={
                    "reason": {"type": "string"},
                    "detail": {"type": "string"},
                    "at": {"type": "string"},
                },
            ),
            "current": nullable("object", properties={"title": {"type": "string"}, "path": PATH}),
            "media_items": {"type": "integer"},
            "skipped_media": {
                "type": "array",
                "items": {"type": "object", "properties": {"path": PATH}},
            },
            "skipped_items": {
                "type": "array",
                "items": {"type": "object", "properties": {"path": PATH}},
            },
            "workahead_seconds": {"type": "number"},
            "horizon_seconds": {"type": "number"},
            "stream_url": {"type": "string"},
            "instance": {
                "type": "string",
                "description": "The instance that runs the channel ([cluster]); the state and"
                " process are this instance's, so ask that one for them.",
            },
        },
    },
    "Probe": {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {"type": "string"},
            "checks": {"type": "object"},
            "storage": {
                "type": "object",
                "description": "The stores on the data disk (logs, probe_cache): degraded,"
                " reason, detail, since, moved_aside. They never decide readiness.",
            },
            "problems": {
                "type": "array",
                "items": {"type": "string"},
                "description": "What is wrong with the configured ffmpeg or ffprobe, each"
                " naming its config key (e.g. `ffmpeg.preset: ...`); only when not ready.",
            },
        },
    },
}

HTML_PAGE = text("Page", "text/html")
SERIES = {"type": "array", "items": nullable("number")}
# The status pages (service/web/) and what only they read.
WEB_PATHS: dict[str, Schema] = {
    "/": get("Status page for people: the service and every channel, live.", {"200": HTML_PAGE}),
    "/guide": get("The next hours of every channel as a grid (HTML).", {"200": HTML_PAGE}),
    "/logs": get("The logs API as a table, with its filters and live tail.", {"200": HTML_PAGE}),
    "/channels/{number}": get(
        "One channel: how to play it, its schedule, its live log lines (HTML).",
        {"200": HTML_PAGE, "404": text("No such channel", "text/html")},
        parameters=[CHANNEL_NUMBER],
    ),
    "/static/{name}": get(
        "The pages' style sheet and scripts.",
        {
            "200": {
                "description": "The file",
                "content": {
                    media_type: {"schema": {"type": "string"}}
                    for media_type in ("text/css", "text/javascript", "text/plain")
                },
            },
            "304": {"description": "Not modified (If-None-Match)"},
            "404": error("No such file."),
        },
        parameters=[path_param("name", {"type": "string"}, "File name.")],
    ),
    "/api/history": get(
        "Every channel's last hour for the status page's charts, sampled every 10 s.",
        {
            "200": {
                "description": "Samples, oldest first",
                **content(
                    {
                        "type": "object",
                        "required": ["interval_seconds", "points", "times", "channels"],
                        "properties": {
                            "interval_seconds": {"type": "number"},
                            "points": {"type": "integer", "description": "Samples kept."},
                            "times": {"type": "array", "items": {"type": "string"}},
                            "channels": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": [
                                        "number",
                                        "output_bits_per_second",
                                        "viewers",
                                        "restarts",
                                        "restarts_total",
                                        "restarts_last_hour",
                                    ],
                                    "properties": {
                                        "number": {"type": "integer"},
                                        "output_bits_per_second": SERIES,
                                        "viewers": {"type": "array", "items": {"type": "integer"}},
                                        "restarts": {**SERIES, "description": "Per interval."},
                                        "restarts_total": {"type": "integer"},
                                        "restarts_last_hour": {"type": "integer"},
                                    },
                                },
                            },
                        },
                    }
                ),
            }
        },
    ),
    "/api/channels/{number}/schedule": get(
        "The channel's next programmes (3 hours, at most 50), the one on air first.",
        {
            "200": {
                "description": "Schedule",
                **content(
                    {
                        "type": "object",
                        "required": ["number", "entries"],
                        "properties": {
                            "number": {"type": "integer"},
                            "entries": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["title", "start", "end"],
                                    "properties": {
                                        "title": {"type": "string"},
                                        "start": {"type": "string", "format": "date-time"},
                                        "end": {"type": "string", "format": "date-time"},
                                    },
                                },
                            },
                        },
                    }
                ),
            },
            "404": error("No such channel."),
        },
        parameters=[CHANNEL_NUMBER],
    ),
}

PATHS: dict[str, Schema] = {
    "/stream/{number}.ts": get(
        "One viewer's live MPEG-TS stream of the channel (endless).",
        {
            "200": {
                "description": "MPEG-TS",
                **content({"type": "string", "format": "binary"}, "video/mp2t"),
            },
            "404": error("No such channel."),
            "503": error("The channel cannot serve a viewer now."),
        },
        parameters=[CHANNEL_NUMBER],
    ),
    "/stream/{number}/index.m3u8": get(
        "HLS multivariant playlist of the channel: one variant (BANDWIDTH, RESOLUTION,"
        " CODECS, FRAME-RATE) whose URI carries a new session token. Starts an on-demand"
        " channel and waits for its first segment (up to `[stream] start_timeout`).",
        {
            "200": text("Multivariant playlist (never cached)", HLS_PLAYLIST),
            "404": error("No such channel."),
            "503": HLS_UNAVAILABLE,
        },
        parameters=[CHANNEL_NUMBER],
    ),
    "/stream/{number}.m3u8": get(
        "HLS live media playlist of the channel (RFC 8216). Each request keeps the"
        " session alive (an HLS viewer); starts an on-demand channel and waits for its first"
        " segment. `If-None-Match` with the last ETag answers 304 when nothing changed.",
        {
            "200": text("Media playlist", HLS_PLAYLIST),
            "304": {"description": "Not modified (the ETag matched)."},
            "400": error("invalid_session: the session token is malformed."),
            "404": error("No such channel."),
            "503": HLS_UNAVAILABLE,
        },
        parameters=[
            CHANNEL_NUMBER,
            query(
                "session",
                {"type": "string", "pattern": "^[A-Za-z0-9_-]{8,64}$"},
                "Session token from the multivariant playlist; without one, the client's"
                " address and User-Agent name the session.",
            ),
        ],
    ),
    "/stream/{number}/{name}.ts": get(
        "One HLS segment (MPEG-TS, from memory); its URL never changes meaning.",
        {
            "200": {
                "description": "MPEG-TS segment (cacheable, immutable)",
                **content({"type": "string", "format": "binary"}, "video/mp2t"),
            },
            "404": error("No such channel, or segment_not_found: it is no longer held."),
        },
        parameters=[
            CHANNEL_NUMBER,
            path_param(
                "name",
                {"type": "string", "pattern": "^[0-9a-f]{1,32}-[0-9]{1,18}$"},
                "Run id and media sequence number, as the media playlist lists them.",
            ),
        ],
    ),
    "/iptv/channels.m3u": get(
        "M3U playlist of every channel.", {"200": text("Playlist", "audio/x-mpegurl")}
    ),
    "/iptv/xmltv.xml": get(
        "XMLTV guide of the next `[guide] hours` (24); gzip-encoded when accepted.",
        {"200": text("Guide", "application/xml"), "503": error("The guide is being rendered.")},
    ),
    "/iptv/xmltv.xml.gz": get(
        "The XMLTV guide as a gzip file.",
        {
            "200": {
                "description": "Guide, gzip-compressed",
                **content({"type": "string", "format": "binary"}, "application/gzip"),
            },
            "503": error("The guide is being rendered."),
        },
    ),
    "/discover.json": get(
        "HDHomeRun device description.",
        {"200": {"description": "Device", **content({"type": "object"})}},
    ),
    "/lineup.json": get(
        "HDHomeRun lineup.",
        {
            "200": {
                "description": "Lineup",
                **content({"type": "array", "items": {"type": "object"}}),
            }
        },
    ),
    "/lineup_status.json": get(
        "HDHomeRun lineup status.",
        {"200": {"description": "Status", **content({"type": "object"})}},
    ),
    "/lineup.post": {
        "post": {
            "summary": "HDHomeRun channel scan request: the lineup is the configuration.",
            "responses": {
                "200": {"description": "Accepted, nothing to scan"},
                "403": CROSS_SITE,
            },
        }
    },
    "/device.xml": get(
        "UPnP device description of the HDHomeRun emulation.",
        {"200": text("Device", "application/xml")},
    ),
    "/api/channels": get(
        "Status of every channel.",
        {
            "200": {
                "description": "Channels",
                **content(
                    {
                        "type": "object",
                        "required": ["channels"],
                        "properties": {"channels": {"type": "array", "items": ref("Channel")}},
                    }
                ),
            }
        },
    ),
    "/api/channels/{number}": get(
        "Status of one channel.",
        {
            "200": {"description": "Channel", **content(ref("Channel"))},
            "404": error("No such channel."),
        },
        parameters=[CHANNEL_NUMBER],
    ),
    "/api/channels/{number}/restart": {
        "post": {
            "summary": "Reset a failed channel or restart a running one now.",
            "parameters": [CHANNEL_NUMBER],
            "security": LOGS_AUTH,
            "responses": {
                "202": {
                    "description": "Accepted",
                    **content(
                        {
                            "type": "object",
                            "required": ["number", "action"],
                            "properties": {
                                "number": {"type": "integer"},
                                "action": {"type": "string", "enum": ["reset", "restarted"]},
                            },
                        }
                    ),
                },
                "401": UNAUTHORIZED,
                "403": CROSS_SITE,
                "404": error("No such channel."),
                "409": error("The channel is not running."),
            },
        }
    },
    "/api/cluster": get(
        "The members of [cluster], which are live, and the channels each runs.",
        {"200": {"description": "Members", **content(ref("Cluster"))}},
    ),
    "/api/cluster/owner": get(
        "The instance that runs a path's channel (the front door's lookup): 204, owner in"
        " the X-Exstream-Owner (name) and X-Exstream-Owner-Address (host:port) headers.",
        {
            "204": {
                "description": "Owner found",
                "headers": {
                    "X-Exstream-Owner": {"schema": {"type": "string"}},
                    "X-Exstream-Owner-Address": {"schema": {"type": "string"}},
                },
            },
            "400": error("not_a_channel_path: the path is not /stream/N... or /api/channels/N."),
        },
        parameters=[
            query("path", {"type": "string"}, "A request path; X-Original-URI wins."),
            parameter(
                "X-Original-URI", "header", {"type": "string"}, "A request path (nginx sends it)."
            ),
        ],
    ),
    "/healthz": get(
        "Liveness: the process answers.",
        {"200": {"description": "Alive", **content(ref("Probe"))}},
    ),
    "/readyz": get(
        "Readiness: config loaded, ffmpeg found, accepting viewers.",
        {
            "200": {"description": "Ready", **content(ref("Probe"))},
            "503": {"description": "Not ready", **content(ref("Probe"))},
        },
    ),
    "/metrics": get(
        "Prometheus metrics (text format, or OpenMetrics by content negotiation).",
        {"200": text("Metrics", "text/plain")},
    ),
    "/openapi.json": get(
        "This document.", {"200": {"description": "OpenAPI 3.0", **content({"type": "object"})}}
    ),
    "/api/logs/entries": get(
        "Stored log entries, newest first, by keyset pages.",
        {
            "200": {"description": "A page", **content(ref("LogPage"))},
            "400": error("Bad filter (detail names it) or malformed cursor."),
            "401": UNAUTHORIZED,
            "403": TOKEN_REQUIRED,
            "503": LOG_STORE_UNAVAILABLE,
        },
        parameters=[
            *LOG_FILTERS,
            query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "Default 100."),
            query(
                "cursor",
                {"type": "string", "pattern": f"^{TOKEN_PATTERN}$"},
                "next_cursor of the previous page.",
            ),
        ],
        security=LOGS_AUTH,
    ),
    "/api/logs/stream": get(
        "Live tail as Server-Sent Events (event id = entry id); resumes after Last-Event-ID.",
        {
            "200": text("Events", "text/event-stream"),
            "400": error("Bad filter or malformed Last-Event-ID."),
            "401": UNAUTHORIZED,
            "403": TOKEN_REQUIRED,
            "503": error(
                "too_many_log_tails (every live tail is in use), or log_store_unavailable"
                " (the log store is off: read-only or full disk, or being created again)."
            ),
        },
        parameters=[
            *LOG_FILTERS,
            {
                "name": "Last-Event-ID",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "pattern": f"^{TOKEN_PATTERN}$"},
            },
        ],
        security=LOGS_AUTH,
    ),
    "/api/logs/entries/{entry_id}": log_entry("One log entry."),
    "/api/logs/{entry_id}": log_entry("One log entry (the old API's path).", deprecated=True),
    **WEB_PATHS,
}

DOCUMENT: Schema = {
    "openapi": "3.0.3",
    "info": {"title": "exstream", "version": __version__},
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    },
}


async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(DOCUMENT)
