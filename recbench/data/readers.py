"""Reading raw CSV/TSV files strictly, for every adapter.

`read_table` accepts comma- or tab-separated files, a UTF-8 byte-order mark, spaces or quotes
around header names and column-name aliases, reads with typed polars columns (fast path) and, if
a value does not parse, re-reads the file as text to report the exact line, column and value.
Every problem is a `UserInputError` with one line: file, column, what is wrong, how to fix it.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recbench.errors import bad_input


def sniff_header(path: Path) -> tuple[list[str], str]:
    """Cleaned header names and the separator (tab if the header has one, else comma)."""
    with open(path, "rb") as handle:
        line = handle.readline()
    if not line.strip():
        raise bad_input(path, "the file is empty", "re-download or re-extract it")
    try:
        text = line.decode("utf-8-sig").rstrip("\r\n")
    except UnicodeDecodeError:
        raise bad_input(path, "the header is not UTF-8 text", "check that this is the CSV, not the zip")
    separator = "\t" if "\t" in text else ","
    return [name.strip().strip('"') for name in text.split(separator)], separator


def has_rows(path: Path) -> bool:
    with open(path, "rb") as handle:
        handle.readline()
        return any(line.strip() for line in handle)


def first_bad(frame: pl.DataFrame, bad: pl.Expr, column: str) -> tuple[int, str]:
    """(1-based file line, value) of the first row where `bad` holds (line 1 is the header)."""
    row = frame.with_row_index("line").filter(bad).head(1)
    return int(row["line"][0]) + 2, str(row[column][0])


def read_table(path: Path, required: tuple[str, ...], dtypes: dict[str, pl.DataType],
               aliases: dict[str, str] | None = None) -> pl.DataFrame:
    """Read `required` columns (renamed through `aliases`) with `dtypes`; others stay text."""
    header, separator = sniff_header(path)
    header = [(aliases or {}).get(name, name) for name in header]
    for column in required:
        if column not in header:
            raise bad_input(path, f"missing (header is: {','.join(header)})",
                            f"the file needs the columns {','.join(required)}", column)
    if not has_rows(path):
        raise bad_input(path, "has a header but no rows", "re-download or re-extract the file")
    typed = {column: dtype for column, dtype in dtypes.items() if column in required}

    def scan(**options) -> pl.LazyFrame:
        # header names are passed cleaned so the columns are found however the header was written
        return pl.scan_csv(path, has_header=False, skip_rows=1, new_columns=header, separator=separator,
                           infer_schema=False, **options).select(list(required))

    try:
        return scan(schema_overrides=typed).collect()
    except pl.exceptions.PolarsError:
        pass
    try:
        text = scan().collect()
    except pl.exceptions.PolarsError as error:
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
    raise bad_input(path, "could not be parsed", "check the separator and quoting")


def require_non_null(path: Path, frame: pl.DataFrame, columns: tuple[str, ...]) -> None:
    for column in columns:
        if frame[column].null_count():
            line, _ = first_bad(frame, pl.col(column).is_null(), column)
            raise bad_input(path, f"line {line} has an empty value", "fill or drop that row", column)
