"""Reading raw CSV/TSV files strictly, for every adapter.

`read_table` accepts comma- or tab-separated files, a UTF-8 byte-order mark, spaces or quotes
around header names and column-name aliases, reads with typed polars columns (fast path) and, if
a value does not parse, re-reads the file as text to report the exact line, column and value.
Every problem is a `UserInputError` with one line: file, column, what is wrong, how to fix it.
Also caught here for every adapter: a file in another encoding (UTF-16, GBK: the line and column of
the first byte that is not UTF-8), a last line cut short (a truncated download or copy), and, through
the helpers below, negative ids, timestamps in the wrong unit and exact duplicate rows.
"""

from __future__ import annotations

import codecs
import csv
import sys
from pathlib import Path

import polars as pl

from recbench.errors import bad_input

BOMS = {codecs.BOM_UTF32_LE: "UTF-32", codecs.BOM_UTF32_BE: "UTF-32", codecs.BOM_UTF16_LE: "UTF-16",
        codecs.BOM_UTF16_BE: "UTF-16"}
WHOLE_ROWS = pl.QueryOptFlags(projection_pushdown=False)  # parse every field, so ragged rows raise
TO_UTF8 = "convert it to UTF-8 (e.g. `iconv -f GBK -t UTF-8 old.csv > new.csv`, or save as 'CSV UTF-8')"


def sniff_header(path: Path) -> tuple[list[str], str]:
    """Cleaned header names and the separator (tab if the header has one, else comma)."""
    with open(path, "rb") as handle:
        line = handle.readline()
    if not line.strip():
        raise bad_input(path, "the file is empty", "re-download or re-extract it")
    for bom, encoding in BOMS.items():  # UTF-32 first: its LE mark starts with UTF-16's
        if line.startswith(bom):
            raise bad_input(path, f"is {encoding} text, not UTF-8", TO_UTF8.replace("GBK", encoding))
    try:
        text = line.decode("utf-8-sig").rstrip("\r\n")
    except UnicodeDecodeError:
        raise bad_input(path, "the header is not UTF-8 text (another encoding, or not a CSV file at all)",
                        "check that this is the CSV, not the zip, and " + TO_UTF8)
    separator = "\t" if "\t" in text else ","
    return [name.strip().strip('"') for name in text.split(separator)], separator


def has_rows(path: Path) -> bool:
    with open(path, "rb") as handle:
        handle.readline()
        return any(line.strip() for line in handle)


def _line_number(path: Path, offset: int, chunk: int = 1 << 22) -> int:
    """1-based line number of the byte at `offset`."""
    lines, position = 1, 0
    with open(path, "rb") as handle:
        while position < offset:
            block = handle.read(min(chunk, offset - position))
            if not block:
                break
            lines += block.count(b"\n")
            position += len(block)
    return lines


def check_last_line(path: Path, header: list[str], separator: str, tail: int = 1 << 16) -> None:
    """A file that does not end with a newline and whose last line has fewer fields than the header
    was cut off (an interrupted download or copy): stop rather than read the short row as empty
    values. (A complete last line without the final newline is fine.)"""
    with open(path, "rb") as handle:
        handle.seek(0, 2)
        size = handle.tell()
        handle.seek(max(0, size - tail))
        data = handle.read()
    if not data or data.endswith(b"\n"):
        return
    start = data.rfind(b"\n") + 1
    last = data[start:].decode("utf-8", errors="replace").rstrip("\r")
    if not last.strip():
        return
    fields = next(csv.reader([last], delimiter=separator), [])
    if len(fields) < len(header):
        line = _line_number(path, size - len(data) + start)
        raise bad_input(path, f"line {line} (the last) has {len(fields)} of the header's {len(header)} fields "
                        "and no line end: the file looks truncated", "re-download or re-extract it "
                        "(or delete that last line)", header[len(fields)] if fields else header[0])


def first_non_utf8(path: Path, header: list[str], separator: str,
                   chunk: int = 1 << 22) -> tuple[int, str | None, bytes] | None:
    """(line, column or None, the offending bytes) of the first byte sequence that is not UTF-8."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    position = 0
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as error:
                offset = position + error.start
                break
            position += len(block)
        else:
            return None
        line_start = max(0, offset - (1 << 16))
        handle.seek(line_start)
        before = handle.read(offset - line_start)
        line_start += before.rfind(b"\n") + 1
        handle.seek(line_start)
        raw = handle.readline()
    bad_at = offset - line_start
    fields = next(csv.reader([raw[:bad_at].decode("utf-8", errors="replace")], delimiter=separator), [""])
    index = max(0, len(fields) - 1)
    column = header[index] if index < len(header) else None
    return _line_number(path, offset), column, raw[bad_at:bad_at + 4]


def first_bad(frame: pl.DataFrame, bad: pl.Expr, column: str) -> tuple[int, str]:
    """(1-based file line, value) of the first row where `bad` holds (line 1 is the header)."""
    row = frame.with_row_index("line").filter(bad).head(1)
    return int(row["line"][0]) + 2, str(row[column][0])


def read_table(path: Path, required: tuple[str, ...], dtypes: dict[str, pl.DataType],
               aliases: dict[str, str] | None = None) -> pl.DataFrame:
    """Read `required` columns (renamed through `aliases`) with `dtypes`; others stay text. A typed value
    with spaces around it (` 328862 `) is read as the value; a row with more fields than the header is
    one line naming it."""
    header, separator = sniff_header(path)
    header = [(aliases or {}).get(name, name) for name in header]
    for column in required:
        if column not in header:
            raise bad_input(path, f"missing (header is: {','.join(header)})",
                            f"the file needs the columns {','.join(required)}", column)
    if not has_rows(path):
        raise bad_input(path, "has a header but no rows", "re-download or re-extract the file")
    check_last_line(path, header, separator)
    typed = {column: dtype for column, dtype in dtypes.items() if column in required}

    def scan(**options) -> pl.LazyFrame:
        # header names are passed cleaned so the columns are found however the header was written
        return pl.scan_csv(path, has_header=False, skip_rows=1, new_columns=header, separator=separator,
                           infer_schema=False, **options).select(list(required))

    try:  # every field is parsed (no projection pushdown): reading only some columns passes a row with
        # more fields than the header silently; streaming keeps the unused columns' memory to one chunk
        return scan(schema_overrides=typed).collect(engine="streaming", optimizations=WHOLE_ROWS)
    except pl.exceptions.PolarsError:
        pass
    ragged = first_ragged_line(path, len(header), separator)
    if ragged:
        line, count = ragged
        raise bad_input(path, f"line {line} has {count} fields but the header has {len(header)}",
                        "remove the extra field(s) from that row (a value holding the separator must be quoted)")
    try:
        text = scan().collect()
    except pl.exceptions.PolarsError as error:
        found = first_non_utf8(path, header, separator)
        if found:
            line, column, raw = found
            raise bad_input(path, f"line {line} is not UTF-8 text (bytes {raw.hex(' ')}; GBK or another "
                            "encoding?)", TO_UTF8, column)
        sep_name = "tab" if separator == "\t" else "comma"
        raise bad_input(path, f"could not be parsed ({str(error).splitlines()[0]})",
                        f"check that every row has the header's {len(header)} {sep_name}-separated fields "
                        "and that the text is UTF-8")
    for column, dtype in typed.items():
        value = pl.col(column).str.strip_chars()
        bad = value.is_not_null() & (value != "") & value.cast(dtype, strict=False).is_null()
        if text.select(bad.any()).item():
            line, raw = first_bad(text, bad, column)
            kind = "an integer" if dtype.is_integer() else "a number"
            raise bad_input(path, f"line {line} has '{raw}', which is not {kind}",
                            "fix or drop that row", column)
    # every value parses once the spaces around it are stripped (` 328862 `, as header names are): read it so
    return text.with_columns(pl.col(c).str.strip_chars().cast(t, strict=False) for c, t in typed.items())


def first_ragged_line(path: Path, n_fields: int, separator: str, candidates: int = 100) -> tuple[int, int] | None:
    """(line, fields) of the first row with more fields than the header's `n_fields`, or None. Only on
    the error path: the lines are counted in polars (quoted values removed first), and a candidate is
    confirmed by the csv module (a quoted value spanning lines can fool the per-line count)."""
    quoted = r'"(?:[^"]|"")*"'
    try:
        found = (pl.scan_lines(path, row_index_name="index")
                 .filter(pl.col("index") > 0,  # the header
                         pl.col("line").str.replace_all(quoted, "").str.count_matches(separator, literal=True)
                         >= n_fields)
                 .head(candidates).collect())
    except Exception:  # noqa: BLE001 - only a better message is lost
        return None
    for index, text in zip(found["index"], found["line"]):
        fields = next(csv.reader([text.rstrip("\r")], delimiter=separator), [])
        if len(fields) > n_fields:
            return int(index) + 1, len(fields)
    return None


def require_non_null(path: Path, frame: pl.DataFrame, columns: tuple[str, ...]) -> None:
    for column in columns:
        if frame[column].null_count():
            line, _ = first_bad(frame, pl.col(column).is_null(), column)
            raise bad_input(path, f"line {line} has an empty value", "fill or drop that row", column)


def require_non_negative(path: Path, frame: pl.DataFrame, columns: tuple[str, ...], what: str = "an id",
                         locate=first_bad) -> None:
    """Ids (and counts) are >= 0 in every dataset: a negative one is a corrupted or shifted value.
    `locate` as in `require_non_negative_numbers`."""
    for column in columns:
        bad = pl.col(column) < 0
        if frame.select(bad.any()).item():
            line, raw = locate(frame, bad, column)
            raise bad_input(path, f"line {line} has {raw}, out of range ({what} must be >= 0)",
                            "fix or drop that row", column)


def require_non_negative_numbers(path: Path, frame: pl.DataFrame, columns: tuple[str, ...],
                                 locate=first_bad, below: float | None = None) -> None:
    """Measured amounts (watch time, gift value, counts): NaN, inf or negative is bad input, and so is a
    value >= `below` when given (2**53 for a column cast to Int64: above it a float is no exact whole
    number). `locate(frame, bad, column)` gives the (file line, value) to name; the default counts rows
    from the header. Empty values pass."""
    for column in columns:
        value = pl.col(column)
        bad = (value.is_nan() | value.is_infinite() if frame.schema[column].is_float() else pl.lit(False)) | (value < 0)
        if below is not None:
            bad = bad | (value >= below)
        if frame.select(bad.any()).item():
            line, raw = locate(frame, bad, column)
            limit = f" below {below:.4g}" if below is not None else ""
            raise bad_input(path, f"line {line} has {column} '{raw}'; it must be a finite non-negative number{limit}",
                            "fix or drop that row", column)


# plausible Unix times (1973 .. 5138): seconds and milliseconds do not overlap
EPOCH_RANGE = {"ms": (10**11, 10**14), "s": (10**8, 10**11)}
UNIT_NAME = {"ms": "Unix milliseconds", "s": "Unix seconds"}


def require_epoch(path: Path, frame: pl.DataFrame, column: str, unit: str) -> None:
    """Stop on times that are not Unix `unit` ("ms" or "s"), naming the unit they look like."""
    low, high = EPOCH_RANGE[unit]
    value = pl.col(column)
    out_of_range = (value < low) | (value >= high)
    if frame.schema[column].is_float():
        out_of_range = out_of_range | value.is_nan()
    bad = value.is_not_null() & out_of_range
    if frame.select(bad.any()).item():
        line, raw = first_bad(frame, bad, column)
        number = float(raw) if raw not in ("None", "nan", "NaN") else float("nan")
        looks = next((f", which looks like {UNIT_NAME[other]}" for other, (lo, hi) in EPOCH_RANGE.items()
                      if other != unit and lo <= number < hi), "")
        scale = "multiply by 1000" if unit == "ms" else "divide by 1000"
        fix = (f"{scale} if the whole column is in {UNIT_NAME['s' if unit == 'ms' else 'ms']}, else fix or drop "
               "that row" if looks else "fix or drop that row")
        raise bad_input(path, f"line {line} has {raw}{looks}; {column} must be {UNIT_NAME[unit]}", fix, column)


def warn_duplicates(path: Path, frame: pl.DataFrame, columns: tuple[str, ...], kept: str) -> int:
    """Count rows that repeat an earlier row exactly (over `columns`); if any, one warning line on
    stderr. Returns the count."""
    if frame.select(list(columns)).hash_rows().n_unique() == frame.height:
        return 0  # the usual case, settled by one hash per row (a collision only sends us below)
    repeats = frame.select((~pl.struct(list(columns)).is_first_distinct()).alias("repeat"))["repeat"]
    count = int(repeats.sum())
    if count:
        first = frame.with_row_index("line").filter(repeats).head(1)["line"][0] + 2
        print(f"recbench: warning: {path}: {count} exact duplicate row(s), repeating an earlier row over "
              f"{', '.join(columns)} (the first at line {first}); {kept}", file=sys.stderr, flush=True)
    return count
