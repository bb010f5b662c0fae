"""The ingest bench reads the commit times a stopping worker prints, as rich wraps them."""

from __future__ import annotations

from bench.ingest import _commit_stats

WRAPPED = """worker vm:1:ab: concurrency 4
worker vm:1:ab stopped: WorkerStats(claimed=44, succeeded=44, failed=0,
retried=0, released=0, lease_lost=0, reaped=0, deferred=0, superseded=0,
verified=0, corrections=0, db_errors=0, requests=44, truncated=0, bars_written=744198,
commit_s=5.6789, commit_cpu_s=3.4012, errors={})
"""


def test_commit_times_are_read_from_the_worker_stats() -> None:
    assert _commit_stats(WRAPPED) == {"commit_s": 5.68, "commit_cpu_s": 3.4}


def test_a_log_without_them_gives_none() -> None:
    assert _commit_stats("worker stopped: WorkerStats(claimed=0, bars_written=0)") == {}
