"""Any dataset described by a FuxiCTR dataset config -> recbench's `ctr` batches (recbench/data/schema.py).

    python -m recbench model=din data=fuxictr data.config=PATH/dataset_config.yaml data.dataset_id=NAME

What is read: the YAML file `data.config` (or a folder holding `dataset_config.yaml`, or
`dataset_config/*.yaml`, as FuxiCTR's config_dir), whose top-level keys are dataset ids; the entry
`data.dataset_id` gives, as FuxiCTR users write it:
  data_format      csv | parquet (default csv); `sep` (csv separator, default ",") and `n_rows`
                   (read only the first n rows of each file) are read too
  train_data, valid_data, test_data
                   a file, a folder (its *.csv / *.parquet files, in name order) or a glob pattern.
                   A relative path is looked up under the config file's folder first, then under
                   the working directory. Validation and test must be different files (recbench
                   never selects on the test set).
  min_categr_count tokens seen fewer times in the TRAINING files map to the OOV index (default 1;
                   a feature's own `min_categr_count` wins)
  feature_cols     a list of entries; `name` is one column or a list of columns sharing the entry;
                   `active: false` entries are skipped. Per type:
      categorical  dtype str | int. Vocabulary from the training files only, as FuxiCTR builds it:
                   index 0 is padding, tokens counted >= min_categr_count get 1..n (str: most
                   frequent first, ties in token order; int: ascending), n + 1 is OOV (unseen, rare
                   or missing: an empty cell is `fill_na`, default "" for str, which is never in the
                   vocabulary; int cells default to 0). `share_embedding: <field>` merges this
                   feature's tokens into that field's vocabulary (same indices; recbench keeps one
                   table per categorical field, so two categorical fields get separate tables).
                   `source: item` puts a field among spec["item_fields"]; every other categorical
                   field is listed in spec["user_fields"] (user and context fields alike).
      numeric      dtype float | int. An empty cell is `fill_na` (default 0); `normalizer:
                   StandardScaler | MinMaxScaler` is fitted on the training files only (mean and
                   population std, std 0 -> 1; min and max, range 0 -> 1), as FuxiCTR does. The
                   models embed value i as value x a learned vector (FuxiCTR's numeric embedding).
      sequence     tokens joined by `splitter` (default "^") in a string column, or a parquet list
                   column. It must `share_embedding` a categorical field: it becomes that field's
                   history `hist_<field>` (DIN attends it, DeepFM / DCN pool it, MMoE / PLE attend
                   it). Its tokens join that field's vocabulary (FuxiCTR's merge: new tokens after
                   the field's own, then OOV); an empty token is padding. `max_len` (0 or absent: the
                   longest sequence in the training files) and `padding: pre | post` (default post).
                   A LONGER SEQUENCE IS TRUNCATED, as FuxiCTR does, on the padding side: `pre` keeps
                   the last max_len tokens, `post` the first max_len; the stats count truncated rows
                   and the build prints one note. All histories share one width (the largest
                   max_len) and one mask (`hist_mask`: a position holds a token in any history).
      meta         not a feature; a meta (or any) column may be the GAUC group (`data.group_id`).
  label_col        {name, dtype} or a list of them; every value must be 0 or 1 (a missing one is an
                   error unless the entry has `fill_na`). One label: task=ctr; several: a multi-task
                   head (task=live task.heads.multitask.task_weights=null), or task=ctr on the
                   label `data.ctr_label` (default: the first label_col, as FuxiCTR's single-task
                   models). A label column may not also be a feature (that would leak the label).
  group_id         the GAUC group column (FuxiCTR's model-config key, read here too); `data.group_id`
                   wins. Neither given: the first categorical field with `source: user`, else a
                   column named user_id / userid / user, else one group for all rows (GAUC = AUC).

Not supported (one line naming the key; these change what FuxiCTR builds, so they are never
silently ignored): valid_size / test_size / split_type (splitting the training file), weight_col
(sample weights), `preprocess` (a FuxiCTR Python method), category_processor / num_buckets
(quantile or hash buckets), pretrained_emb (and pretrain_dim, freeze_emb, pretrain_usage),
vocab_size, type: embedding, remap: false on categorical or sequence features, normalizers other
than StandardScaler / MinMaxScaler, categorical dtype float, a sequence that shares no categorical
field's vocabulary (a multi-valued feature), two sequences sharing one field, data formats other
than csv / parquet (npz, h5, tfrecord). Unknown keys are an error too (FuxiCTR ignores a misspelt
`share_embeding`; recbench names it).

Read but ignored (they choose how FuxiCTR's models or files work, not what the data is):
data_root (FuxiCTR writes its processed data there; recbench caches under data.cache_dir),
rebuild_dataset, data_block_size, streaming; per feature embedding_dim, feature_encoder / encoder
(the recbench model decides how a history is pooled), emb_output_dim, na_value (FuxiCTR 1.x; 2.x
reads fill_na).

No `data.config`: a small SYNTHETIC dataset in FuxiCTR's format (write_fuxictr_replica: a
dataset_config.yaml and train / valid / test CSV files in time order; user, item and category ids,
an hour, a price, item and category click histories, labels click and like with planted signal:
a user's interest categories and recent clicks raise the click rate), with a loud banner.

Code map (FuxiCTRAdapter, in order):
  source           resolve_source: data.config (raw) or the replica (synthetic); _dataset parses it
  parse            find_dataset (the YAML entry), parse_dataset -> DatasetConfig (features, labels, files)
  fingerprint      fingerprint: the parsed entry + every data file's bytes
  build            _read_split (per file: columns, types, NaN / inf, 0/1 labels, with the line) ->
                   vocabularies (training split) -> encoded arrays -> spec + stats
  arrays           cat_<i> [N] (spec user_fields + item_fields order), seq_<j> [N, L] (history_fields
                   order), hist_mask [N, L], numeric [N, F], label_<k> [N], group [N]; <split>_rows
                   index rows of all splits stacked (train, then valid, then test)
  assemble         a batch: the fields, group, hist_<field>, hist_mask, numeric, label_<name>
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
import yaml

from recbench.data import schema
from recbench.data.base import DatasetAdapter, Prepared, banner, hash_files, take
from recbench.errors import UserInputError
from recbench.records import atomic_folder

CONFIG_NAME = "dataset_config.yaml"
REPLICA_ID = "recbench_synthetic"       # dataset id of the synthetic replica's config
REPLICA_LABELS = ("click", "like")
SPLITS = ("train", "valid", "test")
FORMATS = ("csv", "parquet")
TYPES = ("categorical", "numeric", "sequence", "meta")
NORMALIZERS = ("StandardScaler", "MinMaxScaler")
GROUP_NAMES = ("user_id", "userid", "user")  # group_id fallback: a column with one of these names
RESERVED = ("group", "numeric", "hist_mask")  # batch keys that a categorical field may not be named

DATASET_KEYS = ("data_format", "train_data", "valid_data", "test_data", "feature_cols", "label_col",
                "min_categr_count", "group_id", "sep", "n_rows")
DATASET_IGNORED = ("data_root", "rebuild_dataset", "data_block_size", "streaming")
DATASET_UNSUPPORTED = {
    "valid_size": "splitting the training file. Fix: give valid_data and test_data files",
    "test_size": "splitting the training file. Fix: give valid_data and test_data files",
    "split_type": "splitting the training file. Fix: give valid_data and test_data files",
    "weight_col": "sample weights. Fix: remove weight_col (every sample then weighs 1)"}
FEATURE_KEYS = ("name", "active", "dtype", "type", "source", "fill_na", "min_categr_count", "share_embedding",
                "splitter", "max_len", "padding", "normalizer", "remap")
FEATURE_IGNORED = ("embedding_dim", "feature_encoder", "encoder", "emb_output_dim", "na_value")
FEATURE_UNSUPPORTED = {
    "preprocess": "a FuxiCTR Python method recbench does not run. Fix: write the derived column into the files",
    "category_processor": "quantile / hash buckets. Fix: write the bucket ids into the files as a categorical column",
    "num_buckets": "quantile / hash buckets. Fix: write the bucket ids into the files as a categorical column",
    "pretrained_emb": "pretrained embeddings. Fix: remove it (the table is learned from scratch)",
    "pretrain_dim": "pretrained embeddings. Fix: remove it",
    "freeze_emb": "pretrained embeddings. Fix: remove it",
    "pretrain_usage": "pretrained embeddings. Fix: remove it",
    "vocab_size": "a vocabulary given instead of built. Fix: remove it (recbench builds it from the training files)"}
LABEL_KEYS = ("name", "dtype", "fill_na")
DEFAULT_DTYPE = {"categorical": "str", "numeric": "float", "sequence": "str", "meta": "str"}
DTYPES = {"categorical": ("str", "int"), "numeric": ("float", "int"), "sequence": ("str",),
          "meta": ("str", "int", "float")}


@dataclasses.dataclass
class Feature:
    """One active feature column of a FuxiCTR config, defaults filled in."""

    name: str
    type: str
    dtype: str
    fill_na: Any
    na_value: Any            # the token never put in a vocabulary (FuxiCTR: fill_na if given, else "")
    min_count: int
    source: str | None = None
    share: str | None = None
    splitter: str = "^"
    max_len: int = 0
    padding: str = "post"
    normalizer: str | None = None


@dataclasses.dataclass
class DatasetConfig:
    """A parsed dataset entry: where its files are and what each column is."""

    path: Path                        # the YAML file that defines the entry
    dataset_id: str
    data_format: str
    sep: str
    n_rows: int | None
    files: dict[str, list[Path]]      # split -> data files
    features: list[Feature]           # active categorical, numeric and sequence features, in config order
    labels: list[tuple[str, Any]]     # (name, fill_na or None)
    group_id: str | None              # the config's own group_id key

    @property
    def where(self) -> str:
        return f"{self.path} [{self.dataset_id}]"

    def of_type(self, kind: str) -> list[Feature]:
        return [f for f in self.features if f.type == kind]

    def describe(self) -> dict[str, Any]:
        """Everything that changes the built arrays, json-able (part of the fingerprint)."""
        return {"format": self.data_format, "sep": self.sep, "n_rows": self.n_rows,
                "features": [dataclasses.asdict(f) for f in self.features], "labels": self.labels,
                "files": {s: [p.name for p in paths] for s, paths in self.files.items()}}


# ---------------------------------------------------------------------- the config file
def _load_yaml(path: Path) -> dict[str, Any]:
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise UserInputError(f"{path}: not valid YAML{line} ({problem}). Fix: correct the file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserInputError(f"{path}: unreadable ({error}). Fix: check the file") from None
    if not isinstance(document, dict):
        raise UserInputError(f"{path}: not a FuxiCTR dataset config (top-level keys must be dataset ids). "
                             "Fix: pass the dataset_config.yaml file as data.config")
    return document


def config_files(config: str | Path) -> list[Path]:
    """The YAML files of `data.config`: the file itself, or a folder's dataset_config.yaml (else
    its dataset_config/*.yaml), as FuxiCTR's config_dir."""
    path = Path(config).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        files = [path / CONFIG_NAME] if (path / CONFIG_NAME).is_file() else sorted((path / "dataset_config").glob("*.yaml"))
        if files:
            return files
        raise UserInputError(f"{path}: no {CONFIG_NAME} (nor dataset_config/*.yaml) in this folder (data.config). "
                             f"Fix: pass data.config=<path of the FuxiCTR {CONFIG_NAME}>")
    raise UserInputError(f"{path}: file not found (data.config; a relative path starts at the working directory "
                         f"{Path.cwd()}). Fix: pass data.config=<path of a FuxiCTR {CONFIG_NAME}>")


def find_dataset(config: str | Path, dataset_id: str | None) -> tuple[Path, dict[str, Any]]:
    """(the YAML file defining `dataset_id`, its entry)."""
    files = config_files(config)
    ids: list[str] = []
    for path in files:
        document = _load_yaml(path)
        if dataset_id is not None and dataset_id in document:
            entry = document[dataset_id]
            if not isinstance(entry, dict):
                raise UserInputError(f"{path} [{dataset_id}]: the entry is not a mapping of settings. Fix: give it "
                                     "data_format, train_data, valid_data, test_data, feature_cols and label_col")
            return path, entry
        ids += [str(key) for key in document]
    where = files[0] if len(files) == 1 else files[0].parent
    if dataset_id is None:
        raise UserInputError(f"{where}: data.dataset_id is missing (this config defines: {', '.join(ids) or 'none'}). "
                             "Fix: pass data.dataset_id=<one of them>")
    raise UserInputError(f"{where}: no dataset_id '{dataset_id}' (it defines: {', '.join(ids) or 'none'}). "
                         "Fix: pass data.dataset_id=<one of them>")


def first_label(config: str | None, dataset_id: str | None) -> str | None:
    """The first label_col name of a config (None: the replica's), or None when it cannot be read
    (the adapter then reports why). Used by conf/data/fuxictr.yaml's default `ctr_label`."""
    if config is None:
        return REPLICA_LABELS[0]
    try:
        _, entry = find_dataset(config, dataset_id)
        labels = entry.get("label_col")
        labels = labels if isinstance(labels, list) else [labels]
        return str(labels[0]["name"])
    except Exception:  # noqa: BLE001 (any problem is the adapter's to report, in its own words)
        return None


def _int_setting(where: str, key: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise UserInputError(f"{where}: {key} is {value!r}; it must be a whole number >= {low}. Fix: correct it")
    return value


def _resolve_files(where: str, config_dir: Path, key: str, value: Any, data_format: str) -> list[Path]:
    """A train/valid/test_data value -> its files: relative paths try the config's folder, then the
    working directory; a folder means its *.<format> files, a pattern its matches."""
    if not isinstance(value, str) or not value:
        raise UserInputError(f"{where}: {key} is {value!r}, not a path. Fix: set {key} to the {key.split('_')[0]} "
                             f"file (or folder) of this dataset")
    raw = Path(value).expanduser()
    places = [raw] if raw.is_absolute() else [config_dir / raw, Path.cwd() / raw]
    for place in places:
        if place.is_file():
            return [place]
        if place.is_dir():
            found = sorted(p for p in place.glob(f"*.{data_format}") if p.is_file())
            if found:
                return found
        elif any(ch in value for ch in "*?["):
            found = sorted(Path(p) for p in glob.glob(str(place)) if Path(p).is_file())
            if found:
                return found
    tried = " and ".join(str(p) for p in dict.fromkeys(places))
    raise UserInputError(f"{where}: {key} '{value}' not found (looked for {tried}). Fix: correct the path "
                         "(a relative one starts at the config file's folder, then the working directory) "
                         "or put the file there")


def _feature(where: str, raw: dict[str, Any], name: str, min_count: int) -> Feature | None:
    """One feature entry for one column name (None: inactive)."""
    active = raw.get("active", True)
    if active is False or active in ("false", "False"):
        return None
    here = f"{where}, feature '{name}'"
    kind = raw.get("type")
    if kind == "embedding":
        raise UserInputError(f"{here}: type embedding (pre-computed vectors) is not supported. Fix: set active: false")
    if kind not in TYPES:
        raise UserInputError(f"{here}: type is {kind!r}; it must be one of {', '.join(TYPES)}. Fix: correct it")
    for key in raw:
        if key in FEATURE_UNSUPPORTED:
            raise UserInputError(f"{here}: '{key}' is not supported ({FEATURE_UNSUPPORTED[key]}, or set active: false)")
        if key not in FEATURE_KEYS and key not in FEATURE_IGNORED:
            raise UserInputError(f"{here}: unknown key '{key}' (recbench reads {', '.join(FEATURE_KEYS)}; ignores "
                                 f"{', '.join(FEATURE_IGNORED)}). Fix: correct or remove it")
    dtype = raw.get("dtype", DEFAULT_DTYPE[kind])
    dtype = {"string": "str", "integer": "int"}.get(str(dtype), str(dtype))
    if dtype not in DTYPES[kind]:
        raise UserInputError(f"{here}: dtype {dtype!r} is not supported for a {kind} feature (use "
                             f"{' | '.join(DTYPES[kind])}). Fix: correct it")
    if raw.get("remap", True) is False and kind != "meta":
        raise UserInputError(f"{here}: remap: false (raw ids as indices) is not supported. Fix: remove it "
                             "(recbench builds a vocabulary from the training files)")
    normalizer = raw.get("normalizer")
    if normalizer is not None and (kind != "numeric" or normalizer not in NORMALIZERS):
        raise UserInputError(f"{here}: normalizer {normalizer!r} is not supported (numeric features: "
                             f"{' | '.join(NORMALIZERS)}). Fix: correct or remove it")
    default_fill = {"str": "", "int": 0, "float": 0.0}[dtype]
    has_fill = raw.get("fill_na") is not None
    fill = raw["fill_na"] if has_fill else default_fill
    if dtype in ("int", "float") and (isinstance(fill, bool) or not isinstance(fill, (int, float))):
        raise UserInputError(f"{here}: fill_na {fill!r} is not a number (dtype {dtype}). Fix: correct it")
    feature = Feature(name=name, type=kind, dtype=dtype, fill_na=str(fill) if dtype == "str" else fill,
                      na_value=(str(fill) if dtype == "str" else fill) if has_fill else "",
                      min_count=_int_setting(here, "min_categr_count", raw.get("min_categr_count", min_count), 1),
                      source=raw.get("source"), share=raw.get("share_embedding"), normalizer=normalizer)
    if kind == "sequence":
        splitter = raw.get("splitter", "^")
        if not isinstance(splitter, str) or not splitter:
            raise UserInputError(f"{here}: splitter {splitter!r} is not a non-empty string. Fix: correct it")
        padding = raw.get("padding", "post")
        if padding not in ("pre", "post"):
            raise UserInputError(f"{here}: padding {padding!r} is not pre or post. Fix: correct it")
        feature.splitter, feature.padding = splitter, padding
        feature.max_len = _int_setting(here, "max_len", raw.get("max_len", 0) or 0, 0)
    return feature


def parse_dataset(path: Path, dataset_id: str, entry: dict[str, Any]) -> DatasetConfig:
    """Check a dataset entry and fill in FuxiCTR's defaults (one line per problem)."""
    where = f"{path} [{dataset_id}]"
    for key, value in entry.items():
        if key in DATASET_UNSUPPORTED and value not in (None, 0, False, "sequential"):
            raise UserInputError(f"{where}: '{key}' is not supported ({DATASET_UNSUPPORTED[key]})")
        if key not in DATASET_KEYS and key not in DATASET_IGNORED and key not in DATASET_UNSUPPORTED:
            raise UserInputError(f"{where}: unknown key '{key}' (recbench reads {', '.join(DATASET_KEYS)}; ignores "
                                 f"{', '.join(DATASET_IGNORED)}). Fix: correct or remove it")
    data_format = entry.get("data_format", "csv")
    if data_format not in FORMATS:
        raise UserInputError(f"{where}: data_format {data_format!r} is not supported (csv | parquet). Fix: convert "
                             "the files to csv or parquet")
    sep = entry.get("sep", ",")
    if not isinstance(sep, str) or len(sep) != 1:
        raise UserInputError(f"{where}: sep {sep!r} is not one character. Fix: correct it")
    n_rows = entry.get("n_rows")
    if n_rows is not None:
        n_rows = _int_setting(where, "n_rows", n_rows, 1)
    files = {}
    for split in SPLITS:
        key = f"{split}_data"
        if entry.get(key) is None:
            raise UserInputError(f"{where}: no {key} (recbench needs train, validation and test files). Fix: add "
                                 f"{key}: <its file>")
        files[split] = _resolve_files(where, path.parent, key, entry[key], data_format)
    if {p.resolve() for p in files["valid"]} & {p.resolve() for p in files["test"]}:
        raise UserInputError(f"{where}: valid_data and test_data are the same file ({files['test'][0]}); recbench "
                             "never selects a model on its test rows. Fix: give a validation file distinct from the "
                             "test file (e.g. the last days of the training file)")
    min_count = _int_setting(where, "min_categr_count", entry.get("min_categr_count", 1), 1)

    columns = entry.get("feature_cols")
    columns = [columns] if isinstance(columns, dict) else columns
    if not isinstance(columns, list) or not columns:
        raise UserInputError(f"{where}: no feature_cols list. Fix: list the feature columns (name, dtype, type)")
    features: list[Feature] = []
    seen: set[str] = set()
    for raw in columns:
        if not isinstance(raw, dict) or "name" not in raw:
            raise UserInputError(f"{where}: a feature_cols entry {raw!r} has no name. Fix: give it name: <column>")
        names = raw["name"] if isinstance(raw["name"], list) else [raw["name"]]
        for name in names:
            if not isinstance(name, str) or not name:
                raise UserInputError(f"{where}: feature name {name!r} is not a column name. Fix: correct it")
            if name in seen:
                raise UserInputError(f"{where}: feature '{name}' is listed twice. Fix: keep one entry")
            seen.add(name)
            feature = _feature(where, raw, name, min_count)
            if feature is not None:
                features.append(feature)

    raw_labels = entry.get("label_col")
    raw_labels = raw_labels if isinstance(raw_labels, list) else [raw_labels]
    labels: list[tuple[str, Any]] = []
    for raw in raw_labels:
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise UserInputError(f"{where}: label_col {raw!r} has no name. Fix: label_col: {{name: <column>, dtype: float}}")
        for key in raw:
            if key not in LABEL_KEYS:
                raise UserInputError(f"{where}, label '{raw['name']}': key '{key}' is not supported (recbench reads "
                                     f"{', '.join(LABEL_KEYS)}). Fix: remove it")
        if raw["name"] in seen:
            raise UserInputError(f"{where}: column '{raw['name']}' is both a label and a feature (the label would leak "
                                 "into the inputs). Fix: remove it from feature_cols or set active: false there")
        if raw["name"] in (name for name, _ in labels):
            raise UserInputError(f"{where}: label '{raw['name']}' is listed twice. Fix: keep one")
        labels.append((raw["name"], raw.get("fill_na")))
    group_id = entry.get("group_id")
    config = DatasetConfig(path=path, dataset_id=dataset_id, data_format=data_format, sep=sep, n_rows=n_rows,
                           files=files, features=features, labels=labels,
                           group_id=str(group_id) if group_id is not None else None)
    _check_sharing(config)
    return config


def _check_sharing(config: DatasetConfig) -> None:
    where = config.where
    categorical = {f.name: f for f in config.of_type("categorical")}
    history_of: dict[str, str] = {}
    for feature in config.features:
        here = f"{where}, feature '{feature.name}'"
        if feature.type in ("numeric", "meta") and feature.share:
            raise UserInputError(f"{here}: share_embedding on a {feature.type} feature. Fix: remove it")
        if feature.type == "categorical" and feature.name in RESERVED:
            raise UserInputError(f"{here}: the name '{feature.name}' is a recbench batch key ({', '.join(RESERVED)}). "
                                 "Fix: rename the column")
        if feature.type not in ("categorical", "sequence"):
            continue
        if feature.type == "sequence" and not feature.share:
            raise UserInputError(f"{here}: a sequence that shares no categorical field's embedding (a multi-valued "
                                 "feature) is not supported; recbench's models read a sequence as the history of "
                                 "a field. Fix: set share_embedding: <the field its tokens are>, or active: false")
        if not feature.share:
            continue
        target = categorical.get(feature.share)
        if target is None or target.share:
            raise UserInputError(f"{here}: share_embedding '{feature.share}' is not an active categorical feature with "
                                 "its own vocabulary. Fix: name one")
        if target.dtype != feature.dtype:
            raise UserInputError(f"{here}: its tokens (dtype {feature.dtype}) can never match those of "
                                 f"'{target.name}' (dtype {target.dtype}). Fix: give both dtype: str")
        if feature.type == "sequence":
            if feature.share in history_of:
                raise UserInputError(f"{here}: '{history_of[feature.share]}' is already the history of "
                                     f"'{feature.share}'; recbench's models read one history per field. Fix: set "
                                     "active: false on one of them")
            history_of[feature.share] = feature.name
            if f"hist_{feature.share}" in categorical:
                raise UserInputError(f"{here}: the categorical column 'hist_{feature.share}' has the name of this "
                                     "history's batch key. Fix: rename that column")
    for name, _ in config.labels:
        if f"label_{name}" in categorical:
            raise UserInputError(f"{where}: the categorical column 'label_{name}' has the name of label '{name}''s "
                                 "batch key. Fix: rename that column")


# ---------------------------------------------------------------------- reading the files
def _columns_of(path: Path, config: DatasetConfig) -> list[str]:
    try:
        if config.data_format == "csv":
            return pl.read_csv(path, separator=config.sep, n_rows=0, infer_schema=False).columns
        return list(pl.read_parquet_schema(path))
    except (pl.exceptions.NoDataError, pl.exceptions.ComputeError, OSError) as error:
        detail = str(error).strip().splitlines()
        raise UserInputError(f"{path}: not a readable {config.data_format} file ({detail[0] if detail else error}). "
                             "Fix: check the file and data_format") from None


def _position(config: DatasetConfig, index: int) -> str:
    return f"line {index + 2}" if config.data_format == "csv" else f"row {index + 1}"


def _first(frame: pl.DataFrame, bad: pl.Series, column: str) -> tuple[int, str]:
    """(row index, raw value) of the first True in `bad`."""
    index = int(bad.arg_true()[0])
    value = frame[column][index]
    return index, "" if value is None else str(value)


def _fail(path: Path, column: str, config: DatasetConfig, index: int, raw: str, problem: str, fix: str) -> None:
    raise UserInputError(f"{path}, column '{column}': {_position(config, index)} has '{raw}', {problem}. Fix: {fix}")


def _as_float(path: Path, config: DatasetConfig, frame: pl.DataFrame, column: str, fill: Any, what: str) -> pl.Series:
    """A column as float64: an empty cell is `fill` (None: an error), a non-number or NaN / inf an error."""
    raw = frame[column]
    if raw.dtype == pl.String:  # a blank cell is an empty one
        raw = raw.str.strip_chars().replace("", None)
        values = raw.cast(pl.Float64, strict=False)
    elif raw.dtype.is_numeric() or raw.dtype == pl.Boolean:
        values = raw.cast(pl.Float64)
    else:
        _fail(path, column, config, 0, str(raw[0]), f"of type {raw.dtype}, not a number ({what})",
              "store numbers in this column")
    unparsed = values.is_null() & raw.is_not_null()
    if unparsed.any():
        index, value = _first(frame, unparsed, column)
        _fail(path, column, config, index, value, f"not a number ({what})", "correct or drop that row")
    if fill is None and values.is_null().any():
        index, value = _first(frame, values.is_null(), column)
        _fail(path, column, config, index, value, f"an empty value ({what})", "fill or drop that row")
    values = values.fill_null(float(fill if fill is not None else 0.0))
    not_finite = values.is_nan() | values.is_infinite()
    if not_finite.any():
        index, value = _first(frame, not_finite, column)
        _fail(path, column, config, index, value, f"NaN or infinite ({what})",
              "correct or drop that row (an empty cell is filled with fill_na)")
    return values


def _read_file(path: Path, config: DatasetConfig, group: str | None) -> pl.DataFrame:
    """One data file -> a frame of canonical columns: categorical str -> String, int -> Int64;
    numeric and labels -> Float64 (checked); sequences -> List(String); the group -> String."""
    wanted = [f.name for f in config.features] + [name for name, _ in config.labels]
    if group is not None and group not in wanted:
        wanted.append(group)
    present = _columns_of(path, config)
    for column in wanted:
        if column not in present:
            shown = ", ".join(present[:12]) + (", ..." if len(present) > 12 else "")
            raise UserInputError(f"{path}, column '{column}': not in the file (its columns: {shown}). Fix: add the "
                                 f"column, correct the name in {config.path} or set active: false on that feature")
    try:
        if config.data_format == "csv":
            frame = pl.read_csv(path, separator=config.sep, columns=wanted, infer_schema=False, n_rows=config.n_rows)
        else:
            frame = pl.read_parquet(path, columns=wanted, n_rows=config.n_rows)
    except (pl.exceptions.PolarsError, OSError) as error:
        detail = str(error).strip().splitlines()
        raise UserInputError(f"{path}: could not be read as {config.data_format} "
                             f"({detail[0] if detail else type(error).__name__}). Fix: check the file") from None
    out: dict[str, pl.Series] = {}
    for feature in config.features:
        name, raw = feature.name, frame[feature.name]
        what = f"{feature.type} feature, dtype {feature.dtype}"
        if feature.type == "meta":
            continue
        if feature.type == "numeric":
            out[name] = _as_float(path, config, frame, name, feature.fill_na, what)
        elif feature.type == "sequence":
            if isinstance(raw.dtype, pl.List):  # a parquet list column; a missing or empty list is one NA token
                tokens = frame.select(pl.col(name).cast(pl.List(pl.String))
                                      .list.eval(pl.element().fill_null(feature.fill_na))).to_series()
                empty = (tokens.list.len() == 0).fill_null(True)
                tokens = frame.select(pl.when(pl.lit(empty)).then(pl.lit([feature.fill_na], dtype=pl.List(pl.String)))
                                      .otherwise(pl.lit(tokens))).to_series()
            else:
                tokens = raw.cast(pl.String).fill_null(feature.fill_na).str.split(feature.splitter)
            out[name] = tokens
        elif feature.dtype == "int":
            if raw.dtype.is_float():  # 3.0 is the id 3; 3.5 (or NaN) is not an id
                values = frame.select(pl.when(pl.col(name) == pl.col(name).round(0))
                                      .then(pl.col(name).cast(pl.Int64, strict=False))).to_series()
            elif raw.dtype.is_integer():
                values = raw.cast(pl.Int64)
            else:
                values = raw.cast(pl.String).str.strip_chars().cast(pl.Int64, strict=False)
            unparsed = values.is_null() & raw.is_not_null()
            if unparsed.any():
                index, value = _first(frame, unparsed, name)
                _fail(path, name, config, index, value, f"not a whole number ({what})",
                      "correct that row or declare the feature dtype: str")
            out[name] = values.fill_null(int(feature.fill_na))
        else:
            out[name] = raw.cast(pl.String).fill_null(feature.fill_na)
    for label, fill in config.labels:
        values = _as_float(path, config, frame, label, fill, "label")
        binary = (values == 0.0) | (values == 1.0)
        if not binary.all():
            index, value = _first(frame, ~binary, label)
            _fail(path, label, config, index, value, "not 0 or 1 (recbench's CTR and multi-task heads score binary "
                  "labels)", "correct or drop that row")
        out[f"label:{label}"] = values
    if group is not None:
        out["group:"] = frame[group].cast(pl.String).fill_null("")
    return pl.DataFrame(out)


def _read_split(config: DatasetConfig, split: str, group: str | None) -> pl.DataFrame:
    frames = [_read_file(path, config, group) for path in config.files[split]]
    return frames[0] if len(frames) == 1 else pl.concat(frames, how="vertical")


# ---------------------------------------------------------------------- vocabularies
def _vocabulary(tokens: pl.Series, feature: Feature) -> list[Any]:
    """The tokens of a training column (or all tokens of a sequence) that enter its vocabulary,
    in index order (index = position + 1): counted >= min_count, the NA token left out; str tokens
    most frequent first (ties in token order), int tokens ascending, as FuxiCTR orders them."""
    counts = tokens.drop_nulls().value_counts(name="count")
    column = counts.columns[0]
    counts = counts.filter(pl.col("count") >= feature.min_count)
    if isinstance(feature.na_value, str) == (tokens.dtype == pl.String):
        counts = counts.filter(pl.col(column) != feature.na_value)
    if tokens.dtype == pl.String:
        counts = counts.sort(["count", column], descending=[True, False])
    else:
        counts = counts.sort(column)
    return counts[column].to_list()


def _encode(values: pl.Series, vocab: list[Any]) -> np.ndarray:
    """Indices 1..n of the vocabulary's tokens, n + 1 (OOV) for every other value."""
    oov = len(vocab) + 1
    if not vocab:
        return np.full(len(values), oov, dtype=np.int32)
    mapped = values.replace_strict(vocab, list(range(1, oov)), default=oov, return_dtype=pl.Int32)
    return mapped.to_numpy().astype(np.int32)  # a writable copy


def _encode_sequence(tokens: pl.Series, feature: Feature, vocab: list[Any], max_len: int, width: int) -> np.ndarray:
    """[N, width] indices of a sequence column (0 padding, an NA token is padding too), truncated to
    max_len on the `padding` side and padded on that side, as FuxiCTR does."""
    kept = tokens.list.tail(max_len) if feature.padding == "pre" else tokens.list.head(max_len)
    lengths = kept.list.len().to_numpy().astype(np.int64)
    flat = kept.explode()
    ids = _encode(flat, vocab)
    ids[(flat == feature.na_value).fill_null(True).to_numpy()] = 0
    out = np.zeros((len(lengths), width), dtype=np.int32)
    if len(flat):
        starts = np.cumsum(lengths) - lengths
        row = np.repeat(np.arange(len(lengths)), lengths)
        position = np.arange(len(row)) - np.repeat(starts, lengths)
        if feature.padding == "pre":
            position = position + np.repeat(width - lengths, lengths)
        out[row, position] = ids
    return out


def _normalise(values: np.ndarray, train: np.ndarray, kind: str | None) -> tuple[np.ndarray, dict[str, float]]:
    if kind == "StandardScaler":
        mean, std = float(train.mean()) if len(train) else 0.0, float(train.std()) if len(train) else 1.0
        std = std if std > 0 else 1.0
        return (values - mean) / std, {"mean": mean, "std": std}
    if kind == "MinMaxScaler":
        low, high = (float(train.min()), float(train.max())) if len(train) else (0.0, 1.0)
        span = high - low if high > low else 1.0
        return (values - low) / span, {"min": low, "max": high}
    return values, {}


# ---------------------------------------------------------------------- the adapter
class FuxiCTRAdapter(DatasetAdapter):
    produces = (schema.CTR,)  # the batch contracts it follows (recbench/data/schema.py)
    smoke_replica = {"n_users": 60, "n_items": 240, "n_rows": 2400}  # the smallest replica a one-step smoke run uses

    name = "fuxictr"
    version = "1"
    required_files = (CONFIG_NAME, "train.csv", "valid.csv", "test.csv")  # the replica's files

    def __init__(self, source: str, config: str | None, dataset_id: str | None, cache_dir: str, replica_dir: str,
                 group_id: str | None, ctr_label: str | None, history_fields: list[str] | None,
                 replica: dict[str, Any], use_cache: bool = True) -> None:
        super().__init__(source, raw_dir=str(config or "."), cache_dir=cache_dir, replica_dir=replica_dir,
                         use_cache=use_cache)
        self.config, self.dataset_id = (str(config) if config is not None else None), dataset_id
        self.group_id, self.ctr_label = group_id, ctr_label
        self.history_fields = list(history_fields) if history_fields is not None else None
        self.replica = FuxiCTRReplicaConfig(**replica)
        self._parsed: DatasetConfig | None = None
        self._layout: dict[str, Any] | None = None

    # ------------------------------------------------------------------ source and fingerprint
    @staticmethod
    def config_default(key: str, config: str | None, dataset_id: str | None) -> str | None:
        """Compose-time defaults read from the user's dataset config (conf/data/fuxictr.yaml): `ctr_label`,
        the first label_col, which FuxiCTR's single-task models train on."""
        if key != "ctr_label":
            raise KeyError(f"no compose-time default '{key}' for data=fuxictr")
        return first_label(config, dataset_id)

    def resolve_source(self) -> tuple[str, Path]:
        if self.config is None:
            if self.dataset_id is not None:
                raise UserInputError(f"data.dataset_id={self.dataset_id} names a dataset of a FuxiCTR config, but no "
                                     "data.config is given. Fix: pass data.config=PATH/dataset_config.yaml as well")
            if self.source == "raw":
                raise UserInputError("data.source=raw reads a FuxiCTR config, and no data.config is given. Fix: pass "
                                     "data.config=PATH/dataset_config.yaml data.dataset_id=NAME")
            if self.source == "auto":
                banner("recbench: no data.config given -> using the SYNTHETIC replica of a FuxiCTR dataset.\n"
                        "Results describe generated data only. Pass data.config=PATH/dataset_config.yaml "
                        "data.dataset_id=NAME\nto read your own (data.source=raw makes a missing config an error).",
                        key=(self.name, str(self.replica_dir)))
            folder = self._ensure_replica()
            path, entry = find_dataset(folder / CONFIG_NAME, REPLICA_ID)
            self._parsed = parse_dataset(path, REPLICA_ID, entry)
            return "synthetic", folder
        if self.source == "synthetic":
            raise UserInputError(f"data.source=synthetic and data.config={self.config} contradict each other. Fix: "
                                 "drop data.config (the synthetic replica) or pass data.source=auto")
        path, entry = find_dataset(self.config, self.dataset_id)
        self._parsed = parse_dataset(path, self.dataset_id, entry)
        return "raw", path.parent

    def _dataset(self) -> DatasetConfig:
        if self._parsed is None:
            self.resolve_source()
        return self._parsed

    def group_column(self, config: DatasetConfig) -> str | None:
        """The GAUC group column: data.group_id, the config's group_id, the first categorical field
        with source user, a column named user_id / userid / user; else None (one group)."""
        if self.group_id is not None:
            return self.group_id
        if config.group_id is not None:
            return config.group_id
        for feature in config.of_type("categorical"):
            if feature.source == "user":
                return feature.name
        for name in GROUP_NAMES:
            if any(f.name == name for f in config.features):
                return name
        return None

    def preprocess_config(self) -> dict[str, Any]:
        config = self._dataset()
        return {"dataset": config.describe(), "group": self.group_column(config)}

    def replica_config(self) -> dict[str, Any]:
        return dataclasses.asdict(self.replica)

    def write_replica(self, out_dir: Path) -> None:
        write_fuxictr_replica(out_dir, self.replica)

    def fingerprint(self, files_dir: Path) -> str:
        config = self._dataset()
        digest = hashlib.sha256(json.dumps({"adapter": self.name, "version": self.version,
                                            "preprocess": self.preprocess_config()}, sort_keys=True).encode())
        for split in SPLITS:
            digest.update(f"{split}:{hash_files(config.files[split])}".encode())
        return digest.hexdigest()[:20]

    # ------------------------------------------------------------------ build
    def build(self, files_dir: Path) -> Prepared:
        config = self._dataset()
        group = self.group_column(config)
        frames = {split: _read_split(config, split, group) for split in SPLITS}
        sizes = {split: frames[split].height for split in SPLITS}
        train = frames["train"]
        everything = pl.concat([frames[s] for s in SPLITS], how="vertical")
        del frames

        categorical = config.of_type("categorical")
        sequences = config.of_type("sequence")
        numeric = config.of_type("numeric")
        vocab: dict[str, list[Any]] = {}
        for feature in categorical:  # each field's own tokens first
            if not feature.share:
                vocab[feature.name] = _vocabulary(train[feature.name], feature)
        for feature in [*categorical, *sequences]:  # then the sharing features' new tokens, in config order
            if feature.share:
                counted = train[feature.name].explode() if feature.type == "sequence" else train[feature.name]
                known = set(vocab[feature.share])
                vocab[feature.share] += [t for t in _vocabulary(counted, feature) if t not in known]
        vocab_of = {f.name: vocab[f.share or f.name] for f in [*categorical, *sequences]}

        history_targets = {f.share for f in sequences}
        item_fields = [f.name for f in categorical if f.source == "item" or f.name in history_targets]
        user_fields = [f.name for f in categorical if f.name not in item_fields]
        fields = user_fields + item_fields
        arrays: dict[str, np.ndarray] = {}
        stats: dict[str, Any] = {"rows": sizes,
                                 "group_id": group, "vocabulary_sizes": {}, "oov_rate": {}, "truncated_sequences": {},
                                 "normalizers": {}, "positive_rate": {}}
        boundaries = np.cumsum([0] + [sizes[s] for s in SPLITS])
        for i, name in enumerate(fields):
            ids = _encode(everything[name], vocab_of[name])
            arrays[f"cat_{i}"] = ids
            oov = len(vocab_of[name]) + 1
            stats["vocabulary_sizes"][name] = oov + 1
            stats["oov_rate"][name] = {s: float((ids[boundaries[k]:boundaries[k + 1]] == oov).mean())
                                       if sizes[s] else 0.0 for k, s in enumerate(SPLITS)}

        ordered = sorted(sequences, key=lambda f: item_fields.index(f.share))
        history_fields = [f.share for f in ordered]
        # max_len 0 (or absent): the longest sequence in the training files
        max_lens = [f.max_len or max(1, int(train[f.name].list.len().max() or 1)) for f in ordered]
        width = max(max_lens, default=0)
        mask = np.zeros((everything.height, width), dtype=bool)
        for j, (feature, max_len) in enumerate(zip(ordered, max_lens)):
            ids = _encode_sequence(everything[feature.name], feature, vocab_of[feature.name], max_len, width)
            arrays[f"seq_{j}"] = ids
            mask |= ids != 0
            lengths = everything[feature.name].list.len().to_numpy()
            counts = {split: int((lengths[boundaries[k]:boundaries[k + 1]] > max_len).sum())
                      for k, split in enumerate(SPLITS)}
            stats["truncated_sequences"][feature.name] = counts
            if any(counts.values()):
                print(f"recbench: note: {config.where}: {sum(counts.values())} rows of sequence '{feature.name}' "
                      f"({counts}) are longer than max_len={max_len} and were truncated as FuxiCTR does "
                      f"(padding: {feature.padding} keeps the {'last' if feature.padding == 'pre' else 'first'} "
                      f"{max_len} tokens)", file=sys.stderr, flush=True)
        arrays["hist_mask"] = mask

        columns = []
        n_train = sizes["train"]
        for feature in numeric:
            values = everything[feature.name].to_numpy().astype(np.float64)
            values, fitted = _normalise(values, values[:n_train], feature.normalizer)
            if feature.normalizer:
                stats["normalizers"][feature.name] = {"kind": feature.normalizer, **fitted}
            columns.append(values.astype(np.float32))
        arrays["numeric"] = (np.stack(columns, 1) if columns else np.zeros((everything.height, 0), np.float32))

        tasks = [name for name, _ in config.labels]
        for k, name in enumerate(tasks):
            labels = everything[f"label:{name}"].to_numpy().astype(np.float32)
            arrays[f"label_{k}"] = labels
            stats["positive_rate"][name] = {s: float(labels[boundaries[i]:boundaries[i + 1]].mean())
                                            if sizes[s] else float("nan") for i, s in enumerate(SPLITS)}
        if group is not None:
            arrays["group"] = everything["group:"].rank("dense").to_numpy().astype(np.int64)
        else:
            arrays["group"] = np.zeros(everything.height, dtype=np.int64)
        for k, split in enumerate(SPLITS):
            arrays[f"{split}_rows"] = np.arange(boundaries[k], boundaries[k + 1], dtype=np.int64)

        cardinalities = {name: len(vocab_of[name]) + 2 for name in fields}
        spec = {"cardinalities": cardinalities, "user_fields": user_fields, "item_fields": item_fields,
                "history_fields": history_fields, "history_length": int(width),
                "numeric_fields": [f.name for f in numeric], "tasks": tasks,
                "history_columns": {f.share: f.name for f in ordered}}
        return Prepared(arrays=arrays, meta={"spec": spec, "splits": sizes, "stats": stats})

    def attach(self, prepared: Prepared) -> None:
        """Remember the batch layout; check data.ctr_label and data.history_fields against the data."""
        spec = prepared.meta["spec"]
        where = self._parsed.where if self._parsed is not None else f"dataset '{self.name}'"
        if self.ctr_label is not None and self.ctr_label not in spec["tasks"]:
            raise UserInputError(f"{where}: data.ctr_label={self.ctr_label} is not one of its labels "
                                 f"({', '.join(spec['tasks'])}). Fix: pass data.ctr_label=<one of them>")
        if self.history_fields is not None:
            unknown = [f for f in self.history_fields if f not in spec["history_fields"]]
            if unknown:
                raise UserInputError(f"{where}: data.history_fields names {', '.join(unknown)}, which no sequence "
                                     f"shares (fields with a history: {', '.join(spec['history_fields']) or 'none'}). "
                                     "Fix: pass data.history_fields=[<some of them>] or null")
        if self._parsed is not None:  # set on every load: a cache may have been built from another copy of the files
            prepared.meta["stats"].update(dataset_id=self._parsed.dataset_id, config=str(self._parsed.path.resolve()))
        self._layout = {"fields": [*spec["user_fields"], *spec["item_fields"]],
                        "history": list(spec["history_fields"]), "tasks": list(spec["tasks"])}

    # ------------------------------------------------------------------ batches
    def assemble(self, tables: dict[str, torch.Tensor], split: str, rows: torch.Tensor,
                 keys: frozenset[str] | None = None) -> dict[str, torch.Tensor]:
        """The batch of `rows` of a split (every key, or only `keys`)."""
        layout = self._layout
        wanted = (lambda key: True) if keys is None else keys.__contains__  # noqa: E731
        at = take(tables[f"{split}_rows"], rows)
        batch = {name: take(tables[f"cat_{i}"], at).long() for i, name in enumerate(layout["fields"]) if wanted(name)}
        if wanted("group"):
            batch["group"] = take(tables["group"], at)
        for j, name in enumerate(layout["history"]):
            if wanted(f"hist_{name}"):
                batch[f"hist_{name}"] = take(tables[f"seq_{j}"], at).long()
        if wanted("hist_mask"):
            batch["hist_mask"] = take(tables["hist_mask"], at)
        if wanted("numeric"):
            batch["numeric"] = take(tables["numeric"], at)
        for k, name in enumerate(layout["tasks"]):
            if wanted(f"label_{name}"):
                batch[f"label_{name}"] = take(tables[f"label_{k}"], at)
        return batch


# ---------------------------------------------------------------------- the synthetic replica
@dataclasses.dataclass(frozen=True)
class FuxiCTRReplicaConfig:
    n_users: int = 2000            # users (activity heavy-tailed)
    n_items: int = 4000            # items (popularity heavy-tailed), in ~n_items / 50 categories
    n_rows: int = 60000            # impressions, in time order: 80% train, 10% validation, 10% test
    history_length: int = 10       # max_len of the click histories (the user's last clicked items)
    seed: int = 0                  # generator seed (fixed: the replica is part of the benchmark)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def write_fuxictr_replica(out_dir: Path, cfg: FuxiCTRReplicaConfig) -> None:
    """A FuxiCTR-format CTR dataset: dataset_config.yaml + train / valid / test CSV files.

    Planted signal: an item of one of the user's two interest categories is clicked more often, and
    so is an item of a category among the user's recent clicks (what DIN's attention over the click
    history can find); the hour and a (normalised) price shift the rate a little; `like` follows a
    click with a rate that grows with the item's hidden quality."""
    rng = np.random.default_rng(cfg.seed)
    n_users, n_items, n_rows = int(cfg.n_users), int(cfg.n_items), int(cfg.n_rows)
    n_cats = max(4, n_items // 50)
    cat_weight = 1.0 / np.arange(1, n_cats + 1) ** 0.8
    cat_weight /= cat_weight.sum()
    item_cat = rng.choice(n_cats, n_items, p=cat_weight)
    item_cat[:n_cats] = np.arange(n_cats)  # every category has an item
    log_price = rng.normal(3.0, 0.6, n_cats)[item_cat] + rng.normal(0.0, 0.4, n_items)
    price = np.round(np.exp(log_price), 2)
    price_z = (log_price - log_price.mean()) / log_price.std()
    quality = rng.normal(0.0, 1.0, n_items)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.9
    interests = np.stack([rng.choice(n_cats, 2, replace=False, p=cat_weight) for _ in range(n_users)])
    user_bias = rng.normal(0.0, 0.3, n_users)
    activity = 1.0 / np.arange(1, n_users + 1) ** 0.7
    users = rng.permutation(n_users)[rng.choice(n_users, n_rows, p=activity / activity.sum())]
    # half the impressions show an item of one of the user's interest categories, half a popular item
    items = rng.choice(n_items, n_rows, p=popularity / popularity.sum())
    from_interest = rng.random(n_rows) < 0.5
    wanted_cat = interests[users, rng.integers(0, 2, n_rows)]
    for cat in range(n_cats):
        rows = np.flatnonzero(from_interest & (wanted_cat == cat))
        members = np.flatnonzero(item_cat == cat)
        cumulative = np.cumsum(popularity[members]) / popularity[members].sum()
        items[rows] = members[np.minimum(np.searchsorted(cumulative, rng.random(len(rows))), len(members) - 1)]
    cats = item_cat[items]
    hours = rng.integers(0, 24, n_rows)
    base = (-1.7 + 1.3 * (interests[users] == cats[:, None]).any(1) + 0.4 * np.cos(2 * np.pi * hours / 24)
            - 0.4 * price_z[items] + user_bias[users])
    draws = rng.random((n_rows, 2))
    like_rate = 1.0 / (1.0 + np.exp(0.7 - 1.1 * quality[items]))
    clicks = np.zeros(n_rows, dtype=np.int64)
    click_history, cate_history = [], []
    histories: dict[int, list[int]] = {}
    for r in range(n_rows):  # in time order: a row's history holds the user's earlier clicks only
        past = histories.setdefault(int(users[r]), [])
        click_history.append("^".join(str(i) for i in past))
        cate_history.append("^".join(str(item_cat[i]) for i in past))
        recent = any(item_cat[i] == cats[r] for i in past)
        clicks[r] = draws[r, 0] < _sigmoid(base[r] + 0.9 * recent)
        if clicks[r]:
            past.append(int(items[r]))
            del past[:-cfg.history_length]
    likes = (clicks == 1) & (draws[:, 1] < like_rate)
    rows = {"user_id": users.astype(str), "item_id": items.astype(str), "cate_id": cats.astype(str),
            "hour": hours, "price": price[items], "click_history": click_history, "cate_history": cate_history,
            "click": clicks, "like": likes.astype(np.int64)}
    table = pl.DataFrame(rows)
    n_valid = n_test = max(1, n_rows // 10)
    n_train = n_rows - n_valid - n_test
    parts = {"train": table[:n_train], "valid": table[n_train:n_train + n_valid], "test": table[n_train + n_valid:]}
    h = cfg.history_length
    text = f"""\
# SYNTHETIC FuxiCTR-format dataset written by recbench (recbench/data/fuxictr.py, write_fuxictr_replica,
# settings {json.dumps(dataclasses.asdict(cfg))}). Generated data only.
{REPLICA_ID}:
    data_root: ./
    data_format: csv
    train_data: train.csv
    valid_data: valid.csv
    test_data: test.csv
    min_categr_count: 1
    feature_cols:
        - {{name: user_id, active: True, dtype: str, type: categorical, source: user}}
        - {{name: [item_id, cate_id], active: True, dtype: str, type: categorical, source: item}}
        - {{name: hour, active: True, dtype: int, type: categorical, source: context}}
        - {{name: price, active: True, dtype: float, type: numeric, normalizer: StandardScaler}}
        - {{name: click_history, active: True, dtype: str, type: sequence, splitter: ^, max_len: {h},
           padding: pre, share_embedding: item_id, feature_encoder: null}}
        - {{name: cate_history, active: True, dtype: str, type: sequence, splitter: ^, max_len: {h},
           padding: pre, share_embedding: cate_id, feature_encoder: null}}
    label_col: [{{name: {REPLICA_LABELS[0]}, dtype: float}}, {{name: {REPLICA_LABELS[1]}, dtype: float}}]
"""
    with atomic_folder(out_dir) as tmp:
        for split, part in parts.items():
            part.write_csv(tmp / f"{split}.csv")
        (tmp / CONFIG_NAME).write_text(text)
