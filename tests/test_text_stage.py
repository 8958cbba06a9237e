"""Text stage (LCU stage 1): tiny offline LM + pretraining, LoRA SFT, SFT tasks, resumable frozen embeddings."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")

import torch

from recbench.errors import UserInputError
from recbench.text import export as export_mod
from recbench.text.export import export_embeddings, load_embeddings
from recbench.text.lm import build_tiny_lm, load_lm
from recbench.text.sft import finetune_lora

TOPICS = {"美食": "火锅面条甜点好吃饺子烧烤", "游戏": "通关装备副本队友段位操作",
          "音乐": "唱歌旋律歌词吉他演唱会", "宠物": "小猫狗狗喵可爱铲屎官毛"}
FILLER = "今天的视频太真是我也这个了吧啊哈"
EMOJI = ["[捂脸]", "[赞]", "[流泪]", "[微笑]", "[呲牙]"]


def make_comments(n: int, seed: int) -> list[tuple[str, str]]:
    """(topic, comment): half the characters come from the topic's pool, the rest are filler."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        topic = list(TOPICS)[i % len(TOPICS)]
        body = "".join(rng.choice(TOPICS[topic]) if rng.random() < 0.5 else rng.choice(FILLER)
                       for _ in range(rng.randint(6, 14)))
        rows.append((topic, body + rng.choice(EMOJI)))
    return rows


COMMENTS = make_comments(240, seed=0)
TRAIN, HELD_OUT = COMMENTS[:160], COMMENTS[160:]
CORPUS = [text for _, text in COMMENTS] + [f"评论：{text}\n话题：{topic}" for topic, text in TRAIN]


def sft_examples(rows):
    return [(f"评论：{text}\n话题：", topic) for topic, text in rows]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The tiny model's ops are too small for intra-op threads: on a shared 2-core box, 2 threads
    made LoRA SFT 20x slower (5 s -> 100 s) through spin-waiting. Restored after the module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> Path:
    return build_tiny_lm(tmp_path_factory.mktemp("tiny_lm"), CORPUS, vocab_size=2000, hidden=64,
                         layers=2, heads=4, seed=0)


@pytest.fixture(scope="module")
def sft_run(tiny_lm, tmp_path_factory):
    model, tokenizer = load_lm(tiny_lm)
    base_before = {name: p.detach().clone() for name, p in model.named_parameters()}
    adapter_dir = tmp_path_factory.mktemp("adapter")
    stats = finetune_lora(model, tokenizer, sft_examples(TRAIN), adapter_dir, epochs=12, batch_size=16,
                          lr=1e-2, seed=0, progress=False)
    return {"model": model, "tokenizer": tokenizer, "base_before": base_before, "stats": stats,
            "adapter_dir": adapter_dir}


# ---------------------------------------------------------------- model + tokenizer


def test_tiny_lm_loads_through_the_generic_path(tiny_lm, tmp_path):
    model, tokenizer = load_lm(tiny_lm)
    assert type(model).__name__ == "LlamaForCausalLM" and not model.training
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 2
    assert len(tokenizer) == model.config.vocab_size <= 2000
    assert tokenizer.pad_token_id is not None and tokenizer.eos_token_id is not None
    assert tokenizer.bos_token_id is not None and tokenizer("你好")["input_ids"][0] == tokenizer.bos_token_id
    # AutoTokenizer must use the saved tokenizer.json as is (not a model-type tokenizer class).
    saved = json.loads((tiny_lm / "tokenizer.json").read_text())
    assert json.loads(tokenizer.backend_tokenizer.to_str())["pre_tokenizer"] == saved["pre_tokenizer"]
    # Same corpus and seed: identical files.
    again = build_tiny_lm(tmp_path / "again", CORPUS)
    assert (again / "tokenizer.json").read_bytes() == (tiny_lm / "tokenizer.json").read_bytes()
    assert (again / "model.safetensors").read_bytes() == (tiny_lm / "model.safetensors").read_bytes()


def test_tokenizer_round_trips_chinese_and_emoji(tiny_lm):
    _, tokenizer = load_lm(tiny_lm)
    samples = ["今天的视频太好笑了[捂脸][赞]", "没见过的字：鑫龘 🎉😂 [新表情] mixed English 2023年10月!!",
               "  空格\t和\n换行  ", ""]
    for text in samples:
        ids = tokenizer(text)["input_ids"]
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
    pieces = tokenizer.convert_ids_to_tokens(tokenizer("火锅[捂脸]", add_special_tokens=False)["input_ids"])
    assert pieces[-1] == "[捂脸]"  # a frequent bracket emoji is one token
    assert len(pieces) == 3  # and each frequent Han character is one token
    assert tokenizer.unk_token_id is None or tokenizer.unk_token_id not in tokenizer("鑫龘🎉")["input_ids"]


def test_load_lm_missing_or_empty_path_is_one_line_user_error(tiny_lm, tmp_path):
    for path in (tmp_path / "no_such_model", tmp_path):
        with pytest.raises(UserInputError) as info:
            load_lm(path)
        message = str(info.value)
        assert "\n" not in message and message.startswith(f"text.model={path}: no Hugging Face model there")
        assert "Fix:" in message
    broken = tmp_path / "broken"  # config and tokenizer, weights missing then corrupt
    broken.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (broken / name).write_bytes((tiny_lm / name).read_bytes())
    for _ in range(2):
        with pytest.raises(UserInputError) as info:
            load_lm(broken)
        assert "\n" not in str(info.value) and str(info.value).startswith(f"text.model={broken}: ")
        (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(UserInputError, match="text.adapter="):
        load_lm(tiny_lm, adapter=tmp_path / "no_adapter")


# ---------------------------------------------------------------- LoRA SFT


def test_lora_sft_lowers_loss_and_touches_only_lora(sft_run):
    stats, model = sft_run["stats"], sft_run["model"]
    # Optimum is about ln(4)/3 = 0.46 per answer token without reading the comment; below it means
    # the topic is read from the comment.
    assert stats["loss_last"] < stats["loss_first"] - 1.0 and stats["loss_last"] < 0.46, stats["epoch_losses"]
    assert stats["steps"] == 12 * 10 and stats["seconds"] > 0
    assert stats["target_modules"] == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert 0 < stats["trainable_params"] < stats["total_params"]
    peft_model = stats["model"]
    changed_lora = 0
    for name, param in peft_model.named_parameters():
        if "lora_" in name:
            assert param.requires_grad
            changed_lora += 1
        else:
            assert not param.requires_grad
    assert changed_lora > 0
    base_after = dict(peft_model.get_base_model().named_parameters())
    for name, before in sft_run["base_before"].items():
        key = name if name in base_after else name.replace(".weight", ".base_layer.weight")
        assert torch.equal(base_after[key], before), name
    adapter_dir = sft_run["adapter_dir"]
    assert (adapter_dir / "adapter_config.json").is_file()
    assert (adapter_dir / "adapter_model.safetensors").is_file()
    assert json.loads((adapter_dir / "sft_stats.json").read_text())["loss_last"] == stats["loss_last"]
    assert model is peft_model.get_base_model()  # wrapped in place


def test_lora_sft_is_deterministic(tiny_lm, tmp_path):
    runs = []
    for name in ("a", "b"):
        model, tokenizer = load_lm(tiny_lm)
        stats = finetune_lora(model, tokenizer, sft_examples(TRAIN[:64]), tmp_path / name, epochs=2,
                              batch_size=16, lr=1e-2, seed=3, progress=False)
        runs.append((stats["epoch_losses"], (tmp_path / name / "adapter_model.safetensors").read_bytes()))
    assert runs[0] == runs[1]


def test_sft_answer_only_loss_masks_the_prompt(tiny_lm):
    from recbench.text.sft import encode_example

    _, tokenizer = load_lm(tiny_lm)
    ids, labels = encode_example(tokenizer, "评论：火锅好吃\n话题：", "美食", max_length=256)
    answer = tokenizer("美食", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert ids[-len(answer):] == answer and labels[-len(answer):] == answer
    assert set(labels[:-len(answer)]) == {-100} and len(ids) == len(labels)
    ids, labels = encode_example(tokenizer, "很长的提示" * 50, "美食", max_length=8)
    assert len(ids) == 8 and labels[-len(answer):] == answer  # the answer survives truncation


# ---------------------------------------------------------------- embeddings export


def _chunk_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("chunk-*.npy"))


def test_export_writes_manifest_and_embeddings(tiny_lm, tmp_path):
    model, tokenizer = load_lm(tiny_lm)
    texts = [t for _, t in COMMENTS[:70]]
    ids = np.arange(70, dtype=np.int64) * 7 + 3
    folder = export_embeddings(model, tokenizer, ids, texts, tmp_path, "comments", chunk_size=16,
                               batch_size=8, progress=False)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["complete"] is True and manifest["count"] == 70 and manifest["dim"] == 64
    assert manifest["pooling"] == "mean" and manifest["dtype"] == "float32"
    assert manifest["model"] == str(tiny_lm) and manifest["adapter"] is None
    assert [c["rows"] for c in manifest["chunks"]] == [16, 16, 16, 16, 6]
    assert len(_chunk_files(folder)) == 5 and not list(folder.glob(".*tmp"))
    got_ids, matrix = load_embeddings(tmp_path, "comments")
    assert np.array_equal(got_ids, ids) and matrix.shape == (70, 64) and matrix.dtype == np.float32
    assert np.isfinite(matrix).all()
    # Deterministic, and independent of batching (length-sorted batches, padding masked).
    again = export_embeddings(model, tokenizer, ids, texts, tmp_path / "again", "comments", chunk_size=70,
                              batch_size=64, progress=False)
    assert np.allclose(load_embeddings(again.parent, "comments")[1], matrix, atol=1e-5)
    same = export_embeddings(model, tokenizer, ids, texts, tmp_path / "same", "comments", chunk_size=16,
                             batch_size=8, progress=False)
    assert np.array_equal(load_embeddings(same.parent, "comments")[1], matrix)
    # Mean pooling matches a direct forward pass of one text.
    with torch.no_grad():
        batch = tokenizer(texts[5], return_tensors="pt")
        hidden = model(**batch, output_hidden_states=True).hidden_states[-1][0]
    assert np.allclose(matrix[5], hidden.mean(0).numpy(), atol=1e-5)


def test_export_last_token_pooling(tiny_lm, tmp_path):
    model, tokenizer = load_lm(tiny_lm)
    texts = ["火锅[赞]", "今天的视频太好笑了哈哈哈[捂脸]", "喵"]
    folder = export_embeddings(model, tokenizer, np.array([1, 2, 3]), texts, tmp_path, "last",
                               pooling="last", progress=False)
    _, matrix = load_embeddings(folder.parent, "last")
    for row, text in enumerate(texts):
        with torch.no_grad():
            hidden = model(**tokenizer(text, return_tensors="pt"), output_hidden_states=True).hidden_states[-1]
        assert np.allclose(matrix[row], hidden[0, -1].numpy(), atol=1e-5)


def test_export_resumes_after_interruption(tiny_lm, tmp_path, monkeypatch):
    model, tokenizer = load_lm(tiny_lm)
    texts = [t for _, t in COMMENTS[:70]]
    ids = np.arange(70, dtype=np.int64) + 1000
    kwargs = {"chunk_size": 16, "batch_size": 8, "progress": False}
    reference = load_embeddings(
        export_embeddings(model, tokenizer, ids, texts, tmp_path / "ref", "c", **kwargs).parent, "c")

    real = export_mod._embed_chunk
    calls: list[int] = []

    def killed_on_third_chunk(*args, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed mid-export")
        return real(*args, **kw)

    monkeypatch.setattr(export_mod, "_embed_chunk", killed_on_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        export_embeddings(model, tokenizer, ids, texts, tmp_path / "run", "c", **kwargs)
    folder = tmp_path / "run" / "c"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["complete"] is False and len(manifest["chunks"]) == 2
    with pytest.raises(UserInputError, match="unfinished"):
        load_embeddings(tmp_path / "run", "c")
    finished = {p.name: p.stat().st_mtime_ns for p in _chunk_files(folder)}
    assert sorted(finished) == ["chunk-00000.npy", "chunk-00001.npy"]

    def counting(*args, **kw):
        calls.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(export_mod, "_embed_chunk", counting)
    calls.clear()
    export_embeddings(model, tokenizer, ids, texts, tmp_path / "run", "c", **kwargs)
    assert len(calls) == 3  # only the three missing chunks
    assert {n: (folder / n).stat().st_mtime_ns for n in finished} == finished
    got_ids, matrix = load_embeddings(tmp_path / "run", "c")
    assert np.array_equal(got_ids, reference[0]) and np.array_equal(matrix, reference[1])

    calls.clear()  # complete: a rerun recomputes nothing
    export_embeddings(model, tokenizer, ids, texts, tmp_path / "run", "c", **kwargs)
    assert calls == []

    (folder / "chunk-00004.npy").unlink()  # a lost chunk is recomputed, nothing else
    export_embeddings(model, tokenizer, ids, texts, tmp_path / "run", "c", **kwargs)
    assert len(calls) == 1 and np.array_equal(load_embeddings(tmp_path / "run", "c")[1], reference[1])

    calls.clear()  # other texts for the same ids: a different job, everything is recomputed
    changed = texts[:-1] + ["完全不同的评论[赞]"]
    export_embeddings(model, tokenizer, ids, changed, tmp_path / "run", "c", **kwargs)
    assert len(calls) == 5
    assert not np.array_equal(load_embeddings(tmp_path / "run", "c")[1][-1], reference[1][-1])


def test_export_rejects_bad_inputs(tiny_lm, tmp_path):
    model, tokenizer = load_lm(tiny_lm)
    with pytest.raises(UserInputError, match="duplicate ids"):
        export_embeddings(model, tokenizer, np.array([1, 1]), ["a", "b"], tmp_path, "x", progress=False)
    with pytest.raises(UserInputError, match="2 ids but 1 texts"):
        export_embeddings(model, tokenizer, np.array([1, 2]), ["a"], tmp_path, "x", progress=False)
    with pytest.raises(UserInputError, match="pooling"):
        export_embeddings(model, tokenizer, np.array([1]), ["a"], tmp_path, "x", pooling="cls", progress=False)
    with pytest.raises(UserInputError, match="no manifest"):
        load_embeddings(tmp_path, "never_exported")


def test_export_with_peft_model_merged_or_not(sft_run, tiny_lm, tmp_path):
    texts = [t for _, t in HELD_OUT[:20]]
    ids = np.arange(20)
    peft_model, tokenizer = sft_run["stats"]["model"], sft_run["tokenizer"]
    folder = export_embeddings(peft_model, tokenizer, ids, texts, tmp_path / "unmerged", "v", progress=False)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["adapter"] == str(sft_run["adapter_dir"]) and manifest["model"] == str(tiny_lm)
    unmerged = load_embeddings(folder.parent, "v")[1]

    merged_model, tok = load_lm(tiny_lm, adapter=sft_run["adapter_dir"], merge=True)
    merged = load_embeddings(export_embeddings(merged_model, tok, ids, texts, tmp_path / "merged", "v",
                                               progress=False).parent, "v")[1]
    assert np.allclose(merged, unmerged, atol=1e-4)
    base_model, tok = load_lm(tiny_lm)
    base = load_embeddings(export_embeddings(base_model, tok, ids, texts, tmp_path / "base", "v",
                                             progress=False).parent, "v")[1]
    assert not np.allclose(base, unmerged, atol=1e-3)  # the adapter does change the embeddings


def _topic_separation(matrix: np.ndarray, labels: np.ndarray) -> float:
    """Mean cosine within a topic minus mean cosine across topics (after centring)."""
    x = matrix - matrix.mean(0)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    sims = x @ x.T
    same = labels[:, None] == labels[None, :]
    np.fill_diagonal(same, False)
    return float(sims[same].mean() - sims[labels[:, None] != labels[None, :]].mean())


@pytest.mark.parametrize("wrap, pooling, margin", [(False, "mean", 0.15), (True, "last", 0.5)])
def test_sft_pulls_same_topic_texts_together(sft_run, tiny_lm, tmp_path, wrap, pooling, margin):
    """Held-out comments: raw text with mean pooling, or the SFT prompt with last-token pooling.

    Checked over several model seeds when written (raw/mean: +0.31..+0.66, prompt/last: +0.86..+1.06);
    the test itself is deterministic (seed 0)."""
    texts = [p for p, _ in sft_examples(HELD_OUT)] if wrap else [t for _, t in HELD_OUT]
    labels = np.array([list(TOPICS).index(topic) for topic, _ in HELD_OUT])
    ids = np.arange(len(texts))
    base_model, tokenizer = load_lm(tiny_lm)
    before = load_embeddings(export_embeddings(base_model, tokenizer, ids, texts, tmp_path / "b", "h",
                                               pooling=pooling, progress=False).parent, "h")[1]
    after = load_embeddings(export_embeddings(sft_run["stats"]["model"], tokenizer, ids, texts, tmp_path / "a",
                                              "h", pooling=pooling, progress=False).parent, "h")[1]
    assert _topic_separation(after, labels) > _topic_separation(before, labels) + margin


# ----------------------------------------------------------------------------- SIGKILL during the export
STAGE_SETTINGS = {  # small replicas; the exports span several chunks
    "kuaicomt": ["data.replica.n_users=300", "data.replica.n_videos=200", "text.lora.max_length=256",
                 "text.export.chunk_size=48"],
    "kuailive": ["data.replica.n_users=150", "data.replica.n_streamers=120", "data.replica.n_authors=150",
                 "text.lora.max_length=160", "text.export.chunk_size=256"]}
STAGE_PARTS = {"kuaicomt": ("video", "comment"), "kuailive": ("segment",)}


def _text_stage(models: Path, datasets: Path, kill_at: str | None = None, data: str = "kuaicomt"):
    import os
    import subprocess
    import sys

    command = [sys.executable, "-m", "recbench.text", f"data={data}", f"paths.datasets={datasets}",
               f"paths.models={models}", f"paths.experiments={models.parent / 'experiments'}",
               "text.examples_per_task=40", "text.pretrain.max_texts=2000", *STAGE_SETTINGS[data]]
    env = {k: v for k, v in os.environ.items() if k != "RECBENCH_KILL_AT"}
    if kill_at:
        env["RECBENCH_KILL_AT"] = kill_at
    repo = Path(__file__).resolve().parents[1]
    return subprocess.run(command, cwd=repo, capture_output=True, text=True, timeout=600, env=env)


def _stage_dir(models: Path, data: str) -> Path:
    """The one stage folder in models/text/<data>/ (<fingerprint>-<settings hash>; the LM has its own)."""
    (stage,) = [p for p in (models / "text" / data).iterdir() if "-lm-" not in p.name]
    return stage


@pytest.mark.parametrize("data", ["kuaicomt", "kuailive"])  # LCU's stage 1 and LARM's
def test_text_stage_killed_during_export_resumes_to_the_same_embeddings(tmp_path, data):
    datasets = tmp_path / "datasets"
    twin = _text_stage(tmp_path / "twin" / "models", datasets, data=data)
    assert twin.returncode == 0, twin.stderr[-2000:]

    models = tmp_path / "killed" / "models"
    killed = _text_stage(models, datasets, kill_at="export:2", data=data)  # SIGKILL after the 2nd chunk is saved
    assert killed.returncode == -9, killed.stderr[-2000:]
    stage = _stage_dir(models, data)
    assert not (stage / "text_stage.json").exists()  # written last: the stage is not taken as finished
    (name,) = [p.name for p in (stage / "embeddings").iterdir()]  # killed inside the first export
    manifest = json.loads((stage / "embeddings" / name / "manifest.json").read_text())
    assert manifest["complete"] is False and len(manifest["chunks"]) == 2
    with pytest.raises(UserInputError, match="unfinished"):
        load_embeddings(stage / "embeddings", name)
    saved = {e["file"]: (stage / "embeddings" / name / e["file"]).stat().st_mtime_ns for e in manifest["chunks"]}

    resumed = _text_stage(models, datasets, data=data)  # the same command again
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    # same seed -> same LoRA weights -> the two saved chunks are reused, not recomputed
    assert {f: (stage / "embeddings" / name / f).stat().st_mtime_ns for f in saved} == saved
    twin_stage = _stage_dir(tmp_path / "twin" / "models", data)
    assert twin_stage.name == stage.name  # the same dataset fingerprint and settings: the same folder name
    for part in STAGE_PARTS[data]:  # deterministic: the twin run and the resumed run agree bit for bit
        ids, matrix = load_embeddings(stage / "embeddings", part)
        twin_ids, twin_matrix = load_embeddings(twin_stage / "embeddings", part)
        assert np.array_equal(ids, twin_ids) and np.array_equal(matrix, twin_matrix)  # bit for bit


def test_damaged_export_files_are_one_line_errors(tiny_lm, tmp_path):
    model, tokenizer = load_lm(tiny_lm)
    ids = np.arange(20, dtype=np.int64)
    folder = export_embeddings(model, tokenizer, ids, [f"评论{i}" for i in range(20)], tmp_path, "c",
                               chunk_size=8, progress=False)
    (folder / "chunk-00001.npy").unlink()
    with pytest.raises(UserInputError, match="Fix: rerun export_embeddings") as error:
        load_embeddings(tmp_path, "c")
    assert "\n" not in str(error.value)
    (folder / "manifest.json").write_text('{"complete": tr')  # torn manifest
    with pytest.raises(UserInputError, match="manifest.json: unreadable") as error:
        load_embeddings(tmp_path, "c")
    assert "\n" not in str(error.value)
    # a rerun repairs both
    export_embeddings(model, tokenizer, ids, [f"评论{i}" for i in range(20)], tmp_path, "c", chunk_size=8,
                      progress=False)
    assert load_embeddings(tmp_path, "c")[1].shape[0] == 20


def test_a_killed_tiny_lm_build_leaves_no_half_folder(tmp_path, monkeypatch):
    from recbench.text import lm as lm_mod

    def torn(folder):
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(lm_mod, "_portable_tokenizer_class", torn)
    with pytest.raises(KeyboardInterrupt):
        build_tiny_lm(tmp_path / "base", [c for _, c in make_comments(50, 0)], vocab_size=300, hidden=16,
                      layers=1, heads=2)
    assert not (tmp_path / "base").exists() and not list(tmp_path.iterdir())  # temp folder removed too


# ----------------------------------------------------------------------------- pretraining of the tiny LM
def test_pretraining_lowers_held_out_perplexity_and_is_deterministic(tiny_lm, tmp_path):
    from recbench.text.pretrain import perplexity, pretrain_causal_lm

    train, held = [t for _, t in TRAIN], [t for _, t in HELD_OUT]  # held-out comments: never trained on
    runs = []
    for name in ("a", "b"):
        stats = pretrain_causal_lm(tiny_lm, train, tmp_path / name, held_out_texts=held, epochs=6, batch_size=16,
                                   lr=5e-3, max_length=48, seed=0, key="k", progress=False)
        runs.append((stats["epoch_losses"], (tmp_path / name / "model.safetensors").read_bytes()))
    assert runs[0] == runs[1]  # seeded: same weights, byte for byte
    # random weights: about the vocabulary size; pretrained on 160 other comments of the same topics
    assert stats["perplexity_before"] > 500 and stats["perplexity_after"] < stats["perplexity_before"] / 5, stats
    model, tokenizer = load_lm(tmp_path / "a")  # the saved folder loads through the generic path
    assert perplexity(model, tokenizer, held, max_length=48) == pytest.approx(stats["perplexity_after"], rel=1e-4)
    base, _ = load_lm(tiny_lm)
    assert perplexity(base, tokenizer, held, max_length=48) == pytest.approx(stats["perplexity_before"], rel=1e-4)
    assert json.loads((tmp_path / "a" / "pretrain_stats.json").read_text())["key"] == "k"
    assert (tmp_path / "a" / "recbench_tiny_lm.json").is_file() and not list(tmp_path.glob(".*tmp*"))


class ToyTexts:
    """An adapter with texts and no dataset: the stage's contract (text_corpus / text_tasks) only."""

    name = "toy"

    def text_corpus(self, prepared):
        return {"comment": (np.arange(len(COMMENTS), dtype=np.int64) + 100, [t for _, t in COMMENTS])}

    def text_tasks(self, prepared, per_task, seed, general_share=0.0):
        return sft_examples(TRAIN[:per_task])


def _text_settings(out_dir: Path, **changes):
    from omegaconf import OmegaConf

    stage = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "text_stage.yaml")
    small = {"out_dir": str(out_dir), "examples_per_task": 32, "tiny": {"vocab_size": 500, "hidden": 32},
             "pretrain": {"max_texts": 200, "held_out": 40, "batch_size": 32},
             "lora": {"max_length": 64}, "export": {"chunk_size": 100}}
    return OmegaConf.merge(stage.text, small, changes)


def test_both_arms_start_from_one_pretrained_lm_and_a_local_model_skips_pretraining(tiny_lm, tmp_path):
    from recbench.text.stage import run_stage

    lm_dir = tmp_path / "lm"
    tuned = run_stage(ToyTexts(), None, _text_settings(tmp_path / "tuned"), seed=0, lm_dir=lm_dir)
    stats_file = lm_dir / "pretrained" / "pretrain_stats.json"
    written = stats_file.stat().st_mtime_ns
    untuned = run_stage(ToyTexts(), None, _text_settings(tmp_path / "untuned", finetune=False), seed=0, lm_dir=lm_dir)
    assert stats_file.stat().st_mtime_ns == written  # pretrained once, reused by the untuned arm
    for folder, adapter in ((tuned, str(tmp_path / "tuned" / "adapter")), (untuned, None)):
        manifest = json.loads((folder / "comment" / "manifest.json").read_text())
        assert manifest["model"] == str(lm_dir / "pretrained") and manifest["adapter"] == adapter
        stage = json.loads((folder.parent / "text_stage.json").read_text())
        assert stage["pretrained"] and stage["perplexity_held_out_after"] < stage["perplexity_held_out_before"]

    # a local Hugging Face model (here a saved tiny one) is used as given: no pretraining
    local = run_stage(ToyTexts(), None, _text_settings(tmp_path / "local", model=str(tiny_lm)), seed=0)
    assert not (tmp_path / "local" / "pretrained").exists() and not (tmp_path / "local" / "base").exists()
    assert json.loads((local / "comment" / "manifest.json").read_text())["model"] == str(tiny_lm)
    assert json.loads((tmp_path / "local" / "text_stage.json").read_text())["pretrained"] is False


def test_the_settings_hash_covers_the_new_settings_and_the_arms_share_the_lm(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from recbench.text import stage as stage_mod

    calls = []
    monkeypatch.setattr(stage_mod, "run_stage", lambda adapter, prepared, text, seed, lm_dir: calls.append(
        (Path(text.out_dir).name, lm_dir.name)))
    prepared = SimpleNamespace(meta={"fingerprint": "f" * 64})
    for changes in ({}, {"finetune": False}, {"lora": {"r": 4}}, {"general_share": 0.5},
                    {"pretrain": {"epochs": 2}}, {"pretrain": {"enabled": False}}):
        stage_mod.embeddings_for(SimpleNamespace(name="toy"), prepared, changes, tmp_path)
    out_dirs, lm_dirs = zip(*calls)
    assert len(set(out_dirs)) == 6  # every setting names its own stage folder
    assert lm_dirs[0] == lm_dirs[1] == lm_dirs[2] and len(set(lm_dirs[2:])) == 4  # LoRA settings share the LM


# ----------------------------------------------------------------------------- one folder, either entry point
@pytest.fixture(scope="module")
def entry_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("entry")  # one small replica for both cases


class _StageRan(Exception):
    pass


@pytest.mark.parametrize("model,text_overrides", [("lcu", []), ("lcu_untuned_lm", ["text.finetune=false"])])
def test_both_entry_points_resolve_the_same_stage_folder(entry_root, monkeypatch, model, text_overrides):
    """`python -m recbench model=lcu data=kuaicomt` (data.text_embeddings=auto, settings: conf/text_stage.yaml
    changed by the model's `text:` block) and `python -m recbench.text data=kuaicomt` with the same settings
    key the stage by the same dataset fingerprint and settings: one folder, whichever runs first."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    import recbench.config  # noqa: F401  (registers the config resolvers)
    from recbench.data.kuaicomt import KuaiComtAdapter
    from recbench.text import stage as stage_mod
    from recbench.text.__main__ import run_text_stage

    shared = ["data=kuaicomt", f"paths.datasets={entry_root / 'datasets'}", f"paths.models={entry_root / 'models'}",
              *(f"data.replica.{key}={value}" for key, value in KuaiComtAdapter.smoke_replica.items())]
    with initialize_config_dir(str(Path(__file__).resolve().parents[1] / "conf"), version_base="1.3"):
        main = compose("config", overrides=[f"model={model}", *shared])
        alone = compose("text_stage", overrides=[*shared, *text_overrides])
    runs = []

    def record(adapter, prepared, text, seed, lm_dir=None):
        runs.append((Path(text.out_dir), Path(lm_dir), seed))
        raise _StageRan  # where it would run is all this test needs

    monkeypatch.setattr(stage_mod, "run_stage", record)
    assert main.data.text_embeddings == "auto"
    with pytest.raises(_StageRan):
        instantiate(main.data).prepare()  # the main job's path: prepare() -> embeddings_for
    with pytest.raises(_StageRan):
        run_text_stage(alone)
    (auto, cli) = runs
    assert auto == cli, runs
    out_dir, lm_dir, _ = auto
    assert out_dir.parent == lm_dir.parent == entry_root / "models" / "text" / "kuaicomt"
    assert alone.text.out_dir is None  # the command's config is not changed by the run

    # a finished stage is reused by the command too, whichever entry point built it
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / stage_mod.DONE).write_text("{}")
    assert run_text_stage(alone) == out_dir / "embeddings" and len(runs) == 2


def test_the_stage_folder_keys_fingerprint_settings_and_seed_only():
    from recbench.text.stage import auto_settings, stage_folders

    text, seed = auto_settings({"model": None})
    first = stage_folders("kuaicomt", "f" * 20, text, seed, "models/text")
    assert stage_folders("kuaicomt", "f" * 20, auto_settings({})[0], seed, "models/text") == first
    chunked = auto_settings({"export": {"chunk_size": 7}})[0]  # how the export is saved: the same folder
    assert stage_folders("kuaicomt", "f" * 20, chunked, seed, "elsewhere")[0].name == first[0].name
    assert stage_folders("kuaicomt", "f" * 20, text, seed + 1, "models/text")[0] != first[0]
    assert stage_folders("kuaicomt", "e" * 20, text, seed, "models/text")[0] != first[0]
    untuned = stage_folders("kuaicomt", "f" * 20, auto_settings({"finetune": False})[0], seed, "models/text")
    assert untuned[0] != first[0] and untuned[1] == first[1]  # the arms share the LM


# ----------------------------------------------------------------------------- KuaiComt's SFT tasks
@pytest.fixture(scope="module")
def kuaicomt_prepared(tmp_path_factory):
    from omegaconf import OmegaConf

    from recbench.data.kuaicomt import KuaiComtAdapter

    root = tmp_path_factory.mktemp("kuaicomt")
    conf = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "data" / "kuaicomt.yaml").data
    settings = {k: v for k, v in OmegaConf.to_container(conf).items() if k not in ("_target_", "text", "text_dir")}
    settings.update(source="synthetic", raw_dir=str(root / "raw"), cache_dir=str(root / "cache"),
                    replica_dir=str(root / "synthetic"), text_embeddings=None)
    settings["replica"].update(KuaiComtAdapter.smoke_replica)
    adapter = KuaiComtAdapter(**settings)
    return adapter, adapter.prepare()


def _task_of(prompt: str, questions: dict[str, str]) -> str:
    (task,) = [k for k, q in questions.items() if (prompt.startswith(q) if k == "general" else prompt.endswith(q))]
    return task


def test_kuaicomt_has_the_four_sft_tasks_from_training_rows_only(kuaicomt_prepared):
    import collections
    import dataclasses

    import polars as pl

    adapter, prepared = kuaicomt_prepared
    examples = adapter.text_tasks(prepared, per_task=300, seed=2, general_share=0.2)
    by_task = collections.defaultdict(list)
    for prompt, answer in examples:
        by_task[_task_of(prompt, adapter.TEXT_QUESTIONS)].append(answer)
    assert set(by_task) == {"staytime", "top_comment", "interaction", "general"}
    assert len(by_task["general"]) == pytest.approx(0.2 * len(examples), abs=1)
    # staytime: "not opened" plus the three terciles of the opened training staytimes
    stays = collections.Counter(by_task["staytime"])
    assert len(stays) == 4 and "未打开" in stays and min(stays.values()) > 30, stays
    assert all(a == "无" or set(a.split(",")) <= set("123456") for a in by_task["interaction"])
    assert set(by_task["top_comment"]) <= set("123456")
    assert not any(a.strip() == "" for a in by_task["general"])
    assert adapter.text_tasks(prepared, per_task=300, seed=2, general_share=0.2) == examples  # seeded
    assert not any(_task_of(p, adapter.TEXT_QUESTIONS) == "general"
                   for p, _ in adapter.text_tasks(prepared, per_task=50, seed=2))  # general_share=0: none

    # change everything that is not training data: labels of the other splits, and the captions of
    # videos no training impression shows: the examples must not change
    a = prepared.arrays
    arrays = dict(a)
    for split in ("valid", "test"):
        arrays[f"{split}_label_staytime"] = np.asarray(a[f"{split}_label_staytime"]) * 10 + 1
        arrays[f"{split}_label_clicked"] = np.ones_like(a[f"{split}_label_clicked"])
        arrays[f"{split}_comment_score"] = np.random.default_rng(0).random(len(a[f"{split}_comment_score"]))
    train_videos = np.unique(np.asarray(a["sample_video"])[a["train_rows"]])
    captions = prepared.frames["video_text"].with_columns(
        pl.when(pl.col("video").is_in(train_videos.tolist())).then(pl.col("text")).otherwise(pl.lit("泄漏"))
        .alias("text"))
    assert (captions["text"] == "泄漏").any()
    poisoned = dataclasses.replace(prepared, arrays=arrays, frames={**prepared.frames, "video_text": captions})
    assert adapter.text_tasks(poisoned, per_task=300, seed=2, general_share=0.2) == examples
