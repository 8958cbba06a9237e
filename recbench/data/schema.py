"""The typed contract between datasets and the models and task heads that read their batches.

A `Schema` is what one family of datasets guarantees:
  - `spec`: the metadata keys (and their types) a model or head builds itself from: field lists,
    vocabulary sizes (`cardinalities`), lengths, task names;
  - `batch`: the keys `assemble()` returns, each with its dtype, its shape (in spec terms) and, for
    ids, the vocabulary that bounds its values;
  - the row arrays every prepared dataset holds: `<split>_rows` (`ROW_ARRAYS`), one int64 index
    per training / evaluation row, which the DataModule batches over.

An adapter declares the schemas it produces (`produces`), a net or task head the ones it accepts
(`accepts`). The CLI refuses a pair that shares none before any data is read (`fits`), and
`RecDataModule` checks a prepared dataset against its schemas (`check_prepared`) and stops with one
line naming the first missing or mistyped piece. A dataset may produce several schemas (KuaiComt
impressions carry a staytime target and a list of shown comments); a model that accepts several
asks `pick(spec, accepts)` which one it got instead of looking for tell-tale keys.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping

import numpy as np
import torch

from recbench.errors import UserInputError

SPLITS = ("train", "valid", "test")
ROW_ARRAYS = "{split}_rows"  # a prepared dataset's row index of each split
DTYPES = {"int": (torch.int64,), "float": (torch.float32,), "bool": (torch.bool,)}


@dataclasses.dataclass(frozen=True)
class Key:
    """One batch key. `name` may hold `{x}`, expanded over the spec list named by `over`.

    dims: "batch" or a spec key (an int is that size, a list its length; `{x}` and a dotted path
    such as "sequence_lengths.{x}" are allowed). vocab: the `cardinalities` entry that bounds the
    ids (`{x}` allowed). when: a spec key that must be non-zero for the key to be present."""

    name: str
    dtype: str
    dims: tuple[str, ...] = ("batch",)
    vocab: str | None = None
    over: str | None = None
    when: str | None = None


@dataclasses.dataclass(frozen=True, eq=False)  # compared (and hashed) by identity: one object per family
class Schema:
    name: str
    description: str
    spec: Mapping[str, type]
    batch: tuple[Key, ...]

    def keys(self, spec: Mapping[str, Any]) -> dict[str, tuple[str, tuple[int, ...], str | None]]:
        """{batch key: (dtype, shape without the batch dim, vocab)} this schema guarantees for `spec`."""
        out = {}
        for key in self.batch:
            if key.when and not spec.get(key.when):
                continue
            for x in (spec[key.over] if key.over else [None]):
                name = key.name.format(x=x)
                shape = tuple(_size(spec, dim.format(x=x)) for dim in key.dims[1:])
                out[name] = (key.dtype, shape, key.vocab.format(x=x) if key.vocab else None)
        return out

    def spec_problem(self, spec: Mapping[str, Any]) -> str | None:
        for key, kind in self.spec.items():
            if key not in spec:
                return f"spec key '{key}' is missing"
            if not isinstance(spec[key], kind) or (kind is int and isinstance(spec[key], bool)):
                return f"spec key '{key}' is a {type(spec[key]).__name__}, not a {kind.__name__}"
        return None

    def batch_problem(self, batch: Mapping[str, torch.Tensor], spec: Mapping[str, Any]) -> str | None:
        cardinalities = spec.get("cardinalities", {})
        for name, (dtype, shape, vocab) in self.keys(spec).items():
            if name not in batch:
                return f"batch key '{name}' is missing"
            value = batch[name]
            if value.dtype not in DTYPES[dtype]:
                return f"batch key '{name}' is {value.dtype}, not {dtype} ({DTYPES[dtype][0]})"
            if tuple(value.shape[1:]) != shape:
                return f"batch key '{name}' has shape {tuple(value.shape)}, not (batch, {', '.join(map(str, shape))})"
            if vocab is not None and value.numel():
                if vocab not in cardinalities:
                    return f"batch key '{name}' has no vocabulary size (spec cardinalities['{vocab}'])"
                low, high = int(value.min()), int(value.max())
                if low < 0 or high >= cardinalities[vocab]:
                    return (f"batch key '{name}' holds ids {low}..{high} outside its vocabulary "
                            f"0..{cardinalities[vocab] - 1} (cardinalities['{vocab}'])")
        return None


def _size(spec: Mapping[str, Any], path: str) -> int:
    value: Any = spec
    for part in path.split("."):
        value = value[part]
    return len(value) if isinstance(value, (list, tuple)) else int(value)


FIELDS = (Key("{x}", "int", vocab="{x}", over="user_fields"), Key("{x}", "int", vocab="{x}", over="item_fields"),
          Key("group", "int"))  # group: the GAUC group key (the user)
FIELD_SPEC = {"cardinalities": dict, "user_fields": list, "item_fields": list}

ACTIONS = Schema(
    "actions", "per-(user, item) episodes with the user's action history and which target actions follow, when",
    {**FIELD_SPEC, "history_length": int, "history_actions": list, "target_actions": list, "sequence_length": int,
     "time_unit": str, "max_time": float},
    (*FIELDS,
     Key("hist_{x}", "int", ("batch", "history_length"), vocab="{x}", over="item_fields"),
     Key("hist_mask", "bool", ("batch", "history_length")),
     Key("hist_action_mask", "bool", ("batch", "history_length", "history_actions")),
     Key("hist_action_time", "float", ("batch", "history_length", "history_actions")),
     Key("hist_recency", "float", ("batch", "history_length")),
     Key("label_action", "float", ("batch", "target_actions")),
     Key("label_time", "float", ("batch", "target_actions")),
     Key("label_seq", "int", ("batch", "sequence_length")),
     Key("label_seq_time", "float", ("batch", "sequence_length"))))

STAYTIME = Schema(
    "staytime", "impressions with a non-negative staytime target (zeros allowed) and its duration bucket",
    {**FIELD_SPEC, "context_fields": list, "time_unit": str, "staytime_quantiles": list},
    (*FIELDS, Key("{x}", "int", vocab="{x}", over="context_fields"),
     Key("duration_bucket", "int", vocab="duration_bucket"),
     Key("label_staytime", "float"), Key("label_long_view", "float")))

COMMENTS = Schema(
    "comments", "staytime impressions that also list the comments shown, with per-comment user labels and "
    "popularity scores, the user's comment history and (when text_dim > 0) text embeddings",
    {**STAYTIME.spec, "shown_comments": int, "comment_history": int, "text_dim": int},
    (*STAYTIME.batch,
     Key("comments", "int", ("batch", "shown_comments"), vocab="comment"),
     Key("comments_mask", "bool", ("batch", "shown_comments")),
     Key("label_clicked", "float", ("batch", "shown_comments")),
     Key("label_comment_score", "float", ("batch", "shown_comments")),
     Key("comment_history", "int", ("batch", "comment_history"), vocab="comment"),
     Key("video_text_emb", "float", ("batch", "text_dim"), when="text_dim"),
     Key("comment_text_emb", "float", ("batch", "shown_comments", "text_dim"), when="text_dim"),
     Key("history_text_emb", "float", ("batch", "comment_history", "text_dim"), when="text_dim")))

LIVE = Schema(
    "live", "live exposures with per-task labels, loss masks and PU flags, room content embeddings and "
    "behaviour sequences (author, category, kind) across live and short video",
    {**FIELD_SPEC, "context_fields": list, "tasks": list, "content_dim": int, "sequences": list,
     "sequence_lengths": dict, "time_unit": str, "stream": str},
    (*FIELDS, Key("{x}", "int", vocab="{x}", over="context_fields"),
     Key("label_{x}", "float", over="tasks"), Key("mask_{x}", "float", over="tasks"), Key("pu_{x}", "float", over="tasks"),
     Key("read_minute", "int"),  # Unix minute the row's features are read at (live retrieval's candidate pool)
     Key("live_content_emb", "float", ("batch", "content_dim")),
     Key("streamer_longterm_emb", "float", ("batch", "content_dim")),
     Key("seq_{x}_author", "int", ("batch", "sequence_lengths.{x}"), vocab="author", over="sequences"),
     Key("seq_{x}_category", "int", ("batch", "sequence_lengths.{x}"), vocab="category", over="sequences"),
     Key("seq_{x}_kind", "int", ("batch", "sequence_lengths.{x}"), vocab="kind", over="sequences"),
     Key("seq_{x}_mask", "bool", ("batch", "sequence_lengths.{x}"), over="sequences")))

CTR = Schema(
    "ctr", "tabular CTR samples (a FuxiCTR dataset config): categorical fields, numeric features, the history of "
    "the item fields that a sequence shares, and one or more 0/1 labels",
    {**FIELD_SPEC, "history_fields": list, "history_length": int, "numeric_fields": list, "tasks": list},
    (*FIELDS,
     Key("hist_{x}", "int", ("batch", "history_length"), vocab="{x}", over="history_fields"),
     Key("hist_mask", "bool", ("batch", "history_length")),
     Key("numeric", "float", ("batch", "numeric_fields")),  # normalised as the config says, one column per field
     Key("label_{x}", "float", over="tasks")))

SCHEMAS = {schema.name: schema for schema in (ACTIONS, STAYTIME, COMMENTS, LIVE, CTR)}


def names(schemas: Iterable[Schema]) -> str:
    return "/".join(schema.name for schema in schemas)


def fits(accepts: Iterable[Schema], produces: Iterable[Schema]) -> bool:
    """A part that accepts any of the schemas a dataset produces can read its batches."""
    return bool(set(accepts) & set(produces))


def pick(spec: Mapping[str, Any], accepts: Iterable[Schema]) -> Schema:
    """The first schema of `accepts` that the data behind `spec` produces (spec["schemas"])."""
    produced = spec.get("schemas", ())
    for schema in accepts:
        if schema.name in produced:
            return schema
    raise KeyError(f"a schema among {names(accepts)} (the data produces {'/'.join(produced) or 'none'})")


def check_prepared(name: str, produces: tuple[Schema, ...], arrays: Mapping[str, Any], spec: Mapping[str, Any],
                   first_batch) -> None:
    """Stop with one line naming what a prepared dataset lacks for the schemas it declares.

    `first_batch(split, rows)` assembles a batch of the given rows (every key) for the batch check."""
    where = f"dataset '{name}'"
    if not produces:
        raise UserInputError(f"{where}: its adapter declares no schema. Fix: set `produces = (...)` on the adapter "
                             f"class to the recbench.data.schema schemas its batches follow ({', '.join(SCHEMAS)})")
    for split in SPLITS:
        rows = arrays.get(ROW_ARRAYS.format(split=split))
        if rows is None or getattr(rows, "ndim", 0) != 1 or not np.issubdtype(rows.dtype, np.integer):
            raise UserInputError(f"{where}: no 1-d integer row array '{ROW_ARRAYS.format(split=split)}'. Fix: build() "
                                 "must return one row index per sample of each split under that name")
    for schema in produces:
        problem = schema.spec_problem(spec)
        if problem is None:
            for split in SPLITS:
                count = len(arrays[ROW_ARRAYS.format(split=split)])
                if count:
                    problem = schema.batch_problem(first_batch(split, torch.arange(min(count, 8))), spec)
                    problem = problem and f"{problem} in the {split} split"
                if problem:
                    break
        if problem:
            raise UserInputError(f"{where} does not follow the '{schema.name}' schema it declares: {problem}. "
                                 f"Fix: the adapter's build() / assemble() must provide it "
                                 f"(recbench/data/schema.py lists what '{schema.name}' guarantees)")
