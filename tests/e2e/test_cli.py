"""The CLI: user mistakes are one clear line and exit code 2; the happy path works end to end."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from barfill.cli import main
from tests.e2e.helpers import BIN, clean_env


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        main(list(argv))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for key in [k for k in __import__("os").environ if k.startswith("BARFILL_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "cli.db"
    monkeypatch.setenv("BARFILL_DATABASE_URL", f"sqlite:///{db}")
    return db


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["ensure", "AAPL", "-t", "2h", "--days", "5"], "timeframe"),
        (["ensure", "AAPL", "-t", "h1", "--days", "0"], "days"),
        (["ensure", "AAPL", "-t", "h1", "--start", "2024-03-05", "--end", "2024-03-01"], "end"),
        (["ensure", "AAPL", "-t", "h1", "--start", "2024-03-01T10:00", "--end", "2024-03-05"], "start"),
        (["ensure", "AA PL;", "-t", "h1", "--days", "5"], "symbol"),
        (["ensure", "AAPL", "-t", "h1", "--days", "5", "--provider", "nope"], "provider"),
        (["bars", "AAPL", "-t", "h1", "--format", "xml"], "format"),
        (["jobs", "list", "--status", "done"], "status"),
        (["jobs", "retry", "--status", "done"], "status"),
        (["ensure", "AAPL", "-t", "h1", "--days", "5", "--requester", "my notebook"], "requester"),
        (["export", "AAPL", "-t", "h1", "--out", "x.txt", "--format", "xls"], "format"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, env: Path, argv: list[str], needle: str) -> None:
    assert run(capsys, "init")[0] == 0
    code, _, err = run(capsys, *argv)
    assert code == 2
    line = err.strip()
    assert line.startswith("error:") and needle in line
    assert "Traceback" not in err


def test_uninitialised_database_says_run_init(capsys, env: Path) -> None:
    code, _, err = run(capsys, "status")
    assert code == 2 and "barfill init" in err and "Traceback" not in err


def test_unreachable_database_is_a_clear_error(capsys, env: Path, monkeypatch) -> None:
    monkeypatch.setenv("BARFILL_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/nowhere")
    code, _, err = run(capsys, "status")
    assert code == 2 and "cannot reach the database" in err and "Traceback" not in err


def test_invalid_config_names_the_key(capsys, env: Path, monkeypatch) -> None:
    monkeypatch.setenv("BARFILL_LEASE_S", "soon")
    code, _, err = run(capsys, "status")
    assert code == 2 and "lease_s" in err


def test_ensure_wait_then_read_and_export(capsys, env: Path, tmp_path: Path) -> None:
    assert run(capsys, "init")[0] == 0
    code, out, err = run(
        capsys, "ensure", "AAPL", "MSFT", "-t", "h1", "--start", "2024-03-04", "--end", "2024-03-09", "--wait"
    )
    assert code == 0, err
    assert "coverage complete" in out
    assert "synthetic" in err  # told once that no keys means synthetic data
    code, out, _ = run(capsys, "bars", "AAPL", "-t", "h1", "--format", "json")
    rows = json.loads(out)
    assert code == 0 and len(rows) == 35 and {"open", "high", "low", "close", "volume"} <= rows[0].keys()
    code, out, _ = run(capsys, "export", "AAPL", "MSFT", "-t", "h1", "--format", "csv", "--out", "exp")
    assert code == 0 and (tmp_path / "exp" / "AAPL_h1.csv").is_file()
    code, out, _ = run(capsys, "status", "--json")
    status = json.loads(out)
    assert status["counts"].get("succeeded", 0) >= 2 and status["bars"] >= 70
    code, out, _ = run(capsys, "definitions", "list")
    assert code == 0 and "AAPL" in out and "MSFT" in out


def test_universe_add(capsys, env: Path, tmp_path: Path) -> None:
    assert run(capsys, "init")[0] == 0
    f = tmp_path / "u.txt"
    f.write_text("# my list\nAAPL\nmsft\nBRK.B  # class B\n\nAAPL\n")
    code, out, _ = run(capsys, "universe", "add", str(f), "-t", "d1", "--days", "30")
    assert code == 0 and "3 symbol(s) read, 3 new" in out
    f.write_text("AAPL\nBAD TICKER\n")
    code, _, err = run(capsys, "universe", "add", str(f))
    assert code == 2 and "u.txt:2" in err


def test_console_script_runs(env: Path) -> None:
    result = subprocess.run(
        [str(BIN / "barfill"), "ensure", "AAPL", "-t", "9x"],
        env=clean_env(f"sqlite:///{env}"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "timeframe" in result.stderr and "Traceback" not in result.stderr


def test_init_is_idempotent(capsys, env: Path) -> None:
    assert run(capsys, "init")[0] == 0
    code, out, _ = run(capsys, "init")
    assert code == 0 and "up to date" in " ".join(out.split())  # rich wraps long paths


def test_operator_commands(capsys, env: Path) -> None:
    assert run(capsys, "init")[0] == 0
    code, _, err = run(
        capsys, "ensure", "AAPL", "MSFT", "-t", "d1", "--start", "2024-01-02", "--end", "2024-06-01"
    )
    assert code == 0, err
    code, out, _ = run(capsys, "jobs", "list", "--status", "queued")
    assert code == 0 and "AAPL" in out and "MSFT" in out
    code, out, _ = run(capsys, "definitions", "list")
    assert code == 0 and "yes" in out
    code, out, _ = run(capsys, "definitions", "disable", "1")
    assert code == 0 and "disabled 1" in out
    code, out, _ = run(capsys, "scheduler", "--once")
    tick = json.loads(out)
    assert code == 0 and tick["scanned"] == 1  # the disabled definition is not scanned
    code, out, _ = run(capsys, "jobs", "cancel", "--definition", "1")
    assert code == 0 and "cancelled 1" in out
    code, out, _ = run(capsys, "status", "--json")
    assert json.loads(out)["counts"]["cancelled"] == 1
    code, _, err = run(capsys, "jobs", "cancel")
    assert code == 2 and "ids" in err
    code, out, _ = run(capsys, "providers")
    assert code == 0 and "synthetic" in out


def test_requesters_keep_their_own_windows_and_counts_are_true(capsys, env: Path) -> None:
    assert run(capsys, "init")[0] == 0
    code, out, err = run(capsys, "ensure", "AAPL", "-t", "d1", "--days", "365", "--json")
    assert code == 0, err
    (first,) = json.loads(out)["results"]
    # One final slice, plus one provisional slice of today's day bar between 16:00 and 20:00 New York.
    assert first["requester"] == "cli" and first["slices_queued"] in (1, 2) and first["slices_pending"] == 0
    code, out, _ = run(capsys, "ensure", "AAPL", "-t", "d1", "--days", "365", "--json")
    (again,) = json.loads(out)["results"]
    assert (again["definition_id"], again["slices_queued"], again["slices_pending"]) == (
        first["definition_id"],
        0,
        first["slices_queued"],
    )
    code, out, _ = run(
        capsys,
        "ensure",
        "AAPL",
        "-t",
        "d1",
        "--start",
        "2015-01-02",
        "--end",
        "2016-01-01",
        "--requester",
        "nb",
    )
    assert code == 0
    code, out, _ = run(capsys, "definitions", "list")
    assert code == 0 and "cli" in out and "nb" in out and "365 days" in out and "2015-01-02" in out


def test_status_shows_stuck_slices(capsys, env: Path, monkeypatch) -> None:
    import time

    from barfill.store.db import Database
    from barfill.store.queue import SqlQueue

    assert run(capsys, "init")[0] == 0
    assert run(capsys, "ensure", "AAPL", "-t", "d1", "--start", "2024-01-02", "--end", "2024-03-01")[0] == 0
    db = Database(f"sqlite:///{env}")
    try:
        (claimed,) = SqlQueue(db).claim("ghost-worker", 1, 0.2)
    finally:
        db.dispose()
    monkeypatch.setenv("BARFILL_LEASE_S", "0.2")
    time.sleep(0.5)
    code, out, _ = run(capsys, "status", "--json")
    stuck = json.loads(out)["stuck"]
    assert code == 0 and [s["id"] for s in stuck] == [claimed.id] and stuck[0]["worker_id"] == "ghost-worker"
    code, out, _ = run(capsys, "status")
    assert code == 0 and "silent for a whole lease" in out


def test_a_wrong_scheme_database_url_is_reported_without_its_password(capsys, env: Path, monkeypatch) -> None:
    monkeypatch.setenv("BARFILL_DATABASE_URL", "mysql://trader:hunter2@db.example:3306/bars")
    code, _, err = run(capsys, "status")
    assert code == 2 and "database_url" in err and "Traceback" not in err
    assert "hunter2" not in err and "mysql://trader:***@db.example:3306/bars" in err


def test_export_writes_only_inside_out_and_refuses_unknown_symbols(capsys, env: Path, tmp_path: Path) -> None:
    assert run(capsys, "init")[0] == 0
    tickers = ["../EVIL", "/ABS", "EUR/USD", ".HIDDEN"]
    code, _, err = run(
        capsys, "ensure", *tickers, "-t", "d1", "--start", "2024-03-04", "--end", "2024-03-08", "--wait"
    )
    assert code == 0, err
    before = {p for p in tmp_path.rglob("*") if p.is_file()}
    code, out, err = run(capsys, "export", *tickers, "-t", "d1", "--format", "csv", "--out", "exp")
    assert code == 0, err
    written = {p for p in tmp_path.rglob("*") if p.is_file()} - before
    assert sorted(p.name for p in written) == sorted(
        ["%2E.%2FEVIL_d1.csv", "%2FABS_d1.csv", "EUR%2FUSD_d1.csv", "%2EHIDDEN_d1.csv"]
    )
    assert all(p.parent == tmp_path / "exp" for p in written)
    assert all(len(p.read_text().splitlines()) == 1 + 5 for p in written)  # header + Mon..Fri
    code, _, err = run(capsys, "export", "ZZZZ", "-t", "d1", "--format", "csv", "--out", "zzzz.csv")
    assert code == 2 and "symbol" in err and "ZZZZ" in err and "Traceback" not in err
    assert not (tmp_path / "zzzz.csv").exists()
    code, _, err = run(capsys, "export", "EUR/USD", "NOPE", "-t", "d1", "--format", "csv", "--out", "exp2")
    assert code == 2 and "NOPE" in err and not (tmp_path / "exp2").exists()  # nothing half-written


def test_actions_and_adjusted_bars(capsys, env: Path) -> None:
    assert run(capsys, "init")[0] == 0
    argv = ("ensure", "SPLT", "-t", "d1", "--start", "2024-06-03", "--end", "2024-06-14", "--wait")
    code, out, _ = run(capsys, *argv)
    # ensure --wait refreshed the actions (never refreshed: due at once) before returning.
    assert code == 0 and "corporate actions refreshed for SPLT" in out
    code, out, _ = run(capsys, "actions", "SPLT")
    assert code == 0 and "2024-06-10" in out and "0 action(s)" not in out
    code, out, _ = run(capsys, "actions", "SPLT", "--refresh", "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0
    assert {
        "symbol": "SPLT",
        "kind": "split",
        "ex_date": "2024-06-10",
        "ratio": 4.0,
        "cash": None,
        "provider": "synthetic",
    } in rows
    assert {r["kind"] for r in rows} == {"split", "dividend"}
    code, out, _ = run(capsys, "actions", "SPLT")
    assert code == 0 and "2024-06-10" in out and f"{len(rows)} action(s)" in out
    window = ("--start", "2024-06-03", "--end", "2024-06-14", "--format", "json")
    raw = json.loads(run(capsys, "bars", "SPLT", "-t", "d1", *window, "--adjust", "raw")[1])
    adj = json.loads(run(capsys, "bars", "SPLT", "-t", "d1", *window, "--adjust", "split")[1])
    assert len(raw) == len(adj) == 10
    for r, a in zip(raw, adj, strict=True):
        assert a["close"] == (r["close"] / 4 if r["ts"] < "2024-06-10" else r["close"])
        assert a["basis"] == "split" and r["basis"] == "raw"
    code, _, err = run(capsys, "bars", "SPLT", "-t", "d1", "--adjust", "dividend")
    assert code == 2 and "adjust" in err
    # A symbol barfill does not keep: said so, and a refresh of it fails (it would fetch nothing).
    code, out, err = run(capsys, "actions", "NOPE")
    assert code == 0 and "NOPE is not a known symbol" in err and "action(s)" not in out
    code, _, err = run(capsys, "actions", "NOPE", "--refresh")
    assert code == 1 and "NOPE is not a known symbol" in err
