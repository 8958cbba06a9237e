"""Language-model loading, plus a tiny offline default model.

`load_lm` is the one loading path for every model, user-supplied or embedded: a folder written by
`save_pretrained`, read with `AutoModelForCausalLM` / `AutoTokenizer` and `local_files_only=True`,
so nothing is ever downloaded.

`build_tiny_lm` writes such a folder from scratch (a tokenizer trained on the given corpus and a
small randomly initialised Llama-architecture causal LM). It exists so that the text stage runs end to end
without network access or big weights. Its weights are random: the text stage then pretrains it
on the corpus (recbench/text/pretrain.py) before any fine-tuning or export.

Tokenizer design (tiny model): byte-level BPE, so any Unicode text round-trips and nothing maps to
an unknown token, with a Unicode-aware pre-tokenizer in front of it:

* every Han character is its own pre-token, so the small vocabulary is spent on frequent characters
  (character-level Chinese, as in Chinese BERT) instead of whole memorised phrases;
* bracket emoji such as ``[捂脸]`` (Kuaishou / Weibo style) stay one pre-token, and the frequent
  ones in the corpus are added as whole tokens, so an emoji is one token, not five bytes;
* runs of other letters (with one leading space, GPT-2 style), numbers (up to 3 digits),
  punctuation / symbols and whitespace are split as in the GPT-2 / Qwen pre-tokenizers.
"""

from __future__ import annotations

import json
import re
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from recbench.errors import UserInputError
from recbench.records import atomic_folder

PAD, BOS, EOS = "<|pad|>", "<|bos|>", "<|eos|>"
BRACKET_EMOJI = r"\[[^\[\]\s]{1,12}\]"
# Alternatives, in priority order: bracket emoji, one Han character, a letter run (non-Han),
# up to three digits, a punctuation/symbol run (never swallowing "[" so emoji survive), a lone "[",
# whitespace (trailing run kept apart from the next word's leading space), whitespace.
PRE_TOKENIZER_PATTERN = (BRACKET_EMOJI + r"|\p{Han}| ?[\p{L}\p{M}&&[^\p{Han}]]+|\p{N}{1,3}"
                         r"|[^\s\p{L}\p{N}\[]+|\[|\s+(?!\S)|\s+")
TINY_MARKER = "recbench_tiny_lm.json"


def _train_tokenizer(corpus: list[str], vocab_size: int, max_emoji_tokens: int):
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    emoji_counts = Counter(m for text in corpus for m in re.findall(BRACKET_EMOJI, text))
    emoji = [tok for tok, n in sorted(emoji_counts.items(), key=lambda kv: (-kv[1], kv[0]))
             if n >= 2][:max_emoji_tokens]

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRE_TOKENIZER_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=max(vocab_size - len(emoji), 256 + 3), min_frequency=2, show_progress=False,
        special_tokens=[PAD, BOS, EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(corpus, trainer=trainer, length=len(corpus))
    tokenizer.add_tokens(emoji)
    bos_id = tokenizer.token_to_id(BOS)
    # Prepend BOS like Llama: the first position then never carries content-specific state,
    # and a prompt always has a well-defined first token.
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS,
                                   pad_token=PAD, padding_side="right")


def build_tiny_lm(out_dir: str | Path, corpus: list[str], vocab_size: int = 2000, hidden: int = 64,
                  layers: int = 2, heads: int = 4, seed: int = 0, max_positions: int = 512,
                  max_emoji_tokens: int = 256) -> Path:
    """Train a tokenizer on `corpus`, build a random small causal LM, save both to `out_dir`.

    The model is a Llama-architecture decoder (RMSNorm, rotary positions, SwiGLU MLP, no biases,
    tied input / output embeddings) with `hidden` width, `layers` blocks, `heads` attention heads and a 4x MLP.
    Weights are drawn from the config's initializer under `seed` (the global RNG is left alone).
    Returns `out_dir`, loadable with `load_lm`.
    """
    from transformers import AutoModelForCausalLM, LlamaConfig

    texts = [t for t in corpus if isinstance(t, str) and t.strip()]
    if not texts:
        raise UserInputError(f"{out_dir}: cannot build a tokenizer from an empty corpus. "
                             "Fix: pass at least a few non-empty texts")
    if hidden % heads:
        raise UserInputError(f"text.hidden={hidden} is not divisible by text.heads={heads}. "
                             "Fix: pick a hidden size that is a multiple of the head count")
    out = Path(out_dir)
    tokenizer = _train_tokenizer(texts, vocab_size, max_emoji_tokens)
    tokenizer.model_max_length = max_positions
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=4 * hidden,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=max_positions, tie_word_embeddings=True, use_cache=False,
        initializer_range=hidden ** -0.5,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    settings = {"vocab_size": len(tokenizer), "hidden": hidden, "layers": layers, "heads": heads,
                "seed": seed, "max_positions": max_positions, "corpus_size": len(texts),
                "parameters": sum(p.numel() for p in model.parameters())}
    with atomic_folder(out) as tmp:  # a killed build leaves no folder that load_lm would half-read
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _portable_tokenizer_class(tmp)
        (tmp / TINY_MARKER).write_text(json.dumps(settings, indent=1, sort_keys=True) + "\n")
    return out


def _portable_tokenizer_class(folder: Path) -> None:
    """Declare the generic fast-tokenizer class so `AutoTokenizer` uses tokenizer.json as saved.

    transformers 5 writes `TokenizersBackend` (unknown to 4.x); `PreTrainedTokenizerFast` means the
    same thing in both. (Model types with a dedicated tokenizer class, e.g. qwen2 in transformers 5,
    would rebuild their own pre-tokenizer and ignore ours; that is why the tiny model is Llama.)
    """
    path = folder / "tokenizer_config.json"
    settings = json.loads(path.read_text())
    settings["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(settings, indent=2, ensure_ascii=False) + "\n")


def _no_model(key: str, path: Any, reason: str) -> UserInputError:
    reason = " ".join(str(reason).split())[:300]  # one line, bounded
    is_model = key == "text.model"
    files = "config.json, weights and tokenizer files" if is_model else "adapter_config.json and adapter weights"
    return UserInputError(
        f"{key}={path}: no Hugging Face {'model' if is_model else 'adapter'} there ({reason}). "
        f"Fix: point {key} at a local folder written by save_pretrained ({files}); nothing is downloaded")


def _looks_like_repo_id(name: str) -> bool:
    return bool(re.fullmatch(r"[\w.-]+/[\w.-]+", name)) and not name.startswith((".", "~"))


def load_lm(path: str | Path, adapter: str | Path | None = None, *, merge: bool = False,
            device: str | torch.device | None = None, dtype: str | torch.dtype | None = None):
    """Load `(model, tokenizer)` from a local folder, offline; the model is in eval mode.

    `path` is a folder written by `save_pretrained` (or, if no such folder exists, a hub id that is
    already in the local Hugging Face cache). `adapter`, if given, is a peft adapter folder (as
    written by `finetune_lora`) put on top; `merge=True` folds it into the base weights.
    A tokenizer without a pad token gets its EOS token as pad token.
    Raises `UserInputError` (one line) when there is no loadable model.
    """
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = str(path)
    folder = Path(name).expanduser()
    if not folder.exists():
        if not _looks_like_repo_id(name):
            raise _no_model("text.model", path, "the path does not exist")
        source = name  # maybe a cached hub id; local_files_only keeps it offline
    elif not folder.is_dir():
        raise _no_model("text.model", path, "it is a file, not a folder")
    elif not (folder / "config.json").is_file():
        raise _no_model("text.model", path, "no config.json in the folder")
    else:
        source = str(folder)
    kwargs: dict[str, Any] = {"local_files_only": True}
    if dtype is not None:
        kwargs["dtype"] = getattr(torch, dtype) if isinstance(dtype, str) and dtype != "auto" else dtype
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:  # missing/broken files
        raise _no_model("text.model", path, f"{type(exc).__name__}: {exc}") from exc
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    if device is not None:
        model.to(device)
    source_info = {"model": source, "adapter": None, "merged": False}
    if adapter is not None:
        from peft import PeftModel

        adapter_dir = Path(adapter).expanduser()
        if not (adapter_dir / "adapter_config.json").is_file():
            raise _no_model("text.adapter", adapter,
                            "the path does not exist" if not adapter_dir.exists() else "no adapter_config.json")
        try:
            with warnings.catch_warnings():  # peft 0.21 reads an attribute transformers 5 deprecates
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
                model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise _no_model("text.adapter", adapter, f"{type(exc).__name__}: {exc}") from exc
        if merge:
            model = model.merge_and_unload()
        source_info.update(adapter=str(adapter_dir), merged=merge)
    model.eval()
    model._recbench_source = source_info  # provenance recorded in embedding manifests
    return model, tokenizer


def model_source(model) -> dict[str, Any]:
    """Where a model came from: base path, adapter path (if any), merged flag."""
    info = getattr(model, "_recbench_source", None)
    if isinstance(info, dict):
        return dict(info)
    config = getattr(model, "config", None)
    return {"model": getattr(config, "_name_or_path", None) or None, "adapter": None, "merged": False}
