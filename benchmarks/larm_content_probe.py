"""How much of what a live segment shows do LARM's content embeddings hold? A probe on the KuaiLive replica.

The replica knows each segment's hidden sub-topic and room event (what moves clicks beyond the category
and the author, recbench/data/kuailive_replica.py). For every text-stage folder of the default replica
(the behaviour-aligned stage 1 and the raw pretrained LM), this fits a logistic-regression probe on half
of the distinct segment texts and prints its held-out accuracy for the sub-topic and the event, next to
chance, and how much the cosine geometry follows them (same minus different label). Run after `python -m recbench model=llm_alignment data=kuailive` (and `model=llm_alignment_raw`):

    python benchmarks/larm_content_probe.py [models/text/kuailive]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import polars as pl
from sklearn.linear_model import LogisticRegression

from recbench.data.kuailive_replica import SEGMENT_TEXT_FILE, KuaiLiveReplicaConfig, simulate_kuailive_replica
from recbench.text.export import load_embeddings


def hidden_labels() -> pl.DataFrame:
    """text -> (sub-topic, event) of the default replica (a text names exactly one of each)."""
    replica = simulate_kuailive_replica(KuaiLiveReplicaConfig())
    segments = replica.segments.select("live_id", pl.col("start_ms").alias("timestamp"), "subtopic", "event")
    return (replica.tables[SEGMENT_TEXT_FILE].join(segments, on=["live_id", "timestamp"])
            .select(pl.col("text").str.strip_chars(), "subtopic", "event").unique("text"))


def probe(matrix: np.ndarray, labels: np.ndarray, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    train, test = order[: len(order) // 2], order[len(order) // 2:]
    x = (matrix - matrix[train].mean(0)) / (matrix[train].std(0) + 1e-6)
    model = LogisticRegression(max_iter=300).fit(x[train], labels[train])
    return float((model.predict(x[test]) == labels[test]).mean())


def separation(matrix: np.ndarray, labels: np.ndarray, pairs: int = 200_000, seed: int = 0) -> float:
    """Mean cosine of random text pairs with the same label minus that of pairs with different labels:
    how much the embedding's geometry (what the towers' dot products see) follows the label."""
    rng = np.random.default_rng(seed)
    unit = matrix / (np.linalg.norm(matrix, axis=1, keepdims=True) + 1e-9)
    left, right = rng.integers(len(labels), size=(2, pairs))
    cosine = (unit[left] * unit[right]).sum(1)
    same = labels[left] == labels[right]
    return float(cosine[same].mean() - cosine[~same].mean())


def main(root: Path) -> None:
    labels = hidden_labels()
    for folder in sorted(p for p in root.iterdir() if (p / "text_stage.json").exists()):
        stats = json.loads((folder / "text_stage.json").read_text())
        ids, matrix = load_embeddings(folder / "embeddings", "segment")
        # the export keeps ids only: the texts are in the prepared cache the stage ran on (its fingerprint
        # starts the folder name)
        (texts,) = Path("datasets/kuailive/cache").glob(f"{folder.name.split('-')[0]}*/segment_text.parquet")
        frame = pl.read_parquet(texts).join(labels, on="text", how="inner")
        row = {int(i): k for k, i in enumerate(ids)}
        keep = np.array([row[int(i)] for i in frame["text_id"]])
        chance = {name: float(frame[name].value_counts()["count"].max() / frame.height) for name in ("subtopic", "event")}
        scores = {name: probe(matrix[keep], frame[name].to_numpy()) for name in ("subtopic", "event")}
        gaps = {name: separation(matrix[keep], frame[name].to_numpy()) for name in ("subtopic", "event")}
        arm = "stage 1 (LoRA on behaviour)" if stats["finetuned"] else "raw (pretrained LM, no stage 1)"
        print(f"{folder.name}  {arm}: {frame.height} texts; held-out probe accuracy sub-topic "
              f"{scores['subtopic']:.3f} (majority {chance['subtopic']:.3f}), event {scores['event']:.3f} "
              f"(majority {chance['event']:.3f}); cosine same - different sub-topic {gaps['subtopic']:+.3f}, "
              f"event {gaps['event']:+.3f}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "models/text/kuailive"))
