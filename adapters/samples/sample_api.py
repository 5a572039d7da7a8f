"""A small real HTTP server that pages JSON records by cursor, as the Zhejiang and Hunan APIs do.

For trying an HTTP feed locally with the shipped samples, and for the tests
and the transport benchmark, which talk real HTTP to it instead of a mock. It
can fail every n-th request with a 503 to exercise a feed's retries.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse


class PagedApi:
    def __init__(self, records: list[Any], fail_every: int = 0) -> None:
        self.records = list(records)
        self.fail_every = fail_every
        self.requests = 0
        self.failures = 0
        self.lock = threading.Lock()

    def page(self, query: dict[str, list[str]]) -> tuple[int, bytes]:
        with self.lock:
            self.requests += 1
            if self.fail_every and self.requests % self.fail_every == 0:
                self.failures += 1
                return 503, b'{"error": "busy"}'
            start = int(query.get("cursor", ["0"])[0] or 0)
            limit = int(query.get("limit", ["100"])[0])
            items = self.records[start : start + limit]
        body = {"items": items, "next_cursor": str(start + len(items))}
        return 200, json.dumps(body, ensure_ascii=False).encode()


@contextmanager
def serve(api: PagedApi) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parsed = urlparse(self.path)
            status, body = api.page(parse_qs(parsed.query))
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/records"
    finally:
        server.shutdown()
        server.server_close()
