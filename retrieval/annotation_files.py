"""Annotation files as they circulate, not only as first published.

Copies of the same file come comma-, semicolon- or tab-separated, with a UTF-8 BOM, CRLF line ends,
extra columns, and sentences quoted or not. These readers take all of that, and turn every problem
into one `CaptionError` line that names the file and, where it applies, the line and the column.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from pathlib import Path

DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab"}


class CaptionError(ValueError):
    """Annotation files that are missing or not in the expected format (one line, naming the file)."""


def read_text(path: Path) -> str:
    """The file's text: UTF-8 with or without a BOM (or UTF-16 with one, as Excel saves "Unicode text")."""
    if not path.exists():
        raise CaptionError(f"{path}: annotation file not found")
    if not path.is_file():
        raise CaptionError(f"{path}: a folder, not an annotation file")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CaptionError(f"{path}: cannot read ({error.strerror})") from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            raise CaptionError(f"{path}: starts as UTF-16 but is not valid UTF-16 text") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise CaptionError(
            f"{path} line {line}: not UTF-8 text (byte 0x{data[error.start]:02x}); save the file as UTF-8"
        ) from None


def kind(value) -> str:
    """The JSON name of a value's type, for messages."""
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def read_json(path: Path):
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        hint = "; one JSON value per line is JSON Lines: name the file .jsonl" if error.msg == "Extra data" else ""
        raise CaptionError(
            f"{path} line {error.lineno} column {error.colno}: not valid JSON ({error.msg}{hint})"
        ) from None


def read_json_list(path: Path) -> list:
    """A file whose top level is a list of items (DiDeMo, VATEX, a generic .json)."""
    items = read_json(path)
    if not isinstance(items, list):
        raise CaptionError(f"{path}: expected a JSON list of items, found {kind(items)}")
    return items


def read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """(line number, object) for each non-blank line. Lines split at LF only: JSON strings may hold U+2028."""
    rows = []
    for number, line in enumerate(read_text(path).split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise CaptionError(f"{path} line {number} column {error.colno}: not valid JSON ({error.msg})") from None
        if not isinstance(row, dict):
            raise CaptionError(f"{path} line {number}: expected a JSON object {{...}}, found {kind(row)}")
        rows.append((number, row))
    return rows


def value(where: str, item, name: str):
    """item[name], any type; `where` names the file and the item or line."""
    if not isinstance(item, dict):
        raise CaptionError(f"{where} is {kind(item)}, not an object")
    if name not in item:
        raise CaptionError(f"{where} has no {name!r} (keys: {', '.join(map(str, item)) or 'none'})")
    return item[name]


def field(where: str, item, name: str, is_id: bool = False) -> str:
    """item[name] as stripped, non-empty text; ids may also be whole numbers."""
    text = value(where, item, name)
    if is_id and isinstance(text, int) and not isinstance(text, bool):
        return str(text)
    if not isinstance(text, str):
        raise CaptionError(f"{where}: {name!r} is {kind(text)}, not a string")
    if not text.strip():
        raise CaptionError(f"{where}: {name!r} is empty")
    return text.strip()


def _names(line: str, delimiter: str) -> list[str]:
    return [name.strip().lower() for name in next(csv.reader([line], delimiter=delimiter), [])]


def _foreign_delimiter(line: str) -> str | None:
    """The likeliest separator of a header that none of comma, semicolon and tab splits."""
    counts = Counter(c for c in line.strip() if not c.isalnum() and c not in "_-. '\"")
    return counts.most_common(1)[0][0] if counts else None


def _header_delimiter(path: Path, header: str, required: tuple[str, ...]) -> str:
    """The delimiter under which the header has every required column (the one giving most columns).
    None does: the error says what the header was read as."""
    fits = [(len(_names(header, d)), d) for d in DELIMITERS if set(required) <= set(_names(header, d))]
    if fits:
        return max(fits, key=lambda fit: fit[0])[1]
    count, delimiter = max((len(_names(header, d)), d) for d in DELIMITERS)
    missing = [name for name in required if name not in _names(header, delimiter)]
    wanted = f"column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))}"
    if count > 1:
        found = f"{', '.join(_names(header, delimiter))}; read as {DELIMITERS[delimiter]}-separated"
    else:
        other = _foreign_delimiter(header)
        guess = f"; is the delimiter {other!r}? comma, semicolon and tab are read" if other else ""
        found = f"{header.strip()} as one column{guess}"
    raise CaptionError(f"{path}: no {wanted} (found: {found})")


def _records(path: Path, text: str, delimiter: str):
    """(first line, fields) per CSV record; a quote left open across lines is an error, not a swallowed file."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    start = 1
    try:
        for fields in reader:
            if reader.line_num > start and any("\n" in f or "\r" in f for f in fields):
                raise CaptionError(
                    f"{path} line {start}: a quoted field runs on to line {reader.line_num} "
                    f"(is a quote left open? quote whole fields, and double any quote inside one)"
                )
            yield start, fields
            start = reader.line_num + 1
    except csv.Error as error:
        raise CaptionError(f"{path} line {start}: not valid CSV ({error})") from None


def _fit(fields: list[str], width: int, text_index: int | None, delimiter: str) -> list[str]:
    """Fields beyond the header's come from the text column's unquoted delimiters: put them back in it."""
    while len(fields) > width and not fields[-1].strip():
        fields = fields[:-1]
    if len(fields) <= width or text_index is None:
        return fields[:width]
    end = text_index + len(fields) - width + 1
    return [*fields[:text_index], delimiter.join(fields[text_index:end]), *fields[end:]]


def read_table(path: Path, required: tuple[str, ...], text_column: str | None = None) -> list[tuple[str, dict]]:
    """(where, row) for each data row of a delimited file with a header, the delimiter found from the header.
    Column names match case-blind; extra columns are kept but unused; values are stripped."""
    text = read_text(path)
    header = next((line for line in text.splitlines() if line.strip()), None)
    if header is None:
        raise CaptionError(f"{path}: empty file (expected a header with {', '.join(required)})")
    delimiter = _header_delimiter(path, header, required)
    records = (record for record in _records(path, text, delimiter) if any(f.strip() for f in record[1]))
    _, names = next(records)
    names = [name.strip().lower() for name in names]
    text_index = names.index(text_column) if text_column in names else None
    needed = max(names.index(name) for name in required) + 1
    rows = []
    for line, fields in records:
        fields = _fit(fields, len(names), text_index, delimiter)
        if len(fields) < needed:
            raise CaptionError(
                f"{path} line {line}: no value for {names[len(fields)]!r} (has {len(fields)} of the header's "
                f"{len(names)} {DELIMITERS[delimiter]}-separated fields)"
            )
        rows.append((f"{path} line {line}", dict(zip(names, (f.strip() for f in fields), strict=False))))
    return rows


TIME = re.compile(r"[\d.:]+")


def _lsmdc_delimiter(line: str) -> str:
    """Tab as published; a comma or semicolon copy shows itself by four times after the clip id."""
    for delimiter in DELIMITERS:
        fields = line.split(delimiter)
        if len(fields) >= 6 and all(TIME.fullmatch(f.strip().strip('"')) for f in fields[1:5]):
            return delimiter
    return "\t"


def _sentence(rest: str, delimiter: str) -> str:
    """The sentence at the start of `rest`: a quoted field (then any columns after it are ignored), else
    the rest of the line, which may hold commas and semicolons; in a tab-separated file, up to a tab."""
    quoted = re.fullmatch(f'"((?:[^"]|"")*)" *(?:{delimiter}.*)?', rest)
    if quoted:
        return quoted.group(1).replace('""', '"')
    return rest.split("\t")[0] if delimiter == "\t" else rest


def read_lsmdc(path: Path) -> list[tuple[str, str, str]]:
    """(where, clip id, sentence) per line of a headerless LSMDC file: clip id, four times, sentence."""
    lines = read_text(path).split("\n")
    delimiter = _lsmdc_delimiter(next((line for line in lines if line.strip()), ""))
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.rstrip("\r").split(delimiter, 5)
        where = f"{path} line {number}"
        if len(fields) < 6:
            raise CaptionError(
                f"{where}: expected 6 {DELIMITERS[delimiter]}-separated fields (clip id, four times, sentence), "
                f"found {len(fields)}"
            )
        row = {"clip id": fields[0].strip().strip('"'), "sentence": _sentence(fields[5].strip(), delimiter)}
        rows.append((where, field(where, row, "clip id"), field(where, row, "sentence")))
    return rows
