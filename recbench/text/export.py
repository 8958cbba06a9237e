"""Frozen text embeddings (LCU stage 1 -> stage 2): one vector per text, on disk, resumable.

Layout of ``out_dir/name/``::

    manifest.json        what was embedded and how, the chunk list, "complete"
    ids.npy              int64 ids, in the order given (row i of the matrix is ids[i])
    chunk-00000.npy ...  float32 [rows, dim] blocks of `chunk_size` rows

Every file is written to a temp name and renamed, and the manifest is rewritten after each chunk,
so a killed export leaves only whole files. A rerun with the same ids, texts, model (path, adapter,
weight fingerprint), pooling and max_length skips every chunk the manifest lists whose file is
present and whose ids hash matches; anything else starts over.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recbench.errors import UserInputError
from recbench.faults import kill_if_due
from recbench.records import write_atomic, write_json_atomic
from recbench.text.lm import model_source

FORMAT = "recbench.text.embeddings/1"
POOLINGS = ("mean", "last")


def _sha256_ids(ids: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(ids, dtype="<i8").tobytes()).hexdigest()


def _sha256_texts(texts: list[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def weights_fingerprint(model: torch.nn.Module, samples: int = 64) -> str:
    """A cheap hash of the weights: names, shapes and `samples` strided values of each parameter.

    Tells a retrained adapter or another checkpoint apart without reading every weight.
    """
    digest = hashlib.sha256()
    with torch.no_grad():
        for name, param in model.named_parameters():
            digest.update(f"{name}:{tuple(param.shape)}:{param.dtype}".encode())
            if param.device.type == "meta" or param.numel() == 0:
                continue
            flat = param.detach().reshape(-1)
            values = flat[:: max(1, flat.numel() // samples)][:samples]
            digest.update(values.float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def _backbone(model: torch.nn.Module) -> torch.nn.Module:
    """The transformer body that returns hidden states (skips the LM head, and the peft wrapper;
    an unmerged adapter still acts, because its layers sit inside the body)."""
    if hasattr(model, "get_base_model"):  # peft
        model = model.get_base_model()
    prefix = getattr(model, "base_model_prefix", "")
    body = getattr(model, prefix, None) if prefix else None
    return body if isinstance(body, torch.nn.Module) else model


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """[B, T, D] hidden states -> [B, D] float32. Works with left or right padding."""
    mask = attention_mask.to(hidden.device)
    hidden = hidden.float()
    if pooling == "mean":
        weights = mask.unsqueeze(-1).float()
        return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = (positions * mask).argmax(dim=1)  # index of the last real token
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


@torch.inference_mode()
def _embed_chunk(body: torch.nn.Module, tokenizer, texts: list[str], *, batch_size: int, max_length: int,
                 pooling: str, device: torch.device, bar=None) -> np.ndarray:
    """Embed one chunk: batches of similar length (less padding), results back in input order."""
    order = np.argsort(np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts)), kind="stable")
    out: np.ndarray | None = None
    for first in range(0, len(texts), batch_size):
        rows = order[first:first + batch_size]
        batch = tokenizer([texts[i] for i in rows], padding=True, truncation=True, max_length=max_length,
                          return_tensors="pt")
        mask = batch["attention_mask"].to(device)
        output = body(input_ids=batch["input_ids"].to(device), attention_mask=mask)
        hidden = getattr(output, "last_hidden_state", None)
        if hidden is None:
            hidden = output[0]
        vectors = pool(hidden, mask, pooling).cpu().numpy()
        if out is None:
            out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
        out[rows] = vectors
        if bar is not None:
            bar.update(len(rows))
    assert out is not None
    return out


def _save_npy_atomic(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array)
    write_atomic(path, buffer.getvalue(), fsync=True)


def _chunk_ok(folder: Path, entry: dict[str, Any], start: int, rows: int, ids_hash: str) -> bool:
    path = folder / entry.get("file", "")
    if entry.get("start") != start or entry.get("rows") != rows or entry.get("ids_sha256") != ids_hash:
        return False
    try:
        matrix = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return False
    return matrix.dtype == np.float32 and matrix.ndim == 2 and matrix.shape[0] == rows


def _check_inputs(ids: Any, texts: list[str], pooling: str, where: str) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.ndim != 1 or not (np.issubdtype(ids.dtype, np.integer) or ids.size == 0):
        raise UserInputError(f"{where}: ids must be a 1-D integer array (got shape {ids.shape}, "
                             f"dtype {ids.dtype}). Fix: pass one int64 id per text")
    ids = ids.astype(np.int64, copy=False)
    if len(ids) != len(texts):
        raise UserInputError(f"{where}: {len(ids)} ids but {len(texts)} texts. Fix: pass one id per text")
    if len(ids) == 0:
        raise UserInputError(f"{where}: nothing to embed (no texts). Fix: pass at least one text")
    if len(np.unique(ids)) != len(ids):
        raise UserInputError(f"{where}: duplicate ids. Fix: embed each id once (deduplicate first)")
    if not all(isinstance(t, str) for t in texts):
        raise UserInputError(f"{where}: texts must all be strings. Fix: replace missing texts with ''")
    if pooling not in POOLINGS:
        raise UserInputError(f"{where}: pooling={pooling!r}. Fix: use one of {', '.join(POOLINGS)}")
    return ids


def export_embeddings(model, tokenizer, ids: np.ndarray, texts: list[str], out_dir: str | Path, name: str, *,
                      batch_size: int = 64, max_length: int = 128, pooling: str = "mean",
                      chunk_size: int = 4096, progress: bool = True) -> Path:
    """Embed `texts` (row i belongs to `ids[i]`) with the model's final hidden layer; return the folder.

    Pooling:
      * ``"mean"`` (default): average of the final-layer states over the real tokens
        (attention-mask weighted, so padding never counts). The model was not trained to summarise
        a text in one position, and for comments, whose meaning is spread over the words, the
        mean is the steadier feature; it is also insensitive to truncation at the end.
      * ``"last"``: the state of the last real token (the causal LM's "summary" position, the
        natural choice right after SFT on prompts whose answer follows the text).
    The reference does not say which one LCU used, so both are offered.

    The final hidden layer is the transformer body's `last_hidden_state` (after the final norm),
    not the LM-head logits. A peft model works merged or unmerged: the unmerged adapter acts
    inside the body. Vectors are float32 whatever the model dtype. Texts are truncated to
    `max_length` tokens; an empty text gets the vector of the tokenizer's special tokens (or
    zeros when there are none). Within a chunk, texts are batched by length (less padding).
    Resumable: see the module docstring. The model is put in eval mode.
    """
    from tqdm.auto import tqdm

    folder = Path(out_dir) / name
    where = str(folder)
    texts = list(texts)
    ids = _check_inputs(ids, texts, pooling, where)
    if chunk_size < 1 or batch_size < 1 or max_length < 1:
        raise UserInputError(f"{where}: chunk_size={chunk_size}, batch_size={batch_size}, "
                             f"max_length={max_length}. Fix: use positive values")
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise UserInputError(f"{where}: the tokenizer has neither a pad nor an EOS token. "
                                 "Fix: set tokenizer.pad_token before exporting")
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    source = model_source(model)
    identity = {
        "format": FORMAT, "name": name, "count": len(ids), "dtype": "float32", "pooling": pooling,
        "max_length": max_length, "chunk_size": chunk_size, "ids_sha256": _sha256_ids(ids),
        "texts_sha256": _sha256_texts(texts), "model": source.get("model"), "adapter": source.get("adapter"),
        "adapter_merged": bool(source.get("merged")), "weights_fingerprint": weights_fingerprint(model),
        "tokenizer_class": type(tokenizer).__name__,
    }
    folder.mkdir(parents=True, exist_ok=True)
    manifest_path = folder / "manifest.json"
    previous: dict[str, Any] = {}
    if manifest_path.is_file():
        try:
            previous = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            previous = {}
    same_job = all(previous.get(key) == value for key, value in identity.items())
    done = {entry.get("start"): entry for entry in previous.get("chunks", [])} if same_job else {}
    starts = list(range(0, len(ids), chunk_size))
    chunks: list[dict[str, Any]] = []
    reused = {}
    for index, start in enumerate(starts):
        rows = min(chunk_size, len(ids) - start)
        ids_hash = _sha256_ids(ids[start:start + rows])
        entry = done.get(start)
        if entry is not None and _chunk_ok(folder, entry, start, rows, ids_hash):
            reused[index] = entry
    dim = previous.get("dim") if same_job else None
    manifest = {**identity, "dim": dim, "complete": False, "seconds": 0.0,
                "chunks": [reused[i] for i in sorted(reused)]}
    # the unfinished manifest goes first: a kill after this point can never leave an old
    # "complete" manifest pointing at chunks or ids that are being replaced
    write_json_atomic(manifest_path, manifest)
    if not same_job:  # a different job wrote here: remove its chunks so nothing stale is left
        for stale in folder.glob("chunk-*.npy"):
            stale.unlink()
    if not (folder / "ids.npy").is_file() or not same_job:
        _save_npy_atomic(folder / "ids.npy", ids)

    device = next(model.parameters()).device
    body = _backbone(model)
    started = time.perf_counter()
    bar = tqdm(total=len(ids), initial=sum(e["rows"] for e in reused.values()), desc=f"embed {name}",
               unit="text", disable=not progress)
    try:
        for index, start in enumerate(starts):
            rows = min(chunk_size, len(ids) - start)
            if index in reused:
                chunks.append(reused[index])
                continue
            matrix = _embed_chunk(body, tokenizer, texts[start:start + rows], batch_size=batch_size,
                                  max_length=max_length, pooling=pooling, device=device, bar=bar)
            file = f"chunk-{index:05d}.npy"
            _save_npy_atomic(folder / file, matrix)
            chunks.append({"file": file, "start": start, "rows": rows,
                           "ids_sha256": _sha256_ids(ids[start:start + rows])})
            later = [reused[i] for i in sorted(reused) if i > index]
            manifest.update(dim=int(matrix.shape[1]), chunks=chunks + later,
                            seconds=round(time.perf_counter() - started, 3))
            write_json_atomic(manifest_path, manifest)
            kill_if_due("export", len(chunks) - len(reused))
    finally:
        bar.close()
    if manifest["dim"] is None and chunks:  # every chunk was reused
        manifest["dim"] = int(np.load(folder / chunks[0]["file"], mmap_mode="r").shape[1])
    manifest.update(chunks=chunks, complete=True, seconds=round(time.perf_counter() - started, 3))
    write_json_atomic(manifest_path, manifest)
    return folder


def load_embeddings(out_dir: str | Path, name: str, *, mmap: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Read `(ids [N] int64, matrix [N, dim] float32)` written by `export_embeddings`.

    Chunks are memory-mapped and concatenated into one array; with `mmap=True` and a single chunk
    the memory map itself is returned (read-only). Raises `UserInputError` when the export is
    missing, unfinished or inconsistent, or holds a NaN / inf value (the message names the chunk file,
    the row and its id).
    """
    folder = Path(out_dir) / name
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise UserInputError(f"{folder}: no embeddings there (no manifest.json). "
                             "Fix: run export_embeddings first, or check the folder and name")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as error:
        raise UserInputError(f"{manifest_path}: unreadable ({type(error).__name__}). "
                             "Fix: rerun export_embeddings with the same inputs (it rewrites the manifest)") from None
    if not manifest.get("complete"):
        raise UserInputError(f"{folder}: the export is unfinished ({len(manifest.get('chunks', []))} chunks). "
                             "Fix: rerun export_embeddings with the same inputs; it resumes")
    try:
        ids = np.load(folder / "ids.npy")
        parts = [np.load(folder / entry["file"], mmap_mode="r") for entry in manifest["chunks"]]
    except (OSError, ValueError) as error:  # a file deleted or damaged after the export finished
        raise UserInputError(f"{folder}: {error}. Fix: rerun export_embeddings with the same inputs; "
                             "it recomputes what is missing") from None
    if _sha256_ids(ids) != manifest["ids_sha256"]:
        raise UserInputError(f"{folder}: ids.npy does not match the manifest. Fix: rerun export_embeddings")
    if sum(len(p) for p in parts) != len(ids):
        raise UserInputError(f"{folder}: the chunks hold {sum(len(p) for p in parts)} rows for {len(ids)} ids. "
                             "Fix: rerun export_embeddings")
    start = 0
    for entry, part in zip(manifest["chunks"], parts):  # a NaN / inf vector would train on NaN: name it
        finite = np.isfinite(part).all(axis=1)
        if not finite.all():
            row = int(np.flatnonzero(~finite)[0])
            value = part[row][~np.isfinite(part[row])][0]
            raise UserInputError(f"{folder / entry['file']}: row {row} (row {start + row} of the export, id "
                                 f"{ids[start + row]}) has a non-finite value ({value}). Fix: rerun the text "
                                 "stage; if it stays non-finite, the LM diverged (lower text.lora.lr / "
                                 "text.pretrain.lr)")
        start += len(part)
    matrix = parts[0] if (mmap and len(parts) == 1) else np.concatenate(parts, axis=0)
    return ids, matrix
