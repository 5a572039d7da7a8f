"""Sample data and the generators that make it, kept together and off the node's production paths.

The files here (national 双公示 files per region, and ``platforms/`` with one file
per regional platform's own shape) are what ``credex demo`` takes in and what an
operator tries a profile on. They are generated, deterministically, by the
modules beside them, and the tests regenerate them and compare:

- :mod:`.synth`: national-format rows for any region, with deliberate defects;
- :mod:`.platform_samples`: the regional platforms' shapes (workbooks, JSON Lines,
  前置库 tables, paged API records);
- :mod:`.sample_api`: a small real HTTP server paging records by cursor.

Only ``credex synth``, the demo, the tests and the benchmarks import them, each
when it needs them; nothing is imported here, so the package costs nothing to
find its files by.
"""

__all__: list[str] = []
