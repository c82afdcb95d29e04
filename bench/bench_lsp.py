"""Benchmark: `lmc lsp` answering an edit of a 5,000-line file with its diagnostics, end to end over stdio.

A real LSP client (pygls') starts `python -m lmc lsp`, opens bench_check's generated 5,015-line
program, then sends edits one at a time after a quiet spell (as a person types a word, pauses,
reads): each edit's latency is from sending `textDocument/didChange` to receiving the
`publishDiagnostics` of that version.  Edits alternate between breaking a statement (a syntax
error the diagnostics must show) and mending it; a few add a line, which moves every
declaration below it (their spans are shifted, not reparsed).  Target: the median in-line edit under 100 ms.

    python bench/bench_lsp.py [--edits N] [--record]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

TARGET_MS = 100.0


async def _session(edits: int) -> dict:
    from lsprotocol import types as T
    from pygls.lsp.client import LanguageClient

    from bench_check import generate

    text = generate()
    lines = text.split("\n")
    uri = "file:///bench/big.lmp"
    client = LanguageClient("bench", "1")
    got: dict[int, tuple[float, int]] = {}
    waiters: dict[int, asyncio.Future] = {}

    @client.feature(T.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    def _(params: T.PublishDiagnosticsParams):
        got[params.version] = (time.perf_counter(), len(params.diagnostics))
        fut = waiters.pop(params.version, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def wait(version: int) -> None:
        if version in got:
            return
        fut = asyncio.get_running_loop().create_future()
        waiters[version] = fut
        await asyncio.wait_for(fut, 60)

    await client.start_io(sys.executable, "-m", "lmc", "lsp")
    await client.initialize_async(T.InitializeParams(capabilities=T.ClientCapabilities()))
    client.initialized(T.InitializedParams())
    start = time.perf_counter()
    client.text_document_did_open(T.DidOpenTextDocumentParams(text_document=T.TextDocumentItem(uri=uri, language_id="lmp", version=1, text=text)))
    await wait(1)
    open_ms = (got[1][0] - start) * 1000

    # The statements edited: `    context = unique(context + wiki(question))` in programs spread over the file.
    targets = [i for i, ln in enumerate(lines) if ln.strip() == "context = unique(context + wiki(question))"]
    picks = [targets[(k * 7919) % len(targets)] for k in range(edits)]
    inline: list[float] = []
    broken_seen = []
    newline: list[float] = []
    version = 1
    for k, line in enumerate(picks):
        col = lines[line].index("))") + 1
        # break: drop the closing ')' of wiki(...); mend: put it back
        for new_text, rng in (("", (col, col + 1)), (")", (col, col))):
            version += 1
            await asyncio.sleep(0.3)  # a quiet spell: longer than the server's debounce window
            sent = time.perf_counter()
            client.text_document_did_change(
                T.DidChangeTextDocumentParams(
                    text_document=T.VersionedTextDocumentIdentifier(uri=uri, version=version),
                    content_changes=[
                        T.TextDocumentContentChangePartial(range=T.Range(start=T.Position(line, rng[0]), end=T.Position(line, rng[1])), text=new_text)
                    ],
                )
            )
            await wait(version)
            inline.append((got[version][0] - sent) * 1000)
            broken_seen.append(got[version][1])
        if k % 5 == 0:  # add a blank line above the edited statement, then take it away
            for new_text, rng in (("\n", ((line, 0), (line, 0))), ("", ((line, 0), (line + 1, 0)))):
                version += 1
                await asyncio.sleep(0.3)
                sent = time.perf_counter()
                client.text_document_did_change(
                    T.DidChangeTextDocumentParams(
                        text_document=T.VersionedTextDocumentIdentifier(uri=uri, version=version),
                        content_changes=[
                            T.TextDocumentContentChangePartial(range=T.Range(start=T.Position(*rng[0]), end=T.Position(*rng[1])), text=new_text)
                        ],
                    )
                )
                await wait(version)
                newline.append((got[version][0] - sent) * 1000)
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()
    # every break was reported (one diagnostic) and every mend cleared it
    correct = broken_seen == [1, 0] * edits
    inline_sorted = sorted(inline)
    return {
        "lines": len(lines),
        "edits": len(inline),
        "open_ms": round(open_ms, 1),
        "inline_edit_ms": {
            "median": round(statistics.median(inline), 1),
            "p90": round(inline_sorted[int(0.9 * (len(inline) - 1))], 1),
            "max": round(max(inline), 1),
            "min": round(min(inline), 1),
        },
        "line_added_or_removed_ms": {"median": round(statistics.median(newline), 1), "max": round(max(newline), 1)},
        "diagnostics_correct": correct,
        "target_ms": TARGET_MS,
        "meets_target": statistics.median(inline) < TARGET_MS and correct,
    }


def run(edits: int = 20) -> dict:
    import os

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    result = asyncio.run(_session(edits))
    result["load_average_before"] = round(load, 2) if load is not None else None
    return result


if __name__ == "__main__":
    n = int(sys.argv[sys.argv.index("--edits") + 1]) if "--edits" in sys.argv else 20
    result = run(edits=n)
    if "--record" in sys.argv:
        (ROOT / "bench" / "results").mkdir(exist_ok=True)
        (ROOT / "bench" / "results" / "lsp.json").write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(json.dumps(result, indent=2))
