"""Builds the harder routing benchmark set: twelve BANKING77 intents in six confusable pairs, seeded and byte for byte.

    python bench/make_banking_hard.py [--source DIR]           # write bench/data/route12_{train,dev,test}.jsonl
    python bench/make_banking_hard.py [--source DIR] --check   # exit 1 unless the shipped files match

The demo's six intents (datasets/route_*.jsonl) each get the BANKING77 intent a customer most easily confuses
with it (card arrival / card delivery estimate, top up failed / top up reverted, ...), picked by name before
any model run. Same source files, checksums, de-duplication against the test split and seeded shuffles as
datasets/make_banking_route.py, whose helpers this reuses; BANKING77 is CC BY 4.0 (see datasets/README.md).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "datasets"))
import make_banking_route as base  # noqa: E402

INTENTS = (
    "card_arrival",
    "card_delivery_estimate",
    "lost_or_stolen_card",
    "compromised_card",
    "exchange_rate",
    "exchange_charge",
    "top_up_failed",
    "top_up_reverted",
    "transfer_timing",
    "pending_transfer",
    "terminate_account",
    "pending_top_up",
)
SEED = 0
PER_INTENT = {"train": 10, "dev": 5, "test": 10}  # train and dev from BANKING77's train split, test from its test split
OUT = HERE / "data"


def build(folder: Path) -> dict[str, bytes]:
    """File name -> exact bytes of each route12_* file."""
    train_rows = base.read_source(folder, "banking77_train.jsonl")
    test_rows = base.read_source(folder, "banking77_test.jsonl")
    test_texts = {base._norm(r["text"]) for r in test_rows}
    parts: dict[str, list[dict]] = {"train": [], "dev": [], "test": []}
    for intent in INTENTS:
        seen: set[str] = set()
        pool = []
        for r in train_rows:
            key = base._norm(r["text"])
            if r["intent"] == intent and key not in test_texts and key not in seen:
                seen.add(key)
                pool.append(r)
        random.Random(f"route12:{SEED}:train:{intent}").shuffle(pool)
        n_train, n_dev = PER_INTENT["train"], PER_INTENT["dev"]
        parts["train"] += pool[:n_train]
        parts["dev"] += pool[n_train : n_train + n_dev]
        tests = [r for r in test_rows if r["intent"] == intent]
        random.Random(f"route12:{SEED}:test:{intent}").shuffle(tests)
        parts["test"] += tests[: PER_INTENT["test"]]
    out = {}
    for part, rows in parts.items():
        random.Random(f"route12:{SEED}:order:{part}").shuffle(rows)
        lines = [json.dumps({"id": r["id"], "message": r["text"], "intent": base.label(r["intent"])}, ensure_ascii=False) for r in rows]
        out[f"route12_{part}.jsonl"] = ("\n".join(lines) + "\n").encode("utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=None, help="folder with banking77_{train,test}.jsonl")
    ap.add_argument("--check", action="store_true", help="compare with the shipped files instead of writing")
    args = ap.parse_args(argv)
    files = build(args.source or base.default_source())
    if args.check:
        bad = [n for n, data in files.items() if not (OUT / n).is_file() or (OUT / n).read_bytes() != data]
        for name in bad:
            print(f"{OUT / name}: differs from what {Path(__file__).name} builds")
        return 1 if bad else 0
    OUT.mkdir(exist_ok=True)
    for name, data in files.items():
        (OUT / name).write_bytes(data)
        records = data.count(b"\n")
        print(f"{name}  {records} records  sha256 {hashlib.sha256(data).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
