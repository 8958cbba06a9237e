"""Tests of the Tmall IJCAI-15 synthetic replica: file layout, determinism, realism, planted signal."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recbench.data.tmall_replica import (
    LOG_FILE,
    USER_INFO_FILE,
    TmallReplicaConfig,
    simulate_tmall_replica,
    write_tmall_replica,
)
from recbench.metrics import auc  # exact, tested against sklearn in test_metrics.py

SMALL = TmallReplicaConfig(n_users=300, n_items=3000, episodes_per_user=20.0, seed=0)
DEFAULT = TmallReplicaConfig()
LOG_HEADER = "user_id,item_id,cat_id,seller_id,brand_id,time_stamp,action_type"


def read_log(path: Path) -> pl.DataFrame:
    """Read the log like a strict reader would, adding the day index (0 = 2014-05-11)."""
    log = pl.read_csv(path, schema_overrides={"time_stamp": pl.String})
    date = pl.concat_str(pl.lit("2014"), pl.col("time_stamp")).str.to_date("%Y%m%d", strict=True)
    return log.with_columns((date - pl.date(2014, 5, 11)).dt.total_days().alias("day"))


def episodes_from_log(log: pl.DataFrame, groups: dict[int, int]) -> pl.DataFrame:
    """One row per (user, item): start day and first day of cart/purchase/fav relative to it."""
    ep = log.group_by("user_id", "item_id").agg(
        pl.col("cat_id").first(),
        pl.col("day").min().alias("start"),
        *[pl.col("day").filter(pl.col("action_type") == a).min().alias(f"d{a}") for a in (1, 2, 3)],
    )
    return ep.with_columns(
        *[(pl.col(f"d{a}") - pl.col("start")).alias(f"d{a}") for a in (1, 2, 3)],
        pl.col("cat_id").replace_strict(groups).alias("group"),
        pl.col("d2").is_not_null().alias("buy"),
    )


def with_history(ep: pl.DataFrame) -> pl.DataFrame:
    """Add counts over the user's episodes that started on strictly earlier days.

    h_*: same category group (h_n episodes, h_b purchases, h_dsum sum of purchase delays);
    o_*: other groups."""
    g = (ep.group_by("user_id", "group", "start")
         .agg(pl.len().alias("n"), pl.col("buy").sum().alias("b"), pl.col("d2").sum().alias("dsum"))
         .sort("user_id", "group", "start")
         .with_columns(*[(pl.col(c).cum_sum().over("user_id", "group") - pl.col(c)).alias("h_" + c)
                         for c in ("n", "b", "dsum")]))
    u = (ep.group_by("user_id", "start").agg(pl.len().alias("n"), pl.col("buy").sum().alias("b"))
         .sort("user_id", "start")
         .with_columns(*[(pl.col(c).cum_sum().over("user_id") - pl.col(c)).alias("u_" + c)
                         for c in ("n", "b")]))
    out = (ep.join(g.select("user_id", "group", "start", "h_n", "h_b", "h_dsum"),
                   on=["user_id", "group", "start"])
           .join(u.select("user_id", "start", "u_n", "u_b"), on=["user_id", "start"]))
    return out.with_columns((pl.col("u_n") - pl.col("h_n")).alias("o_n"),
                            (pl.col("u_b") - pl.col("h_b")).alias("o_b"))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("small") / "replica"
    paths = write_tmall_replica(out, SMALL)
    return paths, simulate_tmall_replica(SMALL)


@pytest.fixture(scope="module")
def default(tmp_path_factory):
    out = tmp_path_factory.mktemp("default") / "replica"
    start = time.perf_counter()
    paths = write_tmall_replica(out, DEFAULT)
    seconds = time.perf_counter() - start
    replica = simulate_tmall_replica(DEFAULT)
    log = read_log(paths[0])
    return paths, replica, log, episodes_from_log(log, replica.category_group), seconds


# ----------------------------------------------------------------------------------- files & bytes
def test_deterministic_bytes_and_seed_changes_output(tmp_path, small):
    paths, _ = small
    again = write_tmall_replica(tmp_path / "again", SMALL)
    assert [p.name for p in again] == [LOG_FILE, USER_INFO_FILE]
    for a, b in zip(paths, again):
        assert a.read_bytes() == b.read_bytes()
    other = write_tmall_replica(tmp_path / "other", TmallReplicaConfig(**{**SMALL.to_dict(), "seed": 1}))
    assert other[0].read_bytes() != paths[0].read_bytes()
    assert other[1].read_bytes() != paths[1].read_bytes()


def test_atomic_write_replaces_existing_folder_and_leaves_no_temp(tmp_path):
    out = tmp_path / "replica"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    (out / LOG_FILE).write_text("partial")
    paths = write_tmall_replica(out, SMALL)
    assert sorted(p.name for p in out.iterdir()) == sorted([LOG_FILE, USER_INFO_FILE])
    assert paths[0].read_text().startswith(LOG_HEADER + "\n")
    assert [p.name for p in tmp_path.iterdir()] == ["replica"]  # no temp or old folders left
    no_info = write_tmall_replica(tmp_path / "noinfo", TmallReplicaConfig(
        **{**SMALL.to_dict(), "write_user_info": False}))
    assert [p.name for p in no_info] == [LOG_FILE]


def test_default_size_is_fast(default):
    *_, seconds = default
    assert seconds < 5.0


def test_header_column_types_and_values(small):
    paths, _ = small
    assert paths[0].read_text().split("\n", 1)[0] == LOG_HEADER
    raw = pl.read_csv(paths[0])  # plain inference, like a pandas-style reader
    assert raw.columns == LOG_HEADER.split(",")
    assert all(dtype == pl.Int64 for dtype in raw.dtypes)
    log = read_log(paths[0])
    assert log["time_stamp"].str.contains(r"^(0[5-9]|1[01])\d{2}$").all()
    assert log["day"].null_count() == 0
    assert log["day"].min() >= 0 and log["day"].max() <= 185  # 0511 .. 1112
    assert (log["time_stamp"] == "1111").any()
    assert set(log["action_type"].unique().to_list()) == {0, 1, 2, 3}
    for col in ("user_id", "item_id", "cat_id", "seller_id"):
        assert log[col].null_count() == 0 and log[col].min() >= 1
    assert log["user_id"].max() > 10_000 and log["item_id"].max() > 100_000  # realistic magnitudes
    assert log["user_id"].max() <= 424_170 and log["item_id"].max() <= 1_113_102

    info = pl.read_csv(paths[1])
    assert info.columns == ["user_id", "age_range", "gender"]
    assert all(dtype == pl.Int64 for dtype in info.dtypes)
    assert info["user_id"].is_unique().all() and info.height == SMALL.n_users
    assert set(info["user_id"].to_list()) == set(log["user_id"].unique().to_list())
    assert info["age_range"].drop_nulls().is_between(0, 8).all()
    assert set(info["gender"].drop_nulls().unique().to_list()) <= {0, 1, 2}


def test_item_attributes_fixed_and_brand_sometimes_missing(default):
    _, _, log, _, _ = default
    per_item = log.group_by("item_id").agg(
        pl.col("cat_id").n_unique(), pl.col("seller_id").n_unique(), pl.col("brand_id").n_unique())
    assert (per_item["cat_id"] == 1).all()
    assert (per_item["seller_id"] == 1).all()
    assert (per_item["brand_id"] == 1).all()  # null counts as one value
    missing = log.group_by("item_id").agg(pl.col("brand_id").is_null().all())["brand_id"].mean()
    assert 0.0005 < missing < 0.01
    # brands belong to sellers: a brand is sold by one seller
    assert (log.drop_nulls("brand_id").group_by("brand_id").agg(pl.col("seller_id").n_unique())
            ["seller_id"] == 1).all()


def test_row_order_like_the_real_file(default):
    _, _, log, _, _ = default
    users = log["user_id"].to_numpy()
    n_blocks = 1 + int((users[1:] != users[:-1]).sum())
    assert n_blocks == log["user_id"].n_unique()  # each user's rows form one contiguous block
    assert not (np.diff(users) > 0).all()  # blocks are not sorted by id
    day = log["day"].to_numpy()
    same_user = users[1:] == users[:-1]
    backwards = (np.diff(day) < 0) & same_user
    assert backwards.sum() > 0.05 * len(day)  # not chronological inside users
    duplicated_share = (log.height - log.unique().height) / log.height
    assert 0.12 < duplicated_share < 0.32  # real: ~20% exact duplicates


# --------------------------------------------------------------------------------- episode realism
@pytest.mark.parametrize("which", ["default", "small"])
def test_episode_action_rates_in_documented_bands(which, default, small):
    if which == "default":
        ep = default[3]
    else:
        paths, replica = small
        ep = episodes_from_log(read_log(paths[0]), replica.category_group)
    rates = ep.select(pl.col("d1", "d2", "d3").is_not_null().mean()).row(0)
    cart, purchase, fav = rates
    assert 0.03 <= cart <= 0.05
    assert 0.10 <= purchase <= 0.15
    assert 0.06 <= fav <= 0.10


def test_clicks_per_episode_and_episode_counts(default):
    _, _, log, ep, _ = default
    clicks = (log.filter(pl.col("action_type") == 0).group_by("user_id", "item_id").len()["len"])
    assert clicks.min() >= 1 and clicks.max() <= 4
    no_click_share = 1 - clicks.len() / ep.height
    assert 0.005 < no_click_share < 0.10  # real head: ~6% of episodes have no click
    per_user = ep.group_by("user_id").len()["len"].to_numpy()
    assert 25 <= per_user.mean() <= 35
    assert per_user.max() > 8 * np.median(per_user)  # heavy tail
    item_counts = np.sort(ep.group_by("item_id").len()["len"].to_numpy())[::-1]
    assert item_counts[: len(item_counts) // 100].sum() > 0.08 * item_counts.sum()  # Zipf head


def test_timing_and_order(default):
    _, _, _, ep, _ = default
    for col in ("d1", "d2", "d3"):
        d = ep[col].drop_nulls()
        assert d.min() >= 0
    last = ep.select(pl.max_horizontal(pl.col("start") + pl.col(c).fill_null(0) for c in ("d1", "d2", "d3")))
    assert last.to_series().max() <= 185
    both = ep.filter(pl.col("d1").is_not_null() & pl.col("d2").is_not_null())
    assert both.height > 500 and (both["d2"] >= both["d1"]).all()  # purchase never before cart
    d2 = ep["d2"].drop_nulls()
    assert 0.5 < (d2 == 0).mean() < 0.9  # mostly same day ...
    assert d2.max() >= 10 and 0.5 < d2.mean() < 3.0  # ... with a heavy tail
    starts = ep["start"]
    assert 0.10 < (starts == 184).mean() < 0.20  # Double-11 spike
    june = ((starts >= 21) & (starts < 51)).sum()  # 0601..0630
    october = ((starts >= 143) & (starts < 174)).sum()  # 1001..1031
    assert october > 1.2 * june  # growth towards November


def test_file_round_trip_matches_latents(default):
    _, replica, _, ep, _ = default
    truth = replica.episodes
    joined = ep.join(truth, on=["user_id", "item_id"], how="inner")
    assert joined.height == ep.height == truth.height
    assert (joined["start"] == joined["start_day"]).all()
    assert (joined["d2"].is_not_null() == joined["has_purchase"]).all()
    bought = joined.filter(pl.col("has_purchase"))
    assert (bought["d2"] == bought["delay_purchase"]).all()


# ------------------------------------------------------------------------------------ planted signal
def test_same_group_history_predicts_purchase(default):
    _, _, _, ep, _ = default
    x = with_history(ep)
    later = x.filter(pl.col("h_n") > 0)
    with_buys = later.filter(pl.col("h_b") > 0)["buy"].mean()
    without = later.filter(pl.col("h_b") == 0)["buy"].mean()
    assert with_buys > 2.0 * without and with_buys - without > 0.07
    # same-group history beats the user's history on other groups (i.e. more than "user id" alone)
    both = later.filter(pl.col("o_n") > 0)
    auc_same = auc((both["h_b"] / both["h_n"]).to_numpy(), both["buy"].to_numpy())
    auc_other = auc((both["o_b"] / both["o_n"]).to_numpy(), both["buy"].to_numpy())
    assert auc_same > 0.62
    assert auc_same > auc_other + 0.06


def test_purchase_delay_correlates_with_earlier_delays(default):
    _, _, _, ep, _ = default
    x = with_history(ep).filter(pl.col("buy") & (pl.col("h_b") > 0))
    history_delay = (x["h_dsum"] / x["h_b"]).to_numpy()
    delay = x["d2"].to_numpy().astype(np.float64)
    assert len(delay) > 1000
    pearson = np.corrcoef(history_delay, delay)[0, 1]
    spearman = np.corrcoef(pl.Series(history_delay).rank().to_numpy(),
                           pl.Series(delay).rank().to_numpy())[0, 1]
    assert pearson > 0.3 and spearman > 0.3


def test_style_sets_action_order(default):
    _, replica, _, _, _ = default
    ep = replica.episodes
    deliberate = ep.filter((pl.col("style") == 2) & pl.col("has_fav") & pl.col("has_purchase"))
    impulsive = ep.filter((pl.col("style") == 1) & pl.col("has_fav") & pl.col("has_purchase"))
    # deliberate: favourite first; impulsive: purchase first
    assert (deliberate["delay_fav"] <= deliberate["delay_purchase"]).all()
    assert (impulsive["delay_purchase"] <= impulsive["delay_fav"]).all()
    assert deliberate["delay_purchase"].mean() > 3 * impulsive["delay_purchase"].mean()


def test_bad_config_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="n_brands"):
        write_tmall_replica(tmp_path / "bad", TmallReplicaConfig(n_sellers=100, n_brands=50))
    assert not (tmp_path / "bad").exists()


def test_config_from_yaml_lists_is_equivalent():
    from_list = TmallReplicaConfig(**{**SMALL.to_dict(), "style_mix": [0.45, 0.3, 0.25]})
    assert from_list == SMALL and hash(from_list) == hash(SMALL)
    assert isinstance(from_list.style_mix, tuple)
