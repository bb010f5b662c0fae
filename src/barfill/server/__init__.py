"""barfill's HTTP layer (FastAPI): ``/v1``, the original backend's routes, and the web page."""
