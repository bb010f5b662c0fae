"""FastAPI dependencies shared by every router: the barfill :class:`App` and API-key scopes.

Stand-in of the compat branch: the http branch owns this module and replaces
it on merge (same names and signatures). Here ``require`` checks nothing: the
server binds 127.0.0.1 with no keys configured.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request

from barfill.bootstrap import App


def get_app(request: Request) -> App:
    """The barfill :class:`App` stored on ``fastapi_app.state.barfill`` by ``create_app``."""
    app: App = request.app.state.barfill
    return app


def require(scope: str) -> Callable[[Request], Awaitable[None]]:
    """A dependency enforcing the API-key scope ``scope`` (``read``, ``write`` or ``admin``)."""

    async def dependency(request: Request) -> None:
        return None

    return dependency
