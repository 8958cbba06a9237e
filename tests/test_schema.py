"""The typed dataset -> model contract (recbench/data/schema.py): each missing or mistyped piece of a
prepared dataset is named in one line, and parts that accept several schemas ask which one they got."""

from __future__ import annotations

import copy

import pytest
import torch

from recbench.data import schema
from recbench.data.schema import ACTIONS, COMMENTS, LIVE, STAYTIME, check_prepared, fits, pick
from recbench.errors import UserInputError
from recbench.models.mmoe import MMoE


def prepared_parts(datamodule):
    prepared = datamodule.prepare()
    arrays = dict(prepared.arrays)
    spec = copy.deepcopy(prepared.meta["spec"])
    tables = datamodule.tables
    return arrays, spec, lambda split, rows: datamodule.adapter.assemble(tables, split, rows)


def refusal(produces, arrays, spec, first_batch) -> str:
    with pytest.raises(UserInputError) as refused:
        check_prepared("toy", produces, arrays, spec, first_batch)
    message = str(refused.value)
    assert "\n" not in message and message.startswith("dataset 'toy'") and "Fix:" in message
    return message


def test_a_prepared_dataset_that_follows_its_schema_passes(tiny_datamodule):
    check_prepared("tmall", (ACTIONS,), *prepared_parts(tiny_datamodule))
    assert tiny_datamodule.prepare().meta["spec"]["schemas"] == ["actions"]


def test_each_missing_piece_is_named(tiny_datamodule):
    arrays, spec, first_batch = prepared_parts(tiny_datamodule)
    assert "declares no schema" in refusal((), arrays, spec, first_batch)

    old_names = {k.replace("_rows", "_ep") if k.endswith("_rows") else k: v for k, v in arrays.items()}
    assert "'train_rows'" in refusal((ACTIONS,), old_names, spec, first_batch)

    no_history = {k: v for k, v in spec.items() if k != "history_length"}
    assert "spec key 'history_length' is missing" in refusal((ACTIONS,), arrays, no_history, first_batch)
    assert "'history_length' is a str, not a int" in refusal((ACTIONS,), arrays, {**spec, "history_length": "20"},
                                                            first_batch)

    def without(key):
        return lambda split, rows: {k: v for k, v in first_batch(split, rows).items() if k != key}
    assert "batch key 'hist_mask' is missing in the train split" in refusal((ACTIONS,), arrays, spec, without("hist_mask"))

    def changed(key, value):
        return lambda split, rows: {**first_batch(split, rows), key: value(first_batch(split, rows)[key])}
    assert "batch key 'user' is torch.int32, not int" in refusal((ACTIONS,), arrays, spec,
                                                                 changed("user", lambda v: v.int()))
    assert "batch key 'label_action' has shape" in refusal((ACTIONS,), arrays, spec,
                                                           changed("label_action", lambda v: v[:, :2]))
    message = refusal((ACTIONS,), arrays, spec, changed("item", lambda v: v + spec["cardinalities"]["item"]))
    assert "batch key 'item' holds ids" in message and "cardinalities['item']" in message
    # a dataset declaring a schema it does not follow
    assert "does not follow the 'live' schema" in refusal((LIVE,), arrays, spec, first_batch)


def test_optional_keys_follow_their_spec_switch():
    spec = {"cardinalities": {"comment": 10}, "shown_comments": 3, "comment_history": 2, "text_dim": 0,
            "user_fields": [], "item_fields": [], "context_fields": []}
    assert "video_text_emb" not in COMMENTS.keys(spec)
    assert COMMENTS.keys({**spec, "text_dim": 8})["comment_text_emb"] == ("float", (3, 8), None)
    assert set(STAYTIME.keys(spec)) < set(COMMENTS.keys(spec))  # comment data is staytime data too


def test_parts_that_accept_several_schemas_pick_the_one_they_got():
    assert pick({"schemas": ["live"]}, MMoE.accepts) is LIVE
    assert pick({"schemas": ["actions"]}, MMoE.accepts) is ACTIONS
    with pytest.raises(KeyError, match="actions/live"):
        pick({"schemas": ["staytime", "comments"]}, MMoE.accepts)
    assert fits(MMoE.accepts, (LIVE,)) and not fits(MMoE.accepts, (STAYTIME, COMMENTS))
    assert set(schema.SCHEMAS) == {"actions", "staytime", "comments", "live", "ctr"}


def test_every_adapter_batch_key_dtype_is_a_torch_dtype():
    for family in schema.SCHEMAS.values():
        assert all(key.dtype in schema.DTYPES for key in family.batch), family.name
    assert schema.DTYPES["int"] == (torch.int64,)
