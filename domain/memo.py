"""A bounded cache for ingest's pure functions of short inputs.

Ingest normalizes and validates every cell, and the same authorities, bases, dates and
codes recur on most rows; caching them pays. But a cache must never grow with the
variety of what it is fed (a file, or anything a caller could send): only short
inputs are kept, and only so many. No gRPC path uses a cached function.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from functools import lru_cache, wraps
from typing import Any, TypeVar

_A = TypeVar("_A")
_T = TypeVar("_T")


def recurring(maxsize: int, key_chars: int) -> Callable[[Callable[[_A], _T]], Callable[[_A], _T]]:
    """Cache a one-argument function for short inputs only: strings of at most ``key_chars``,
    numbers, dates and None. The cache is exposed as ``.memo`` so its size can be watched."""

    def decorate(function: Callable[[_A], _T]) -> Callable[[_A], _T]:
        memo = lru_cache(maxsize=maxsize, typed=True)(function)

        @wraps(function)
        def call(raw: _A) -> _T:
            if isinstance(raw, str):
                return memo(raw) if len(raw) <= key_chars else function(raw)
            if raw is None or isinstance(raw, int | float | dt.date):
                return memo(raw)
            return function(raw)

        call.memo = memo  # type: ignore[attr-defined]
        return call

    return decorate


def memo_size(function: Callable[..., Any]) -> int:
    """Entries held by the cache of a :func:`recurring` function."""
    return int(function.memo.cache_info().currsize)  # type: ignore[attr-defined]
