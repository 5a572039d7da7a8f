"""Domain rules with no I/O: what codes, dates and amounts mean, and what identifies a record.

- :mod:`.identity`: the subject id and record id rules, and the kind tags;
- :mod:`.records`: a record as taken in, with its provenance, handed to the ledger;
- :mod:`.uscc`, :mod:`.persons`, :mod:`.regions`: 统一社会信用代码, ID numbers, division codes;
- :mod:`.normalize`: cleaning published text, dates and amounts;
- :mod:`.reasons`: the catalogue of reason codes a rejected row carries, with how quality counts each;
- :mod:`.publicity`, :mod:`.workdays`: publicity windows and the official working-day calendar.
- :mod:`.measures`: the measures catalogue (联合奖惩措施清单) a check answers from, read from data files.
"""

__all__: list[str] = []
