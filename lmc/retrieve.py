"""Retrievers over a JSONL corpus: BM25 (bm25s) and embeddings (litellm), both returning passages as `list[str]`."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import os
import re
import threading
from pathlib import Path
from typing import Any, Awaitable, Callable, Sequence, cast

from lmc.datasets import Dataset, load_dataset
from lmc.errors import DatasetError, LMError, LMRedirectError, did_you_mean
from lmc.files import atomic_write_text
from lmc.netguard import refuse_redirects

# English function words that carry no retrieval signal; small and fixed so
# scores do not change when a library updates its own list.
_STOPWORDS = frozenset(
    """a about after an and are as at be been before but by can did do does for from had has have he her his
    how i in into is it its of on or she so than that the their them then there these they this to was were
    what when where which while who whom whose why will with you""".split()
)
_TOKEN = re.compile(r"\w+", re.UNICODE)
# Longest suffix first; one suffix is stripped, keeping a stem of at least 4 characters,
# so "inventor", "invented" and "invention" all meet at "invent".
_SUFFIXES = ("ations", "ation", "ions", "ion", "ors", "ers", "ing", "ies", "or", "er", "ed", "es", "s")


def _stem(token: str) -> str:
    for suffix in _SUFFIXES:
        if token.endswith(suffix):
            stem = token[: -len(suffix)] + ("y" if suffix == "ies" else "")
            if len(stem) >= 4:
                return stem
    return token


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens without stopwords, lightly stemmed.

    >>> tokenize("Who invented the telephone?")
    ['invent', 'telephone']
    """
    return [_stem(t) for t in _TOKEN.findall(text.lower()) if t not in _STOPWORDS and t != "_"]


def resolve_path(path: str | os.PathLike, base_dir: str | os.PathLike | None) -> Path:
    """A corpus path as written in a .lmp file: relative to that file's folder, else to the working directory."""
    p = Path(path)
    if p.is_absolute() or base_dir is None:
        return p
    return Path(base_dir) / p


def _check_k(k: Any, where: str) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise DatasetError(f"{where}: k must be a positive integer, got {k!r}")
    return k


class _Corpus:
    """Passages of one JSONL file, loaded once: the text field of every line, in file order."""

    def __init__(self, path: Path, text_field: str):
        self.path = path
        self.text_field = text_field
        dataset = load_dataset(path)
        self.dataset: Dataset = dataset
        self.sha256 = dataset.sha256
        self.texts: list[str] = []
        self.titles: list[str] = []
        for ex in dataset.examples:
            if text_field not in ex.data:
                close = did_you_mean(text_field, ex.data.keys())
                raise DatasetError(
                    f"missing text field '{text_field}'",
                    str(path),
                    ex.line,
                    hint=close or "set text=... on the retriever to the field holding the passage",
                )
            text = ex.data[text_field]
            if not isinstance(text, str):
                raise DatasetError(f"text field '{text_field}' must be a string", str(path), ex.line)
            self.texts.append(text)
            title = ex.data.get("title")
            self.titles.append(title if isinstance(title, str) else "")


def _top_k(scores: Sequence[float], k: int) -> list[int]:
    """Indices of the k best positive scores; equal scores keep corpus order, so results never flicker."""
    ranked = sorted((i for i, s in enumerate(scores) if s > 0), key=lambda i: (-scores[i], i))
    return ranked[:k]


class BM25Retriever:
    """BM25 over a JSONL corpus; the index is built on the first query.

    Titles, when the corpus has a `title` field, are indexed with the text but not
    returned.  A query matching nothing returns an empty list rather than arbitrary passages.
    """

    def __init__(self, path: str | os.PathLike, text_field: str = "text", k: int = 3, base_dir: str | os.PathLike | None = None):
        self.path = resolve_path(path, base_dir)
        self.text_field = text_field
        self.k = _check_k(k, str(path))
        self._corpus: _Corpus | None = None
        self._index: Any = None
        self._vocab: dict[str, int] = {}
        self._lock = threading.Lock()

    @property
    def passages(self) -> list[str]:
        return self._ensure_index().texts

    @property
    def sha256(self) -> str:
        return self._ensure_index().sha256

    def _ensure_index(self) -> _Corpus:
        if self._corpus is None:
            with self._lock:
                if self._corpus is None:
                    corpus = _Corpus(self.path, self.text_field)
                    self._build(corpus)
                    self._corpus = corpus
        return self._corpus

    def _build(self, corpus: _Corpus) -> None:
        import bm25s  # heavy (numpy, scipy); only when a retriever is actually used

        docs = [tokenize(f"{title} {text}") for title, text in zip(corpus.titles, corpus.texts)]
        index = bm25s.BM25()
        index.index(docs, show_progress=False)
        self._index = index
        self._vocab = dict(index.vocab_dict)

    def scores(self, query: str) -> list[float]:
        """The BM25 score of every passage for `query`, in corpus order."""
        corpus = self._ensure_index()
        terms = [t for t in tokenize(str(query)) if t in self._vocab]
        if not terms:
            return [0.0] * len(corpus.texts)
        return [float(s) for s in self._index.get_scores(terms)]

    def __call__(self, query: str, k: int | None = None) -> list[str]:
        corpus = self._ensure_index()
        k = self.k if k is None else _check_k(k, str(self.path))
        return [corpus.texts[i] for i in _top_k(self.scores(query), k)]

    async def search(self, query: str, k: int | None = None) -> list[str]:
        return self(query, k)


# ---------------------------------------------------------------- embeddings

EmbedFn = Callable[[list[str]], list[list[float]]]
AsyncEmbedFn = Callable[[list[str]], Awaitable[list[list[float]]]]
_BATCH = 64
_CACHE_VERSION = 1


def _cosine_scores(query: Sequence[float], vectors: Sequence[Sequence[float]], norms: Sequence[float]) -> list[float]:
    qn = math.sqrt(sum(x * x for x in query))
    if qn == 0:
        return [0.0] * len(vectors)
    out = []
    for vec, vn in zip(vectors, norms):
        out.append(0.0 if vn == 0 else sum(a * b for a, b in zip(query, vec)) / (qn * vn))
    return out


def _prompt_tokens(resp: Any) -> int | None:
    usage = getattr(resp, "usage", None)
    value = getattr(usage, "prompt_tokens", None) if usage is not None else None
    return int(value) if isinstance(value, (int, float)) else None


class EmbeddingsRetriever:
    """Cosine similarity between a query embedding and cached passage embeddings.

    Passage embeddings are computed once per (model, corpus sha256, text field) and
    stored as JSON under `<cache_dir>/embeddings/`; `embed` / `aembed` replace the
    litellm calls (tests inject a fake, nothing touches the network).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        model: str,
        text_field: str = "text",
        k: int = 3,
        base_dir: str | os.PathLike | None = None,
        api_base: str | None = None,
        *,
        cache_dir: str | os.PathLike | None = ".lmc/cache",
        embed: EmbedFn | None = None,
        aembed: AsyncEmbedFn | None = None,
        meter: Any = None,
    ):
        if not isinstance(model, str) or not model.strip():
            raise DatasetError(f'{path}: embeddings retriever needs a model name, e.g. model="openai/text-embedding-3-small"')
        self.path = resolve_path(path, base_dir)
        self.model = model
        self.text_field = text_field
        self.k = _check_k(k, str(path))
        self.api_base = api_base
        self.cache_dir = Path(cache_dir) / "embeddings" if cache_dir is not None else None
        self._embed = embed
        self._aembed = aembed
        # The run's LM client: every embeddings request is reserved against --max-calls/--max-cost and counted.
        self._meter = meter
        self._corpus: _Corpus | None = None
        self._vectors: list[list[float]] | None = None
        self._norms: list[float] = []
        self._lock: asyncio.Lock | None = None
        self._lock_loop: Any = None
        self.calls = 0  # embedding requests made (cache hits excluded), for accounting and tests

    # -- embedding backends

    def _litellm_kwargs(self) -> dict:
        kwargs: dict[str, Any] = {"model": self.model}
        if self.api_base:
            kwargs["api_base"] = self.api_base
        return kwargs

    def _metered(self, texts: list[str]) -> Any:
        if self._meter is None:
            return contextlib.nullcontext({})
        return self._meter.embedding_request(self.model, texts)

    async def _call_async(self, texts: list[str]) -> list[list[float]]:
        with self._metered(texts) as box:
            self.calls += 1
            if self._aembed is not None:
                return await self._aembed(texts)
            if self._embed is not None:
                return self._embed(texts)
            os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            import litellm

            redirects: list = []
            try:
                with refuse_redirects() as redirects:
                    resp = await litellm.aembedding(input=texts, **self._litellm_kwargs())
            except Exception as exc:
                raise self._failure(exc, redirects) from None
            box["prompt_tokens"] = _prompt_tokens(resp)
            return [item["embedding"] for item in resp.data]

    def _failure(self, exc: Exception, redirects: list) -> LMError:
        if redirects:
            return LMRedirectError(
                f"the embedding server answered with a redirect to {redirects[0][:120]!r}; lmc does "
                "not follow redirects, so neither your request nor your key goes elsewhere",
                model=self.model,
                hint="point --api-base at the final URL",
            )
        return LMError(f"embedding request failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}", model=self.model)

    def _check_vectors(self, vectors: Any, n: int) -> list[list[float]]:
        if not isinstance(vectors, list) or len(vectors) != n:
            raise LMError(f"embedding model returned {len(vectors) if isinstance(vectors, list) else 'no'} vectors for {n} texts", model=self.model)
        out = [[float(x) for x in v] for v in vectors]
        if out and any(len(v) != len(out[0]) for v in out):
            raise LMError("embedding model returned vectors of different lengths", model=self.model)
        return out

    # -- cache

    def _cache_file(self, corpus: _Corpus) -> Path | None:
        if self.cache_dir is None:
            return None
        key = hashlib.sha256(f"v{_CACHE_VERSION}\0{self.model}\0{corpus.sha256}\0{self.text_field}".encode()).hexdigest()
        return self.cache_dir / f"{key}.json"

    def _load_cached(self, corpus: _Corpus) -> list[list[float]] | None:
        file = self._cache_file(corpus)
        if file is None or not file.exists():
            return None
        try:
            blob = json.loads(file.read_text(encoding="utf-8"))
            vectors = blob["vectors"]
            if blob.get("model") != self.model or blob.get("corpus_sha256") != corpus.sha256 or len(vectors) != len(corpus.texts):
                return None
            return [[float(x) for x in v] for v in vectors]
        except (OSError, ValueError, KeyError, TypeError):
            return None  # a damaged cache entry is rebuilt, never trusted

    def _store(self, corpus: _Corpus, vectors: list[list[float]]) -> None:
        file = self._cache_file(corpus)
        if file is None:
            return
        try:
            blob = {"model": self.model, "corpus_sha256": corpus.sha256, "text_field": self.text_field, "vectors": vectors}
            atomic_write_text(file, json.dumps(blob, allow_nan=False), fsync=False)  # readers never see half a file
        except (OSError, ValueError):
            pass  # a read-only or full disk costs the cache, not the run

    def _install(self, corpus: _Corpus, vectors: list[list[float]]) -> None:
        self._norms = [math.sqrt(sum(x * x for x in v)) for v in vectors]
        self._vectors = vectors
        self._corpus = corpus

    # -- index

    async def _ensure_index(self) -> _Corpus:
        if self._corpus is None:
            loop = asyncio.get_running_loop()
            if self._lock is None or self._lock_loop is not loop:
                # A lock belongs to one event loop; callers may use asyncio.run more than once.
                self._lock, self._lock_loop = asyncio.Lock(), loop
            async with self._lock:
                if self._corpus is None:
                    corpus = _Corpus(self.path, self.text_field)
                    vectors = self._load_cached(corpus)
                    if vectors is None:
                        vectors = []
                        for start in range(0, len(corpus.texts), _BATCH):
                            batch = corpus.texts[start : start + _BATCH]
                            vectors.extend(self._check_vectors(await self._call_async(batch), len(batch)))
                        self._store(corpus, vectors)
                    self._install(corpus, vectors)
        return cast(_Corpus, self._corpus)  # installed above, by this call or an earlier one

    def _rank(self, corpus: _Corpus, qvec: list[float], k: int | None) -> list[str]:
        k = self.k if k is None else _check_k(k, str(self.path))
        if self._vectors and len(qvec) != len(self._vectors[0]):
            raise LMError("query and passage embeddings have different lengths; was the model changed?", model=self.model)
        scores = _cosine_scores(qvec, self._vectors or [], self._norms)
        return [corpus.texts[i] for i in _top_k(scores, k)]

    async def search(self, query: str, k: int | None = None) -> list[str]:
        corpus = await self._ensure_index()
        qvec = self._check_vectors(await self._call_async([str(query)]), 1)[0]
        return self._rank(corpus, qvec, k)

    def __call__(self, query: str, k: int | None = None) -> list[str]:
        """Synchronous search, for callers outside an event loop."""
        return asyncio.run(self.search(query, k))
