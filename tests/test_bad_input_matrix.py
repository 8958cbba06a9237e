"""Bad input, all adapters: a matrix of malformed inputs (adapter x fault) built from the small
hand-written valid files of each adapter's own tests.

Every case stops with one UserInputError line that names the file (and the column where there is
one) and says "Fix:", with nothing left in the cache; or, where the adapter documents that it
accepts the input (duplicated rows), the test checks the documented behaviour instead. A few
representative cases also go through `python -m recbench`: exit 2, one `recbench: error:` line, no
traceback; with HYDRA_FULL_ERROR=1 the traceback is shown too.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from recbench.errors import UserInputError
from tests import test_kuaicomt_adapter as comt
from tests import test_kuailive_adapter as live
from tests import test_tmall_adapter as tmall

ROOT = Path(__file__).resolve().parent.parent
FAULTS = ("missing_file", "missing_column", "renamed_column", "wrong_dtype", "nan_label", "negative_label",
          "duplicated_rows", "ids_out_of_range", "empty_split", "truncated_last_line", "wrong_encoding",
          "wrong_time_unit")


# ------------------------------------------------------------------------------------ file edits
def _read(path: Path) -> tuple[list[list[str]], str]:
    text = path.read_text(encoding="utf-8")
    separator = "\t" if "\t" in text.split("\n", 1)[0] else ","
    return list(csv.reader(text.splitlines(), delimiter=separator)), separator


def _write(path: Path, rows: list[list[str]], separator: str) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, delimiter=separator, lineterminator="\n").writerows(rows)


def set_cell(column: str, value: str, row: int = 1) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        rows, separator = _read(path)
        rows[row][rows[0].index(column)] = value
        _write(path, rows, separator)
    return edit


def set_column(column: str, convert: Callable[[str], str]) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        rows, separator = _read(path)
        at = rows[0].index(column)
        for row in rows[1:]:
            row[at] = convert(row[at])
        _write(path, rows, separator)
    return edit


def drop_column(column: str) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        rows, separator = _read(path)
        at = rows[0].index(column)
        _write(path, [row[:at] + row[at + 1:] for row in rows], separator)
    return edit


def rename_column(old: str, new: str) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        rows, separator = _read(path)
        rows[0][rows[0].index(old)] = new
        _write(path, rows, separator)
    return edit


def duplicate_row(row: int = 1) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        rows, separator = _read(path)
        _write(path, rows + [rows[row]], separator)
    return edit


def truncate_last_line(path: Path) -> None:
    """Cut the file in the middle of its last line, as an interrupted download or copy does."""
    data = path.read_bytes().rstrip(b"\n")
    start = data.rfind(b"\n") + 1
    path.write_bytes(data[:start + (len(data) - start) // 2])


def to_gbk(old: str, word: str | None = None) -> Callable[[Path], None]:
    """Write `word` (default: `old`) GBK-encoded where `old` was; the rest stays UTF-8, as in a
    badly merged export."""
    def edit(path: Path) -> None:
        data = path.read_bytes()
        assert old.encode() in data
        path.write_bytes(data.replace(old.encode(), (word or old).encode("gbk")))
    return edit


def delete(path: Path) -> None:
    path.unlink()


def utf16(path: Path) -> None:
    path.write_bytes(path.read_text(encoding="utf-8").encode("utf-16"))


# ------------------------------------------------------------------------------------ the matrix
@dataclass
class Case:
    file: str                                 # the file edited (and named in the message)
    edit: Callable[[Path], None]
    column: str | None = None                 # the column named in the message
    fragment: str = ""                        # a piece of the message
    overrides: dict = field(default_factory=dict)
    accepted: str | None = None               # documented acceptance instead of an error: what to check
    xfail: str | None = None                  # not handled yet (reason)


@dataclass
class Adapter:
    write: Callable[[Path], Path]             # write the valid hand-made files into a folder
    make: Callable[..., object]               # (raw folder, tmp folder, **overrides) -> adapter


def _tmall_write(folder: Path) -> Path:
    tmall.write_raw(folder, tmall.HAND_TEXT)
    return folder


def _tmall_make(raw: Path, tmp: Path, **overrides):
    return tmall.make_adapter(tmp, raw_dir=raw, **overrides)


ADAPTERS = {
    "tmall": Adapter(_tmall_write, _tmall_make),
    "kuaicomt": Adapter(comt.write_files, comt.adapter),
    "kuailive": Adapter(live.write_files, live.adapter),
}

LOG, IMPRESSIONS, CLICKS, ROOMS = tmall.LOG_FILE, "user_video_inter.csv", "click.csv", "room.csv"
CASES: dict[str, dict[str, Case]] = {
    "tmall": {
        "missing_file": Case(LOG, delete, fragment="not found"),
        "missing_column": Case(LOG, drop_column("action_type"), "action_type", "missing"),
        "renamed_column": Case(LOG, rename_column("action_type", "action"), "action_type", "missing"),
        "wrong_dtype": Case(LOG, set_cell("item_id", "i101", row=3), "item_id", "not an integer"),
        "nan_label": Case(LOG, set_cell("action_type", "nan", row=3), "action_type", "line 4"),
        "negative_label": Case(LOG, set_cell("action_type", "-1", row=3), "action_type", "outside 0..3"),
        "duplicated_rows": Case(LOG, duplicate_row(3), accepted="dedupe"),
        "ids_out_of_range": Case(LOG, set_cell("user_id", "-7", row=3), "user_id", "out of range"),
        "empty_split": Case(LOG, lambda path: None, None, "no user has 100", {"min_user_episodes": 100}),
        "truncated_last_line": Case(LOG, truncate_last_line, None, "truncated"),
        "wrong_encoding": Case(LOG, utf16, None, "UTF-16"),
        "wrong_time_unit": Case(LOG, set_cell("time_stamp", "20140804", row=3), "time_stamp", "MMDD"),
    },
    "kuaicomt": {
        "missing_file": Case("user_features.csv", delete, fragment="not found"),
        "missing_column": Case(IMPRESSIONS, drop_column("comment_stay_time"), "comment_stay_time", "missing"),
        "renamed_column": Case("user_comment_inter.csv", rename_column("is_reply", "reply"), "is_reply", "missing"),
        "wrong_dtype": Case(IMPRESSIONS, set_cell("video_id", "v101", row=2), "video_id", "not an integer"),
        "nan_label": Case(IMPRESSIONS, set_cell("comment_stay_time", "nan", row=2), "comment_stay_time", "line 3"),
        "negative_label": Case(IMPRESSIONS, set_cell("comment_stay_time", "-8000"), "comment_stay_time",
                               "non-negative"),
        "duplicated_rows": Case(IMPRESSIONS, duplicate_row(1), accepted="kept with a warning"),
        "ids_out_of_range": Case(IMPRESSIONS, set_cell("user_id", "-11", row=2), "user_id", "out of range"),
        "empty_split": Case(IMPRESSIONS, lambda path: None, None, "no opened impression falls in the train",
                            {"min_duration_s": 100}),
        "truncated_last_line": Case(IMPRESSIONS, truncate_last_line, None, "truncated"),
        "wrong_encoding": Case("video_features.csv", to_gbk("旅行"), "caption", "not UTF-8"),
        "wrong_time_unit": Case(IMPRESSIONS, set_column("time_ms", lambda v: str(int(float(v)) // 1000)),
                                "time_ms", "Unix seconds"),
    },
    "kuailive": {
        "missing_file": Case("gift.csv", delete, fragment="not found"),
        "missing_column": Case(CLICKS, drop_column("watch_live_time"), "watch_live_time", "missing"),
        "renamed_column": Case(CLICKS, rename_column("watch_live_time", "watch_time"), "watch_live_time", "missing"),
        "wrong_dtype": Case(CLICKS, set_cell("watch_live_time", "long", row=2), "watch_live_time", "not a number"),
        "nan_label": Case(CLICKS, set_cell("watch_live_time", "nan", row=2), "watch_live_time", "line 3"),
        "negative_label": Case(CLICKS, set_cell("watch_live_time", "-5", row=2), "watch_live_time", "non-negative"),
        "duplicated_rows": Case("negative.csv", duplicate_row(1), accepted="kept with a warning"),
        "ids_out_of_range": Case(CLICKS, set_cell("user_id", "-11", row=2), "user_id", "out of range"),
        "empty_split": Case(CLICKS, lambda path: None, None, "test dates", {"test_start": "2025-05-25"}),
        "truncated_last_line": Case(ROOMS, truncate_last_line, None, "truncated"),
        "wrong_encoding": Case(ROOMS, to_gbk("chat", "购物"), "live_content_category", "not UTF-8"),
        "wrong_time_unit": Case(CLICKS, set_column("timestamp", lambda v: str(int(v) // 1000)), "timestamp",
                                "seconds"),
    },
}



# ------------------------------------------------------------------------------------ in-process
def cache_files(tmp: Path) -> list[Path]:
    cache = tmp / "cache"
    return sorted(cache.rglob("*")) if cache.exists() else []


def assert_one_clean_line(message: str, path: Path, case: Case) -> None:
    assert message and "\n" not in message and "\r" not in message, repr(message)
    assert "Fix:" in message, message
    assert str(path) in message, message
    if case.column:
        assert f"column '{case.column}'" in message, message
    assert case.fragment in message, message


def prepare_clean(name: str, tmp: Path):
    adapter = ADAPTERS[name]
    return adapter.make(adapter.write(tmp / "raw"), tmp).prepare()


def check_accepted(name: str, case: Case, raw: Path, tmp: Path, capfd) -> None:
    prepared = ADAPTERS[name].make(raw, tmp).prepare()
    stderr = capfd.readouterr().err
    clean = prepare_clean(name, tmp / "clean")
    if name == "tmall":  # documented: exact duplicate rows are dropped (`dedupe`)
        stats, clean_stats = prepared.meta["stats"], clean.meta["stats"]
        assert stats["rows"] == clean_stats["rows"] + 1
        assert stats["rows_after_dedupe"] == clean_stats["rows_after_dedupe"]
        tmall.assert_same_arrays(clean.arrays, prepared.arrays)
        return
    # documented: exact duplicate rows are kept (one row = one impression / event), with a warning
    warnings = [line for line in stderr.splitlines() if line.startswith("recbench: warning:")]
    assert len(warnings) == 1 and str(raw / case.file) in warnings[0] and "duplicate" in warnings[0], stderr
    if name == "kuaicomt":
        assert prepared.meta["splits"]["train"] == clean.meta["splits"]["train"] + 1
    else:
        assert prepared.meta["stats"]["exposures"] == clean.meta["stats"]["exposures"] + 1


PARAMS = [pytest.param(name, fault, id=f"{name}-{fault}",
                       marks=[pytest.mark.xfail(reason=CASES[name][fault].xfail, strict=False)]
                       if CASES[name][fault].xfail else [])
          for name in CASES for fault in FAULTS]


@pytest.mark.parametrize("name,fault", PARAMS)
def test_bad_input(tmp_path, capfd, name, fault):
    adapter, case = ADAPTERS[name], CASES[name][fault]
    raw = adapter.write(tmp_path / "raw")
    capfd.readouterr()
    case.edit(raw / case.file)
    if case.accepted:
        check_accepted(name, case, raw, tmp_path, capfd)
        return
    with pytest.raises(UserInputError) as info:
        adapter.make(raw, tmp_path, **case.overrides).prepare()
    assert_one_clean_line(str(info.value), raw / case.file, case)
    assert cache_files(tmp_path) == [], "a failed build left files in the cache"


def test_matrix_is_complete():
    assert all(tuple(cases) == FAULTS for cases in CASES.values())


# ------------------------------------------------------------------------------------ ragged rows, padded ids
ID_CELLS = {"tmall": (LOG, "user_id"), "kuaicomt": (IMPRESSIONS, "video_id"), "kuailive": (CLICKS, "user_id")}


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_row_with_an_extra_field_names_its_line(tmp_path, name):
    adapter, (file, _) = ADAPTERS[name], ID_CELLS[name]
    raw = adapter.write(tmp_path / "raw")
    rows, separator = _read(raw / file)
    rows[2].append("9")  # line 3, mid-file
    _write(raw / file, rows, separator)
    with pytest.raises(UserInputError) as info:
        adapter.make(raw, tmp_path).prepare()
    case = Case(file, delete, fragment=f"line 3 has {len(rows[0]) + 1} fields but the header has {len(rows[0])}")
    assert_one_clean_line(str(info.value), raw / file, case)
    assert cache_files(tmp_path) == [], "a failed build left files in the cache"


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_padded_ids_are_read_like_clean_ones(tmp_path, name):
    """An id written ` 328862 ` is read as 328862 (header names are stripped likewise): same arrays (it was
    'could not be parsed' with no line)."""
    adapter, (file, column) = ADAPTERS[name], ID_CELLS[name]
    raw = adapter.write(tmp_path / "raw")
    set_column(column, lambda value: f" {value} ")(raw / file)
    rows, _ = _read(raw / file)
    assert rows[1][rows[0].index(column)].startswith(" ")
    padded, clean = adapter.make(raw, tmp_path).prepare(), prepare_clean(name, tmp_path / "clean")
    tmall.assert_same_arrays(clean.arrays, padded.arrays)


# ------------------------------------------------------------------------------------ command line
CLI_CASES = {"tmall": ("truncated_last_line", []), "kuaicomt": ("wrong_encoding", ["model=dcn"]),
             "kuailive": ("ids_out_of_range", ["model=din_live"])}


def run_cli(tmp_path: Path, name: str, full_error: bool = False) -> tuple[subprocess.CompletedProcess, Path]:
    fault, extra = CLI_CASES[name]
    case = CASES[name][fault]
    raw = ADAPTERS[name].write(tmp_path / "raw")
    case.edit(raw / case.file)
    env = {**os.environ, "HYDRA_FULL_ERROR": "1" if full_error else "0"}
    command = [sys.executable, "-m", "recbench", f"data={name}", *extra, "data.source=raw", f"data.raw_dir={raw}",
               f"paths.datasets={tmp_path / 'datasets'}", f"paths.experiments={tmp_path / 'experiments'}",
               f"hydra.run.dir={tmp_path / 'run'}", "trainer.max_epochs=1"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, env=env,
                          check=False)
    return done, raw / case.file


# each run starts Python + torch + Hydra (~10-20 s on a shared 2-core box): by default one dataset
# here and one below; `-m slow` runs the other two as well
@pytest.mark.parametrize("name", [pytest.param(n, marks=[] if n == "tmall" else [pytest.mark.slow])
                                  for n in sorted(CLI_CASES)])
def test_cli_bad_input_is_one_line_exit_2(tmp_path, name):
    done, path = run_cli(tmp_path, name)
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("recbench: error:")]
    assert len(errors) == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert str(path) in errors[0] and "Fix:" in errors[0]
    assert not list((tmp_path / "datasets").rglob("*.np[yz]"))  # nothing cached


def test_cli_hydra_full_error_shows_the_traceback(tmp_path):
    done, _ = run_cli(tmp_path, "kuailive", full_error=True)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" in done.stderr and "UserInputError" in done.stderr
    assert sum(line.startswith("recbench: error:") for line in done.stderr.splitlines()) == 1
