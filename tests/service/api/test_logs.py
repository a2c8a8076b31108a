from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loguru import logger
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.__main__ import Server
from service.api.logs import parse_rfc3339, tail
from service.app import log_store_of
from service.entryid import MAX_KEY, encode_cursor, encode_id
from service.logstore import LogFilter, LogStore, micros
from telemetry.logging import configure_logging
from tests.harness import inprocess
from tests.service.api.conftest import running

AppFactory = Callable[..., Starlette]
# Recent, so that retention (7 days by default) keeps it.
T0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)


def entry(message: str, **fields: Any) -> dict[str, Any]:
    return {
        "time": fields.pop("at", T0).isoformat(),
        "level": fields.pop("level", "INFO"),
        "message": message,
        "logger": "tests",
        "channel": fields.pop("channel", None),
        "trace_id": fields.pop("trace_id", None),
        "span_id": None,
        "extra": {},
    }


async def fill(store: LogStore, count: int, prefix: str = "line") -> None:
    for i in range(count):
        store.append(entry(f"{prefix} {i}", at=T0 + timedelta(milliseconds=i)))
    await store.flush()


# -- routing ---------------------------------------------------------------------------------


class _Routed(Exception):
    pass


def literal_paths(app: Starlette) -> list[tuple[str, str, BaseRoute]]:
    found: list[tuple[str, str, BaseRoute]] = []
    for route in app.routes:
        if isinstance(route, Route) and not route.param_convertors:
            found += [(m, route.path, route) for m in sorted(route.methods or ()) if m != "HEAD"]
        elif isinstance(route, Mount) and not route.param_convertors:
            found.append(("GET", route.path, route))
    return found


async def handled_by(app: Starlette, state: dict[str, Any], method: str, path: str) -> Any:
    """The route the app's own router picks: recorded at the response start, then aborted."""
    scope: Scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
        "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
        "root_path": "", "query_string": b"", "headers": [], "client": ("127.0.0.1", 1),
        "server": ("test", 80), "state": dict(state),
    }  # fmt: skip

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            raise _Routed(message["status"])

    with pytest.raises(_Routed) as routed:
        await app(scope, receive, send)
    return scope["route"], routed.value.args[0]


async def test_no_literal_path_is_handled_by_a_parameter_route(make_app: AppFactory) -> None:
    app = make_app()
    literals = literal_paths(app)
    assert ("GET", "/api/logs/entries", app.routes[0]) not in literals  # sanity: real routes
    assert {"/api/logs/entries", "/api/logs/stream", "/openapi.json"} <= {p for _, p, _ in literals}
    async with app.router.lifespan_context(app) as state:
        for method, path, route in literals:
            chosen, status = await handled_by(app, dict(state or {}), method, path)
            assert chosen is route, f"{method} {path} went to {getattr(chosen, 'path', chosen)}"
            assert status < 500


async def test_entries_answers_on_an_empty_and_a_full_store(make_app: AppFactory) -> None:
    app = make_app()
    async with running(app) as client:
        empty = await client.get("/api/logs/entries")
        assert empty.status_code == 200
        assert empty.json() == {"entries": [], "next_cursor": None}
        await fill(log_store_of(app), 150)
        full = await client.get("/api/logs/entries")
        assert full.status_code == 200
        body = full.json()
        assert len(body["entries"]) == 100
        assert body["entries"][0]["message"] == "line 149"
        assert body["next_cursor"] is not None


# -- one entry -------------------------------------------------------------------------------


async def test_get_entry_by_id_on_both_paths_and_404_once_deleted(make_app: AppFactory) -> None:
    app = make_app(logs={"max_rows": 1000})
    store = log_store_of(app)
    async with running(app) as client:
        await fill(store, 1200)
        page = (await client.get("/api/logs/entries?limit=1")).json()["entries"]
        newest = page[0]
        for path in (f"/api/logs/entries/{newest['id']}", f"/api/logs/{newest['id']}"):
            response = await client.get(path)
            assert response.status_code == 200
            assert response.json() == newest
        oldest = await store.page(LogFilter(), None, 1200)
        doomed = oldest[-1].id
        assert (await client.get(f"/api/logs/{doomed}")).status_code == 200
        await asyncio.to_thread(store.enforce_retention)
        gone = await client.get(f"/api/logs/{doomed}")
        assert gone.status_code == 404
        assert gone.json()["error"] == "entry_not_found"
        unknown = await client.get(f"/api/logs/entries/{encode_id(MAX_KEY)}")
        assert unknown.status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/api/logs/abc",
        "/api/logs/AAAAAAAAAAAAAAAA",
        "/api/logs/entries/abc",
        "/api/logs/entries/AAAAAAAAAAAAAAA%3D",
        f"/api/logs/{encode_cursor(1)}",
    ],
)
async def test_malformed_ids_answer_400_json(make_app: AppFactory, path: str) -> None:
    app = make_app()
    async with running(app) as client:
        response = await client.get(path)
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_entry_id"
        assert response.json()["detail"]
        metric = log_store_of(app).metrics.registry.get_sample_value(
            "exstream_logs_invalid_id_total", {"kind": "entry_id"}
        )
        assert metric == 1


ids = st.integers(min_value=0, max_value=MAX_KEY).map(encode_id)
segments = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="/"), max_size=24
).filter(lambda t: t not in ("", ".", "..", "entries", "stream"))
b64url_16 = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
                    min_size=16, max_size=16)  # fmt: skip


Requests = tuple[asyncio.Runner, httpx.AsyncClient, LogStore]


@pytest.fixture
def requests(make_app: AppFactory) -> Iterator[Requests]:
    """For Hypothesis: a running app and a loop to send each example's request on."""
    app = make_app()
    store = log_store_of(app)
    with asyncio.Runner() as runner:
        serving = running(app)
        client = runner.run(serving.__aenter__())
        runner.run(fill(store, 20))
        yield runner, client, store
        runner.run(serving.__aexit__(None, None, None))


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    text=st.one_of(segments, ids, b64url_16),
    prefix=st.sampled_from(["/api/logs/", "/api/logs/entries/"]),
)
def test_any_text_is_a_round_tripping_id_or_a_400_without_a_query(
    requests: Requests, text: str, prefix: str
) -> None:  # fmt: skip
    runner, client, store = requests
    before = store.queries
    response = runner.run(client.get(prefix + quote(text, safe="")))
    body = response.json()
    if response.status_code == 400:
        assert body["error"] == "invalid_entry_id"
        assert store.queries == before, "a rejected id reached the database"
    else:
        assert response.status_code in (200, 404), body
        assert store.queries > before
        if response.status_code == 200:
            assert body["id"] == text


# -- pages -----------------------------------------------------------------------------------


async def test_cursor_pages_lose_and_repeat_nothing_while_entries_arrive(
    make_app: AppFactory,
) -> None:
    app = make_app()
    store = log_store_of(app)
    async with running(app) as client:
        await fill(store, 10_000, "old")
        seen: list[str] = []
        cursor: str | None = None
        while True:
            params = {"limit": "1000", **({"cursor": cursor} if cursor else {})}
            body = (await client.get("/api/logs/entries", params=params)).json()
            seen += [e["message"] for e in body["entries"]]
            await fill(store, 100, "new")
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == len(set(seen)) == 10_000
        assert all(m.startswith("old") for m in seen)


async def test_filters_over_http(make_app: AppFactory) -> None:
    app = make_app()
    store = log_store_of(app)
    trace = "0123456789abcdef" * 2
    store.append(entry("a warning", level="WARNING", channel="7", at=T0))
    store.append(entry("an error", level="ERROR", at=T0 + timedelta(minutes=1)))
    store.append(entry("traced info", trace_id=trace, at=T0 + timedelta(minutes=2)))

    async def messages(client: Any, **params: str) -> list[str]:
        response = await client.get("/api/logs/entries", params=params)
        assert response.status_code == 200, response.text
        return [e["message"] for e in response.json()["entries"]]

    async with running(app) as client:
        await store.flush()
        assert await messages(client, level="warning") == ["an error", "a warning"]
        assert await messages(client, level="ERROR") == ["an error"]
        assert await messages(client, channel="7") == ["a warning"]
        assert await messages(client, channel="007") == ["a warning"]
        assert await messages(client, trace_id=trace.upper()) == ["traced info"]
        assert await messages(client, q="TRACED") == ["traced info"]
        since = (T0 + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert await messages(client, since=since) == ["traced info", "an error"]
        until = (T0 + timedelta(minutes=1)).astimezone(timezone(timedelta(hours=1))).isoformat()
        assert await messages(client, until=until) == ["a warning"]


@pytest.mark.parametrize(
    ("params", "error", "named"),
    [
        ({"level": "LOUD"}, "invalid_parameter", "level"),
        ({"limit": "0"}, "invalid_parameter", "limit"),
        ({"limit": "1001"}, "invalid_parameter", "limit"),
        ({"limit": "ten"}, "invalid_parameter", "limit"),
        ({"since": "yesterday"}, "invalid_parameter", "since"),
        ({"until": "2025-02-30T00:00:00Z"}, "invalid_parameter", "until"),
        ({"since": "2025-03-01T00:00:00"}, "invalid_parameter", "since"),
        ({"trace_id": "xyz"}, "invalid_parameter", "trace_id"),
        ({"channel": "abc"}, "invalid_parameter", "channel"),
        ({"channel": "0"}, "invalid_parameter", "channel"),
        ({"channel": "100000"}, "invalid_parameter", "channel"),
        ({"channel": "9" * 5000}, "invalid_parameter", "channel"),
        ({"limit": "9" * 5000}, "invalid_parameter", "limit"),
        ({"cursor": "entries"}, "invalid_cursor", "cursor"),
        ({"cursor": encode_id(5)}, "invalid_cursor", "cursor"),
    ],
)
async def test_bad_parameters_answer_400_naming_them(
    make_app: AppFactory, params: dict[str, str], error: str, named: str
) -> None:
    app = make_app()
    async with running(app) as client:
        response = await client.get("/api/logs/entries", params=params)
        assert response.status_code == 400
        assert response.json()["error"] == error
        assert named in response.json()["detail"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-03-01T12:00:00Z", datetime(2025, 3, 1, 12, tzinfo=UTC)),
        ("2025-03-01t12:00:00.5-02:30", datetime(2025, 3, 1, 14, 30, 0, 500000, tzinfo=UTC)),
        ("2016-12-31T23:59:60Z", datetime(2016, 12, 31, 23, 59, 59, tzinfo=UTC)),
        ("2025-03-01T12:00:00.123456789+00:00", datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)),
    ],
)
def test_rfc3339(text: str, expected: datetime) -> None:
    assert parse_rfc3339("since", text) == expected
    assert micros(expected) == micros(parse_rfc3339("since", text))


# -- trace ids -------------------------------------------------------------------------------


async def test_logs_written_during_a_request_are_found_by_its_trace_id(
    make_app: AppFactory, quiet_logs: None
) -> None:
    """The stock ASGI server-span middleware stands in for the service's own tracing."""
    app = make_app()
    store = log_store_of(app)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    def traced(inner: ASGIApp) -> ASGIApp:
        async def handler_that_logs(scope: Scope, receive: Receive, send: Send) -> None:
            logger.info("handling {}", scope["path"])
            await inner(scope, receive, send)
            logger.warning("handled {}", scope["path"])

        return OpenTelemetryMiddleware(handler_that_logs, tracer_provider=provider)

    configure_logging("DEBUG", "json", stream=io.StringIO(), sinks=[store.append])
    async with running(app, wrap=traced) as client:
        for path in ("/healthz", "/api/logs/entries"):
            assert (await client.get(path)).status_code == 200
        await store.flush()
        spans = {
            span.attributes.get("http.target") if span.attributes else None: span
            for span in exporter.get_finished_spans()
            if span.kind is SpanKind.SERVER
        }
        for path in ("/healthz", "/api/logs/entries"):
            trace_id = format(spans[path].context.trace_id, "032x")
            response = await client.get("/api/logs/entries", params={"trace_id": trace_id})
            found = response.json()["entries"]
            assert [e["message"] for e in found] == [f"handled {path}", f"handling {path}"]
            assert all(e["trace_id"] == trace_id and e["span_id"] for e in found)
    provider.shutdown()


# -- live tail (real uvicorn: streams are never tested through buffering clients) -------------


def serving(
    app: Starlette, graceful: float = 5.0
) -> contextlib.AbstractAsyncContextManager[tuple[str, Server]]:
    """The app under a real uvicorn that ends log tails when shutdown begins, as the
    service's own server does."""
    return inprocess.serving(app, graceful=graceful, on_shutdown=log_store_of(app).close_streams)


async def events(response: httpx.Response) -> AsyncIterator[dict[str, str]]:
    """Server-sent events as {"id", "data"} dicts; comments as {"comment"}."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line == "":
            if fields:
                yield fields
            fields = {}
        elif line.startswith(":"):
            yield {"comment": line[1:].strip()}
        else:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")


async def test_tail_delivers_a_new_entry_within_a_second(make_app: AppFactory) -> None:
    app = make_app()
    store = log_store_of(app)
    async with serving(app) as (url, _), httpx.AsyncClient(timeout=30) as client:
        await fill(store, 3, "before")
        async with client.stream("GET", f"{url}/api/logs/stream") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            stream = events(response)
            assert (await anext(stream)).get("comment") == "exstream log tail"
            sent = time.monotonic()
            store.append(entry("fresh", level="ERROR"))
            async with asyncio.timeout(10):
                event = await anext(stream)
            assert time.monotonic() - sent < 1.0
            data = json.loads(event["data"])
            assert data["message"] == "fresh"
            assert event["id"] == data["id"]


async def test_tail_resumes_after_last_event_id_with_filters(make_app: AppFactory) -> None:
    app = make_app()
    store = log_store_of(app)
    async with serving(app) as (url, _), httpx.AsyncClient(timeout=30) as client:
        for i in range(6):
            store.append(entry(f"line {i}", level="WARNING" if i % 2 else "INFO"))
        await store.flush()
        page = await store.page(LogFilter(), None, 10)
        resume_from = page[-2]  # "line 1"
        headers = {"Last-Event-ID": resume_from.id}
        params = {"level": "WARNING"}
        async with client.stream(
            "GET", f"{url}/api/logs/stream", headers=headers, params=params
        ) as response:
            stream = events(response)
            got: list[str] = []
            async with asyncio.timeout(10):
                while len(got) < 2:
                    event = await anext(stream)
                    if "data" in event:
                        got.append(json.loads(event["data"])["message"])
            assert got == ["line 3", "line 5"]


async def test_tail_rejects_a_malformed_last_event_id(make_app: AppFactory) -> None:
    app = make_app()
    async with running(app) as client:
        response = await client.get("/api/logs/stream", headers={"Last-Event-ID": "entries"})
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_entry_id"


async def test_tails_end_promptly_when_the_server_shuts_down(make_app: AppFactory) -> None:
    app = make_app()
    graceful = 5.0
    async with (
        serving(app, graceful) as (url, server),
        httpx.AsyncClient(timeout=30) as client,
        client.stream("GET", f"{url}/api/logs/stream") as response,
    ):
        stream = events(response)
        assert (await anext(stream)).get("comment") == "exstream log tail"
        started = time.monotonic()
        server.should_exit = True
        async with asyncio.timeout(30):
            rest = [event async for event in stream]
        assert rest == []
        assert time.monotonic() - started < graceful / 2, "the tail held up shutdown"


async def test_tail_sends_keepalive_comments(make_app: AppFactory) -> None:
    app = make_app()
    store = log_store_of(app)
    async with running(app):
        stream = tail(store, LogFilter(), await store.last_key(), keepalive=0.05)
        assert await anext(stream) == ": exstream log tail\n\n"
        async with asyncio.timeout(10):
            assert await anext(stream) == ": keep-alive\n\n"
        store.append(entry("after a pause"))
        async with asyncio.timeout(10):
            while (chunk := await anext(stream)).startswith(":"):
                pass
        assert "after a pause" in chunk
        await stream.aclose()
