"""`finetune-data`: successful traces per predictor as chat fine-tuning JSONL (OpenAI format); the IR is unchanged."""

from __future__ import annotations

import json
from pathlib import Path

from .. import ir as I
from ..files import atomic_write_text
from ..prompts import chat_prompt, _answer
from . import Context
from .bootstrap import collect


async def run(ir: I.IR, ctx: Context) -> I.IR:
    out_dir = Path(ctx.opt("finetune_dir", "build/finetune"))
    boot, stats = await collect(ir, ctx, ctx.trainset, len(ctx.trainset), label="finetune-data", want_all=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for p in ir.predictors:
        rows = []
        for d in boot.get(p.id, ()):
            prompt = chat_prompt(p, d, demos=())
            messages = list(prompt.messages) + [{"role": "assistant", "content": _answer(p.signature.outputs, d, False)}]
            rows.append(json.dumps({"messages": messages}, ensure_ascii=False, allow_nan=False))
        atomic_write_text(out_dir / f"{p.id}.jsonl", "".join(r + "\n" for r in rows))
        written[p.id] = len(rows)
    ctx.log(f"finetune-data: wrote {', '.join(f'{k}={v}' for k, v in written.items())} examples to {out_dir}")
    ctx.notes.append(f"finetune-data: {sum(written.values())} chat examples in {out_dir}")
    return ir
