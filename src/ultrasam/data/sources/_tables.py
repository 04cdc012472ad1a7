"""Fault-tolerant readers for the metadata files that come with datasets (CSV, JSON, text lists).

A metadata table says which patient, label or split an image has; one bad byte or one malformed
line in it must cost at most that row, never the dataset. The rules, written once here:

* Text is decoded as UTF-8 (a byte-order mark is dropped). A row holding bytes that are not
  UTF-8 is skipped with the warning ``"row N: not valid UTF-8 (...); row skipped"`` on the file;
  the other rows are read as usual. ``N`` is the 1-based line number in the file.
* A CSV file that the ``csv`` module cannot parse past some line (e.g. an unterminated quote)
  keeps the rows read before it and warns ``"row N: <error>; rest of file skipped"``.
* A JSON file that does not parse is warned about (``"not valid JSON (...); file skipped"``)
  and read as None: the converter goes on without that metadata.

``warn(file, message)`` is the writer's :meth:`~ultrasam.data.coco.CocoWriter.warn` (or any
callable with that signature); ``name`` is how the file is named in the warnings.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["read_text_lines", "read_csv_rows", "read_csv_dicts", "read_json"]

Warn = Callable[[str, str], None]
#: Largest metadata file read (bytes): tables of the public datasets are at most a few MB.
MAX_BYTES = 256 * 2**20


def _load(source: Path | bytes, name: str) -> bytes:
    if isinstance(source, bytes):
        return source
    size = Path(source).stat().st_size
    if size > MAX_BYTES:
        raise ValueError(f"{name}: {size:,} bytes, more than the {MAX_BYTES:,} accepted for a "
                         "metadata file")
    return Path(source).read_bytes()


def read_text_lines(source: Path | bytes, name: str, warn: Warn) -> list[tuple[int, str]]:
    """(1-based line number, text) of every line that is valid UTF-8; others warned and skipped.

    Line ends (``\\n``, ``\\r\\n``, ``\\r``) are removed; a leading BOM is dropped.
    """
    data = _load(source, name)
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    out: list[tuple[int, str]] = []
    for number, raw in enumerate(data.splitlines(), start=1):
        try:
            out.append((number, raw.decode("utf-8")))
        except UnicodeDecodeError as e:
            bad = raw[e.start:e.end]
            warn(name, f"row {number}: not valid UTF-8 (byte {bad!r} at column {e.start + 1}); "
                       "row skipped")
    return out


def _csv_rows(lines: list[tuple[int, str]], name: str, warn: Warn, delimiter: str
              ) -> Iterator[tuple[int, list[str]]]:
    # Rows are parsed from the good lines only; csv keeps quoted multi-line fields together.
    numbers = [n for n, _ in lines]
    reader = csv.reader(io.StringIO("\n".join(t for _, t in lines)), delimiter=delimiter)
    try:
        for row in reader:
            # reader.line_num counts physical lines consumed: map it back to the file's numbering.
            yield numbers[min(reader.line_num, len(numbers)) - 1], row
    except csv.Error as e:
        line = numbers[min(reader.line_num, len(numbers)) - 1] if numbers else 0
        warn(name, f"row {line}: {e}; rest of file skipped")


def read_csv_rows(source: Path | bytes, name: str, warn: Warn, delimiter: str = ","
                  ) -> list[tuple[int, list[str]]]:
    """(line number, fields) of every readable row of a header-less CSV (blank rows dropped)."""
    return [(n, row) for n, row in _csv_rows(read_text_lines(source, name, warn), name, warn,
                                             delimiter) if any(f.strip() for f in row)]


def read_csv_dicts(source: Path | bytes, name: str, warn: Warn, delimiter: str = ","
                   ) -> list[tuple[int, dict[str, str]]]:
    """(line number, {column: value}) of every readable row of a CSV whose first readable row is
    the header (names stripped). Missing trailing cells read as ""; extra cells are dropped."""
    rows = read_csv_rows(source, name, warn, delimiter)
    if not rows:
        return []
    header = [h.strip() for h in rows[0][1]]
    return [(n, {h: (row[i] if i < len(row) else "") for i, h in enumerate(header)})
            for n, row in rows[1:]]


def read_json(source: Path | bytes, name: str, warn: Warn) -> Any:
    """The parsed JSON document, or None after a warning when it is not valid UTF-8 JSON."""
    try:
        data = _load(source, name)
        return json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, ValueError, OSError) as e:
        warn(name, f"not valid JSON ({type(e).__name__}: {e}); file skipped")
        return None
