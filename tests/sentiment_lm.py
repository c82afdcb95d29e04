"""A scripted LM for the sentiment program over the loopback server, and the examples it is scripted for.

Plain reviews are classified right; MISLEAD ones only when the prompt shows at least two demos,
FRAGILE ones only when it shows none, so which demos an optimizer picks changes the score.
"""

from __future__ import annotations

import re


def tag(text: str, name: str) -> str | None:
    m = re.search(rf"<{name}>\s*(.*?)\s*</{name}>", text, re.S)
    return m.group(1) if m else None


def responder(request: dict) -> str:
    """Right on plain reviews, wrong on MISLEAD ones unless the prompt shows at least two demos."""
    msgs = request.get("messages") or []
    if not msgs:
        return "positive"
    if "<instruction>" in str(msgs[0].get("content", "")) or "ProposeInstruction" in str(msgs[0].get("content", "")):
        tip = tag(str(msgs[-1]["content"]), "tip") or "x"
        return f"<instruction>Classify the sentiment of the review; {tip}</instruction>"
    review = tag(str(msgs[-1]["content"]), "review") or ""
    right = "negative" if "bad" in review else "positive"
    demos = sum(str(m.get("content", "")).count("<review>") for m in msgs[:-1])
    if "MISLEAD" in review and demos < 2:
        right = "positive" if right == "negative" else "negative"
    if "FRAGILE" in review and demos > 0:  # demos confuse the model on these
        right = "positive" if right == "negative" else "negative"
    return f"<sentiment>{right}</sentiment>"


def rows(n: int, prefix: str, mislead_every: int = 3) -> list[dict]:
    out = []
    for i in range(n):
        word = "bad" if i % 2 else "good"
        extra = " MISLEAD" if i % mislead_every == 0 else ""
        out.append({"id": f"{prefix}{i:02d}", "review": f"a {word} thing number {i}{extra}", "sentiment": "negative" if i % 2 else "positive"})
    return out
