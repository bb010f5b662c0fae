"""barfill's HTTP server: the FastAPI app, its routes and their dependencies."""
