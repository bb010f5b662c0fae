"""barfill over HTTP: the FastAPI application (see :mod:`barfill.server.app`)."""
