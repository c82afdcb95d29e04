"""`finetune-data`: successful traces per predictor as chat fine-tuning JSONL (OpenAI format); the IR is unchanged."""

from __future__ import annotations

import json
from pathlib import Path

from .. import ir as I
from ..files import atomic_write_text
from ..prompts import chat_prompt, _answer
from .bootstrap import collect
from .lab import PassInputs, PassResult


async def finetune_data(ir: I.IR, inputs: PassInputs, *, finetune_dir: str, max_labeled: int) -> PassResult:
    out_dir = Path(finetune_dir)
    boot, stats = await collect(ir, inputs, inputs.trainset, len(inputs.trainset), max_labeled=max_labeled, label="finetune-data", want_all=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for p in ir.predictors:
        rows = []
        for d in boot.get(p.id, ()):
            prompt = chat_prompt(p, d, demos=())
            messages = list(prompt.messages or ()) + [{"role": "assistant", "content": _answer(p.signature.outputs, d, False)}]
            rows.append(json.dumps({"messages": messages}, ensure_ascii=False, allow_nan=False))
        atomic_write_text(out_dir / f"{p.id}.jsonl", "".join(r + "\n" for r in rows))
        written[p.id] = len(rows)
    inputs.log(f"finetune-data: wrote {', '.join(f'{k}={v}' for k, v in written.items())} examples to {out_dir}")
    return PassResult(ir, notes=(f"finetune-data: {sum(written.values())} chat examples in {out_dir}",))
