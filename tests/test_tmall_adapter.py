"""Tests of the Tmall IJCAI-15 adapter (recbench/data/tmall.py) and the shared dataset machinery.

1. A hand-written log in the official layout whose episodes, split, labels (with censoring) and
   history windows are worked out by hand below.
2. The real 10,000-row head sample (variant layout) read as is and re-written in the official layout.
3. Leakage: history strictly earlier, action slots only before the target, chronological splits.
4. Cache: reuse, fingerprint sensitivity, auto -> synthetic fallback with a banner, determinism.
5. Bad input: one-line UserInputError naming file / column with "Fix:", and nothing left in the cache;
   the command line's one-line error for unknown config choices.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import date
from fractions import Fraction
from math import ceil
from pathlib import Path

import numpy as np
import pytest
import torch

from recbench.data.base import Prepared
from recbench.data.tmall import INFO_FILE, LOG_FILE, TmallAdapter
from recbench.errors import UserInputError

ROOT = Path(__file__).resolve().parent.parent
HEAD_DIR = Path("/work/shared/data/tmall_ijcai15_head")
HEADER = "user_id,item_id,cat_id,seller_id,brand_id,time_stamp,action_type"
REPLICA = {"n_users": 60, "n_items": 500, "episodes_per_user": 12.0, "seed": 0}
SPLITS = ("train", "valid", "test")
LABEL_KEYS = ("label_action", "label_time", "label_seq", "label_seq_time")
NEVER = 1 << 30


# ---------------------------------------------------------------------------------------- helpers
def day(mmdd: str) -> int:
    """Days since 2014-01-01 of an MMDD stamp (with or without the leading zero)."""
    mmdd = mmdd.zfill(4)
    return (date(2014, int(mmdd[:2]), int(mmdd[2:])) - date(2014, 1, 1)).days


def make_adapter(tmp_path: Path, raw_dir: Path | None = None, source: str = "raw",
                 cache_dir: Path | None = None, replica_dir: Path | None = None,
                 **overrides) -> TmallAdapter:
    config = dict(history_length=3, min_user_episodes=2, min_count=1, dedupe=True, valid_fraction=0.2,
                  test_fraction=0.2, label_horizon_days=5, replica=dict(REPLICA))
    config.update(overrides)
    return TmallAdapter(source=source, raw_dir=str(raw_dir if raw_dir is not None else tmp_path / "raw"),
                        cache_dir=str(cache_dir if cache_dir is not None else tmp_path / "cache"),
                        replica_dir=str(replica_dir if replica_dir is not None else tmp_path / "syn"),
                        **config)


def write_raw(directory: Path, text: str | bytes, name: str = LOG_FILE) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def tables_of(prepared: Prepared) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in prepared.arrays.items()}


def batch_of(adapter: TmallAdapter, prepared: Prepared, split: str) -> dict[str, torch.Tensor]:
    tables = tables_of(prepared)
    return adapter.assemble(tables, split, torch.arange(len(tables[f"{split}_rows"])))


def assert_same_arrays(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def cache_leftovers(cache_dir: Path) -> list[Path]:
    return sorted(cache_dir.rglob("*")) if cache_dir.exists() else []


def assert_clean_error(error: UserInputError, *, names: str | None = None, column: str | None = None,
                       cache_dir: Path | None = None) -> str:
    message = str(error)
    assert message and "\n" not in message and "\r" not in message, repr(message)
    assert "Fix:" in message, message
    if names is not None:
        assert names in message, message
    if column is not None:
        assert f"column '{column}'" in message, message
    if cache_dir is not None:
        assert cache_leftovers(cache_dir) == [], "a failed build left files in the cache"
    return message


# ------------------------------------------------------------------------ 1. hand-written log
# Official layout. Days below are offsets from 0801 (day 0). Users: 7 ("A", 7 items), 3 ("B",
# 3 items), 99 (one item -> dropped by min_user_episodes=2). Rows are NOT in time order; 0801/801 and
# 0803/803 both appear; item 103 has no brand and one exact duplicate row.
HAND_ROWS = [
    # user, item, cat, seller, brand, stamp, action          file position / meaning
    (7, 101, 11, 5000, "1101", "0804", 1),   # 0  A1 cart      d3
    (7, 101, 11, 5000, "1101", "0804", 2),   # 1  A1 purchase  d3 (same day, after the cart row)
    (7, 101, 11, 5000, "1101", "0801", 0),   # 2  A1 click     d0  <- A1 starts here
    (7, 101, 11, 5000, "1101", "803", 3),    # 3  A1 favourite d2
    (7, 102, 11, 5000, "1102", "801", 0),    # 4  A2 click     d0  (same start day as A1, later row)
    (7, 102, 11, 5000, "1102", "0807", 1),   # 5  A2 cart      d6  (after the train split end)
    (7, 102, 11, 5000, "1102", "0805", 2),   # 6  A2 purchase  d4
    (7, 103, 12, 5000, "", "0803", 0),       # 7  A3 click     d2  (empty brand)
    (7, 103, 12, 5000, "", "0803", 0),       # 8  exact duplicate of row 7
    (7, 104, 13, 5000, "1104", "0810", 3),   # 9  A4 favourite d9  (censored)
    (7, 104, 13, 5000, "1104", "0804", 0),   # 10 A4 click     d3
    (7, 105, 13, 5000, "1105", "0804", 0),   # 11 A5 click     d3
    (7, 106, 13, 5000, "1106", "0806", 0),   # 12 A6 click     d5  (valid)
    (7, 106, 13, 5000, "1106", "0808", 1),   # 13 A6 cart      d7
    (7, 107, 13, 5000, "1107", "0815", 2),   # 14 A7 purchase  d14 (beyond the 5-day horizon)
    (7, 107, 13, 5000, "1107", "0809", 0),   # 15 A7 click     d8  (test)
    (99, 301, 14, 7000, "1301", "0805", 0),  # 16 C: single episode, dropped
    (3, 203, 21, 6000, "1203", "0809", 0),   # 17 B3 click     d8  (test)
    (3, 203, 21, 6000, "1203", "0809", 2),   # 18 B3 purchase  d8  (file order: purchase ...
    (3, 203, 21, 6000, "1203", "0809", 1),   # 19 B3 cart      d8   ... before cart)
    (3, 201, 21, 6000, "1201", "0803", 2),   # 20 B1 purchase  d2
    (3, 201, 21, 6000, "1201", "0802", 0),   # 21 B1 click     d1
    (3, 202, 21, 6000, "1202", "0810", 1),   # 22 B2 cart      d9  (after the valid split end)
    (3, 202, 21, 6000, "1202", "0806", 0),   # 23 B2 click     d5  (valid)
    (3, 202, 21, 6000, "1202", "0807", 3),   # 24 B2 favourite d6
]
D0 = day("0801")  # 212
HAND_TEXT = HEADER + "\n" + "".join(",".join(map(str, row)) + "\n" for row in HAND_ROWS)

# Episodes in array order: by raw user id, then start day, then file position of the first row.
#            B1   B2   B3   A1   A2   A3   A4   A5   A6   A7
EP_ITEMS = [201, 202, 203, 101, 102, 103, 104, 105, 106, 107]
EP_START = [1, 5, 8, 0, 0, 2, 3, 3, 5, 8]  # offsets from D0
# 10 start days sorted: 0 0 1 2 3 3 5 5 8 8 -> test = index ceil(10*0.8)=8 -> day 8; valid = index 6
# (or 7, both day 5) -> day 5. Train labels are censored at day 4, valid labels at day 7.
EP_SPLIT = {"train": [0, 3, 4, 5, 6, 7], "valid": [1, 8], "test": [2, 9]}
# label_action / label_time in (cart, purchase, favourite) order; tokens: 0 pad, 1 exit, 2 cart,
# 3 purchase, 4 favourite; horizon 5 days.
EXPECTED_LABELS = {
    0: ([0, 1, 0], [0, 1, 0], [3, 1, 0, 0], [1, 1, 0, 0]),  # B1: purchase +1
    3: ([1, 1, 1], [3, 3, 2], [4, 2, 3, 1], [2, 3, 3, 3]),  # A1: fav +2, cart +3, purchase +3 (file order)
    4: ([0, 1, 0], [0, 4, 0], [3, 1, 0, 0], [4, 4, 0, 0]),  # A2: purchase +4; cart d6 > train end d4
    5: ([0, 0, 0], [0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]),  # A3: clicks only
    6: ([0, 0, 0], [0, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0]),  # A4: fav d9 censored; exit at split end d4
    7: ([0, 0, 0], [0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]),  # A5
    1: ([0, 0, 1], [0, 0, 1], [4, 1, 0, 0], [1, 2, 0, 0]),  # B2: fav +1; cart d9 > valid end d7
    8: ([1, 0, 0], [2, 0, 0], [2, 1, 0, 0], [2, 2, 0, 0]),  # A6: cart +2 (d7, last valid day)
    2: ([1, 1, 0], [0, 0, 0], [3, 2, 1, 0], [0, 0, 0, 0]),  # B3: purchase then cart (file order)
    9: ([0, 0, 0], [0, 0, 0], [1, 0, 0, 0], [5, 0, 0, 0]),  # A7: purchase d14 beyond horizon d13
}
# History windows (history_length=3): episode indices, oldest..newest, None = padding.
EXPECTED_HISTORY = {
    0: [None, None, None], 1: [None, None, 0], 2: [None, 0, 1],
    3: [None, None, None], 4: [None, None, None],  # A2 starts on A1's day: A1 is NOT its history
    5: [None, 3, 4], 6: [3, 4, 5], 7: [3, 4, 5], 8: [5, 6, 7], 9: [6, 7, 8],
}
# Action slots (click, cart, purchase, favourite) of a history item, seen from a target: an action
# counts only if its first day is strictly before the target's start day.
EXPECTED_SLOTS = {
    (1, 0): [1, 0, 1, 0],              # B1 seen from B2 (d5)
    (2, 0): [1, 0, 1, 0],
    (2, 1): [1, 0, 0, 1],              # B2's cart (d9) is after B3's start (d8): hidden
    (5, 3): [1, 0, 0, 0],              # A1's favourite is on d2 = A3's start day: hidden
    (5, 4): [1, 0, 0, 0],
    (6, 3): [1, 0, 0, 1],              # from d3: A1's cart / purchase (d3) hidden, favourite (d2) shown
    (6, 4): [1, 0, 0, 0], (6, 5): [1, 0, 0, 0],
    (7, 3): [1, 0, 0, 1], (7, 4): [1, 0, 0, 0], (7, 5): [1, 0, 0, 0],
    (8, 5): [1, 0, 0, 0], (8, 6): [1, 0, 0, 0], (8, 7): [1, 0, 0, 0],
    (9, 6): [1, 0, 0, 0],              # A4's favourite (d9) is after A7's start (d8): hidden
    (9, 7): [1, 0, 0, 0], (9, 8): [1, 1, 0, 0],
}
# first day of each action type per episode (offsets; None = never)
EP_FIRST = [[1, None, 2, None], [5, 9, None, 6], [8, 8, 8, None], [0, 3, 3, 2], [0, 6, 4, None],
            [2, None, None, None], [3, None, None, 9], [3, None, None, None], [5, 7, None, None],
            [8, None, 14, None]]


@pytest.fixture
def hand(tmp_path):
    write_raw(tmp_path / "raw", HAND_TEXT)
    adapter = make_adapter(tmp_path)
    return adapter, adapter.prepare()


def test_hand_episodes_split_and_meta(hand):
    adapter, prepared = hand
    a, meta = prepared.arrays, prepared.meta
    assert meta["source"] == "raw"
    stats = meta["stats"]
    assert stats["rows"] == 25
    assert stats["rows_after_dedupe"] == 24  # the duplicate row with an EMPTY brand is dropped
    assert stats["episodes"] == 10 and stats["users"] == 2 and stats["items"] == 10  # user 99 dropped
    assert stats["split_start_days"] == {"valid": D0 + 5, "test": D0 + 8}
    assert meta["splits"] == {"train": 6, "valid": 2, "test": 2}
    for split, rows in EP_SPLIT.items():
        assert a[f"{split}_rows"].tolist() == rows, split
    np.testing.assert_array_equal(a["ep_start"], np.array(EP_START) + D0)
    first = np.array([[NEVER if d is None else D0 + d for d in row] for row in EP_FIRST])
    np.testing.assert_array_equal(a["ep_first_day"], first)
    # vocabularies from the training split, sorted raw ids from 2; unseen (valid/test-only) -> 1
    item_index = {101: 2, 102: 3, 103: 4, 104: 5, 105: 6, 201: 7}
    assert a["ep_item"].tolist() == [item_index.get(i, 1) for i in EP_ITEMS]
    assert a["ep_user"].tolist() == [2, 2, 2, 3, 3, 3, 3, 3, 3, 3]  # raw 3 -> 2, raw 7 -> 3
    assert a["ep_cat"].tolist() == [5, 5, 5, 2, 2, 3, 4, 4, 4, 4]  # 11,12,13,21 -> 2..5
    assert a["ep_seller"].tolist() == [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]
    # brands 1101,1102,1104,1105,1201 -> 2..6; the empty brand (A3) and unseen ones -> 1
    assert a["ep_brand"].tolist() == [6, 1, 1, 2, 3, 1, 4, 5, 1, 1]
    assert a["ep_group"].tolist() == [1, 1, 1, 2, 2, 2, 2, 2, 2, 2]
    assert a["ep_age"].tolist() == [0] * 10 and a["ep_gender"].tolist() == [3] * 10  # no info file
    spec = meta["spec"]
    assert spec["cardinalities"] == {"user": 4, "item": 8, "cat": 6, "seller": 4, "brand": 7,
                                     "age": 9, "gender": 4}
    assert spec["history_length"] == 3 and spec["sequence_length"] == 4
    assert spec["target_actions"] == ["cart", "purchase", "favourite"]
    assert spec["max_time"] == 5.0 and spec["time_unit"] == "days"


def test_hand_labels_with_censoring(hand):
    _, prepared = hand
    a = prepared.arrays
    for split, rows in EP_SPLIT.items():
        for r, ep in enumerate(rows):
            action, delay, seq, seq_time = EXPECTED_LABELS[ep]
            assert a[f"{split}_label_action"][r].tolist() == action, (split, ep)
            assert a[f"{split}_label_time"][r].tolist() == delay, (split, ep)
            assert a[f"{split}_label_seq"][r].tolist() == seq, (split, ep)
            assert a[f"{split}_label_seq_time"][r].tolist() == seq_time, (split, ep)
    assert a["train_label_action"].dtype == np.float32 and a["train_label_seq"].dtype == np.int64


def test_hand_history_windows(hand):
    adapter, prepared = hand
    a = prepared.arrays
    for split, rows in EP_SPLIT.items():
        batch = batch_of(adapter, prepared, split)
        assert batch["hist_item"].shape == (len(rows), 3)
        assert batch["hist_action_mask"].shape == (len(rows), 3, 4)
        for r, ep in enumerate(rows):
            window = EXPECTED_HISTORY[ep]
            assert batch["hist_mask"][r].tolist() == [h is not None for h in window], ep
            for field in ("item", "cat", "seller", "brand"):
                want = [0 if h is None else int(a[f"ep_{field}"][h]) for h in window]
                assert batch[f"hist_{field}"][r].tolist() == want, (ep, field)
            for slot, h in enumerate(window):
                slots = [0, 0, 0, 0] if h is None else EXPECTED_SLOTS[(ep, h)]
                assert batch["hist_action_mask"][r, slot].int().tolist() == slots, (ep, h)
                recency = 0.0 if h is None else float(EP_START[ep] - EP_START[h])
                assert batch["hist_recency"][r, slot].item() == recency, (ep, h)
                times = [0.0 if not on else float(EP_FIRST[h][k] - EP_START[h])
                         for k, on in enumerate(slots)]
                assert batch["hist_action_time"][r, slot].tolist() == times, (ep, h)
            assert batch["item"][r].item() == a["ep_item"][ep]
            assert batch["user"][r].item() == a["ep_user"][ep]
            assert batch["group"][r].item() == a["ep_group"][ep]


def test_hand_no_label_among_features(hand):
    adapter, prepared = hand
    tables = tables_of(prepared)
    for split in SPLITS:
        batch = adapter.assemble(tables, split, torch.arange(len(tables[f"{split}_rows"])))
        assert {k for k in batch if "label" in k} == set(LABEL_KEYS)
        features = {k: v for k, v in batch.items() if k not in LABEL_KEYS}
        assert set(features) == {"user", "age", "gender", "item", "cat", "seller", "brand", "group",
                                 "hist_item", "hist_cat", "hist_seller", "hist_brand", "hist_mask",
                                 "hist_action_mask", "hist_action_time", "hist_recency"}
        # scrambling every label table changes no feature
        scrambled = dict(tables)
        for key in LABEL_KEYS:
            scrambled[f"{split}_{key}"] = torch.full_like(tables[f"{split}_{key}"], 7)
        again = adapter.assemble(scrambled, split, torch.arange(len(tables[f"{split}_rows"])))
        for key, value in features.items():
            assert torch.equal(again[key], value), key
        # a sample's features do not depend on its own actions (its future)
        for r, ep in enumerate(tables[f"{split}_rows"].tolist()):
            future = dict(tables)
            first = tables["ep_first_day"].clone()
            first[ep] = torch.where(first[ep] >= tables["ep_start"][ep], first[ep] + 1, first[ep])
            future["ep_first_day"] = first
            one = adapter.assemble(tables, split, torch.tensor([r]))
            other = adapter.assemble(future, split, torch.tensor([r]))
            for key in features:
                assert torch.equal(one[key], other[key]), (ep, key)


def test_hand_dedupe_off_keeps_rows_same_episodes(tmp_path, hand):
    _, prepared = hand
    other = make_adapter(tmp_path, cache_dir=tmp_path / "cache2", dedupe=False).prepare()
    assert other.meta["stats"]["rows_after_dedupe"] == 25
    assert_same_arrays(prepared.arrays, other.arrays)  # an exact duplicate changes no episode


def test_hand_user_info(tmp_path):
    write_raw(tmp_path / "raw", HAND_TEXT)
    write_raw(tmp_path / "raw", "user_id,age_range,gender\n3,8,1\n7,,\n99,5,0\n", INFO_FILE)
    a = make_adapter(tmp_path).prepare().arrays
    assert a["ep_age"].tolist() == [8, 8, 8] + [0] * 7       # empty age -> 0 (unknown)
    assert a["ep_gender"].tolist() == [2, 2, 2] + [3] * 7    # male 1 -> 2; empty -> unknown 3


def test_split_fractions_are_not_off_by_float_rounding(tmp_path):
    """10 episodes on 10 distinct days, 20% valid / 20% test -> 6 / 2 / 2.

    (1 - 0.2 - 0.2) * 10 == 6.000000000000001 in floating point; a ceil() of that moves the
    validation cut by one episode (train 7, valid 1).
    """
    rows = [f"{1 + (d % 2)},{100 + d},1,1,1,{date(2014, 8, 1 + d):%m%d},0" for d in range(10)]
    write_raw(tmp_path / "raw", HEADER + "\n" + "\n".join(rows) + "\n")
    meta = make_adapter(tmp_path).prepare().meta
    assert meta["stats"]["split_start_days"] == {"valid": D0 + 6, "test": D0 + 8}
    assert meta["splits"] == {"train": 6, "valid": 2, "test": 2}


# ------------------------------------------------------------------------ 2. the real head sample
def _head_dir() -> Path:
    if not (HEAD_DIR / LOG_FILE).is_file():
        pytest.skip(f"real head sample not found at {HEAD_DIR}")
    return HEAD_DIR


def to_official_layout(src: Path, dst: Path) -> None:
    """Drop the index column, write brand_id as an int (empty stays empty), zero-pad MMDD."""
    lines = src.read_text().splitlines()
    assert lines[0] == "," + HEADER
    out = [HEADER]
    for line in lines[1:]:
        _, user, item, cat, seller, brand, stamp, action = line.split(",")
        brand = "" if brand == "" else str(int(float(brand)))
        out.append(",".join([user, item, cat, seller, brand, stamp.zfill(4), action]))
    write_raw(dst, "\n".join(out) + "\n")


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("head")
    adapter = make_adapter(tmp, raw_dir=_head_dir(), history_length=5, label_horizon_days=14)
    return adapter, adapter.prepare()


def test_head_reads_with_plausible_counts(head):
    import polars as pl

    _, prepared = head
    stats, splits = prepared.meta["stats"], prepared.meta["splits"]
    log = pl.read_csv(HEAD_DIR / LOG_FILE, infer_schema=False)
    assert log["user_id"].n_unique() == 62
    assert stats["rows"] == 10_000
    assert stats["rows_after_dedupe"] == 10_000 - 2_324  # documented number of exact duplicates
    episodes = log.select("user_id", "item_id").unique()
    keep = episodes.group_by("user_id").len().filter(pl.col("len") >= 2)["user_id"]
    expected = episodes.filter(pl.col("user_id").is_in(keep.implode()))
    assert stats["episodes"] == expected.height
    assert stats["users"] == keep.len() and 2 <= stats["users"] <= 62
    assert stats["items"] == expected["item_id"].n_unique()
    assert all(splits[s] > 0 for s in SPLITS) and sum(splits.values()) == stats["episodes"]
    cut = stats["split_start_days"]
    assert day("0511") <= cut["valid"] < cut["test"] <= day("1112")
    # split by whole days at the requested fractions (exact arithmetic)
    start = np.sort(prepared.arrays["ep_start"])
    n = len(start)
    k_test = ceil(n * (1 - Fraction(1, 5)))
    k_valid = ceil(n * (1 - Fraction(2, 5)))
    assert cut["test"] == start[k_test] and cut["valid"] == start[k_valid]
    assert stats["positive_rate"]["cart"] == 0.0  # no add-to-cart in the head
    assert 0 < stats["positive_rate"]["purchase"] < 1


def test_head_official_layout_gives_identical_arrays(head, tmp_path):
    _, prepared = head
    to_official_layout(HEAD_DIR / LOG_FILE, tmp_path / "official")
    other_adapter = make_adapter(tmp_path, raw_dir=tmp_path / "official", history_length=5,
                                 label_horizon_days=14)
    other = other_adapter.prepare()
    assert other.meta["fingerprint"] != prepared.meta["fingerprint"]  # different bytes
    assert_same_arrays(prepared.arrays, other.arrays)
    for key in ("spec", "splits", "stats"):
        assert other.meta[key] == prepared.meta[key], key


# ------------------------------------------------------------------------ 3. leakage
def check_no_leakage(adapter: TmallAdapter, prepared: Prepared) -> None:
    a = prepared.arrays
    start, group, first = a["ep_start"], a["ep_group"], a["ep_first_day"]
    n = len(start)
    # splits: a partition of the episodes, chronological by whole days
    eps = {s: a[f"{s}_rows"] for s in SPLITS}
    assert sorted(np.concatenate(list(eps.values())).tolist()) == list(range(n))
    assert not set(eps["valid"].tolist()) & set(eps["test"].tolist())
    assert start[eps["train"]].max() < start[eps["valid"]].min()
    assert start[eps["valid"]].max() < start[eps["test"]].min()
    cut = prepared.meta["stats"]["split_start_days"]
    assert cut == {"valid": int(start[eps["valid"]].min()), "test": int(start[eps["test"]].min())}
    # within a user, episodes are contiguous and in start order
    by_group = {}
    for g in np.unique(group):
        idx = np.flatnonzero(group == g)
        assert (np.diff(idx) == 1).all() and (np.diff(start[idx]) >= 0).all()
        by_group[int(g)] = idx
    length = adapter.history_length
    horizon = adapter.label_horizon_days
    ends = {"train": cut["valid"], "valid": cut["test"], "test": NEVER}
    for split in SPLITS:
        batch = batch_of(adapter, prepared, split)
        mask, act = batch["hist_mask"].numpy(), batch["hist_action_mask"].numpy()
        recency, act_time = batch["hist_recency"].numpy(), batch["hist_action_time"].numpy()
        # vectorised: every history slot started strictly earlier, every shown action before the target
        assert (recency[mask] > 0).all()
        assert (act_time[act] < np.broadcast_to(recency[:, :, None], act.shape)[act]).all()
        assert not act[~mask].any()
        # exact: rebuild every window from the episode table
        for r, e in enumerate(eps[split]):
            idx = by_group[int(group[e])]
            earlier = idx[start[idx] < start[e]][-length:]
            pad = length - len(earlier)
            assert mask[r].tolist() == [False] * pad + [True] * len(earlier)
            assert batch["hist_item"][r, pad:].numpy().tolist() == a["ep_item"][earlier].tolist()
            assert (batch["hist_item"][r, :pad] == 0).all()
            np.testing.assert_array_equal(recency[r, pad:], start[e] - start[earlier])
            np.testing.assert_array_equal(act[r, pad:], first[earlier] < start[e])
        # labels: only actions within the horizon and before the split end
        start_s = start[eps[split]].astype(np.int64)
        limit = np.minimum(start_s + horizon, ends[split] - 1)
        target_first = first[eps[split], 1:].astype(np.int64)
        happened = target_first <= limit[:, None]
        np.testing.assert_array_equal(a[f"{split}_label_action"], happened.astype(np.float32))
        np.testing.assert_array_equal(a[f"{split}_label_time"],
                                      np.where(happened, target_first - start_s[:, None], 0))
        seq, seq_time = a[f"{split}_label_seq"], a[f"{split}_label_seq_time"]
        n_happened = happened.sum(1)
        for r in range(len(seq)):
            k = n_happened[r]
            assert sorted(seq[r, :k].tolist()) == [j + 2 for j in np.flatnonzero(happened[r])]
            assert seq[r, k] == 1 and (seq[r, k + 1:] == 0).all()
            assert (np.diff(seq_time[r, :k + 1]) >= 0).all()
            assert 0 <= seq_time[r, k] <= limit[r] - start_s[r]


def test_no_leakage_hand(hand):
    check_no_leakage(*hand)


def test_no_leakage_head(head):
    check_no_leakage(*head)


def test_no_leakage_synthetic(tmp_path):
    adapter = make_adapter(tmp_path, source="synthetic", history_length=5, label_horizon_days=14)
    prepared = adapter.prepare()
    assert prepared.meta["source"] == "synthetic"
    check_no_leakage(adapter, prepared)


# ------------------------------------------------------------------------ 4. cache
def test_cache_reused_without_building(tmp_path, monkeypatch):
    write_raw(tmp_path / "raw", HAND_TEXT)
    first = make_adapter(tmp_path).prepare()
    cache = tmp_path / "cache"
    folders = [p for p in cache.iterdir()]
    assert [p.name for p in folders] == [first.meta["fingerprint"]]  # no temp folder left behind
    assert sorted(p.name for p in folders[0].iterdir()) == sorted(
        ["meta.json", *(f"array.{name}.npy" for name in first.arrays)])

    def boom(self, raw_dir):
        raise AssertionError("build() called although a cache exists")

    monkeypatch.setattr(TmallAdapter, "build", boom)
    second = make_adapter(tmp_path).prepare()
    assert_same_arrays(first.arrays, second.arrays)
    assert second.meta["fingerprint"] == first.meta["fingerprint"]
    assert second.meta["source"] == "raw"
    assert second.meta["stats"] == first.meta["stats"] and second.meta["spec"] == first.meta["spec"]
    # use_cache=False always rebuilds
    with pytest.raises(AssertionError, match="build"):
        make_adapter(tmp_path, use_cache=False).prepare()


def test_fingerprint_follows_file_bytes(tmp_path):
    path = write_raw(tmp_path / "raw", HAND_TEXT)
    adapter = make_adapter(tmp_path)
    base = adapter.fingerprint(tmp_path / "raw")
    assert adapter.fingerprint(tmp_path / "raw") == base  # stable
    adapter.prepare()
    path.write_text(HAND_TEXT + "7,101,11,5000,1101,0804,0\n")
    changed = adapter.fingerprint(tmp_path / "raw")
    assert changed != base
    again = make_adapter(tmp_path).prepare()
    assert again.meta["fingerprint"] == changed and again.meta["stats"]["rows"] == 26
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted([base, changed])
    # the optional user-info file is part of the fingerprint too
    write_raw(tmp_path / "raw", "user_id,age_range,gender\n3,2,0\n", INFO_FILE)
    assert adapter.fingerprint(tmp_path / "raw") not in (base, changed)


@pytest.mark.parametrize("key,value", [("history_length", 4), ("min_user_episodes", 3), ("min_count", 2),
                                       ("dedupe", False), ("valid_fraction", 0.25),
                                       ("test_fraction", 0.15), ("label_horizon_days", 7)])
def test_fingerprint_follows_preprocessing_keys(tmp_path, key, value):
    write_raw(tmp_path / "raw", HAND_TEXT)
    base = make_adapter(tmp_path).fingerprint(tmp_path / "raw")
    assert make_adapter(tmp_path, **{key: value}).fingerprint(tmp_path / "raw") != base
    # ... but not on where things live
    moved = make_adapter(tmp_path, cache_dir=tmp_path / "elsewhere", replica_dir=tmp_path / "r2")
    assert moved.fingerprint(tmp_path / "raw") == base


def test_auto_with_empty_raw_dir_uses_synthetic_with_banner(tmp_path, capsys):
    (tmp_path / "raw").mkdir()
    prepared = make_adapter(tmp_path, source="auto").prepare()
    err = capsys.readouterr().err
    assert prepared.meta["source"] == "synthetic"
    assert "SYNTHETIC" in err and "no real tmall files" in err
    assert Path(prepared.meta["files_dir"]).parent == tmp_path / "syn"
    assert (Path(prepared.meta["files_dir"]) / LOG_FILE).is_file()
    assert all(len(prepared.arrays[f"{s}_rows"]) > 0 for s in SPLITS)


def test_auto_with_real_file_uses_it_quietly(tmp_path, capsys):
    write_raw(tmp_path / "raw", HAND_TEXT)
    prepared = make_adapter(tmp_path, source="auto").prepare()
    assert prepared.meta["source"] == "raw"
    assert "SYNTHETIC" not in capsys.readouterr().err
    assert not (tmp_path / "syn").exists()


def test_synthetic_is_deterministic(tmp_path):
    one = make_adapter(tmp_path, source="synthetic", cache_dir=tmp_path / "c1",
                       replica_dir=tmp_path / "s1").prepare()
    two = make_adapter(tmp_path, source="synthetic", cache_dir=tmp_path / "c2",
                       replica_dir=tmp_path / "s2").prepare()
    assert one.meta["source"] == two.meta["source"] == "synthetic"
    assert one.meta["fingerprint"] == two.meta["fingerprint"]
    assert_same_arrays(one.arrays, two.arrays)
    other_seed = make_adapter(tmp_path, source="synthetic", cache_dir=tmp_path / "c3",
                              replica_dir=tmp_path / "s3", replica={**REPLICA, "seed": 1}).prepare()
    assert other_seed.meta["fingerprint"] != one.meta["fingerprint"]


# ------------------------------------------------------------------------ 5. bad input
BODY = HAND_TEXT.split("\n", 1)[1]
BAD_LOGS = {
    # name: (file content, column named in the message or None, fragment of the message)
    "empty_file": (b"", None, "empty"),
    "header_only": (HEADER + "\n", None, "no rows"),
    "missing_column": ("user_id,item_id,cat_id,seller_id,brand_id,time_stamp\n1,2,3,4,5,0801\n",
                       "action_type", "missing"),
    "non_numeric_user": (HEADER + "\nabc,1,1,1,1,0801,0\n" + BODY, "user_id", "line 2"),
    "empty_user": (HEADER + "\n,1,1,1,1,0801,0\n" + BODY, "user_id", "line 2"),
    "action_4": (HAND_TEXT + "7,101,11,5000,1101,0804,4\n", "action_type", "line 27"),
    "stamp_1345": (HAND_TEXT + "7,101,11,5000,1101,1345,0\n", "time_stamp", "1345"),
    "stamp_08x9": (HAND_TEXT + "7,101,11,5000,1101,08x9,0\n", "time_stamp", "08x9"),
    "stamp_0229": (HAND_TEXT + "7,101,11,5000,1101,0229,0\n", "time_stamp", "0229"),
    "fractional_item": (HAND_TEXT + "7,101.5,11,5000,1101,0804,0\n", "item_id", "line 27 has '101.5'"),
    "user_beyond_int64": (HAND_TEXT + "99999999999999999999,101,11,5000,1101,0804,0\n", "user_id", "line 27"),
    "fractional_brand": (HAND_TEXT + "7,101,11,5000,1101.5,0804,0\n", "brand_id", "1101.5"),
    "nan_brand": (HAND_TEXT + "7,101,11,5000,nan,0804,0\n", "brand_id", "line 27"),
    "inf_brand": (HAND_TEXT + "7,101,11,5000,inf,0804,0\n", "brand_id", "line 27"),
    "huge_brand": (HAND_TEXT + "7,101,11,5000,1e300,0804,0\n", "brand_id", "line 27"),
    "extra_field_mid_file": ("\n".join([HEADER, *BODY.splitlines()[:2], BODY.splitlines()[2] + ",9",
                                         *BODY.splitlines()[3:]]) + "\n", None, "line 4 has 8 fields"),
    # MMDD has no year and the file is not in time order: dates running over New Year are refused
    "new_year_wrap": (HAND_TEXT + "7,101,11,5000,1101,1231,0\n7,101,11,5000,1101,0101,0\n", "time_stamp",
                      "line 28 has time_stamp 0101"),
    "not_utf8": (b"PK\x03\x04\xff\xfe\x00garbage\n", None, "UTF-8"),
    "too_few_days": (HEADER + "\n1,1,1,1,1,0801,0\n1,2,1,1,1,0801,0\n", None, "days"),
}


@pytest.mark.parametrize("name", sorted(BAD_LOGS))
def test_bad_log_is_one_clean_line_and_caches_nothing(tmp_path, name):
    content, column, fragment = BAD_LOGS[name]
    path = write_raw(tmp_path / "raw", content)
    with pytest.raises(UserInputError) as info:
        make_adapter(tmp_path).prepare()
    message = assert_clean_error(info.value, names=str(path), column=column, cache_dir=tmp_path / "cache")
    assert fragment in message


def test_missing_file_with_source_raw(tmp_path):
    (tmp_path / "raw").mkdir()
    with pytest.raises(UserInputError) as info:
        make_adapter(tmp_path, source="raw").prepare()
    assert_clean_error(info.value, names=str(tmp_path / "raw" / LOG_FILE), cache_dir=tmp_path / "cache")
    assert not (tmp_path / "syn").exists()  # no silent fallback to the replica


def test_invalid_source_name(tmp_path):
    write_raw(tmp_path / "raw", HAND_TEXT)
    with pytest.raises(UserInputError) as info:
        make_adapter(tmp_path, source="real")
    message = assert_clean_error(info.value, cache_dir=tmp_path / "cache")
    assert "'real'" in message and "auto" in message


def test_bad_user_info_names_that_file(tmp_path):
    write_raw(tmp_path / "raw", HAND_TEXT)
    info_path = write_raw(tmp_path / "raw", "user_id,age_range,gender\n3,2,female\n", INFO_FILE)
    with pytest.raises(UserInputError) as info:
        make_adapter(tmp_path).prepare()
    assert_clean_error(info.value, names=str(info_path), column="gender", cache_dir=tmp_path / "cache")


def test_row_with_extra_field_is_a_user_error(tmp_path):
    """A ragged row (one field too many) is an input problem: it must not escape as a polars error."""
    path = write_raw(tmp_path / "raw", HAND_TEXT + "7,101,11,5000,1101,0804,0,9\n")
    with pytest.raises(UserInputError) as info:
        make_adapter(tmp_path).prepare()
    message = assert_clean_error(info.value, names=str(path), cache_dir=tmp_path / "cache")
    assert "line 27 has 8 fields but the header has 7" in message


def test_padded_ids_are_read_like_clean_ones(tmp_path, hand):
    """` 7 ` (spaces around a number, as header names may have) is read as 7: same arrays as the clean log."""
    _, clean = hand
    padded = HAND_TEXT.replace("\n7,101,", "\n 7 , 101 ,").replace(",1101,0804,1\n", ", 1101.0 ,0804, 1 \n")
    assert padded.count(" 7 ") == 4
    write_raw(tmp_path / "raw", padded)
    assert_same_arrays(clean.arrays, make_adapter(tmp_path).prepare().arrays)


def test_dates_within_half_a_year_of_each_other_stay_in_2014(tmp_path):
    """The New Year rule's other side: a 153-day hole (0301 .. 0801) is read in 2014, 0301 first."""
    write_raw(tmp_path / "raw", HAND_TEXT + "7,108,11,5000,1101,0301,0\n")
    prepared = make_adapter(tmp_path).prepare()
    assert prepared.meta["stats"]["episodes"] == 11 and prepared.meta["splits"]["train"] == 7


@pytest.mark.parametrize("column,value", [("age_range", "nan"), ("age_range", "inf"), ("age_range", "2.5"),
                                          ("age_range", "9"), ("age_range", "-1"), ("gender", "3")])
def test_user_info_code_outside_its_range(tmp_path, column, value):
    write_raw(tmp_path / "raw", HAND_TEXT)
    row = {"age_range": f"3,{value},1", "gender": f"3,8,{value}"}[column]
    info_path = write_raw(tmp_path / "raw", f"user_id,age_range,gender\n7,,\n{row}\n", INFO_FILE)
    with pytest.raises(UserInputError) as info:
        make_adapter(tmp_path).prepare()
    message = assert_clean_error(info.value, names=str(info_path), column=column, cache_dir=tmp_path / "cache")
    assert "line 3" in message and value in message


def test_episode_blocks_keep_ids_beyond_float_precision(tmp_path, monkeypatch, hand):
    """Users are aggregated in blocks of user-id ranges; ids above 2**53 must not fall outside the last
    block (float bounds rounded the end 2**53 + 2**40 + 5 down to the largest user, leaving it out)."""
    import recbench.data.tmall as tmall_module

    _, clean = hand
    # items below 256 (8 bits) leave 54 bits for the users in the packed (user, item) key that blocks need
    big = (HAND_TEXT.replace("\n99,301,", "\n99,250,").replace("\n7,", f"\n{2**53 + 1},")
           .replace("\n3,", f"\n{2**53 + 2**40 + 4},"))
    assert "\n99,250," in big
    write_raw(tmp_path / "raw", big)
    one_block = make_adapter(tmp_path, cache_dir=tmp_path / "one").prepare()
    monkeypatch.setattr(tmall_module, "EPISODE_BLOCK_ROWS", 5)
    blocks = make_adapter(tmp_path, cache_dir=tmp_path / "blocks").prepare()
    assert one_block.meta["stats"]["users"] == blocks.meta["stats"]["users"] == clean.meta["stats"]["users"]
    assert_same_arrays(one_block.arrays, blocks.arrays)


def test_header_with_spaces_is_read_or_a_user_error(tmp_path, hand):
    """`user_id, item_id, ...` passes the header check (names are stripped) -> it must then either be
    read like the clean file or be rejected with a UserInputError, never a raw polars error."""
    _, clean = hand
    path = write_raw(tmp_path / "spaced", HAND_TEXT.replace(",", ", ", 6))
    adapter = make_adapter(tmp_path, raw_dir=tmp_path / "spaced", cache_dir=tmp_path / "cache_sp")
    try:
        prepared = adapter.prepare()
    except UserInputError as error:
        assert_clean_error(error, names=str(path), cache_dir=tmp_path / "cache_sp")
    else:
        assert_same_arrays(clean.arrays, prepared.arrays)


@pytest.mark.parametrize("override,group", [("model=nosuchmodel", "model"), ("data=nosuchdata", "data")])
def test_cli_unknown_choice_is_one_line_exit_2(override, group):
    result = subprocess.run([sys.executable, "-m", "recbench", override], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("recbench: error:")
    assert override.split("=")[1] in lines[0] and "Fix:" in lines[0] and group in lines[0]
