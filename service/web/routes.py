"""The pages' routes, and the JSON and files only they use; `/api/*` ones are documented
in the OpenAPI description like every other route."""

from __future__ import annotations

from starlette.routing import Route

from service.web import data, pages, static

ROUTES = [
    Route("/", pages.status_page, methods=["GET"]),
    Route("/guide", pages.guide_page, methods=["GET"]),
    Route("/logs", pages.logs_page, methods=["GET"]),
    Route("/channels/{number:int}", pages.channel_page, methods=["GET"]),
    Route("/channels/{number}", pages.no_channel_page, methods=["GET"]),
    Route("/static/{name:path}", static.static, methods=["GET"]),
    Route("/api/history", data.history, methods=["GET"]),
    Route("/api/channels/{number:int}/schedule", data.schedule, methods=["GET"]),
]
