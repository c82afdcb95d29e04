"""Builds the `route_*` datasets (six BANKING77 intents) from the BANKING77 JSONL files, seeded and byte-for-byte.

    python datasets/make_banking_route.py [--source DIR]           # write datasets/route_{train,dev,test,new}.jsonl
    python datasets/make_banking_route.py [--source DIR] --check   # exit 1 unless the shipped files match

DIR holds `banking77_train.jsonl` and `banking77_test.jsonl` as described in
datasets/README.md (default: `$BANKING77_DIR`, else the nearest `shared/datasets`
beside the repository or one of its parent folders). Their SHA-256 is checked first, so a different copy of the
source can never silently produce different files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

SOURCE_SHA256 = {
    "banking77_train.jsonl": "98d3359aa55c5a6c12cf6a9616bdfcc5b1c382e1d7ea7c39b47c82da70e9c482",
    "banking77_test.jsonl": "1bcf878afa75dfa78bf653b35e0e31220d08356c7376fffb3b52967964a5af0a",
}

# Six intents a support desk sends to six different places, picked by name before any model run
# (see datasets/README.md). The label is BANKING77's name with underscores as spaces.
INTENTS = ("card_arrival", "lost_or_stolen_card", "exchange_rate", "top_up_failed", "transfer_timing", "terminate_account")
SEED = 0
PER_INTENT = {"train": 20, "dev": 5, "test": 10}  # train and dev from BANKING77's train split, test from its test split
NEW = 4  # unlabeled messages for `lmc run`: more of the six intents' test rows, not in route_test


def label(intent: str) -> str:
    return intent.replace("_", " ")


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def read_source(folder: Path, name: str) -> list[dict]:
    path = folder / name
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SystemExit(f"{path}: cannot read the BANKING77 source ({e.strerror}); pass --source DIR") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != SOURCE_SHA256[name]:
        raise SystemExit(f"{path}: SHA-256 {digest} is not the recorded {SOURCE_SHA256[name]}; expected the copy described in datasets/README.md")
    return [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]


def build(folder: Path) -> dict[str, bytes]:
    """File name -> exact bytes of each route_* file."""
    train_rows = read_source(folder, "banking77_train.jsonl")
    test_rows = read_source(folder, "banking77_test.jsonl")
    # A message written the same way in both splits would leak the test answer into the demos.
    test_texts = {_norm(r["text"]) for r in test_rows}
    parts: dict[str, list[dict]] = {"train": [], "dev": [], "test": []}
    unused_tests: list[dict] = []
    for intent in INTENTS:
        seen: set[str] = set()
        pool = []
        for r in train_rows:
            key = _norm(r["text"])
            if r["intent"] == intent and key not in test_texts and key not in seen:
                seen.add(key)
                pool.append(r)
        random.Random(f"{SEED}:train:{intent}").shuffle(pool)
        n_train, n_dev = PER_INTENT["train"], PER_INTENT["dev"]
        parts["train"] += pool[:n_train]
        parts["dev"] += pool[n_train : n_train + n_dev]
        tests = [r for r in test_rows if r["intent"] == intent]
        random.Random(f"{SEED}:test:{intent}").shuffle(tests)
        parts["test"] += tests[: PER_INTENT["test"]]
        unused_tests += tests[PER_INTENT["test"] :]
    out = {}
    for part, rows in parts.items():
        # Interleave the intents: BANKING77 lists each intent's messages together, and an optimizer
        # that reads the trainset in file order should not meet one class at a time.
        random.Random(f"{SEED}:order:{part}").shuffle(rows)
        lines = [json.dumps({"id": r["id"], "message": r["text"], "intent": label(r["intent"])}, ensure_ascii=False) for r in rows]
        out[f"route_{part}.jsonl"] = ("\n".join(lines) + "\n").encode("utf-8")
    new = random.Random(f"{SEED}:new").sample(unused_tests, NEW)
    lines = [json.dumps({"id": r["id"], "message": r["text"]}, ensure_ascii=False) for r in new]
    out["route_new.jsonl"] = ("\n".join(lines) + "\n").encode("utf-8")
    return out


def default_source() -> Path:
    """$BANKING77_DIR, else the nearest `shared/datasets` beside the repository or one of its parents."""
    env = os.environ.get("BANKING77_DIR")
    if env:
        return Path(env)
    for folder in HERE.parent.parents:
        if (folder / "shared" / "datasets" / "banking77_train.jsonl").is_file():
            return folder / "shared" / "datasets"
    return HERE.parent.parent / "shared" / "datasets"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=None, help="folder with banking77_{train,test}.jsonl")
    ap.add_argument("--out", type=Path, default=HERE, help="where to write (default: datasets/)")
    ap.add_argument("--check", action="store_true", help="compare with the files in --out instead of writing")
    args = ap.parse_args(argv)
    files = build(args.source or default_source())
    if args.check:
        bad = [name for name, data in files.items() if not (args.out / name).is_file() or (args.out / name).read_bytes() != data]
        for name in bad:
            print(f"{args.out / name}: differs from what {Path(__file__).name} builds")
        return 1 if bad else 0
    for name, data in files.items():
        (args.out / name).write_bytes(data)
        records = data.count(b"\n")
        print(f"{name}  {records} records  sha256 {hashlib.sha256(data).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
