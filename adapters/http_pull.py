"""HTTP pull: page through a platform's JSON API by cursor.

The API answers ``GET <url>?cursor=<c>&limit=<n>`` with
``{"items": [...], "next_cursor": "..."}`` (field names configurable). A page
is fetched with a timeout and retried with exponential backoff on network
errors, timeouts, 429 and 5xx; any other status is an error the operator must
see. The cursor a page *starts* from is what the feed commits with the page, so
a restart resumes exactly after the last page taken in.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

import httpx

from credex.errors import CredexError

log = logging.getLogger(__name__)

_RETRYABLE = frozenset({408, 425, 429, 500, 502, 503, 504})


class PageUnavailable(CredexError):
    """A page could not be fetched after every retry, or the API answered something unusable."""


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Any]
    next_cursor: str | None


@dataclass(frozen=True)
class HttpSource:
    url: str
    page_size: int = 500
    timeout: float = 10.0
    attempts: int = 5
    headers: tuple[tuple[str, str], ...] = ()
    cursor_param: str = "cursor"
    limit_param: str = "limit"
    items_field: str = "items"
    next_field: str = "next_cursor"

    async def page(self, client: httpx.AsyncClient, cursor: str | None) -> Page:
        params: dict[str, str | int] = {self.limit_param: self.page_size}
        if cursor:
            params[self.cursor_param] = cursor
        last = ""
        for attempt in range(self.attempts):
            try:
                response = await client.get(self.url, params=params, headers=dict(self.headers), timeout=self.timeout)
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 200:
                    return self._parse(response)
                last = f"HTTP {response.status_code}"
                if response.status_code not in _RETRYABLE:
                    raise PageUnavailable(f"{self.url} (cursor {cursor!r}) answered {last}: {response.text[:200]}")
            delay = min(30.0, 0.25 * 2**attempt)
            log.warning("%s (cursor %r): %s; retrying in %.1fs", self.url, cursor, last, delay)
            await asyncio.sleep(delay)
        raise PageUnavailable(f"{self.url} (cursor {cursor!r}): {last} after {self.attempts} attempts")

    def _parse(self, response: httpx.Response) -> Page:
        try:
            body = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise PageUnavailable(f"{self.url}: the page is not JSON ({exc})") from None
        if not isinstance(body, dict) or not isinstance(body.get(self.items_field), list):
            raise PageUnavailable(f"{self.url}: the page has no {self.items_field!r} list")
        following = body.get(self.next_field)
        return Page(body[self.items_field], str(following) if following not in (None, "") else None)
