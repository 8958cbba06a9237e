"""Per-segment live content on hand-written KuaiLive files: a segment is served only once its window is over
(never one that starts at or after the read time), the tick length changes the served rows, history rooms
get the content of their own click time, and stage 1's behaviour examples come from training exposures only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recbench.errors import UserInputError
from tests.test_kuailive_adapter import adapter, ms, write_files

# (live_id, start, text): 9001 runs 20:00-23:00 on May 6 (c1 at 20:10:00, n1 20:05:00, c2 20:12:00)
SEGMENTS = [(9001, ms(6, 20, 0), "opening chat"),
            (9001, ms(6, 20, 9, 50), "late in the tick"),      # on during the window that ends at c1's tick
            (9001, ms(6, 20, 10), "same second as c1"),        # starts exactly at c1: not served to c1
            (9001, ms(6, 20, 10, 5), "after c1"),              # starts after c1: never served to c1
            (9002, ms(21, 20, 0), "valid room text"),
            (9003, ms(24, 10, 0), "test room text"), (9004, ms(24, 20, 0), "test room two")]


def write_segments(folder: Path, rows=SEGMENTS) -> Path:
    lines = ["live_id,timestamp,text"] + [f"{live},{start},{text}" for live, start, text in rows]
    (folder / "segment_text.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def prepare(tmp: Path, **overrides):
    raw = write_segments(write_files(tmp / "raw"))
    kuailive = adapter(raw, tmp, **overrides)
    return kuailive, kuailive.prepare()


def served_text(prepared, content_rows: np.ndarray) -> list[str]:
    texts = dict(zip(prepared.frames["segment_text"]["text_id"].to_list(), prepared.frames["segment_text"]["text"].to_list()))
    return [texts.get(int(prepared.arrays["content_text"][row]), "") if row else "" for row in content_rows]


def exposure_views(prepared) -> dict[int, int]:
    """exposure time (ms) -> its view read at the exposure (progressive / valid / test rows)."""
    a = prepared.arrays
    rows = np.r_[a["progressive_rows"], a["valid_rows"], a["test_rows"]]
    return {int(a["sample_time"][a["view_exposure"][v]]): int(v) for v in rows}


def test_a_segment_is_served_only_after_its_window_ended(tmp_path):
    _, prepared = prepare(tmp_path)
    a, views = prepared.arrays, exposure_views(prepared)
    at = lambda t: served_text(prepared, a["view_content"][[views[t]]])[0]  # noqa: E731
    assert prepared.meta["stats"]["content"] == "segment"
    assert at(ms(6, 20, 5)) == "opening chat"            # n1
    assert at(ms(6, 20, 10)) == "late in the tick"       # c1: not the segment starting in the same second
    assert at(ms(6, 20, 12)) == "after c1"               # c2, two minutes on
    # every view, training rows included: the served segment started before the view's tick
    starts = {text: start for _, start, text in SEGMENTS}
    tick = a["view_time"] // 30_000 * 30_000
    texts = served_text(prepared, a["view_content"])
    assert all(starts[text] < t for text, t in zip(texts, tick) if text)
    # the valid / test rooms' texts are served only to valid / test views
    train_views = a["progressive_rows"]
    assert not {"valid room text", "test room text", "test room two"} & set(served_text(prepared, a["view_content"][train_views]))


def test_the_tick_length_changes_the_served_rows(tmp_path):
    _, fine = prepare(tmp_path / "fine", segment_seconds=30)
    _, coarse = prepare(tmp_path / "coarse", segment_seconds=3600)
    c1 = ms(6, 20, 10)
    fine_text = served_text(fine, fine.arrays["view_content"][[exposure_views(fine)[c1]]])[0]
    coarse_text = served_text(coarse, coarse.arrays["view_content"][[exposure_views(coarse)[c1]]])[0]
    assert fine_text == "late in the tick" and coarse_text == ""  # the 20:00 hour window is not over at 20:10
    assert not np.array_equal(fine.arrays["view_content"] > 0, coarse.arrays["view_content"] > 0)


def test_history_rooms_carry_the_content_of_their_click_time(tmp_path):
    kuailive, prepared = prepare(tmp_path)
    a = prepared.arrays
    live = np.flatnonzero(a["item_kind"] == 2)
    times = a["item_time"][live]
    texts = dict(zip(times.tolist(), served_text(prepared, a["item_content"][live])))
    assert texts[ms(6, 20, 10)] == "late in the tick" and texts[ms(6, 20, 12)] == "after c1"
    assert texts[ms(21, 23, 30)] == "valid room text"
    # history rooms as candidates: the same vocabulary ids as an exposure of that room
    c1 = np.flatnonzero((a["item_time"] == ms(6, 20, 10)) & (a["item_kind"] == 2))[0]
    exposure = np.flatnonzero(a["sample_time"] == ms(6, 20, 10))[0]
    for field in ("live", "streamer", "live_type", "category", "streamer_fans"):
        assert a[f"item_field_{field}"][c1] == a[f"sample_{field}"][exposure], field


def test_title_content_without_segment_texts_and_a_clear_error_when_forced(tmp_path):
    raw = write_files(tmp_path / "raw")
    prepared = adapter(raw, tmp_path).prepare()
    assert prepared.meta["stats"]["content"] == "title" and prepared.meta["spec"]["content_dim"] == 4
    with pytest.raises(UserInputError, match="segment_text.csv.*data.content=title"):
        adapter(raw, tmp_path / "forced", content="segment").prepare()


def test_bad_segment_texts_are_one_line_errors(tmp_path):
    raw = write_files(tmp_path / "raw")
    write_segments(raw, [(9001, 1746532800, "seconds, not ms")])
    with pytest.raises(UserInputError, match="segment_text.csv"):
        adapter(raw, tmp_path).prepare()
    write_segments(raw, [*SEGMENTS[:2], (-9001, ms(6, 20, 0), "a negative live_id")])  # was dropped silently
    with pytest.raises(UserInputError, match="segment_text.csv, column 'live_id': line 4 has -9001, out of range"):
        adapter(raw, tmp_path).prepare()


def test_stage1_examples_come_from_training_exposures_with_training_labels(tmp_path):
    kuailive, prepared = prepare(tmp_path)
    examples = kuailive.text_tasks(prepared, per_task=10, seed=0, general_share=0.0)
    by_task = {}
    for prompt, answer in examples:
        task = next(t for t, q in kuailive.TEXT_QUESTIONS.items() if prompt.endswith(q))
        now = prompt.split("now on screen: ")[1].split("\n")[0]
        by_task.setdefault(task, []).append((now, answer))
    # train exposures: n1 (20:05, no click), c1 (20:10, long view, comment + gift), c2 (20:12, short, nothing)
    assert sorted(by_task["click"]) == [("after c1", "yes"), ("late in the tick", "yes"), ("opening chat", "no")]
    assert sorted(by_task["long_view"]) == [("after c1", "no"), ("late in the tick", "yes")]
    assert sorted(by_task["engage"]) == [("after c1", "no"), ("late in the tick", "yes")]
    assert all("valid room" not in p and "test room" not in p for p, _ in examples)


def test_without_segment_texts_the_text_stage_is_skipped_with_a_banner(tmp_path, capsys):
    raw = write_files(tmp_path / "raw")
    prepared = adapter(raw, tmp_path, text_embeddings="auto").prepare()  # as model=llm_alignment asks
    assert "its title embedding" in capsys.readouterr().err
    assert prepared.meta["spec"]["content_dim"] == 4 and "text_embeddings" not in prepared.meta


def test_non_finite_input_values_are_one_line_errors(tmp_path):
    from tests.test_kuailive_adapter import TITLES, bad

    def nan_title(path):
        titles = TITLES.copy()
        titles[1, 2] = np.nan
        np.save(path, titles)

    assert "row 1 has a non-finite value (nan)" in bad(tmp_path / "titles", "title_embeddings.npy", nan_title)

    def inf_watch(path):
        path.write_text(path.read_text().replace(",600000\n", ",inf\n", 1))

    assert "must be a finite non-negative number" in bad(tmp_path / "watch", "click.csv", inf_watch)


def test_a_nan_prediction_at_evaluation_fails_the_run(tmp_path):
    from functools import partial

    import torch

    from recbench.errors import NumericalFault
    from recbench.module import RecModule
    from tests.test_live_models import build, fake_live_batch, fake_live_spec, multitask_head

    spec = fake_live_spec()
    module = RecModule(build("din_live", spec), {"multitask": multitask_head(spec)},
                       optimizer=partial(torch.optim.Adam, lr=1e-3),
                       sparse_optimizer=partial(torch.optim.SparseAdam, lr=1e-3), gradient_clip=10.0)
    batch = fake_live_batch(spec, 16)
    module.collect(batch)  # finite: fine
    with torch.no_grad():
        next(p for p in module.net.parameters() if p.dim() == 2 and not p.is_sparse).fill_(float("nan"))
    with pytest.raises(NumericalFault, match="is NaN on an evaluated batch"):
        module.collect(batch)
