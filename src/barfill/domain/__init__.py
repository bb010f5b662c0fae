"""Pure logic: no database, no network, no clock (``now`` is always passed in)."""
