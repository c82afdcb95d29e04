"""Checks the example datasets: counts, ids, balanced labels, answers findable in the corpus, recorded hashes.

Run from the repository root: `python datasets/check_datasets.py`; exits 1 with one line per problem.
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from lmc.datasets import load_dataset  # noqa: E402
from lmc.errors import DatasetError  # noqa: E402
from lmc.metrics import normalize_text  # noqa: E402

COUNTS = {
    "corpus.jsonl": None,
    "sentiment_train.jsonl": 100,
    "sentiment_dev.jsonl": 60,
    "sentiment_new.jsonl": 3,
    "qa_train.jsonl": 30,
    "qa_dev.jsonl": 20,
    "multihop_train.jsonl": 20,
    "multihop_dev.jsonl": 15,
    "math_train.jsonl": 30,
    "math_dev.jsonl": 20,
    "arith_train.jsonl": 20,
    "arith_dev.jsonl": 15,
    "agent_train.jsonl": 15,
    "agent_dev.jsonl": 10,
    "route_train.jsonl": 120,
    "route_dev.jsonl": 30,
    "route_test.jsonl": 60,
    "route_new.jsonl": 4,
}

ROUTE_INTENTS = ("card arrival", "lost or stolen card", "exchange rate", "top up failed", "transfer timing", "terminate account")
# BANKING77 row ids: train and dev come from its train split, the held-out test from its test split.
ROUTE_SOURCE = {"train": "banking77-train-", "dev": "banking77-train-", "test": "banking77-test-", "new": "banking77-test-"}


def recorded_hashes() -> dict[str, str]:
    """File -> SHA-256 from the `| file | sha256 |` table of datasets/README.md."""
    text = (HERE / "README.md").read_text(encoding="utf-8")
    return dict(re.findall(r"^\| `(route_[a-z]+\.jsonl)` \| `([0-9a-f]{64})` \|", text, re.M))


def route_problems(sets: dict) -> list[str]:
    """The BANKING77 subset: its six intents balanced, ids from the right split, no message in two files."""
    problems: list[str] = []
    texts: dict[str, str] = {}
    for part, prefix in ROUTE_SOURCE.items():
        name = f"route_{part}.jsonl"
        ds = sets.get(name)
        if ds is None:
            continue
        labels = Counter(ex.get("intent") for ex in ds)
        if part == "new":
            if set(labels) != {None}:
                problems.append(f"{name}: expected unlabeled messages, found intents {dict(labels)}")
        elif set(labels) != set(ROUTE_INTENTS) or len(set(labels.values())) != 1:
            problems.append(f"{name}: intents not the six, balanced: {dict(labels)}")
        for ex in ds:
            if not ex.id.startswith(prefix):
                problems.append(f"{name}:{ex.line}: id {ex.id!r} is not a row of BANKING77's {prefix[10:-1]} split")
            message = ex.get("message")
            if not isinstance(message, str) or not message.strip():
                problems.append(f"{name}:{ex.line}: needs a non-empty 'message'")
                continue
            key = " ".join(message.lower().split())
            if key in texts and texts[key] != name:
                problems.append(f"{name}:{ex.line}: message also in {texts[key]}")
            texts.setdefault(key, name)
    hashes = recorded_hashes()
    for part in ROUTE_SOURCE:
        name = f"route_{part}.jsonl"
        digest = hashlib.sha256((HERE / name).read_bytes()).hexdigest() if (HERE / name).is_file() else None
        if digest is not None and hashes.get(name) != digest:
            problems.append(f"{name}: SHA-256 {digest} is not the one datasets/README.md records ({hashes.get(name)})")
    return problems


def main() -> int:  # noqa: C901 - a script: one check per dataset file, in the order of datasets/README.md
    problems: list[str] = []
    sets = {}
    for name, count in COUNTS.items():
        try:
            sets[name] = ds = load_dataset(HERE / name)  # JSON per line, unique ids, no NaN, no duplicate keys
        except DatasetError as exc:
            problems.append(str(exc))
            continue
        if count is not None and len(ds) != count:
            problems.append(f"{name}: {len(ds)} examples, expected {count}")
        if any(ex.id.startswith(Path(name).stem + "-") for ex in ds):
            problems.append(f"{name}: some examples have no explicit id")

    corpus = sets.get("corpus.jsonl")
    passages = {}
    if corpus is not None:
        for ex in corpus:
            if not all(isinstance(ex.get(k), str) and ex.get(k) for k in ("title", "text")):
                problems.append(f"corpus.jsonl:{ex.line}: needs non-empty 'title' and 'text'")
                continue
            passages[ex.id] = " " + normalize_text(ex.data["title"] + " " + ex.data["text"]) + " "

    for part in ("train", "dev"):
        ds = sets.get(f"sentiment_{part}.jsonl")
        if ds is not None:
            labels = Counter(ex.get("sentiment") for ex in ds)
            if set(labels) != {"positive", "negative"} or labels["positive"] != labels["negative"]:
                problems.append(f"sentiment_{part}.jsonl: labels not balanced: {dict(labels)}")
            for ex in ds:
                words = len(str(ex.get("review", "")).split())
                if not 5 <= words <= 40:
                    problems.append(f"sentiment_{part}.jsonl:{ex.line}: review has {words} words, expected 5 to 40")

        for stem in ("qa", "multihop"):
            ds = sets.get(f"{stem}_{part}.jsonl")
            for ex in ds or ():
                answer = ex.get("answer")
                if not isinstance(answer, str) or not 1 <= len(answer.split()) <= 5:
                    problems.append(f"{stem}_{part}.jsonl:{ex.line}: answer must be 1 to 5 words")
                    continue
                needle = " " + normalize_text(answer) + " "
                where = [pid for pid, text in passages.items() if needle in text]
                if not where:
                    problems.append(f"{stem}_{part}.jsonl:{ex.line}: answer {answer!r} is in no corpus passage")
                support = ex.get("supporting")
                if stem == "multihop":
                    if not isinstance(support, list) or len(support) < 2:
                        problems.append(f"multihop_{part}.jsonl:{ex.line}: needs two or more 'supporting' passage ids")
                        continue
                    missing = [pid for pid in support if pid not in passages]
                    if missing:
                        problems.append(f"multihop_{part}.jsonl:{ex.line}: unknown supporting passage {missing[0]!r}")
                    elif not set(where) & set(support):
                        problems.append(f"multihop_{part}.jsonl:{ex.line}: answer is not in any supporting passage")

        for stem in ("math", "arith", "agent"):
            for ex in sets.get(f"{stem}_{part}.jsonl") or ():
                answer = ex.get("answer")
                if isinstance(answer, bool) or not isinstance(answer, (int, float)):
                    problems.append(f"{stem}_{part}.jsonl:{ex.line}: answer must be a number")

    for stem in ("sentiment", "qa", "multihop", "math", "arith", "agent"):
        key = "review" if stem == "sentiment" else "question"
        train, dev = sets.get(f"{stem}_train.jsonl"), sets.get(f"{stem}_dev.jsonl")
        if train and dev:
            shared = {ex.get(key) for ex in train} & {ex.get(key) for ex in dev}
            if shared:
                problems.append(f"{stem}: {len(shared)} texts appear in both train and dev")

    problems += route_problems(sets)

    for line in problems:
        print(line)
    total = sum(len(ds) for ds in sets.values())
    print(f"{len(sets)} files, {total} records, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
