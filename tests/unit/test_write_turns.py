"""The worker's write turns on a one-writer database: short writes go between commits."""

from __future__ import annotations

import threading
from collections.abc import Callable

from barfill.service.worker import WriteTurns

WAIT_S = 10.0  # a bound on waiting for another thread, never a measured time


def _until(condition: Callable[[], bool]) -> None:
    done = threading.Event()
    for _ in range(10_000):
        if condition():
            return
        done.wait(0.001)
    raise AssertionError("condition never held")


def test_an_urgent_write_goes_before_queued_commits() -> None:
    turns = WriteTurns(True)
    order: list[str] = []
    release = threading.Event()

    def write(name: str, urgent: bool, hold: threading.Event | None = None) -> None:
        with turns(urgent=urgent):
            order.append(name)
            if hold is not None:
                assert hold.wait(WAIT_S)

    first = threading.Thread(target=write, args=("commit 1", False, release))
    first.start()
    _until(lambda: order == ["commit 1"])
    later = [
        threading.Thread(target=write, args=("commit 2", False)),
        threading.Thread(target=write, args=("commit 3", False)),
    ]
    for t in later:
        t.start()
    _until(lambda: turns.waiting == 2)
    claim = threading.Thread(target=write, args=("claim", True))
    claim.start()
    _until(lambda: turns.waiting == 3)
    release.set()
    for t in (first, *later, claim):
        t.join(WAIT_S)
    assert order[:2] == ["commit 1", "claim"]
    assert sorted(order[2:]) == ["commit 2", "commit 3"]


def test_one_writer_at_a_time_and_none_left_waiting() -> None:
    turns = WriteTurns(True)
    inside = 0
    most = 0
    guard = threading.Lock()

    def write(urgent: bool) -> None:
        nonlocal inside, most
        for _ in range(200):
            with turns(urgent=urgent):
                with guard:
                    inside += 1
                    most = max(most, inside)
                with guard:
                    inside -= 1

    threads = [threading.Thread(target=write, args=(i % 2 == 0,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S)
    assert most == 1
    assert turns.waiting == 0


def test_disabled_turns_do_not_exclude() -> None:
    turns = WriteTurns(False)
    with turns(urgent=False), turns(urgent=True):  # PostgreSQL: writers run side by side
        assert turns.waiting == 0
