"""Provider adapters: each turns one market-data source into :class:`barfill.ports.Provider`.

The HTTP adapters (:mod:`~barfill.providers.polygon`, :mod:`~barfill.providers.alpaca`,
:mod:`~barfill.providers.tradier`, :mod:`~barfill.providers.yahoo`) take an injected
``httpx.AsyncClient`` (its owner closes it), authenticate with headers, never
retry (the worker owns retries and the shared rate limiter) and raise
:class:`barfill.errors.ProviderError` with the codes listed in
:mod:`barfill.providers.http`. Each declares what it can do in its
``capabilities``; nothing outside a provider's module hard-codes its facts.
"""

from barfill.providers.alpaca import AlpacaProvider
from barfill.providers.polygon import PolygonProvider
from barfill.providers.tradier import TradierProvider
from barfill.providers.yahoo import YahooProvider

__all__ = ["AlpacaProvider", "PolygonProvider", "TradierProvider", "YahooProvider"]
