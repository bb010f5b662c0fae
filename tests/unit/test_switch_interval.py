"""Workers on SQLite shorten the process's GIL switch interval while any of them runs."""

from __future__ import annotations

import sys

from barfill.service.worker import WRITER_SWITCH_S, _short_switch


def test_the_interval_is_short_while_any_worker_runs_and_restored_after_the_last() -> None:
    before = sys.getswitchinterval()
    assert before != WRITER_SWITCH_S
    first, second = _short_switch(), _short_switch()
    first.__enter__()
    second.__enter__()
    assert sys.getswitchinterval() == WRITER_SWITCH_S
    first.__exit__(None, None, None)  # the first to start is not the last to stop
    assert sys.getswitchinterval() == WRITER_SWITCH_S
    second.__exit__(None, None, None)
    assert sys.getswitchinterval() == before
