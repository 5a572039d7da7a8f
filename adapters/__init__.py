"""Adapters: a platform's rows in, as canonical records.

- :mod:`.tables` reads files (CSV in any national encoding, XLSX, JSON Lines) into rows;
- :mod:`.file_drop`, :mod:`.http_pull`, :mod:`.table_poll` are the transports a feed
  takes rows from (an inbox folder, a paged HTTP API, a 前置库 table);
- :mod:`.profile` maps a row to a record through a profile file (``profiles/*.toml``);
- :mod:`.samples` holds sample data and its generators, for the demo, tests and trials.
"""

__all__: list[str] = []
