"""Registration of every REST route of the read side and the write side, in a safe order."""

from __future__ import annotations

from aiohttp import web

from api.auth import TokenVerifier
from api.publisher import Publisher
from api.rest import openapi
from api.rest.bulk import BulkRoutes
from api.rest.contacts import ContactRoutes
from api.rest.devices import DeviceRoutes
from api.rest.explain import ExplainRoutes
from api.rest.notifications import NotificationRoutes
from engine.settings import Settings
from projections.queries import NotificationQueries


def register_rest(
    app: web.Application,
    *,
    verifier: TokenVerifier,
    queries: NotificationQueries,
    publisher: Publisher | None,
    settings: Settings,
) -> None:
    """Add ``/api/notifications``, ``/api/devices``, ``/api/users``, the OpenAPI document and docs page.

    Without a ``publisher`` the write routes answer 503 (a read-only API instance).
    """
    BulkRoutes(verifier, queries, publisher, settings).register(app)  # before /api/notifications/{id}
    NotificationRoutes(verifier, queries, publisher, settings).register(app)
    DeviceRoutes(verifier, queries, publisher, settings).register(app)
    ContactRoutes(verifier, queries, publisher, settings).register(app)
    ExplainRoutes(verifier, queries, settings).register(app)  # reads the log itself; the models say where
    openapi.register(app)
