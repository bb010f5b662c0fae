"""The engine: ensure, orchestrator tick, workers, derivations, progress."""
