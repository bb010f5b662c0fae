"""The FastAPI application over one barfill :class:`App`.

Stand-in of the compat branch (just enough to mount its router): the http
branch owns this module and replaces it on merge.
"""

from __future__ import annotations

from fastapi import FastAPI

from barfill.bootstrap import App
from barfill.server import compat


def create_app(app: App) -> FastAPI:
    """A FastAPI app serving ``app``'s store; ``app`` is kept on ``state.barfill``."""
    api = FastAPI(title="barfill")
    api.state.barfill = app
    api.include_router(compat.router)
    return api
