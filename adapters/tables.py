"""Reading platform export files as tables: CSV (UTF-8, UTF-8 with BOM, GB18030) and XLSX.

A file yields one :class:`Table` per sheet (a CSV file is one sheet). Each row
comes with its locator (line or sheet/row) so that a rejection can point at it.
Encodings are detected from the bytes, never guessed silently: bytes that are
not valid in the detected encoding make that row, and only that row, a rejection
(``row.encoding``); a file that is not a table at all is a :class:`FileUnreadable`.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from credex.domain.reasons import Reason
from credex.errors import CredexError

_SAMPLE = 256 * 1024
CSV_SUFFIXES = frozenset({".csv", ".txt"})
XLSX_SUFFIXES = frozenset({".xlsx", ".xlsm"})
JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson"})
JSON_SUFFIXES = frozenset({".json"})
SUFFIXES = CSV_SUFFIXES | XLSX_SUFFIXES | JSONL_SUFFIXES | JSON_SUFFIXES

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # long 违法事实 are real; the profile caps field length


class FileUnreadable(CredexError):
    """The file cannot be read as a table; the message names the file and says why."""


@dataclass(frozen=True, slots=True)
class Row:
    locator: str
    values: list[object]
    # A problem found while reading (reason code, message): the row becomes a rejection.
    problem: tuple[Reason, str] | None = None
    # Rows of JSON sources name their own fields; table rows share the table's header.
    header: tuple[str, ...] | None = None


def _no_progress() -> tuple[int, int]:
    return (0, 0)


@dataclass
class Table:
    source: str  # file name, with the sheet for workbooks
    header: list[str]
    rows: Iterator[Row]
    encoding: str = ""
    # (done, total) in bytes for CSV, in rows for sheets: what a progress bar shows.
    progress: Callable[[], tuple[int, int]] = _no_progress
    sheet: str = ""


def detect_encoding(sample: bytes, complete: bool) -> str:
    """UTF-8 (with or without BOM) or GB18030, decided line by line on a sample of the file.

    UTF-8 is tried first: GB18030 text fails as UTF-8 on nearly every line with
    Chinese in it, while UTF-8 text often decodes as (wrong) GB18030. A few bad
    lines do not change the verdict: they are rows with bad bytes, which become
    rejections of their own (``row.encoding``).
    """
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    lines = sample.split(b"\n")
    if not complete and len(lines) > 1:
        lines = lines[:-1]  # the sample may end inside a line
    lines = [line for line in lines if line.strip()]
    if not lines:
        return "utf-8"
    tolerated = max(1, len(lines) // 20)
    failures = {}
    for encoding in ("utf-8", "gb18030"):
        failures[encoding] = sum(1 for line in lines if not _decodes(line, encoding))
        if failures[encoding] <= tolerated and failures[encoding] < len(lines):
            return encoding
    # Damaged either way: UTF-8 unless GB18030 reads clearly more lines (UTF-8 bytes often pass
    # as GB18030 mojibake, never the other way round). Lines the choice cannot read become
    # rejections of their own, so nothing is decoded wrongly without a word.
    return "gb18030" if failures["gb18030"] * 2 < failures["utf-8"] else "utf-8"


def _decodes(line: bytes, encoding: str) -> bool:
    try:
        line.decode(encoding)
    except UnicodeDecodeError:
        return False
    return True


def read_tables(path: Path) -> Iterator[Table]:
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        yield _read_csv(path)
    elif suffix in XLSX_SUFFIXES:
        yield from _read_xlsx(path)
    elif suffix in JSONL_SUFFIXES:
        yield _read_jsonl(path)
    elif suffix in JSON_SUFFIXES:
        yield from _read_json(path)
    else:
        raise FileUnreadable(f"{path}: unsupported file type {suffix!r}; expected .csv, .xlsx, .jsonl or .json")


def _read_csv(path: Path) -> Table:
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise FileUnreadable(f"{path}: cannot open: {exc.strerror}") from exc
    sample = handle.read(_SAMPLE)
    encoding = detect_encoding(sample, complete=len(sample) < _SAMPLE)
    handle.seek(0)
    text = io.TextIOWrapper(handle, encoding=encoding, errors="surrogateescape", newline="")
    reader = csv.reader(text)
    try:
        header = next(reader)
    except StopIteration:
        text.close()
        raise FileUnreadable(f"{path}: the file is empty; a header row is required") from None
    except csv.Error as exc:
        text.close()
        raise FileUnreadable(f"{path}: the header row is not valid CSV: {exc}") from exc
    if any(_has_surrogates(cell) for cell in header):
        text.close()
        raise FileUnreadable(
            f"{path}: the header row is neither UTF-8 nor GB18030 text; export the file as UTF-8 or GB18030 CSV"
        )

    def rows() -> Iterator[Row]:
        with text:
            while True:
                try:
                    values = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    yield Row(f"line {reader.line_num}", [], (Reason.ROW_CSV, f"not valid CSV: {exc}"))
                    continue
                if not any(cell.strip() for cell in values):
                    continue
                problem = None
                if _has_surrogates("".join(values)):
                    problem = (Reason.ROW_ENCODING, f"bytes that are not valid {encoding} text")
                yield Row(f"line {reader.line_num}", list(values), problem)

    size = path.stat().st_size

    def progress() -> tuple[int, int]:
        return (handle.tell() if not handle.closed else size, size)

    return Table(source=path.name, header=[str(h) for h in header], rows=rows(), encoding=encoding, progress=progress)


_SURROGATES = re.compile("[\udc80-\udcff]")


def _has_surrogates(text: str) -> bool:
    """Undecodable bytes show up as lone surrogates under ``errors="surrogateescape"``."""
    return _SURROGATES.search(text) is not None


def _read_xlsx(path: Path) -> Iterator[Table]:
    import python_calamine

    try:
        workbook = python_calamine.CalamineWorkbook.from_path(str(path))
    except OSError as exc:
        raise FileUnreadable(f"{path}: cannot open: {exc}") from exc
    except Exception as exc:  # calamine raises its own types for zip/xml damage
        raise FileUnreadable(f"{path}: not a readable XLSX workbook ({type(exc).__name__}: {exc})") from exc
    for sheet_name in workbook.sheet_names:
        try:
            sheet = workbook.get_sheet_by_name(sheet_name)
            all_rows = iter(sheet.iter_rows())
            header: list[object] | None = None
            number = 0
            for values in all_rows:
                number += 1
                if any(_present(v) for v in values):
                    header = list(values)
                    break
        except Exception as exc:
            raise FileUnreadable(f"{path}: sheet {sheet_name!r} cannot be read ({exc})") from exc
        if header is None:
            continue
        counter = [number]
        total = int(getattr(sheet, "height", 0) or 0)

        def progress(counter: list[int] = counter, total: int = total) -> tuple[int, int]:
            return counter[0], max(total, counter[0])

        yield Table(
            source=f"{path.name}[{sheet_name}]",
            header=[str(h).strip() if h is not None else "" for h in header],
            rows=_xlsx_rows(path, sheet_name, all_rows, counter),
            progress=progress,
            sheet=sheet_name,
        )


def _xlsx_rows(path: Path, sheet_name: str, rows: Iterator[list[Any]], counter: list[int]) -> Iterator[Row]:
    try:
        for values in rows:
            counter[0] += 1
            if any(_present(v) for v in values):
                yield Row(f"{sheet_name} row {counter[0]}", list(values))
    except Exception as exc:
        raise FileUnreadable(f"{path}: sheet {sheet_name!r} is damaged after row {counter[0]} ({exc})") from exc


def _present(value: object) -> bool:
    return value is not None and str(value).strip() != ""


def object_row(item: object, locator: str) -> Row:
    """A JSON object as a row naming its own fields; nested objects flatten to dotted names.

    Anything that is not an object becomes a rejected row, not an error: one bad
    record in a feed must not stop the feed.
    """
    if not isinstance(item, dict):
        return Row(locator, [str(item)[:2000]], (Reason.ROW_JSON, f"expected a JSON object, got {type(item).__name__}"))
    flat: dict[str, object] = {}
    _flatten(item, "", flat)
    return Row(locator, list(flat.values()), header=tuple(flat))


def _flatten(item: dict[str, object], prefix: str, out: dict[str, object]) -> None:
    for key, value in item.items():
        name = prefix + key if prefix else key
        if type(value) is str:  # the common case first
            out[name] = value
        elif isinstance(value, dict):
            _flatten(value, name + ".", out)
        elif isinstance(value, list):
            out[name] = ";".join("" if v is None else str(v) for v in value)  # multi-valued: 处罚类别
        elif isinstance(value, bool) or value is None:
            out[name] = "" if value is None else str(value).lower()
        else:
            out[name] = value


def _read_jsonl(path: Path) -> Table:
    """JSON Lines, UTF-8: one object per line; a line that is not JSON is a rejected row."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise FileUnreadable(f"{path}: cannot open: {exc.strerror}") from exc
    size = path.stat().st_size

    def rows() -> Iterator[Row]:
        with handle:
            for number, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                locator = f"line {number}"
                try:
                    item = json.loads(raw.decode("utf-8-sig" if number == 1 else "utf-8"))
                except UnicodeDecodeError:
                    yield Row(locator, [raw[:2000].decode("utf-8", "replace")], (Reason.ROW_ENCODING, "not UTF-8 text"))
                    continue
                except json.JSONDecodeError as exc:
                    yield Row(
                        locator, [raw[:2000].decode("utf-8", "replace")], (Reason.ROW_JSON, f"not JSON: {exc.msg}")
                    )
                    continue
                yield object_row(item, locator)

    def progress() -> tuple[int, int]:
        return (handle.tell() if not handle.closed else size, size)

    return Table(source=path.name, header=[], rows=rows(), encoding="utf-8", progress=progress)


def _read_json(path: Path) -> Iterator[Table]:
    """A JSON array of records (an API dump), or an object of such arrays (a dump of several tables)."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))
    except OSError as exc:
        raise FileUnreadable(f"{path}: cannot open: {exc.strerror}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FileUnreadable(f"{path}: not a UTF-8 JSON document ({exc})") from exc
    if isinstance(data, dict) and isinstance(data.get("items"), list):
        data = data["items"]
    parts = {"": data} if isinstance(data, list) else data if isinstance(data, dict) else None
    if parts is None or not all(isinstance(v, list) for v in parts.values()):
        raise FileUnreadable(f"{path}: expected a JSON array of records or an object of arrays")
    for name, items in parts.items():
        source = f"{path.name}[{name}]" if name else path.name
        rows = (object_row(item, f"{name or 'item'} {i + 1}") for i, item in enumerate(items))
        yield Table(source=source, header=[], rows=rows, sheet=name)
