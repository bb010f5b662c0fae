"""FastAPI dependencies shared by the routers (stand-in until the ``http`` branch's version lands).

Names and signatures as agreed in the HTTP layout: :func:`get_app` and
:func:`require`. This stand-in enforces nothing (a loopback server needs no key).
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Request

from barfill.bootstrap import App


def get_app(request: Request) -> App:
    """The barfill :class:`App` stored on ``fastapi_app.state.barfill``."""
    app: App = request.app.state.barfill
    return app


def require(scope: str) -> Callable[[Request], None]:
    """A dependency enforcing the API-key scope ``read|write|admin`` (stand-in: allows everything)."""

    def check(request: Request) -> None:
        return None

    return check
