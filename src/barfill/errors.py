"""barfill's own exceptions.

Everything a user can get wrong raises a subclass of :class:`BarfillError`
whose message names the field and what was expected; entry points print the
message and exit non-zero instead of showing a traceback.
"""

from __future__ import annotations


class BarfillError(Exception):
    """Base class of every error barfill raises on purpose."""


class InvalidInput(BarfillError, ValueError):
    """A value given by a user (CLI, HTTP, config, API call) is not acceptable.

    Args:
        field: the name of the field, argument or key at fault.
        expected: what a valid value looks like.
        got: the offending value (shown with ``repr``), if useful.
    """

    def __init__(self, field: str, expected: str, got: object = None) -> None:
        self.field = field
        self.expected = expected
        self.got = got
        shown = "" if got is None else f", got {got!r}"
        super().__init__(f"{field}: expected {expected}{shown}")


class ConfigError(BarfillError):
    """The configuration (environment or TOML file) is invalid."""


class DatabaseError(BarfillError):
    """The database could not be reached or answered with an error."""


class DatabaseUnavailable(DatabaseError):
    """The database URL points at nothing that answers."""


class SchemaMismatch(DatabaseError):
    """The database schema is missing, older or newer than this version of barfill."""


class LeaseLost(BarfillError):
    """A state change on a slice was refused: it is no longer ours (reaped or finished)."""


class ProviderError(BarfillError):
    """A provider request failed.

    ``str(error)`` is the message alone, which by convention starts with the
    provider's name (``polygon: AAPL bar 2024-03-05T14:00:00Z: field 'o': ...``);
    the code is kept apart (``error.code``) so that nothing that shows both
    (``barfill status``, the router's summary) repeats it.

    Attributes:
        code: a short stable code for grouping (``http_429``, ``timeout``, ``bad_payload``...).
        message: what happened, where (provider, symbol, bar, field).
        retryable: whether trying again later may succeed.
        retry_after_s: the provider's own ``Retry-After``, in seconds, if it sent one.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        retryable: bool,
        retry_after_s: float | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        super().__init__(message)


class NotSupported(ProviderError):
    """The provider cannot serve this request (timeframe, history depth, symbol); try another."""

    def __init__(self, message: str) -> None:
        super().__init__("not_supported", message, retryable=False)


class NotPublishedYet(ProviderError):
    """The data may exist later (a day's flat file is published the next morning): retry much later.

    Retryable with a long ``retry_after_s``, so a slice waiting for a file
    spends one attempt per wait, not its whole budget in a minute; once its
    attempts are spent, the scheduler still revives it after a cool-down.
    """

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__("not_published", message, retryable=True, retry_after_s=retry_after_s)


class InvalidBars(BarfillError):
    """A provider returned bars that fail validation; nothing of the batch is stored."""

    def __init__(self, reasons: list[str]) -> None:
        self.reasons = reasons
        head = "; ".join(reasons[:5])
        more = f" (+{len(reasons) - 5} more)" if len(reasons) > 5 else ""
        super().__init__(f"invalid bars: {head}{more}")
