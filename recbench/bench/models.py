"""(c) Each paper model's training samples/s and peak memory on its default dataset (short run).

`PAPER_MODELS` is the list: one line per (model, dataset, extra overrides for the full run, extra
overrides for --quick). A model whose conf/model/<name>.yaml does not exist yet is listed as
"not available" instead of failing, so a paper can be added here before its plugin lands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recbench.bench.common import REPO, JobFailed, fmt, run_measured, table, timed_median, worker_command

TINY_TMALL = ["data.replica.n_users=150", "data.replica.n_items=1500", "data.replica.episodes_per_user=15"]
TINY_KUAICOMT = ["data.replica.n_users=120", "data.replica.n_videos=150", "data.replica.impressions_per_user=20"]
TINY_KUAILIVE = ["data.replica.n_users=150", "data.replica.n_streamers=150", "data.replica.n_authors=300",
                 "data.replica.live_exposures_per_user=20"]

# model, data, overrides (full run), overrides (--quick)
PAPER_MODELS: list[tuple[str, str, list[str], list[str]]] = [
    ("a2gen", "tmall", [], TINY_TMALL),
    ("lcu", "kuaicomt", [], [*TINY_KUAICOMT, "data.text_embeddings=null"]),  # quick: no text stage
    ("moment_cross", "kuailive", [], TINY_KUAILIVE),
    ("llm_alignment", "kuailive", [], TINY_KUAILIVE),
]
EPOCHS, WARMUP = 3, 1          # short run: 1 warm-up epoch + 2 timed
QUICK_EPOCHS = 2


def available(model: str, data: str) -> bool:
    conf = REPO / "conf"
    return (conf / "model" / f"{model}.yaml").is_file() and (conf / "data" / f"{data}.yaml").is_file()


def run(work: Path, quick: bool, log, threads: int, cpus: int | None = None,
        extra: list[str] | None = None) -> dict[str, Any]:
    """`extra`: overrides for every run (e.g. trainer.accelerator=gpu)."""
    epochs = QUICK_EPOCHS if quick else EPOCHS
    figures: dict[str, Any] = {"epochs": epochs, "warmup": WARMUP, "threads": threads, "models": {},
                               "extra_overrides": list(extra or [])}
    for model, data, full, tiny in PAPER_MODELS:
        key = f"{model}/{data}"
        if not available(model, data):
            figures["models"][key] = {"status": "not available (no conf/model or conf/data yaml yet)"}
            continue
        log(f"bench models: {key}")
        run_dir = work / "runs" / f"model_{model}_{data}"
        overrides = [f"model={model}", f"data={data}", *(tiny if quick else full), f"trainer.max_epochs={epochs}",
                     f"early_stopping.patience={epochs + 1}", "trainer.enable_progress_bar=false",
                     f"paths.experiments={run_dir.parent}", *(extra or [])]
        job = {"kind": "train", "overrides": overrides, "run_dir": str(run_dir), "threads": threads, "cpus": cpus,
               "result": str(run_dir / "bench_result.json")}
        try:
            result = run_measured(worker_command(job, run_dir / "job.json"), run_dir / "bench_result.json",
                                  run_dir / "log.txt")
        except JobFailed as error:
            figures["models"][key] = {"status": "failed", "error": str(error)}
            continue
        rates = result["epoch_samples_per_second"]
        figures["models"][key] = {
            "status": "ok", "samples_per_second": timed_median(rates, WARMUP), "epoch_samples_per_second": rates,
            "peak_tree_rss_gib": result["peak_tree_rss_gib"], "peak_rss_self_gib": result["peak_rss_self_gib"],
            "parameters": result["parameters"], "data_source": result["data_source"],
            "train_rows": (result["dataset_stats"] or {}).get("episodes") or (result["dataset_stats"] or {}).get("rows"),
            "test": {k.split("/", 1)[1]: v for k, v in result["metrics"]["test"].items() if k.endswith("/mean")},
            "overrides": overrides}
    return figures


def report(figures: dict[str, Any]) -> str:
    rows = []
    for key, r in figures["models"].items():
        if r["status"] != "ok":
            rows.append([key, "-", "-", "-", "-", r["status"].split("\n")[0][:60]])
            continue
        rows.append([key, r["data_source"], fmt(r["samples_per_second"]), fmt(r["peak_tree_rss_gib"], 2),
                     fmt(r["parameters"]), "ok"])
    title = (f"(c) paper models, default dataset and settings, {figures['epochs']} epochs "
             f"(median of the last {figures['epochs'] - figures['warmup']}), {figures['threads']} threads")
    return table(title, ["model/data", "source", "train samples/s", "peak GiB", "parameters", "status"], rows)
