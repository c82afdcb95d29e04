"""Tests for lmc.retrieve: BM25 over the shipped corpus, the embeddings retriever with a fake embedder, and corpus errors."""

from __future__ import annotations

import asyncio
import json
import math
import sys
from pathlib import Path

import pytest

from lmc.datasets import load_dataset
from lmc.errors import DatasetError, LMError
from lmc.retrieve import BM25Retriever, EmbeddingsRetriever, resolve_path, tokenize

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "datasets" / "corpus.jsonl"


def passage(pid: str) -> str:
    for ex in load_dataset(CORPUS):
        if ex.id == pid:
            return ex.data["text"]
    raise KeyError(pid)


def write_corpus(tmp_path: Path, rows, name="c.jsonl") -> Path:
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return p


# ---------------------------------------------------------------- tokenizer


def test_tokenize_stems_and_drops_stopwords():
    assert tokenize("Who invented the telephone?") == ["invent", "telephone"]
    assert tokenize("inventor") == tokenize("invention") == tokenize("invented") == ["invent"]
    assert tokenize("cities") == ["city"]
    assert tokenize("river") == ["river"]  # short stems are left alone
    assert tokenize("") == []


# ---------------------------------------------------------------- BM25


@pytest.mark.parametrize(
    "query,pid",
    [
        ("Who received the patent for the telephone?", "telephone"),
        ("Where was Alexander Graham Bell born?", "alexander-graham-bell"),
        ("river flowing through Vienna", "danube"),
        ("element named after Poland", "polonium"),
        ("Which metal is liquid at room temperature?", "mercury"),
        ("first artificial satellite", "sputnik-1"),
        ("When did the Panama Canal open?", "panama-canal"),
        ("inventor of dynamite", "dynamite"),
    ],
)
def test_bm25_finds_the_right_passage_first(query, pid):
    r = BM25Retriever(CORPUS, k=3)
    got = r(query)
    assert got[0] == passage(pid)
    assert len(got) == 3


def test_bm25_multihop_second_hop():
    r = BM25Retriever(CORPUS)
    assert passage("marie-curie") in r("Marie Curie born")
    assert passage("como") in r("Como region of Italy")


def test_bm25_k_and_empty_results():
    r = BM25Retriever(CORPUS, k=2)
    assert len(r("river")) == 2
    assert len(r("river", k=5)) == 5
    assert r("zzzz qqqq") == []  # nothing matches: no arbitrary passages
    assert r("the of and") == []
    with pytest.raises(DatasetError, match="k must be a positive integer"):
        r("river", k=0)
    with pytest.raises(DatasetError, match="k must be a positive integer"):
        BM25Retriever(CORPUS, k=-1)


def test_bm25_is_lazy_and_deterministic(tmp_path):
    missing = BM25Retriever(tmp_path / "not-yet.jsonl")  # constructing never touches the file
    with pytest.raises(DatasetError, match="file not found"):
        missing("anything")
    p = write_corpus(tmp_path, [{"text": "apple pie"}, {"text": "apple tart"}, {"text": "apple pie"}])
    r = BM25Retriever(p, k=3)
    first = r("apple")
    # equal scores keep corpus order, every time
    assert first == ["apple pie", "apple tart", "apple pie"] == r("apple") == BM25Retriever(p, k=3)("apple")


def test_bm25_search_is_async_too():
    r = BM25Retriever(CORPUS, k=1)
    assert asyncio.run(r.search("Which river passes through Rome?")) == [passage("tiber")]


def test_bm25_relative_to_base_dir(tmp_path):
    sub = tmp_path / "proj"
    sub.mkdir()
    write_corpus(sub, [{"id": "a", "body": "the quick brown fox"}], name="docs.jsonl")
    r = BM25Retriever("docs.jsonl", text_field="body", base_dir=sub, k=1)
    assert r("fox") == ["the quick brown fox"]
    assert resolve_path("x.jsonl", None) == Path("x.jsonl")
    assert resolve_path("/abs/x.jsonl", sub) == Path("/abs/x.jsonl")


def test_bm25_corpus_errors(tmp_path):
    p = write_corpus(tmp_path, [{"text": "ok"}, {"txt": "typo"}])
    with pytest.raises(DatasetError) as info:
        BM25Retriever(p)("ok")
    assert str(info.value) == f"{p}:2: missing text field 'text'; did you mean 'txt'?"
    q = write_corpus(tmp_path, [{"text": 5}], name="n.jsonl")
    with pytest.raises(DatasetError, match=r":1: text field 'text' must be a string"):
        BM25Retriever(q)("x")
    empty = tmp_path / "e.jsonl"
    empty.write_text("")
    with pytest.raises(DatasetError, match="file is empty"):
        BM25Retriever(empty)("x")


def test_bm25_does_not_import_heavy_modules_until_used(tmp_path):
    import subprocess

    code = (
        "import sys; from lmc.retrieve import BM25Retriever; "
        f"r = BM25Retriever({str(CORPUS)!r}); "
        "assert 'bm25s' not in sys.modules and 'numpy' not in sys.modules; "
        "r('river'); assert 'bm25s' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_bm25_recall_on_shipped_qa():
    """Single-hop questions: the answer-bearing passage is in the top 3 for most of them."""
    r = BM25Retriever(CORPUS, k=3)
    from lmc.metrics import passage_match

    hits = total = 0
    for part in ("train", "dev"):
        for ex in load_dataset(REPO / "datasets" / f"qa_{part}.jsonl"):
            total += 1
            hits += passage_match(ex.data["answer"], r(ex.data["question"]))
    assert hits / total >= 0.8, f"recall@3 {hits}/{total}"


# ---------------------------------------------------------------- embeddings

VOCAB = ["apple", "river", "king", "moon", "bread"]


def fake_vector(text: str) -> list[float]:
    """Bag of a few words: enough for cosine similarity to mean something, no network."""
    words = text.lower().split()
    return [float(sum(w.strip(".,?") == v for w in words)) for v in VOCAB]


class FakeEmbedder:
    def __init__(self):
        self.batches: list[list[str]] = []

    def __call__(self, texts):
        self.batches.append(list(texts))
        return [fake_vector(t) for t in texts]

    async def acall(self, texts):
        await asyncio.sleep(0)
        return self(texts)


ROWS = [
    {"id": "1", "text": "The river flows past the old mill. River boats."},
    {"id": "2", "text": "An apple a day keeps the doctor away."},
    {"id": "3", "text": "The king lived in a castle by the river."},
    {"id": "4", "text": "Fresh bread every morning."},
]


def test_embeddings_search_ranks_by_cosine(tmp_path):
    p = write_corpus(tmp_path, ROWS)
    fake = FakeEmbedder()
    r = EmbeddingsRetriever(p, model="fake/embed", k=2, cache_dir=tmp_path / "cache", aembed=fake.acall)
    got = asyncio.run(r.search("river"))
    assert got == [ROWS[0]["text"], ROWS[2]["text"]]
    assert asyncio.run(r.search("apple", k=1)) == [ROWS[1]["text"]]
    assert asyncio.run(r.search("nothing matches")) == []  # zero vector: no arbitrary passages
    # corpus embedded once (one batch), then one call per query
    assert fake.batches[0] == [row["text"] for row in ROWS]
    assert len(fake.batches) == 4 and r.calls == 4


def test_embeddings_cache_on_disk(tmp_path):
    p = write_corpus(tmp_path, ROWS)
    cache = tmp_path / "cache"
    first = FakeEmbedder()
    EmbeddingsRetriever(p, model="fake/embed", cache_dir=cache, embed=first)("bread")
    files = list((cache / "embeddings").glob("*.json"))
    assert len(files) == 1
    assert json.loads(files[0].read_text())["model"] == "fake/embed"
    second = FakeEmbedder()
    r2 = EmbeddingsRetriever(p, model="fake/embed", cache_dir=cache, embed=second)
    assert r2("bread", k=1) == [ROWS[3]["text"]]
    assert second.batches == [["bread"]]  # only the query was embedded
    # another model or a changed corpus is a different cache entry
    third = FakeEmbedder()
    EmbeddingsRetriever(p, model="fake/other", cache_dir=cache, embed=third)("bread")
    assert len(third.batches) == 2
    write_corpus(tmp_path, ROWS + [{"id": "5", "text": "moon"}])
    fourth = FakeEmbedder()
    EmbeddingsRetriever(p, model="fake/embed", cache_dir=cache, embed=fourth)("moon")
    assert len(fourth.batches[0]) == 5
    # a damaged entry is rebuilt, not trusted
    for f in (cache / "embeddings").glob("*.json"):
        f.write_text("{not json")
    fifth = FakeEmbedder()
    assert EmbeddingsRetriever(p, model="fake/embed", cache_dir=cache, embed=fifth)("moon", k=1) == ["moon"]
    assert len(fifth.batches) == 2


def test_embeddings_batches_large_corpora(tmp_path):
    rows = [{"text": f"apple {i}"} for i in range(150)]
    p = write_corpus(tmp_path, rows)
    fake = FakeEmbedder()
    r = EmbeddingsRetriever(p, model="m", cache_dir=None, embed=fake, k=1)
    assert r("apple") == ["apple 0"]  # all tie: corpus order
    assert [len(b) for b in fake.batches] == [64, 64, 22, 1]


def test_embeddings_errors(tmp_path):
    p = write_corpus(tmp_path, ROWS)
    with pytest.raises(DatasetError, match="needs a model name"):
        EmbeddingsRetriever(p, model="")
    bad = EmbeddingsRetriever(p, model="m", cache_dir=None, embed=lambda texts: [[1.0]])
    with pytest.raises(LMError, match="returned 1 vectors for 4 texts"):
        bad("river")
    q = write_corpus(tmp_path, [{"body": "x"}], name="q.jsonl")
    with pytest.raises(DatasetError, match="missing text field 'text'"):
        asyncio.run(EmbeddingsRetriever(q, model="m", embed=FakeEmbedder()).search("x"))
    with pytest.raises(DatasetError, match="file not found"):
        EmbeddingsRetriever(tmp_path / "none.jsonl", model="m", embed=FakeEmbedder())("x")


def test_embeddings_runs_under_several_event_loops(tmp_path):
    p = write_corpus(tmp_path, ROWS)
    fake = FakeEmbedder()
    r = EmbeddingsRetriever(p, model="m", cache_dir=None, aembed=fake.acall, k=1)

    async def many():
        return await asyncio.gather(*(r.search("king") for _ in range(5)))

    assert asyncio.run(many()) == [[ROWS[2]["text"]]] * 5
    assert asyncio.run(r.search("bread")) == [ROWS[3]["text"]]
    assert sum(len(b) == 4 for b in fake.batches) == 1  # the corpus was embedded once despite concurrency


def test_cosine_math():
    from lmc.retrieve import _cosine_scores

    scores = _cosine_scores([1.0, 0.0], [[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]], [1.0, math.sqrt(2), 0.0])
    assert scores == pytest.approx([1.0, 1 / math.sqrt(2), 0.0])
