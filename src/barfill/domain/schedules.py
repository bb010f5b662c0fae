"""Exchange schedules as plain arrays, built by ``exchange_calendars`` and kept in a file.

``exchange_calendars`` needs pandas, and pandas 3 needs pyarrow: importing
them costs a process ~110 MB of resident memory and ~1 s. A worker only needs
each session's date, open and close, so the schedule is built once (per
calendar, day and library version) and kept as a small ``.npz`` file in the
user's cache directory (``$XDG_CACHE_HOME/barfill/calendars``, else
``~/.cache/barfill/calendars``). A process that has not imported pandas builds
a missing file in a short-lived helper process (``python -m
barfill.domain.schedules``), so the libraries' memory leaves with it; one that
has (a notebook, the test suite) builds in-process. An unwritable cache only
costs the rebuild.

The schedule is the one ``exchange_calendars`` gives for
``[CALENDAR_START, today + 1 year]``, today being the local date, as the
library's own default end is.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import date
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from barfill.errors import InvalidInput

CALENDAR_START = "2000-01-03"
_FORMAT = 1  # bump when the file's content changes meaning
_UNKNOWN_NAME_EXIT = 3  # the helper's exit status for a name exchange_calendars does not know

log = logging.getLogger("barfill.calendar")


@dataclass(frozen=True)
class Schedule:
    """One calendar's sessions: local dates, and open/close instants in Unix seconds (UTC)."""

    name: str
    tz: str
    dates: npt.NDArray[np.datetime64]  # datetime64[D]
    opens: npt.NDArray[np.int64]
    closes: npt.NDArray[np.int64]


def load_schedule(name: str, *, today: date | None = None) -> Schedule:
    """The schedule of calendar ``name``: from the file cache, else built (and cached).

    Raises:
        InvalidInput: ``name`` is not an ``exchange_calendars`` name.
    """
    end = _end_for(today or date.today())
    path = _cache_dir() / _file_name(name, end)
    cached = _read(path, name)
    if cached is not None:
        return cached
    schedule = _build_elsewhere(name, end) if "pandas" not in sys.modules else None
    if schedule is None:
        schedule = build_schedule(name, CALENDAR_START, end)
    _write(path, schedule)
    return schedule


def build_schedule(name: str, start: str, end: str) -> Schedule:
    """Ask ``exchange_calendars`` (imported here, with pandas) for ``name``'s sessions in [start, end]."""
    import warnings

    import exchange_calendars as xcals
    import pandas as pd

    try:
        with warnings.catch_warnings():
            # exchange_calendars 4.13 reads ``Series.values`` of tz-aware columns, which
            # pandas 3.1 deprecates (Pandas4Warning); harmless, and fatal under -W error.
            warnings.simplefilter("ignore", DeprecationWarning)
            cal: Any = xcals.get_calendar(name, start=start, end=end)
    except (xcals.errors.InvalidCalendarName, KeyError) as e:
        raise InvalidInput("calendar", "an exchange_calendars name such as XNYS or 24/7", name) from e
    sched = cal.schedule

    def utc_seconds(column: Any) -> npt.NDArray[np.int64]:
        index = pd.DatetimeIndex(column)
        if index.tz is not None:
            index = index.tz_convert(None)
        return np.asarray(index.as_unit("s").asi8, dtype=np.int64)

    return Schedule(
        name=name,
        tz=str(cal.tz),
        dates=sched.index.values.astype("datetime64[D]"),
        opens=utc_seconds(sched["open"]),
        closes=utc_seconds(sched["close"]),
    )


def _end_for(today: date) -> str:
    """``today`` plus one year (29 February → 28 February), as ``exchange_calendars`` defaults."""
    try:
        return today.replace(year=today.year + 1).isoformat()
    except ValueError:
        return today.replace(year=today.year + 1, day=28).isoformat()


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "barfill" / "calendars"


def _file_name(name: str, end: str) -> str:
    try:
        version = metadata.version("exchange_calendars")
    except metadata.PackageNotFoundError:
        version = "unknown"
    safe = "".join(ch if ch.isalnum() else "_" for ch in name)
    return f"{safe}-{CALENDAR_START}-{end}-xcals{version}-f{_FORMAT}.npz"


def _encode(schedule: Schedule) -> bytes:
    out = io.BytesIO()
    np.savez(
        out,
        name=np.array(schedule.name),
        tz=np.array(schedule.tz),
        dates=schedule.dates,
        opens=schedule.opens,
        closes=schedule.closes,
    )
    return out.getvalue()


def _decode(data: bytes | Path) -> Schedule:
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    with np.load(source, allow_pickle=False) as f:
        return Schedule(
            name=str(f["name"]),
            tz=str(f["tz"]),
            dates=f["dates"].astype("datetime64[D]"),
            opens=f["opens"].astype(np.int64),
            closes=f["closes"].astype(np.int64),
        )


def _read(path: Path, name: str) -> Schedule | None:
    """The cached schedule, or None when it is missing, unreadable or not ``name``'s."""
    try:
        schedule = _decode(path)
    except (OSError, ValueError, KeyError) as e:
        if not isinstance(e, FileNotFoundError):
            log.warning("calendar cache %s unreadable (%s); rebuilding", path, e)
        return None
    n = len(schedule.dates)
    if schedule.name != name or n == 0 or len(schedule.opens) != n or len(schedule.closes) != n:
        return None
    return schedule


def _write(path: Path, schedule: Schedule) -> None:
    """Write atomically (a reader sees the old file or the whole new one); drop older ones."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(_encode(schedule))
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        stem = path.name.split("-", 1)[0] + "-"
        for old in path.parent.glob(f"{stem}*.npz"):
            if old != path:
                with contextlib.suppress(OSError):
                    old.unlink()
    except OSError as e:
        log.info("calendar cache not written (%s): the next process builds it again", e)


def _build_elsewhere(name: str, end: str) -> Schedule | None:
    """Build in a helper process; None if that failed for any reason but an unknown name."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "barfill.domain.schedules", name, CALENDAR_START, end],
            capture_output=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as e:
        log.info("calendar helper process failed (%s); building in this process", e)
        return None
    if done.returncode == _UNKNOWN_NAME_EXIT:
        raise InvalidInput("calendar", "an exchange_calendars name such as XNYS or 24/7", name)
    if done.returncode != 0:
        log.info("calendar helper exited %s; building in this process", done.returncode)
        return None
    try:
        return _decode(done.stdout)
    except (OSError, ValueError, KeyError) as e:
        log.info("calendar helper's answer unreadable (%s); building in this process", e)
        return None


def main(argv: list[str]) -> int:
    """``python -m barfill.domain.schedules NAME START END``: the schedule as ``.npz`` on stdout."""
    name, start, end = argv
    try:
        schedule = build_schedule(name, start, end)
    except InvalidInput:
        return _UNKNOWN_NAME_EXIT
    sys.stdout.buffer.write(_encode(schedule))
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
