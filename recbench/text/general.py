"""General-data SFT examples shared by every dataset's text tasks: plain-text continuation of the dataset's
own texts (no general instruction corpus ships offline; this keeps plain-text modelling, which is what the
export embeds, in the mix)."""

from __future__ import annotations

import numpy as np


def continuations(texts: list[str], count: int, rng: np.random.Generator, marker: str) -> list[tuple[str, str]]:
    """`count` pairs "<marker><start of a text>" -> "<its rest>" from distinct texts of at least 4
    characters, each cut at a random point between 40% and 70% of its length."""
    usable = sorted({t for t in texts if len(t.strip()) >= 4})
    out = []
    for index in rng.permutation(len(usable))[:count]:
        text = usable[int(index)]
        cut = int(rng.integers(max(1, int(0.4 * len(text))), max(2, int(0.7 * len(text))) + 1))
        out.append((marker + text[:cut], text[cut:]))
    return out
