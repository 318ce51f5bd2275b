"""A cheap semantic signal: cosine similarity of two prompts' static sentence embeddings (wordllama).

The model (``wordllama``'s ``l2_supercat_256``: 256 dimensions, weights and tokenizer shipped inside the
package) is loaded lazily, once per process, from the package's own folder, with downloads disabled:
nothing is fetched at run time. Embeddings are cached (an LRU of prompts): in a stream each prompt is
compared with its successor only, so each is embedded once. When the package is not installed, or its
files are missing, ``similarity`` returns None and the detectors fall back to their lexical scores.

The signal is a tiebreaker, not a detector: alone it scores far below the lexical one on hard negatives
(the same request for another entity, a neighbouring request), so the rephrase detector asks it only
when the lexical score is unsure (docs/detectors.md).
"""

from __future__ import annotations

import importlib
import logging
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["EMBEDDING_CACHE_SIZE", "MODEL_CONFIG", "available", "embedding", "reset", "similarity"]

MODEL_CONFIG = "l2_supercat"
"""The wordllama configuration whose weights (``weights/l2_supercat_256.safetensors``) the package ships."""

EMBEDDING_CACHE_SIZE = 4096
"""Prompts whose embeddings are kept; a stream needs the few most recent."""

_log = logging.getLogger(__name__)
_lock = threading.Lock()
_state: dict[str, Any] = {}  # "model": the loaded model, or None once loading failed


def _load() -> Any:
    """The model, loaded on first use; None when wordllama or its shipped files are unavailable."""
    if "model" in _state:
        return _state["model"]
    with _lock:
        if "model" not in _state:
            model = None
            try:
                # Imported here: the package (numpy, tokenizers) costs ~0.8 s to import, and it is optional.
                wordllama = importlib.import_module("wordllama")
                # The loader looks for the tokenizer under cache_dir and would otherwise try to download
                # it: point it at the package's own folder, where weights and tokenizer config ship.
                if wordllama.__file__ is None:
                    raise ImportError("wordllama has no package folder to load its weights from")
                folder = Path(wordllama.__file__).parent
                model = wordllama.WordLlama.load(config=MODEL_CONFIG, cache_dir=folder, disable_download=True)
            except (ImportError, OSError) as exc:  # not installed, or files missing (FileNotFoundError)
                _log.warning("semantic signal unavailable, lexical detectors only: %s", exc)
            _state["model"] = model
    return _state["model"]


def available() -> bool:
    """Whether the embedding model can be used (loads it on first call)."""
    return _load() is not None


@lru_cache(maxsize=EMBEDDING_CACHE_SIZE)
def embedding(text: str) -> Any:
    """The unit-length embedding of `text` (a numpy vector of 256 floats), cached; None without the model."""
    model = _load()
    return None if model is None else model.embed(text, norm=True)[0]


def similarity(first: str, second: str) -> float | None:
    """Cosine similarity of the two texts' embeddings, in [-1, 1]; None when the model is unavailable.

    Symmetric. Each text's embedding is cached, so comparing a prompt with its successor embeds only the
    successor.
    """
    if _load() is None:
        return None
    return float(embedding(first) @ embedding(second))


def reset() -> None:
    """Forget the loaded model and the cached embeddings: the next call loads again (for tests)."""
    with _lock:
        _state.clear()
        embedding.cache_clear()
