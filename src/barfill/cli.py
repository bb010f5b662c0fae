"""``barfill`` — the command line. Thin: every command calls the same services as the API.

A user mistake (bad argument, bad config, unreachable or un-migrated
database) is one clear line on stderr and exit code 2; never a traceback.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from barfill.domain.symbols import ticker_file_stem, validate_ticker
from barfill.domain.timeframes import Timeframe
from barfill.errors import BarfillError, InvalidInput

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from barfill.bootstrap import App
    from barfill.config import Settings
    from barfill.service.ensure import EnsureReport
    from barfill.service.progress import JobRef
    from barfill.store.db import Database

# Start-up: ``barfill --help`` must not pay for pandas, SQLAlchemy, Alembic, the
# providers or the web stack, so this module imports only typer and light barfill
# modules; each command imports what it needs when it runs (rich too: the consoles
# and tables are made on first use). Help is click's plain text: typer's rich help
# loads rich and a Markdown parser, doubling the time of ``barfill --help``.

cli = typer.Typer(
    name="barfill",
    help="Keep an OHLCV bar store complete: ensure coverage, fetch gaps in the background.",
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _group(help_text: str) -> typer.Typer:
    return typer.Typer(help=help_text, no_args_is_help=True, rich_markup_mode=None)


jobs_cli = _group("Inspect and steer queued slices.")
defs_cli = _group("Desired coverage: list, enable, disable.")
universe_cli = _group("Add many symbols at once.")
keys_cli = _group("HTTP API keys: create, list, revoke.")
cli.add_typer(jobs_cli, name="jobs")
cli.add_typer(defs_cli, name="definitions")
cli.add_typer(universe_cli, name="universe")
cli.add_typer(keys_cli, name="keys")

# Default requesters: the CLI's definitions and a universe's are their own, apart from
# the Python API's ("default"), so one does not silently replace another's window.
CLI_REQUESTER = "cli"
UNIVERSE_REQUESTER = "universe"


@functools.cache
def stdout() -> Console:
    """The rich console on stdout, made on first use (``--help`` never loads rich's console)."""
    from rich.console import Console

    return Console()


@functools.cache
def stderr() -> Console:
    """The rich console on stderr, made on first use."""
    from rich.console import Console

    return Console(stderr=True)


def _table(*columns: str, **options: Any) -> Table:
    from rich.table import Table

    return Table(*columns, **options)


_state: dict[str, Any] = {}

DbOpt = Annotated[
    str | None,
    typer.Option("--database-url", envvar="BARFILL_DATABASE_URL", help="SQLite or PostgreSQL URL."),
]
TfOpt = Annotated[str, typer.Option("--timeframe", "-t", help="m1 m5 m15 m30 h1 h4 d1 w1 (or 1m ... 1w).")]
AdjustOpt = Annotated[
    str | None,
    typer.Option(
        help="raw, split or all: adjusted for the splits (and dividends) known now; default as stored."
    ),
]
StartOpt = Annotated[
    str | None,
    typer.Option(help="YYYY-MM-DD (00:00 exchange time of that date) or an ISO time with offset."),
]
EndOpt = Annotated[
    str | None,
    typer.Option(
        help="YYYY-MM-DD is inclusive (2024-12-31 includes Dec 31's session); "
        "an ISO time with offset is exclusive."
    ),
]


@cli.callback()
def _root(database_url: DbOpt = None) -> None:
    _state["database_url"] = database_url


def _app(*, check: bool = True) -> App:
    from barfill.bootstrap import build
    from barfill.config import load_settings
    from barfill.store import migrate

    settings = load_settings(database_url=_state.get("database_url"))
    app = build(settings)
    if check:
        try:
            migrate.require_current(app.db)
        except BarfillError:
            app.close()
            raise
    return app


@contextlib.contextmanager
def _opened(*, check: bool = True) -> Iterator[App]:
    app = _app(check=check)
    try:
        yield app
    finally:
        app.close()


@contextlib.contextmanager
def _database() -> Iterator[tuple[Settings, Database]]:
    """Settings and a database at this version's schema, nothing else (no providers, calendar, queue).

    For the read-only commands that must start fast (``status``): the full
    :func:`_opened` wiring loads the providers, the calendar and pandas.
    """
    from barfill.config import load_settings
    from barfill.store import migrate
    from barfill.store.db import Database

    settings = load_settings(database_url=_state.get("database_url"))
    db = Database(settings.database_url)
    try:
        migrate.require_current(db)
        yield settings, db
    finally:
        db.dispose()


def _iso(ts: float | int | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts))


# -- setup ---------------------------------------------------------------------


@cli.command()
def init() -> None:
    """Create or upgrade the database schema (idempotent)."""
    from barfill.store import migrate

    with _opened(check=False) as app:
        before, after = migrate.upgrade(app.db)
        shown = app.db.engine.url.render_as_string(hide_password=True)
        if before == after:
            stdout().print(f"database {shown} is up to date (schema {after})")
        else:
            stdout().print(f"database {shown}: schema {before or 'none'} → {after}")


@cli.command()
def providers() -> None:
    """Which providers are configured (their keys are never shown)."""
    with _opened(check=False) as app:
        table = _table("provider", "timeframes", "page limit", "rate limit", "history")
        for name, p in app.providers.items():
            c = p.capabilities
            hist = ", ".join(f"{k.value} {v}d" for k, v in sorted(c.history_days.items())) or "unlimited"
            table.add_row(
                name,
                " ".join(t.value for t in Timeframe if t in c.timeframes),
                f"{c.page_limit:,} {c.page_unit.value}",
                f"{c.rate_limit.requests}/{c.rate_limit.period_s:g}s",
                hist,
            )
        stdout().print(table)
        for notice in app.notices:
            stderr().print(f"[yellow]note:[/yellow] {notice}")


@keys_cli.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="A label, e.g. the client's name.")],
    scopes: Annotated[str, typer.Option(help="Comma-separated: read, write, admin.")] = "read",
) -> None:
    """Create an HTTP API key. The key is printed once; only its salted hash is stored."""
    from barfill.domain.apikeys import parse_scopes  # hashlib: only this command needs it
    from barfill.store.api_keys import create_key

    parse_scopes(scopes)
    with _opened() as app, app.db.write() as conn:
        row, key = create_key(conn, name, scopes)
    scopes_text = ",".join(row.scopes)
    stderr().print(f"created key {row.key_id} ({row.name}, scopes {scopes_text}); it is shown only now:")
    print(key)


@keys_cli.command("list")
def keys_list() -> None:
    """API keys: public id, name, scopes, state (secrets are never shown)."""
    from barfill.store.api_keys import list_keys

    with _opened() as app, app.db.read() as conn:
        rows = list_keys(conn)
    table = _table("id", "name", "scopes", "created", "state")
    for k in rows:
        state = "active" if k.active else f"revoked {_iso(k.revoked_at)}"
        table.add_row(k.key_id, k.name, ",".join(k.scopes), _iso(k.created_at), state)
    stdout().print(table)


@keys_cli.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key's public id (or its name).")]) -> None:
    """Revoke an API key (servers stop accepting it within a few seconds)."""
    from barfill.store.api_keys import revoke_key

    with _opened() as app, app.db.write() as conn:
        done = revoke_key(conn, key_id)
    if not done:
        raise InvalidInput("key", "the id or name of an active key (see `barfill keys list`)", key_id)
    stdout().print(f"revoked {key_id}")


# -- hydration -----------------------------------------------------------------


@cli.command("ensure")
def ensure_cmd(
    symbols: Annotated[list[str], typer.Argument(help="Tickers, e.g. AAPL MSFT.")],
    timeframe: TfOpt,
    days: Annotated[int | None, typer.Option(help="Rolling window ending now.")] = None,
    start: StartOpt = None,
    end: EndOpt = None,
    provider: Annotated[str | None, typer.Option(help="Pin one provider.")] = None,
    priority: Annotated[int, typer.Option(help="Higher runs first.")] = 0,
    requester: Annotated[
        str,
        typer.Option(
            help="Who asks: each requester keeps its own window and pinned provider per "
            "symbol and timeframe; asking again as the same requester replaces its window."
        ),
    ] = CLI_REQUESTER,
    wait: Annotated[bool, typer.Option("--wait", help="Fetch now and show live progress.")] = False,
    work: Annotated[bool, typer.Option(help="With --wait: run a worker in this process.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the answer as JSON.")] = False,
) -> None:
    """Ensure coverage for SYMBOLS: answers at once, queues what is missing."""
    # The service, not the facade (barfill.api): that imports pandas and polars, ~0.5 s before
    # the first slice is queued.
    from barfill.service.ensure import ensure
    from barfill.store.definitions import validate_requester

    Timeframe.parse(timeframe)  # argument mistakes first, before touching the database
    for ticker in symbols:
        validate_ticker(ticker)
    validate_requester(requester)
    with _opened() as app:
        report = ensure(
            app,
            symbols,
            timeframe,
            days=days,
            start=start,
            end=end,
            priority=priority,
            provider=provider,
            requester=requester,
        )
        for notice in report.notices:
            stderr().print(f"[yellow]note:[/yellow] {notice}")
        if as_json:
            stdout().print_json(
                json.dumps(
                    {"results": [r.as_dict() for r in report.results], "progress": report.progress.as_dict()}
                )
            )
        else:
            _print_report(report)
        if not wait:
            return
        _watch(app, report.job, work=work)
        actions_ok = _await_actions(app, [r.symbol for r in report.results], work=work)
        final = ensure(
            app,
            symbols,
            timeframe,
            days=days,
            start=start,
            end=end,
            priority=priority,
            provider=provider,
            requester=requester,
        )
        # Pending ranges (not final yet, no realtime provider) are filled later by the scheduler.
        incomplete = [r for r in final.results if not r.has_coverage and not r.unfillable and not r.pending]
        if incomplete:
            stderr().print(
                f"coverage incomplete for {', '.join(r.symbol for r in incomplete)}; "
                "see `barfill status` for errors"
            )
            raise typer.Exit(1)
        stdout().print("[green]coverage complete[/green]")
        if not actions_ok:
            raise typer.Exit(1)


def _print_report(report: EnsureReport) -> None:
    table = _table(
        "symbol",
        "tf",
        "def",
        "coverage",
        "gaps",
        "bars missing",
        "queued",
        "pending",
        "provider",
        "not yet servable",
        "unfillable",
    )
    for r in report.results:
        cov = f"{_iso(r.coverage_from)} → {_iso(r.coverage_to)}" if r.coverage_from else "none"
        table.add_row(
            r.symbol,
            r.timeframe.value,
            str(r.definition_id),
            cov,
            str(r.gaps),
            f"{r.bars_missing:,}",
            str(r.slices_queued),
            str(r.slices_pending),
            r.provider or "-",
            "; ".join(f"{_iso(p.start)}→{_iso(p.end)}" for p in r.pending) or "-",
            "; ".join(
                f"{_iso(u.start)}→{_iso(u.end)} ({why})"
                for u, why in zip(r.unfillable, r.unfillable_reasons, strict=False)
            )
            or "-",
        )
    stdout().print(table)


def _watch(app: App, job: JobRef, *, work: bool, title: str = "Hydrating") -> None:
    from barfill.live import watch

    app.run(watch(app, job, stdout(), work=work, title=title))


def _await_actions(app: App, tickers: list[str], *, work: bool) -> bool:
    """``ensure --wait``'s second half: the symbols' corporate actions refreshed at least once
    (here with ``--work``, else by the scheduler) and their dividends' reference closes fetched,
    so adjusted reads are right when it returns. False if some could not be refreshed."""
    from barfill.service.actions import actions_ready

    def waiting(pending: list[str]) -> None:
        stderr().print(
            f"waiting for the scheduler to refresh the corporate actions of {', '.join(pending)} "
            "(`barfill serve` or `barfill scheduler` runs it; Ctrl-C to stop)"
        )

    ready = app.run(actions_ready(app, tickers, refresh=work, on_waiting=waiting))
    for line in ready.errors:
        stderr().print(f"[yellow]{line}[/yellow]")
    if ready.job is not None:
        _watch(app, ready.job, work=work, title="Reference closes")
    if ready.unrefreshed:
        stderr().print(
            f"corporate actions of {', '.join(ready.unrefreshed)} not refreshed: adjusted reads "
            "(--adjust split|all) may be wrong until the scheduler refreshes them"
        )
        return False
    stdout().print(f"corporate actions refreshed for {', '.join(tickers)}")
    return True


# -- long-running processes ----------------------------------------------------


@cli.command()
def worker(
    concurrency: Annotated[int | None, typer.Option(min=1, max=256, help="Slices in flight.")] = None,
    drain: Annotated[bool, typer.Option(help="Exit when the queue is empty.")] = False,
    grace: Annotated[float, typer.Option(help="Seconds to finish in-flight slices on SIGTERM.")] = 10.0,
) -> None:
    """Run a worker: claim slices, fetch, commit. SIGTERM/SIGINT stop it gracefully."""
    import asyncio

    from barfill.live import on_signals
    from barfill.malloc import tune_for_large_pages
    from barfill.service.worker import Worker

    tune_for_large_pages()
    with _opened() as app:
        w = Worker(app, concurrency=concurrency)

        async def go() -> None:
            stop = asyncio.Event()
            on_signals(stop)
            stderr().print(f"worker {w.worker_id}: concurrency {w.concurrency}")
            stats = await w.run(stop, drain=drain, grace_s=grace)
            stderr().print(f"worker {w.worker_id} stopped: {stats}")

        app.run(go())


@cli.command()
def scheduler(
    once: Annotated[bool, typer.Option("--once", help="Tick once and print the result.")] = False,
    interval: Annotated[float | None, typer.Option(help="Seconds between ticks.")] = None,
) -> None:
    """Run the orchestrator: definitions → gaps → slices, every interval."""
    import asyncio

    from barfill.live import on_signals
    from barfill.service.orchestrator import run_scheduler, tick

    with _opened() as app:
        if once:
            stdout().print_json(json.dumps(tick(app).as_dict()))
            return

        async def go() -> None:
            stop = asyncio.Event()
            on_signals(stop)
            await run_scheduler(app, stop, interval_s=interval)

        app.run(go())


@cli.command()
def serve(
    host: Annotated[
        str, typer.Option(help="Address to listen on (non-loopback needs API keys).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535)] = 8000,
    workers: Annotated[bool, typer.Option("--workers/--no-workers", help="Run a worker here.")] = True,
    scheduler: Annotated[bool, typer.Option("--scheduler/--no-scheduler", help="Run the scheduler.")] = True,
    log_format: Annotated[str, typer.Option(help="text or json")] = "text",
    concurrency: Annotated[int | None, typer.Option(min=1, max=256)] = None,
    interval: Annotated[float | None, typer.Option(help="Seconds between ticks.")] = None,
) -> None:
    """HTTP API and web page (FastAPI on uvicorn) with the scheduler and a worker in the same process.

    Several API-only processes (``--no-workers --no-scheduler``) may serve one PostgreSQL.
    """
    import uvicorn

    from barfill.server import logs
    from barfill.server.app import ServerOptions, create_app
    from barfill.server.deps import check_bind

    if log_format not in ("text", "json"):
        raise InvalidInput("log-format", "text or json", log_format)
    logs.configure(log_format)
    if workers:
        from barfill.malloc import tune_for_large_pages

        tune_for_large_pages()
    with _opened() as app:
        check_bind(app, host)
        options = ServerOptions(
            host=host,
            workers=workers,
            scheduler=scheduler,
            concurrency=concurrency,
            tick_interval_s=interval,
            json_logs=log_format == "json",
        )
        parts = ["HTTP", *(["scheduler"] if scheduler else []), *(["worker"] if workers else [])]
        stderr().print(
            f"serving {' + '.join(parts)} on http://{host}:{port} — web page at http://{host}:{port}/ "
            "(Ctrl-C to stop)"
        )
        config = uvicorn.Config(
            create_app(app, options),
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=5,
            lifespan="on",
        )
        uvicorn.Server(config).run()


# -- inspection ----------------------------------------------------------------


@cli.command()
def status(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Queue counts, throughput in the last hour, errors grouped, stuck slices."""
    from barfill.service.admin import queue_status
    from barfill.store.queue_reports import QueueReader

    with _database() as (settings, db):
        s = queue_status(db, QueueReader(db), lease_s=settings.lease_s)
    # Plain lines (rich only for the error table): a healthy status loads no rich.
    if as_json:
        typer.echo(json.dumps(s, indent=2))
        return
    typer.echo("queue: " + "  ".join(f"{k} {v}" for k, v in s["counts"].items()))
    typer.echo(f"last hour: {s['throughput']['slices']} slices, {s['throughput']['bars']:,} bars")
    typer.echo(f"definitions: {s['definitions']}  bars stored: {s['bars']:,}")
    if s["errors"]:
        table = _table("error", "message", "slices", title="errors")
        for e in s["errors"]:
            table.add_row(e["code"], e["message"], str(e["count"]))
        stdout().print(table)
    if s["stuck"]:
        ids = ", ".join(str(x["id"]) for x in s["stuck"][:20])
        silent = f"{len(s['stuck'])} running slice(s) silent for a whole lease"
        typer.echo(typer.style(silent, fg="yellow") + f": {ids}")
    fixed = s["corrections"]
    typer.echo(f"corrections (last day): {fixed['last_day']}")
    for c in fixed["latest"]:
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(c["ts"]))
        typer.echo(f"  {c['symbol']} {c['timeframe']} {when} UTC {c['provider']}: {c['kind']}")


@jobs_cli.command("list")
def jobs_list(
    state: Annotated[
        str | None, typer.Option("--status", help="queued running succeeded failed cancelled")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
) -> None:
    """List slices, newest first."""
    from barfill.service import admin

    with _opened() as app:
        rows = admin.list_slices(app, status=state, limit=limit)
        table = _table("id", "symbol", "tf", "start", "end", "provider", "status", "tries", "rows", "error")
        for r in rows:
            table.add_row(
                str(r["id"]),
                r["symbol"],
                r["timeframe"],
                _iso(r["start"]),
                _iso(r["end"]),
                r["provider"] + (" (verify)" if r["purpose"] == "verify" else ""),
                r["status"],
                f"{r['attempts']}/{r['max_attempts']}",
                str(r["rows_written"]),
                (r["error_code"] or "") + (f": {r['error_message'][:60]}" if r["error_message"] else ""),
            )
        stdout().print(table)


@jobs_cli.command("retry")
def jobs_retry(
    ids: Annotated[
        list[int] | None, typer.Argument(help="Slice ids; none = every slice in --status.")
    ] = None,
    state: Annotated[
        str, typer.Option("--status", help="Which slices to re-queue: failed, cancelled or all.")
    ] = "failed",
) -> None:
    """Re-queue failed (or cancelled) slices with fresh attempts."""
    if state not in ("failed", "cancelled", "all"):
        raise InvalidInput("--status", "failed, cancelled or all", state)
    with _opened() as app:
        n = app.queue.retry(ids or None, status=state)
        stdout().print(f"re-queued {n} slice(s)")


@jobs_cli.command("cancel")
def jobs_cancel(
    ids: Annotated[list[int] | None, typer.Argument(help="Slice ids.")] = None,
    definition: Annotated[
        list[int] | None, typer.Option(help="Cancel all open slices of a definition.")
    ] = None,
) -> None:
    """Cancel queued (or running) slices."""
    if not ids and not definition:
        raise InvalidInput("ids", "slice ids or --definition ID")
    with _opened() as app:
        n = app.queue.cancel(ids or None, definition_ids=definition or None)
        stdout().print(f"cancelled {n} slice(s)")


@defs_cli.command("list")
def defs_list() -> None:
    """All definitions with their coverage state."""
    from barfill.service import admin

    with _opened() as app:
        table = _table("id", "symbol", "tf", "requester", "window", "priority", "enabled", "provider")
        for d in admin.list_defs(app):
            table.add_row(
                str(d["id"]),
                d["symbol"],
                d["timeframe"],
                d["requester"],
                d["window"],
                str(d["priority"]),
                "yes" if d["enabled"] else "no",
                d["provider"] or "auto",
            )
        stdout().print(table)


def _set_enabled(ids: list[int], enabled: bool) -> None:
    from barfill.service import admin

    with _opened() as app:
        n = admin.set_enabled(app, ids, enabled)
        stdout().print(f"{'enabled' if enabled else 'disabled'} {n} definition(s)")


@defs_cli.command("enable")
def defs_enable(ids: Annotated[list[int], typer.Argument()]) -> None:
    """Enable definitions (the scheduler keeps them covered)."""
    _set_enabled(ids, True)


@defs_cli.command("disable")
def defs_disable(ids: Annotated[list[int], typer.Argument()]) -> None:
    """Disable definitions (no new slices; stored bars stay)."""
    _set_enabled(ids, False)


@universe_cli.command("add")
def universe_add(
    file: Annotated[Path, typer.Argument(help="One ticker a line; # comments allowed.")],
    timeframe: Annotated[
        str | None, typer.Option("--timeframe", "-t", help="Also ensure this timeframe.")
    ] = None,
    days: Annotated[int | None, typer.Option()] = None,
    requester: Annotated[
        str, typer.Option(help="Who asks (see `barfill ensure --help`).")
    ] = UNIVERSE_REQUESTER,
) -> None:
    """Add the symbols in FILE (e.g. an S&P 500 list), optionally ensuring coverage for each."""
    from barfill.service import admin
    from barfill.service.ensure import ensure  # not the facade: it imports pandas and polars
    from barfill.store.definitions import validate_requester

    validate_requester(requester)
    if not file.is_file():
        raise InvalidInput("file", "a readable text file with one ticker a line", str(file))
    tickers: list[str] = []
    for n, line in enumerate(file.read_text().splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if text:
            try:
                tickers.append(validate_ticker(text))
            except InvalidInput as e:
                raise InvalidInput(f"{file}:{n}", e.expected, text) from None
    tickers = list(dict.fromkeys(tickers))
    with _opened() as app:
        added = admin.add_symbols(app, tickers)
        stdout().print(f"{len(tickers)} symbol(s) read, {added} new")
        if timeframe:
            report = ensure(app, tickers, timeframe, days=days, requester=requester)
            stdout().print(
                f"ensured {len(report.results)} definition(s); "
                f"{sum(r.slices_queued for r in report.results)} slice(s) queued"
            )


# -- data out ------------------------------------------------------------------


@cli.command()
def bars(
    symbol: Annotated[str, typer.Argument()],
    timeframe: TfOpt,
    start: StartOpt = None,
    end: EndOpt = None,
    fmt: Annotated[str, typer.Option("--format", help="table, csv or json")] = "table",
    limit: Annotated[int | None, typer.Option(min=1, help="Only the last N bars.")] = None,
    basis: Annotated[
        str | None,
        typer.Option(help="raw, split, dividend or all (default: the preferred source's basis)."),
    ] = None,
    adjust: AdjustOpt = None,
    include_flagged: Annotated[
        bool, typer.Option("--include-flagged", help="Also bars flagged bad (spikes, empty bars).")
    ] = False,
) -> None:
    """Print stored bars (never waits for a provider), one source per session."""
    from barfill.api import Barfill

    if fmt not in ("table", "csv", "json"):
        raise InvalidInput("format", "table, csv or json", fmt)
    Timeframe.parse(timeframe)
    validate_ticker(symbol)
    from barfill.domain.adjust import parse_adjust

    parse_adjust(adjust)
    with _opened() as app:
        fx = Barfill.wrap(app)
        frame = fx.bars(
            symbol,
            timeframe,
            start=start,
            end=end,
            basis=basis,
            adjust=adjust,
            include_flagged=include_flagged,
        )
    if limit:
        frame = frame.tail(limit)
    if fmt == "csv":
        sys.stdout.write(frame.to_csv())
    elif fmt == "json":
        sys.stdout.write(frame.reset_index().to_json(orient="records", date_format="iso") + "\n")
    else:
        table = _table("ts (UTC)", "open", "high", "low", "close", "volume", "provider", "layer")
        for ts, row in frame.iterrows():
            table.add_row(
                str(ts),
                f"{row.open:.4f}",
                f"{row.high:.4f}",
                f"{row.low:.4f}",
                f"{row.close:.4f}",
                f"{row.volume:,.0f}",
                str(row.provider),
                str(row.layer),
            )
        stdout().print(table)
        kind = f", {frame['basis'].iloc[0]} prices" if len(frame) else ""
        stdout().print(f"{len(frame)} bar(s){kind}")


@cli.command()
def actions(
    symbol: Annotated[str, typer.Argument()],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per action.")] = False,
    refresh: Annotated[
        bool, typer.Option("--refresh", help="Fetch them from the providers first (within rate limits).")
    ] = False,
) -> None:
    """List a symbol's stored splits and cash dividends (every provider's report), by ex date.

    The scheduler refreshes them for every symbol with an enabled definition once per
    BARFILL_ACTIONS_REFRESH_S; reads adjust raw bars with them (`barfill bars --adjust split`).
    """
    from barfill.api import Barfill
    from barfill.store.symbols import symbol_id

    ticker = validate_ticker(symbol)
    with _opened() as app:
        with app.db.read() as conn:
            known = symbol_id(conn, ticker) is not None
        if not known:  # nothing stored, and a refresh only fetches symbols barfill keeps
            stderr().print(f"{ticker} is not a known symbol: `barfill ensure {ticker} …` first")
            raise typer.Exit(1 if refresh else 0)
        fx = Barfill.wrap(app)
        if refresh:
            result = fx.refresh_actions([ticker])
            for line in result.errors:
                stderr().print(f"[yellow]{line}[/yellow]")
        found = fx.actions(ticker)
    if as_json:
        for a in found:
            row: dict[str, object] = {"symbol": a.symbol, "kind": a.kind.value}
            row.update(ex_date=a.ex_date.isoformat(), ratio=a.ratio, cash=a.cash, provider=a.provider)
            sys.stdout.write(json.dumps(row) + "\n")
        return
    table = _table(
        "ex date", "kind", "split ratio", "cash / share", "provider", title=f"{ticker} corporate actions"
    )
    for a in found:
        ratio = "" if a.ratio is None else f"{a.ratio:g}"
        cash = "" if a.cash is None else f"{a.cash:.4f}"
        table.add_row(a.ex_date.isoformat(), a.kind.value, ratio, cash, a.provider)
    stdout().print(table)
    stdout().print(f"{len(found)} action(s)")


@cli.command()
def export(
    symbols: Annotated[list[str], typer.Argument()],
    timeframe: TfOpt,
    out_path: Annotated[Path, typer.Option("--out", help="File (one symbol) or folder (several).")],
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet")] = "parquet",
    start: StartOpt = None,
    end: EndOpt = None,
    basis: Annotated[
        str | None,
        typer.Option(help="raw, split, dividend or all (default: the preferred source's basis)."),
    ] = None,
    adjust: AdjustOpt = None,
) -> None:
    """Export stored bars to CSV or Parquet (several symbols: one file each in the --out folder).

    One source per session, one adjustment basis. File names are
    TICKER_TF.FORMAT; "/", ":" and a leading "." of a ticker are written as
    %XX (EUR/USD → EUR%2FUSD_d1.csv). An unknown symbol is an error.
    """
    from barfill.api import UNKNOWN_SYMBOL, Barfill
    from barfill.service.ensure import parse_time
    from barfill.store.symbols import symbol_id

    if fmt not in ("csv", "parquet"):
        raise InvalidInput("format", "csv or parquet", fmt)
    tf = Timeframe.parse(timeframe)
    tickers = list(dict.fromkeys(validate_ticker(s) for s in symbols))
    with _opened() as app:
        for value, name in ((start, "start"), (end, "end")):
            if value is not None:
                parse_time(value, name, tz=app.calendar.tz, end=name == "end")
        with app.db.read() as conn:
            unknown = [t for t in tickers if symbol_id(conn, t) is None]
        if unknown:
            raise InvalidInput("symbol", UNKNOWN_SYMBOL, " ".join(unknown))
        fx = Barfill.wrap(app)
        for ticker in tickers:
            target = out_path if len(tickers) == 1 else _inside(out_path, ticker, tf, fmt)
            n = fx.export(ticker, tf, target, start=start, end=end, format=fmt, basis=basis, adjust=adjust)  # type: ignore[arg-type]
            stdout().print(f"{ticker}: {n} bar(s) → {target}")


def _inside(folder: Path, ticker: str, tf: Timeframe, fmt: str) -> Path:
    """``folder/<TICKER>_<tf>.<fmt>``; a ticker can never name a path outside ``folder``."""
    target = folder / f"{ticker_file_stem(ticker)}_{tf.value}.{fmt}"
    if target.resolve().parent != folder.resolve():  # belt and braces: the stem has no separator
        raise InvalidInput("symbol", "a ticker usable in a file name", ticker)
    return target


@cli.command()
def demo(
    database_url: Annotated[
        str | None, typer.Option(help="Default: a fresh SQLite file ./data/demo.db")
    ] = None,
    keep: Annotated[
        bool, typer.Option(help="Keep an existing demo database instead of starting fresh.")
    ] = False,
    serve: Annotated[
        bool, typer.Option("--serve/--no-serve", help="After hydrating, serve the web page until Ctrl-C.")
    ] = True,
    host: Annotated[str, typer.Option(help="Address to serve on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to serve on.")] = 8000,
) -> None:
    """The offline demo: 20 symbols, h1 for 730 days and m15 for 60 days, synthetic data; then the page."""
    from barfill.service.demo import run_demo

    run_demo(stdout(), database_url=database_url, keep=keep, serve=serve, host=host, port=port)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors become one line and exit code 2."""
    try:
        cli(args=argv, standalone_mode=True)
    except BarfillError as e:
        stderr().print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        stderr().print("interrupted")
        sys.exit(130)


def run() -> None:
    """The ``barfill`` executable: :func:`main`, then leave without tearing the interpreter down.

    When a command returns, its engine is disposed and its answer written; what
    is left is the interpreter freeing every module a command imported (pandas,
    polars, SQLAlchemy...), 0.1-0.3 s of CPU that a person (or the next command
    in a script) waits for after the answer. Output and logs are flushed, then
    the process exits with the command's code. An uncaught error still goes
    through the normal exit, traceback and all.
    """
    import logging
    import os

    try:
        main()
        code = 0
    except SystemExit as e:
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
