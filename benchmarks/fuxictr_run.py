"""Train and test one FuxiCTR model on data exported by `python -m recbench.bench`; write json.

Runs in FuxiCTR's own virtual environment (benchmarks/.venv-fuxictr, made by the benchmark), never
in recbench's: FuxiCTR 2.3.x needs polars < 2 and Ray, recbench polars >= 2.

    benchmarks/.venv-fuxictr/bin/python benchmarks/fuxictr_run.py --config-dir DIR --expid DIN_recbench \
        --threads 2 --out result.json [--fix-deepfm-init] [--num-workers N] [--preprocess-only]

DIR holds a FuxiCTR `dataset_config.yaml` + `model_config.yaml` written by the benchmark. The script
follows FuxiCTR's documented flow (demo/example6_DIN_with_sequence_feature.py, model_zoo run_expid.py):
load_config -> FeatureProcessor + build_dataset -> FeatureMap -> model -> RankDataLoader -> fit ->
test. The PyPI wheel ships FuxiCTR's layers but not its model_zoo, so DIN and DeepFM are composed
below from the installed layers exactly as model_zoo/DIN/src/DIN.py and
model_zoo/DeepFM/DeepFM_torch/src/DeepFM.py do (reczoo/FuxiCTR @0245987).

Timing: the seconds of each `train_epoch` minus the validation pass FuxiCTR runs at its end (the
training loop, its Ray data pipeline included), and the seconds of every training step, measured
from the end of the previous step (or the epoch's start) to the end of this one, so a step's time
includes waiting for its batch from the loader. Test predictions are saved with their row ids so
the benchmark scores both frameworks with the same metric code.

`--num-workers N` sets the loader's `num_workers` (FuxiCTR 2.3's ParquetDataLoader: the batches Ray
prefetches; FuxiCTR's model_zoo configs use 3); without it the model config's value holds.
`--preprocess-only` builds FuxiCTR's processed data (vocabularies, encoded parquet, feature_map.json
under data_root) and exits, so that timed runs start from the cache.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import time

import numpy as np
import torch
from torch import nn

from fuxictr.features import FeatureMap
from fuxictr.preprocess import FeatureProcessor, build_dataset
from fuxictr.pytorch.dataloaders import RankDataLoader
from fuxictr.pytorch.layers import (DIN_Attention, FactorizationMachine, FeatureEmbedding,
                                    FeatureEmbeddingDict, MLP_Block)
from fuxictr.pytorch.models import BaseModel
from fuxictr.pytorch.torch_utils import seed_everything
from fuxictr.utils import load_config, set_logger


def _flatten(fields):
    out = []
    for field in fields:
        out += list(field) if isinstance(field, (list, tuple)) else [field]
    return out


class DIN(BaseModel):
    """model_zoo/DIN (FuxiCTR): DIN_Attention per (target, sequence) field group + MLP_Block."""

    def __init__(self, feature_map, model_id="DIN", gpu=-1, dnn_hidden_units=[512, 128, 64],
                 dnn_activations="ReLU", attention_hidden_units=[64], attention_hidden_activations="Dice",
                 attention_output_activation=None, attention_dropout=0, learning_rate=1e-3,
                 embedding_dim=10, net_dropout=0, batch_norm=False,
                 din_target_field=[("item_id", "cate_id")], din_sequence_field=[("click_history", "cate_history")],
                 din_use_softmax=False, embedding_regularizer=None, net_regularizer=None, **kwargs):
        super().__init__(feature_map, model_id=model_id, gpu=gpu, embedding_regularizer=embedding_regularizer,
                         net_regularizer=net_regularizer, **kwargs)
        # yaml has no tuples: a list field group means a tuple of fields
        self.din_target_field = [tuple(f) if isinstance(f, list) else f for f in din_target_field]
        self.din_sequence_field = [tuple(f) if isinstance(f, list) else f for f in din_sequence_field]
        self.embedding_dim = embedding_dim
        self.embedding_layer = FeatureEmbeddingDict(feature_map, embedding_dim)
        self.attention_layers = nn.ModuleList([
            DIN_Attention(embedding_dim * len(target) if isinstance(target, tuple) else embedding_dim,
                          attention_units=attention_hidden_units, hidden_activations=attention_hidden_activations,
                          output_activation=attention_output_activation, dropout_rate=attention_dropout,
                          use_softmax=din_use_softmax)
            for target in self.din_target_field])
        self.dnn = MLP_Block(input_dim=feature_map.sum_emb_out_dim(), output_dim=1, hidden_units=dnn_hidden_units,
                             hidden_activations=dnn_activations, output_activation=self.output_activation,
                             dropout_rates=net_dropout, batch_norm=batch_norm)
        self.compile(kwargs["optimizer"], kwargs["loss"], learning_rate)
        self.reset_parameters()
        self.model_to_device()

    def _embedding(self, field, emb):
        return torch.cat([emb[f] for f in field], -1) if isinstance(field, tuple) else emb[field]

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        emb = self.embedding_layer(X)
        for idx, (target, sequence) in enumerate(zip(self.din_target_field, self.din_sequence_field)):
            first = _flatten([sequence])[0]
            mask = X[first].long() != 0  # padding index 0
            pooled = self.attention_layers[idx](self._embedding(target, emb), self._embedding(sequence, emb), mask)
            for field, part in zip(_flatten([sequence]), pooled.split(self.embedding_dim, dim=-1)):
                emb[field] = part
        return {"y_pred": self.dnn(self.embedding_layer.dict2tensor(emb, flatten_emb=True))}


class DeepFM(BaseModel):
    """model_zoo/DeepFM (FuxiCTR): FeatureEmbedding -> FactorizationMachine (LR + FM) + MLP_Block."""

    def __init__(self, feature_map, model_id="DeepFM", gpu=-1, learning_rate=1e-3, embedding_dim=10,
                 hidden_units=[64, 64, 64], hidden_activations="ReLU", net_dropout=0, batch_norm=False,
                 embedding_regularizer=None, net_regularizer=None, **kwargs):
        super().__init__(feature_map, model_id=model_id, gpu=gpu, embedding_regularizer=embedding_regularizer,
                         net_regularizer=net_regularizer, **kwargs)
        self.embedding_layer = FeatureEmbedding(feature_map, embedding_dim)
        self.fm = FactorizationMachine(feature_map)
        self.mlp = MLP_Block(input_dim=feature_map.sum_emb_out_dim(), output_dim=1, hidden_units=hidden_units,
                             hidden_activations=hidden_activations, output_activation=None,
                             dropout_rates=net_dropout, batch_norm=batch_norm)
        self.compile(kwargs["optimizer"], kwargs["loss"], learning_rate)
        self.reset_parameters()
        self.model_to_device()

    def forward(self, inputs):
        X = self.get_inputs(inputs)
        feature_emb = self.embedding_layer(X)
        y_pred = self.fm(X, feature_emb)
        y_pred += self.mlp(feature_emb.flatten(start_dim=1))
        return {"y_pred": self.output_activation(y_pred)}


def fix_deepfm_linear_init(model, feature_map) -> list[str]:
    """FuxiCTR's LR layer gives each shared-embedding (sequence) field its own 1-d table, but the
    initialiser skips fields marked `share_embedding`: those keep nn.Embedding's N(0, 1) init
    (logits start around +-5). Re-initialise them like every other table (N(0, 1e-4), padding 0)."""
    tables = model.fm.lr_layer.embedding_layer.embedding_layer.embedding_layers
    fixed = []
    with torch.no_grad():
        for name, spec in feature_map.features.items():
            if "share_embedding" in spec and name in tables:
                tables[name].weight[1:].normal_(0.0, 1e-4)
                tables[name].weight[0].zero_()
                fixed.append(name)
    return fixed


MODELS = {"DIN": DIN, "DeepFM": DeepFM}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-dir", required=True)
    parser.add_argument("--expid", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True)
    parser.add_argument("--fix-deepfm-init", action="store_true")
    parser.add_argument("--num-workers", type=int, default=None, help="loader prefetch (default: the model config's)")
    parser.add_argument("--preprocess-only", action="store_true", help="build the processed data, write json, exit")
    parser.add_argument("--seed", type=int, default=None, help="training seed (default: the model config's)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    params = load_config(args.config_dir, args.expid)
    params["gpu"] = -1
    if args.num_workers is not None:
        params["num_workers"] = args.num_workers
    if args.seed is not None:
        params["seed"] = args.seed
    set_logger(params)
    seed_everything(seed=params["seed"])

    started = time.perf_counter()
    processor = FeatureProcessor(feature_cols=params["feature_cols"], label_col=params["label_col"],
                                 dataset_id=params["dataset_id"], data_root=params["data_root"])
    params["train_data"], params["valid_data"], params["test_data"] = build_dataset(processor, **params)
    preprocess_seconds = time.perf_counter() - started  # ~0 when FuxiCTR reuses its cache
    if args.preprocess_only:
        _write_json(args.out, {"preprocess_seconds": preprocess_seconds, "expid": args.expid,
                               "peak_rss_self_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20})
        return

    data_dir = os.path.join(params["data_root"], params["dataset_id"])
    feature_map = FeatureMap(params["dataset_id"], data_dir)
    feature_map.load(os.path.join(data_dir, "feature_map.json"), params)
    seed_everything(seed=params["seed"])
    model = MODELS[params["model"]](feature_map, **params)
    fixed = fix_deepfm_linear_init(model, feature_map) if args.fix_deepfm_init else []
    parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # rows of the id tables (FuxiCTR's 1-d LR weights of DeepFM left out: they are not embeddings)
    embedding_rows = sum(m.num_embeddings for m in model.modules() if isinstance(m, nn.Embedding) and m.embedding_dim > 1)

    train_gen, valid_gen = RankDataLoader(feature_map, stage="train", **params)
    epoch_seconds, eval_seconds = [], []
    step_seconds, step_samples = [], []  # per epoch, per step
    last_end = [0.0]
    train_epoch, eval_step, train_step = model.train_epoch, model.eval_step, model.train_step
    label = feature_map.labels[0]

    def timed_train_step(batch_data):
        loss = train_step(batch_data)
        loss.item()  # the step's work is done (FuxiCTR's loop calls .item() right after, too)
        now = time.perf_counter()
        step_seconds[-1].append(now - last_end[0])
        step_samples[-1].append(int(len(batch_data[label])))
        last_end[0] = now
        return loss

    def timed_eval_step():
        began = time.perf_counter()
        eval_step()
        ended = time.perf_counter()
        eval_seconds[-1] += ended - began
        last_end[0] = ended  # a validation inside the epoch is no step's time

    def timed_train_epoch(generator):
        eval_seconds.append(0.0)
        step_seconds.append([])
        step_samples.append([])
        began = time.perf_counter()
        last_end[0] = began
        train_epoch(generator)
        epoch_seconds.append(time.perf_counter() - began - eval_seconds[-1])

    model.eval_step, model.train_epoch, model.train_step = timed_eval_step, timed_train_epoch, timed_train_step
    model.fit(train_gen, validation_data=valid_gen, **params)  # ends by loading the best-validation weights

    test_gen = RankDataLoader(feature_map, stage="test", **params)
    model.eval()
    preds, rows = [], []
    with torch.no_grad():
        for batch in test_gen:
            preds.append(model.forward(batch)["y_pred"].reshape(-1).double().numpy())
            rows.append(batch["row"].reshape(-1).numpy())
    pred_file = os.path.splitext(args.out)[0] + ".npz"
    np.savez(pred_file, pred=np.concatenate(preds), row=np.concatenate(rows).astype(np.int64))
    test_logs = model.evaluate(test_gen, metrics=["logloss", "AUC"])

    samples = train_gen.num_samples
    result = {"model": params["model"], "expid": args.expid, "train_samples": int(samples),
              "epoch_seconds": epoch_seconds, "eval_seconds": eval_seconds,
              "epoch_samples_per_second": [samples / s for s in epoch_seconds],
              "test_fuxictr_metrics": {k: float(v) for k, v in test_logs.items()},
              "predictions": pred_file, "parameters": int(parameters), "embedding_rows": int(embedding_rows), "preprocess_seconds": preprocess_seconds,
              "deepfm_init_fixed": fixed, "threads": torch.get_num_threads(),
              "num_workers": params.get("num_workers"), "step_seconds": step_seconds, "step_samples": step_samples,
              "glibc_tunables": os.environ.get("GLIBC_TUNABLES"),
              "peak_rss_self_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
              "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                           "fuxictr": __import__("fuxictr").__version__}}
    _write_json(args.out, result)
    logging.info("result: %s", args.out)


def _write_json(path: str, payload: dict) -> None:
    with open(path + ".tmp", "w") as handle:
        json.dump(payload, handle, indent=1)
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
