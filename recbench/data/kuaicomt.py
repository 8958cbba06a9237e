"""KuaiComt (Kuaishou micro-videos with comments) -> comment-section impressions with staytime, long-view,
per-shown-comment engagement and comment-score labels, and the user's comment history.

Format and preprocessing rules: datasets/kuaicomt/raw/README.md

Code map (KuaiComtAdapter.build, in order):
  read + validate  read_all (SPECS: the five files' columns and types; ids, times, staytime, duplicates)
  samples + split  _impressions (duration filter, only_opened, local-date split), _catalogue (videos, comments)
  features         _user_table (register buckets), _index (training vocabularies: vocabulary; duration bucket)
  shown comments   _shown (most-liked comments in pseudo-random slots)
  labels           _engaged (likes / replies, seconds), _clicked (user-specific: latest impression, window,
                   split end), _popularity (per-split user-agnostic scores), the long-view threshold,
                   duration_quantiles (D2Q); _id_vocabularies (training-only video / comment ids)
  history          _comment_history
  arrays           _arrays: sample_<user / video field>, sample_hour, sample_group, sample_comment_history, shown,
                   <split>_comment_score, video_id_of / comment_id_of, <split>_rows,
                   <split>_label_staytime / _label_long_view / _label_clicked;
                   _spec -> meta["spec"]; frames video_text / comment_text
  text stage       attach (video_text_emb, comment_text_emb), text_corpus, text_tasks (LCU stage 1)
  assemble         assemble: a batch (fields, shown comments, history, text embeddings, labels)
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from recbench.data import schema
from recbench.data.base import DatasetAdapter, Prepared, take
from recbench.data.readers import (
    first_bad,
    read_table,
    require_epoch,
    require_non_negative,
    require_non_negative_numbers,
    require_non_null,
    warn_duplicates,
)
from recbench.errors import UserInputError, bad_input

IMPRESSIONS, INTERACTIONS = "user_video_inter.csv", "user_comment_inter.csv"
USERS, VIDEOS, COMMENTS = "user_features.csv", "video_features.csv", "comment_features.csv"
ALIASES = {"photo_id": "video_id", "photo_type": "video_type"}
USER_FIELDS = ("user", "active_degree", "follow_range", "fans_range", "friend_range", "register_bucket")
VIDEO_FIELDS = ("video", "author", "video_type", "category", "duration_bucket")
REGISTER_EDGES = (7, 14, 30, 60, 90, 180, 365, 730)  # days; the authors bucket register_days likewise
DURATION_EDGES = (10, 20, 30, 60, 120, 240)          # seconds
TIMEZONE = "Asia/Shanghai"


class KuaiComtAdapter(DatasetAdapter):
    produces = (schema.STAYTIME, schema.COMMENTS)  # the batch contracts it follows (recbench/data/schema.py)
    smoke_replica = {"n_users": 300, "n_videos": 200}  # the smallest replica a one-step smoke run uses

    name = "kuaicomt"
    # 2: shown comments in pseudo-random slot order; 3: comment history; 4: row arrays `<split>_rows`;
    # 5: comment labels censored (split end, attribution window) at second resolution, per-split comment
    # popularity targets, training-only video / comment id vocabularies; 6: impressions of videos missing from
    # video_features.csv and NaN / inf / negative amounts are rejected (a cache of such files is not reused)
    version = "6"
    required_files = (IMPRESSIONS, INTERACTIONS, USERS, VIDEOS, COMMENTS)

    def __init__(self, source: str, raw_dir: str, cache_dir: str, replica_dir: str,
                 min_duration_s: float, max_duration_s: float, only_opened: bool, train_start: str,
                 valid_start: str, test_start: str, test_end: str, shown_comments: int,
                 long_view_quantile: float, text_embeddings: str | None, replica: dict[str, Any],
                 comment_history: int = 10, comment_window_s: float = 3600, use_cache: bool = True,
                 text: Any = None, text_dir: str | None = None) -> None:
        super().__init__(source, raw_dir, cache_dir, replica_dir, use_cache, text_embeddings=text_embeddings,
                         text=text, text_dir=text_dir)
        self.min_duration_s, self.max_duration_s = min_duration_s, max_duration_s
        self.only_opened = only_opened
        self.dates = tuple(dt.date.fromisoformat(d) for d in (train_start, valid_start, test_start, test_end))
        self.shown_comments = shown_comments
        self.comment_history = comment_history
        if comment_window_s < 0:
            raise UserInputError(f"data.comment_window_s is {comment_window_s}; it must be >= 0 seconds. Fix: pass "
                                 "data.comment_window_s=<seconds after an impression its comment interactions count>")
        self.comment_window_s = int(comment_window_s)
        self.long_view_quantile = long_view_quantile
        self.replica = replica

    def preprocess_config(self) -> dict[str, Any]:
        return {"min_duration_s": self.min_duration_s, "max_duration_s": self.max_duration_s,
                "only_opened": self.only_opened, "dates": [d.isoformat() for d in self.dates],
                "shown_comments": self.shown_comments, "long_view_quantile": self.long_view_quantile,
                "comment_history": self.comment_history, "comment_window_s": self.comment_window_s}

    def replica_config(self) -> dict[str, Any]:
        from recbench.data.kuaicomt_replica import KuaiComtReplicaConfig
        return KuaiComtReplicaConfig(**self.replica).to_dict()

    def write_replica(self, out_dir: Path) -> None:
        from recbench.data.kuaicomt_replica import KuaiComtReplicaConfig, write_kuaicomt_replica
        write_kuaicomt_replica(out_dir, KuaiComtReplicaConfig(**self.replica))

    # ------------------------------------------------------------------ build
    def build(self, raw_dir: Path) -> Prepared:
        tables = read_all(raw_dir)
        impressions = self._impressions(tables["impressions"], raw_dir / IMPRESSIONS)
        videos, comments = self._catalogue(tables, raw_dir)
        require_catalogued(raw_dir / IMPRESSIONS, tables["impressions"], videos)
        impressions = impressions.join(videos.select("video_id", "author_id", "video_type", "category"),
                                       on="video_id", how="left", maintain_order="left")
        impressions = impressions.join(self._user_table(tables["users"]), on="user_id", how="left",
                                       maintain_order="left")
        impressions = self._index(impressions, videos)
        engaged = _engaged(tables["interactions"], comments)
        shown = self._shown(comments, n_videos=videos.height + 2)
        clicked = self._clicked(impressions, engaged, shown)
        threshold = float(impressions.filter(pl.col("split") == 0)["staytime"]
                          .quantile(self.long_view_quantile, "linear"))
        arrays = self._arrays(impressions, shown, clicked, threshold)
        arrays["sample_comment_history"] = self._comment_history(impressions, engaged)
        arrays.update(self._popularity(engaged, n_comments=comments.height + 2))
        arrays.update(self._id_vocabularies(arrays))
        spec = self._spec(impressions, arrays)
        spec["staytime_quantiles"] = duration_quantiles(impressions.filter(pl.col("split") == 0),
                                                        spec["cardinalities"]["duration_bucket"])
        meta = {"spec": spec, "long_view_threshold_s": threshold,
                "splits": {s: int((impressions["split"] == i).sum()) for i, s in enumerate(("train", "valid", "test"))},
                "stats": {"impressions": tables["impressions"].height, "samples": impressions.height,
                          "users": int(impressions["user_id"].n_unique()), "videos": videos.height,
                          "comments": comments.height, "interactions": tables["interactions"].height,
                          "clicked_rate": float(arrays["test_label_clicked"].mean()),
                          "comment_interactions_attributed": int(clicked.sum()),
                          "comment_interactions_engaged": engaged.height}}
        frames = {"video_text": videos.select("video", "video_id", pl.col("caption").fill_null("").alias("text")),
                  "comment_text": comments.select("comment", "comment_id",
                                                  pl.col("comment_content").fill_null("").alias("text"))}
        return Prepared(arrays=arrays, meta=meta, frames=frames)

    def _impressions(self, frame: pl.DataFrame, path: Path) -> pl.DataFrame:
        local = (pl.from_epoch(pl.col("time_ms").cast(pl.Int64), time_unit="ms")
                 .dt.replace_time_zone("UTC").dt.convert_time_zone(TIMEZONE))
        frame = frame.with_columns(staytime=pl.col("comment_stay_time") / 1000.0,
                                   duration_s=pl.col("duration_ms") / 1000.0, date=local.dt.date(),
                                   hour=local.dt.hour())
        train_start, valid_start, test_start, test_end = self.dates
        split = (pl.when(pl.col("date") >= test_start).then(2).when(pl.col("date") >= valid_start).then(1)
                 .otherwise(0))
        split_end = (pl.when(pl.col("date") >= test_start).then(local_midnight_s(test_end))
                     .when(pl.col("date") >= valid_start).then(local_midnight_s(test_start))
                     .otherwise(local_midnight_s(valid_start)))
        kept = (frame.filter(pl.col("duration_s").is_between(self.min_duration_s, self.max_duration_s),
                             pl.col("date") >= train_start, pl.col("date") < test_end)
                .with_columns(split=split.cast(pl.Int8), split_end_s=split_end.cast(pl.Int64),
                              # interactions carry whole seconds: impressions are compared at that resolution
                              time_s=(pl.col("time_ms") // 1000).cast(pl.Int64)))
        if self.only_opened:
            kept = kept.filter(pl.col("staytime") > 0)
        for index, name in enumerate(("train", "valid", "test")):
            if not (kept["split"] == index).any():
                raise bad_input(path, f"no {'opened ' if self.only_opened else ''}impression falls in the "
                                f"{name} dates", "check time_ms (Unix milliseconds) or the data.*_start dates")
        return kept.sort("time_ms", "user_id", "video_id", maintain_order=True)

    def _catalogue(self, tables: dict[str, pl.DataFrame], raw_dir: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
        videos = tables["videos"].unique("video_id", keep="first", maintain_order=True)
        comments = tables["comments"].unique("comment_id", keep="first", maintain_order=True)
        unknown = comments.join(videos, on="video_id", how="anti")
        if unknown.height:
            raise bad_input(raw_dir / COMMENTS, f"comment {unknown['comment_id'][0]} refers to video "
                            f"{unknown['video_id'][0]}, which is not in {VIDEOS}",
                            f"drop such comments or add the video to {VIDEOS}", "video_id")
        # videos and comments are indexed over the whole catalogue: their texts are known up front
        videos = videos.with_row_index("video", offset=2).with_columns(pl.col("video").cast(pl.Int64))
        comments = (comments.with_row_index("comment", offset=2).with_columns(pl.col("comment").cast(pl.Int64))
                    .join(videos.select("video_id", "video"), on="video_id", how="left", maintain_order="left"))
        return videos, comments

    @staticmethod
    def _user_table(users: pl.DataFrame) -> pl.DataFrame:
        register = pl.col("register_days").cast(pl.Float64).fill_null(-1)
        bucket = pl.lit(0)
        for edge in REGISTER_EDGES:
            bucket = bucket + (register > edge).cast(pl.Int32)
        return users.unique("user_id", keep="first").select(
            "user_id", pl.col("user_active_degree").alias("active_degree"),
            pl.col("follow_user_num_range").alias("follow_range"), pl.col("fans_user_num_range").alias("fans_range"),
            pl.col("friend_user_num_range").alias("friend_range"), bucket.alias("register_bucket"))

    def _index(self, impressions: pl.DataFrame, videos: pl.DataFrame) -> pl.DataFrame:
        """Dense indices from the training split for every categorical field."""
        duration = pl.lit(0)
        for edge in DURATION_EDGES:
            duration = duration + (pl.col("duration_s") > edge).cast(pl.Int32)
        impressions = impressions.with_columns(duration_bucket=duration, group=pl.col("user_id").rank("dense"))
        raw = {"user": "user_id", "active_degree": "active_degree", "follow_range": "follow_range",
               "fans_range": "fans_range", "friend_range": "friend_range", "author": "author_id",
               "video_type": "video_type", "category": "category"}
        train = impressions.filter(pl.col("split") == 0)
        for field, column in raw.items():
            impressions = (impressions.join(vocabulary(train[column]), on=column, how="left", maintain_order="left")
                           .with_columns(pl.col("index").fill_null(1).alias(field)).drop("index"))
        impressions = impressions.with_columns((pl.col("register_bucket") + 1).alias("register_bucket"),
                                               (pl.col("duration_bucket") + 1).alias("duration_bucket"))
        return impressions.join(videos.select("video_id", "video"), on="video_id", how="left",
                                maintain_order="left").with_columns(pl.col("video").fill_null(1))

    def _shown(self, comments: pl.DataFrame, n_videos: int) -> np.ndarray:
        """[n_videos + 2, K] comment indices shown for each video (0 = no comment in that slot)."""
        # the K most-liked comments of each video, placed in the K slots in a fixed pseudo-random order:
        # if slots followed the like order, position alone would give away the popularity label
        top = (comments.sort(["video", "comment_like_cnt", "comment_id"], descending=[False, True, False])
               .filter(pl.int_range(pl.len()).over("video") < self.shown_comments))
        ranked = (top.with_columns(key=pl.col("comment_id").hash(seed=7)).sort("video", "key")
                  .with_columns(slot=pl.int_range(pl.len()).over("video")))
        shown = np.zeros((n_videos, self.shown_comments), np.int64)
        shown[ranked["video"].to_numpy(), ranked["slot"].to_numpy()] = ranked["comment"].to_numpy()
        return shown

    def _clicked(self, impressions: pl.DataFrame, engaged: pl.DataFrame, shown: np.ndarray) -> np.ndarray:
        """[n_samples, K] 1 where the user liked / replied to that shown comment in that impression.

        An interaction belongs to the latest impression of the same user and video in the same or an
        earlier second, and counts only within `comment_window_s` seconds of it and before the end of
        that impression's split (no label is read from a later split's days)."""
        rows = impressions.select(pl.int_range(pl.len()).alias("row"), "user_id", "video_id", "time_s", "video",
                                  "split_end_s", pl.col("time_s").alias("impression_s")).sort("time_s")
        matched = (engaged.sort("time_s")
                   .join_asof(rows, on="time_s", by=["user_id", "video_id"], strategy="backward",
                              check_sortedness=False)  # both sorted by time above
                   .filter(pl.col("row").is_not_null(), pl.col("time_s") < pl.col("split_end_s"),
                           pl.col("time_s") - pl.col("impression_s") <= self.comment_window_s))
        clicked = np.zeros((impressions.height, shown.shape[1]), np.float32)
        if matched.height:
            row = matched["row"].to_numpy()
            slots = shown[matched["video"].to_numpy()] == matched["comment"].to_numpy()[:, None]
            np.maximum.at(clicked, row, slots.astype(np.float32))
        return clicked

    def _comment_history(self, impressions: pl.DataFrame, engaged: pl.DataFrame) -> np.ndarray:
        """[n_samples, H] the user's last H engaged comments (catalogue indices) in seconds strictly
        before the impression's second (0 = none): an interaction in the impression's own second is
        that impression's label, never its history."""
        events = (engaged.join(impressions.select("user_id", "group").unique("user_id"), on="user_id", how="inner")
                  .sort("group", "time_s"))
        history = np.zeros((impressions.height, self.comment_history), np.int64)
        if not events.height or not self.comment_history:
            return history
        # one sorted int64 key per event and per impression, user rank * span + time: searchsorted with
        # side="left" finds the user's events strictly earlier than the impression
        start = int(min(events["time_s"].min(), impressions["time_s"].min()))
        span = int(max(events["time_s"].max(), impressions["time_s"].max())) - start + 1
        event_key = events["group"].to_numpy().astype(np.int64) * span + (events["time_s"].to_numpy() - start)
        user = impressions["group"].to_numpy().astype(np.int64) * span
        end = np.searchsorted(event_key, user + (impressions["time_s"].to_numpy() - start), side="left")
        first = np.searchsorted(event_key, user, side="left")
        position = end[:, None] - self.comment_history + np.arange(self.comment_history)
        valid = position >= first[:, None]
        ids = events["comment"].to_numpy()
        history[valid] = ids[position[valid]]
        return history

    def _popularity(self, engaged: pl.DataFrame, n_comments: int) -> dict[str, np.ndarray]:
        """<split>_comment_score [n_comments]: log1p(likes) + log1p(replies) a comment received in the
        interaction log during that split's own days (the user-agnostic ranking target).

        Each split's target counts only its own period: the end-of-period snapshot counts of
        comment_features.csv include the test days, and one snapshot for every split would make
        validation and test lists equal to training ones (a lookup of training labels would score them)."""
        bounds = [local_midnight_s(d) for d in self.dates]
        out = {}
        for index, name in enumerate(("train", "valid", "test")):
            period = engaged.filter(pl.col("time_s") >= bounds[index], pl.col("time_s") < bounds[index + 1])
            counts = period.group_by("comment").agg(pl.col("is_like").sum(), pl.col("is_reply").sum())
            score = np.zeros(n_comments, np.float32)
            score[counts["comment"].to_numpy()] = (np.log1p(counts["is_like"].to_numpy().astype(np.float64))
                                                   + np.log1p(counts["is_reply"].to_numpy().astype(np.float64)))
            out[f"{name}_comment_score"] = score
        return out

    @staticmethod
    def _id_vocabularies(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Catalogue index -> id-embedding index, from the training split only: the videos of training
        impressions and the comments they show or hold in their histories get 2, 3, ...; the rest 1
        (unseen), padding 0. Texts stay keyed by catalogue index: content is known up front."""
        train = arrays["train_rows"]
        videos = arrays["sample_video"][train]
        comments = np.r_[arrays["shown"][videos].ravel(), arrays["sample_comment_history"][train].ravel()]

        def remap(size: int, seen: np.ndarray) -> np.ndarray:
            index = np.ones(size, np.int64)
            index[0] = 0
            seen = np.unique(seen[seen >= 2])
            index[seen] = np.arange(2, len(seen) + 2)
            return index

        return {"video_id_of": remap(len(arrays["shown"]), videos),
                "comment_id_of": remap(len(arrays["train_comment_score"]), comments)}

    def _arrays(self, impressions: pl.DataFrame, shown: np.ndarray, clicked: np.ndarray,
                threshold: float) -> dict[str, np.ndarray]:
        col = lambda name, dtype=np.int64: impressions[name].to_numpy().astype(dtype)  # noqa: E731
        arrays = {f"sample_{f}": col(f) for f in (*USER_FIELDS, *VIDEO_FIELDS)}
        arrays.update(sample_hour=col("hour") + 1, sample_group=col("group"), shown=shown)
        staytime, split = col("staytime", np.float32), impressions["split"].to_numpy()
        for index, name in enumerate(("train", "valid", "test")):
            rows = np.flatnonzero(split == index)
            arrays[f"{name}_rows"] = rows.astype(np.int64)
            arrays[f"{name}_label_staytime"] = staytime[rows]
            arrays[f"{name}_label_long_view"] = (staytime[rows] > threshold).astype(np.float32)
            arrays[f"{name}_label_clicked"] = clicked[rows]
        return arrays

    def _spec(self, impressions: pl.DataFrame, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
        cards = {f: int(impressions[f].max()) + 1 for f in (*USER_FIELDS, *VIDEO_FIELDS) if f != "video"}
        cards.update(hour=25, video=int(arrays["video_id_of"].max()) + 1,
                     comment=int(arrays["comment_id_of"].max()) + 1)
        return {"cardinalities": cards, "user_fields": list(USER_FIELDS), "item_fields": list(VIDEO_FIELDS),
                "context_fields": ["hour"], "shown_comments": self.shown_comments, "time_unit": "seconds",
                "comment_history": self.comment_history}

    def attach(self, prepared: Prepared) -> None:
        """Load exported text embeddings (keyed by raw video / comment id) as index-aligned tables."""
        prepared.meta["spec"]["text_dim"] = 0
        if not self.text_embeddings:
            return
        from recbench.text.export import load_embeddings

        for name, index, raw_id in (("video", "video", "video_id"), ("comment", "comment", "comment_id")):
            ids, matrix = load_embeddings(self.text_embeddings, name)
            frame = prepared.frames[f"{name}_text"]
            table = np.zeros((int(frame[index].max()) + 1, matrix.shape[1]), np.float32)
            position = pl.DataFrame({raw_id: ids, "row": np.arange(len(ids))})
            hit = frame.join(position, on=raw_id, how="inner")
            if hit.height < frame.height:
                raise bad_input(Path(self.text_embeddings) / name, f"{frame.height - hit.height} of {frame.height} "
                                f"{name}s have no embedding", "re-run the text export on this dataset")
            table[hit[index].to_numpy()] = matrix[hit["row"].to_numpy()]
            prepared.arrays[f"{name}_text_emb"] = table
        prepared.meta["spec"]["text_dim"] = int(matrix.shape[1])

    # ------------------------------------------------------------------ text stage
    def text_corpus(self, prepared: Prepared) -> dict[str, tuple[np.ndarray, list[str]]]:
        """Texts to embed, keyed by raw id: video captions and comments."""
        return {name: (prepared.frames[f"{name}_text"][raw].to_numpy(), prepared.frames[f"{name}_text"]["text"].to_list())
                for name, raw in (("video", "video_id"), ("comment", "comment_id"))}

    # the question that ends each task's prompt (the general-data prompt starts with its marker)
    TEXT_QUESTIONS = {"staytime": "问：用户会在评论区停留多久？答：", "top_comment": "问：哪条评论最热门？答：",
                      "interaction": "问：用户会和哪些评论互动？答：", "general": "续写："}

    def text_tasks(self, prepared: Prepared, per_task: int, seed: int,
                   general_share: float = 0.0) -> list[tuple[str, str]]:
        """LCU stage 1's four SFT sources as (prompt, answer) pairs, from TRAINING impressions only.

        1. staytime bucket: the user's history, the video and its shown comments -> "未打开" (not
           opened: staytime 0) or the range of the tercile its staytime falls in, the terciles taken
           over the OPENED training impressions (staytime > 0). Half the rows are drawn from opened
           impressions (about 87% are not opened on the replica: all four answers stay present).
        2. top comment: the video and its shown comments, no user -> the number of the one with the
           highest training-period popularity (`train_comment_score`); lists without one single
           top comment are skipped.
        3. user-comment interaction: opened impressions; the user's history, the video and its
           shown comments -> the numbers of those this user liked or replied to, or "无" (none).
        4. general data: `general_share` of all examples are continuations of the dataset's own
           texts (captions of training videos and the comments they show): the first part of a
           text -> the rest. No general instruction corpus ships offline; this keeps plain-text
           modelling, which is what the export embeds, in the mix.
        Comments are listed in a fresh random order per example (the slot gives nothing away). The
        user's history: captions of their last 3 earlier training impressions and their last 3
        liked / replied comments before the impression (`sample_comment_history`). Tasks 1-3 draw
        `per_task` training rows each (fewer when there are fewer)."""
        if not 0.0 <= general_share < 1.0:
            raise UserInputError(f"text.general_share={general_share}: not a share of the examples. "
                                 "Fix: use a value in [0, 1)")
        a, rng, ask = prepared.arrays, np.random.default_rng(seed), self.TEXT_QUESTIONS
        rows = a["train_rows"]
        caption = dict(zip(prepared.frames["video_text"]["video"], prepared.frames["video_text"]["text"]))
        comment = dict(zip(prepared.frames["comment_text"]["comment"], prepared.frames["comment_text"]["text"]))
        videos, users = a["sample_video"][rows], a["sample_group"][rows]
        staytime, clicked = a["train_label_staytime"], a["train_label_clicked"]
        opened, closed = np.flatnonzero(staytime > 0), np.flatnonzero(staytime <= 0)
        edges, answers = self._staytime_buckets(staytime[opened])

        def draw(pool: np.ndarray, n: int) -> np.ndarray:
            return rng.choice(pool, size=min(n, len(pool)), replace=False)

        def user(i: int) -> str:
            earlier = np.flatnonzero(users[:i] == users[i])[-3:]  # training rows are in time order
            watched = "；".join(caption.get(int(v), "") for v in videos[earlier]) or "无"
            liked = [comment.get(int(c), "") for c in a["sample_comment_history"][rows[i]][-3:] if c > 0]
            return f"用户最近看过：{watched}\n用户赞过或回复过的评论：{'；'.join(liked) or '无'}\n"

        def section(i: int) -> tuple[str, np.ndarray, list[int]]:
            slots = np.flatnonzero(a["shown"][videos[i]] > 0)
            slots = slots[rng.permutation(len(slots))]
            shown = [int(c) for c in a["shown"][videos[i]][slots]]
            listing = "".join(f"{k + 1}. {comment.get(c, '')}\n" for k, c in enumerate(shown))
            return f"当前视频：{caption.get(int(videos[i]), '')}\n评论：\n{listing}", slots, shown

        examples = []
        for i in np.sort(np.r_[draw(opened, per_task // 2), draw(closed, per_task - per_task // 2)]):
            stay = answers[0] if staytime[i] <= 0 else answers[1 + int(np.searchsorted(edges, staytime[i]))]
            examples.append((user(i) + section(i)[0] + ask["staytime"], stay))
        for i in np.sort(draw(np.arange(len(rows)), per_task)):
            text, _, shown = section(i)
            score = a["train_comment_score"][shown]
            if len(score) and score.max() > 0 and (score == score.max()).sum() == 1:
                examples.append((text + ask["top_comment"], str(int(np.argmax(score)) + 1)))
        for i in np.sort(draw(opened, per_task)):
            text, slots, shown = section(i)
            if shown:
                hits = [str(k + 1) for k, hit in enumerate(clicked[i][slots]) if hit > 0]
                examples.append((user(i) + text + ask["interaction"], ",".join(hits) or "无"))
        if general_share > 0:
            count = int(round(general_share / (1 - general_share) * len(examples)))
            seen = np.unique(videos)
            shown_comments = np.unique(a["shown"][seen])
            texts = ([caption.get(int(v), "") for v in seen]
                     + [comment.get(int(c), "") for c in shown_comments[shown_comments > 0]])
            from recbench.text.general import continuations

            examples += continuations(texts, count, rng, self.TEXT_QUESTIONS["general"])
        return examples

    @staticmethod
    def _staytime_buckets(opened: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
        """Tercile edges of the opened training staytimes and the four answers: not opened, then the
        three terciles as second ranges (e.g. "2.1秒以内", "2.1到7.4秒", "7.4秒以上")."""
        if not len(opened):
            return np.array([np.inf, np.inf]), ("未打开", "短", "中", "长")
        edges = np.quantile(opened, [1 / 3, 2 / 3])
        low, high = (f"{x:.1f}".rstrip("0").rstrip(".") for x in edges)
        return edges, ("未打开", f"{low}秒以内", f"{low}到{high}秒", f"{high}秒以上")

    # ------------------------------------------------------------------ batches
    def assemble(self, tables: dict[str, torch.Tensor], split: str, rows: torch.Tensor,
                 keys: frozenset[str] | None = None) -> dict[str, torch.Tensor]:  # builds every key
        sample = take(tables[f"{split}_rows"], rows)
        video = take(tables["sample_video"], sample)  # catalogue indices: texts; *_id_of: id embeddings
        batch = {f: take(tables[f"sample_{f}"], sample) for f in (*USER_FIELDS, *VIDEO_FIELDS, "hour") if f != "video"}
        batch["video"] = take(tables["video_id_of"], video)
        batch["group"] = take(tables["sample_group"], sample)
        shown, history = take(tables["shown"], video), take(tables["sample_comment_history"], sample)
        batch["comments"], batch["comments_mask"] = take(tables["comment_id_of"], shown), shown > 0
        batch["comment_history"] = take(tables["comment_id_of"], history)
        batch["label_comment_score"] = take(tables[f"{split}_comment_score"], shown)
        if "video_text_emb" in tables:
            batch["video_text_emb"] = take(tables["video_text_emb"], video)
            batch["comment_text_emb"] = take(tables["comment_text_emb"], shown)
            batch["history_text_emb"] = take(tables["comment_text_emb"], history)
        for key in ("staytime", "long_view", "clicked"):
            batch[f"label_{key}"] = take(tables[f"{split}_label_{key}"], rows)
        return batch


def require_catalogued(path: Path, impressions: pl.DataFrame, videos: pl.DataFrame) -> None:
    """Every impression's video is in video_features.csv. datasets.md reports no such rows in the real
    release (whose contents it could not check), so one is a mismatched file, not a known case to drop."""
    unknown = ~pl.col("video_id").is_in(videos["video_id"].implode())
    if impressions.select(unknown.any()).item():
        line, raw = first_bad(impressions, unknown, "video_id")
        raise bad_input(path, f"line {line} has video_id {raw}, which is not in {VIDEOS}",
                        f"add the video to {VIDEOS} (both files of the same release) or drop its impressions",
                        "video_id")


def _engaged(interactions: pl.DataFrame, comments: pl.DataFrame) -> pl.DataFrame:
    """Liked or replied comment interactions of catalogued comments: user, video, comment (catalogue
    index), whole-second time, is_like / is_reply."""
    return (interactions.filter((pl.col("is_like") > 0) | (pl.col("is_reply") > 0))
            .join(comments.select("comment_id", "comment"), on="comment_id", how="inner", maintain_order="left")
            .select("user_id", "video_id", "comment", pl.col("time_stamp").cast(pl.Int64).alias("time_s"),
                    (pl.col("is_like") > 0).cast(pl.Int64).alias("is_like"),
                    (pl.col("is_reply") > 0).cast(pl.Int64).alias("is_reply")))


def local_midnight_s(day: dt.date) -> int:
    """Unix seconds of 00:00 Asia/Shanghai on `day` (UTC+8, no daylight saving since 1991)."""
    return int(dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone(dt.timedelta(hours=8))).timestamp())


def vocabulary(values: pl.Series) -> pl.DataFrame:
    """Map each distinct non-null training value to `index` 2, 3, ... (0 padding, 1 unseen)."""
    distinct = values.drop_nulls().unique().sort()
    return pl.DataFrame({values.name: distinct, "index": np.arange(2, len(distinct) + 2, dtype=np.int64)})


def duration_quantiles(train: pl.DataFrame, buckets: int, levels: int = 101) -> list[list[float]]:
    """Per duration bucket (row = bucket index), the training staytime at the `levels` evenly spaced
    levels 0, 1/(levels-1), ..., 1 (numpy linear quantiles: the sample of rank r among n sits at level
    (r-1)/(n-1)); empty buckets use all of training. A staytime many samples share (0 s) fills a run of
    equal entries: D2Q (recbench/tasks/staytime.py) labels it with the middle level of its run (the
    mid-rank percentile, ties share their average rank) and decodes through the runs' middles."""
    grid = np.linspace(0, 1, levels)
    overall = np.quantile(train["staytime"].to_numpy(), grid)
    table = np.tile(overall, (buckets, 1))
    for bucket, group in train.group_by("duration_bucket"):
        table[int(bucket[0])] = np.quantile(group["staytime"].to_numpy(), grid)
    return table.round(6).tolist()


# ---------------------------------------------------------------------- reading + validation
INT = pl.Int64
SPECS = {
    "impressions": (IMPRESSIONS, ("user_id", "video_id", "time_ms", "play_time_ms", "duration_ms",
                                  "comment_stay_time"),
                    {"user_id": INT, "video_id": INT, "time_ms": pl.Float64, "play_time_ms": pl.Float64,
                     "duration_ms": pl.Float64, "comment_stay_time": pl.Float64}),
    "interactions": (INTERACTIONS, ("user_id", "comment_id", "time_stamp", "video_id", "is_like", "is_reply"),
                     {"user_id": INT, "comment_id": INT, "time_stamp": INT, "video_id": INT, "is_like": INT,
                      "is_reply": INT}),
    "users": (USERS, ("user_id", "user_active_degree", "follow_user_num_range", "fans_user_num_range",
                      "friend_user_num_range", "register_days"), {"user_id": INT, "register_days": pl.Float64}),
    "videos": (VIDEOS, ("video_id", "author_id", "video_type", "caption", "category"),
               {"video_id": INT, "author_id": INT}),
    "comments": (COMMENTS, ("comment_id", "comment_content", "video_id", "comment_like_cnt", "comment_reply_out"),
                 {"comment_id": INT, "video_id": INT, "comment_like_cnt": pl.Float64,
                  "comment_reply_out": pl.Float64}),
}


def read_all(raw_dir: Path) -> dict[str, pl.DataFrame]:
    """Read and validate the five files (ids numeric and present, staytime non-negative)."""
    tables = {}
    for key, (name, required, dtypes) in SPECS.items():
        path = raw_dir / name
        frame = read_table(path, required, dtypes, aliases=ALIASES)
        ids = tuple(c for c, t in dtypes.items() if t == INT and c in required)
        require_non_null(path, frame, ids)
        require_non_negative(path, frame, tuple(c for c in ids if c.endswith("_id")))
        tables[key] = frame
    require_epoch(raw_dir / INTERACTIONS, tables["interactions"], "time_stamp", "s")
    # flags and measured amounts: a negative, NaN or inf value is a corrupted row (empty ones stay allowed)
    require_non_negative(raw_dir / INTERACTIONS, tables["interactions"], ("is_like", "is_reply"), "a flag")
    for key, columns in (("impressions", ("play_time_ms", "duration_ms")), ("users", ("register_days",)),
                         ("comments", ("comment_like_cnt", "comment_reply_out"))):
        require_non_negative_numbers(raw_dir / SPECS[key][0], tables[key], columns)
    path = raw_dir / IMPRESSIONS
    require_non_null(path, tables["impressions"], ("time_ms",))
    require_epoch(path, tables["impressions"], "time_ms", "ms")
    staytime = pl.col("comment_stay_time")
    bad = staytime.is_null() | (staytime < 0) | staytime.is_nan() | staytime.is_infinite()
    if tables["impressions"].select(bad.any()).item():
        line, raw = first_bad(tables["impressions"], bad, "comment_stay_time")
        raise bad_input(path, f"line {line} has comment_stay_time '{raw}'; it must be a finite non-negative number "
                        "of milliseconds", "fix or drop that row", "comment_stay_time")
    warn_duplicates(path, tables["impressions"], SPECS["impressions"][1],
                    "each is kept as a separate impression (drop them first if they are logging repeats)")
    return tables
