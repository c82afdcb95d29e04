"""`lmc lsp` end to end: a real LSP client (pygls') drives the server over stdio through open, change,
hover, definition, references, completion, rename, outline and formatting, on example and broken programs."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from lsprotocol import types as T
from pygls.exceptions import JsonRpcException
from pygls.lsp.client import LanguageClient

from lmc.check import analyze
from lmc.fmt import format_source

ROOT = Path(__file__).resolve().parent.parent
MULTIHOP = (ROOT / "programs" / "multihop.lmp").read_text()
URI = "file:///work/example/multihop.lmp"


class Session:
    """A started `lmc lsp` process and a client speaking to it; diagnostics land in a queue."""

    def __init__(self):
        self.client = LanguageClient("lmc-test", "1")
        self.diagnostics: asyncio.Queue = asyncio.Queue()
        self.versions: dict[str, int] = {}

        @self.client.feature(T.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
        def _(params: T.PublishDiagnosticsParams):
            self.diagnostics.put_nowait(params)

    async def __aenter__(self):
        await self.client.start_io(sys.executable, "-m", "lmc", "lsp")
        caps = T.ClientCapabilities(
            text_document=T.TextDocumentClientCapabilities(publish_diagnostics=T.PublishDiagnosticsClientCapabilities(related_information=True))
        )
        result = await asyncio.wait_for(self.client.initialize_async(T.InitializeParams(capabilities=caps)), 30)
        self.capabilities = result.capabilities
        self.client.initialized(T.InitializedParams())
        return self

    async def __aexit__(self, *exc):
        await asyncio.wait_for(self.client.shutdown_async(None), 10)
        self.client.exit(None)
        await self.client.stop()

    def open(self, text: str, uri: str = URI) -> None:
        self.versions[uri] = 1
        self.client.text_document_did_open(
            T.DidOpenTextDocumentParams(text_document=T.TextDocumentItem(uri=uri, language_id="lmp", version=1, text=text))
        )

    def change(self, start: tuple[int, int], end: tuple[int, int], text: str, uri: str = URI) -> None:
        self.versions[uri] += 1
        self.client.text_document_did_change(
            T.DidChangeTextDocumentParams(
                text_document=T.VersionedTextDocumentIdentifier(uri=uri, version=self.versions[uri]),
                content_changes=[T.TextDocumentContentChangePartial(range=T.Range(start=T.Position(*start), end=T.Position(*end)), text=text)],
            )
        )

    async def published(self, version: int | None = None, uri: str = URI) -> T.PublishDiagnosticsParams:
        """The next diagnostics for `uri` (of `version`, when given)."""
        while True:
            p = await asyncio.wait_for(self.diagnostics.get(), 30)
            if p.uri == uri and (version is None or p.version == version):
                return p

    def doc(self, uri: str = URI) -> T.TextDocumentIdentifier:
        return T.TextDocumentIdentifier(uri=uri)

    async def hover(self, line: int, col: int, uri: str = URI):
        return await self.client.text_document_hover_async(T.HoverParams(text_document=self.doc(uri), position=T.Position(line, col)))


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


def test_example_program_features_over_stdio():
    async def go():
        async with Session() as s:
            assert s.capabilities.hover_provider and s.capabilities.rename_provider
            s.open(MULTIHOP)
            assert not (await s.published()).diagnostics
            # hover: a module's kind and signature fields; a variable's inferred type; a signature field's description
            h = await s.hover(14, 9)  # module gen_query
            assert "ChainOfThought" in h.contents.value and "adds output reasoning" in h.contents.value
            assert "context: list[str]" in h.contents.value
            h = await s.hover(21, 5)  # query = ...
            assert "query: str" in h.contents.value and "variable of `multihop`" in h.contents.value
            h = await s.hover(21, 24)  # context= keyword of gen_query(...)
            assert "may contain relevant facts" in h.contents.value
            h = await s.hover(29, 15)  # exact_match
            assert "normalized text equal" in h.contents.value
            h = await s.hover(24, 16)  # builtin unique
            assert "unique(x)" in h.contents.value
            # definition: the call of gen_query goes to its declaration
            d = await s.client.text_document_definition_async(T.DefinitionParams(text_document=s.doc(), position=T.Position(21, 15)))
            assert d.range.start == T.Position(14, 7)
            # references of the variable `query`, its assignment included
            refs = await s.client.text_document_references_async(
                T.ReferenceParams(text_document=s.doc(), position=T.Position(21, 5), context=T.ReferenceContext(include_declaration=True))
            )
            assert [(r.range.start.line, r.range.start.character) for r in refs] == [(21, 4), (22, 16), (23, 12), (23, 62), (24, 36)]
            refs = await s.client.text_document_references_async(
                T.ReferenceParams(text_document=s.doc(), position=T.Position(21, 5), context=T.ReferenceContext(include_declaration=False))
            )
            assert [(r.range.start.line, r.range.start.character) for r in refs] == [(22, 16), (23, 12), (23, 62), (24, 36)]
            # off any symbol (a blank line): no definition, no references, nothing to rename
            assert await s.client.text_document_definition_async(T.DefinitionParams(text_document=s.doc(), position=T.Position(13, 0))) is None
            none = T.ReferenceParams(text_document=s.doc(), position=T.Position(13, 0), context=T.ReferenceContext(include_declaration=True))
            assert list(await s.client.text_document_references_async(none)) == []
            where = T.PrepareRenameParams(text_document=s.doc(), position=T.Position(13, 0))
            assert await s.client.text_document_prepare_rename_async(where) is None
            r = await s.client.text_document_prepare_rename_async(T.PrepareRenameParams(text_document=s.doc(), position=T.Position(2, 12)))
            assert (r.start.line, r.start.character) == (2, 10)
            # completion: builtins and variables in a body; output fields after '.'
            c = await s.client.text_document_completion_async(T.CompletionParams(text_document=s.doc(), position=T.Position(26, 2)))
            labels = {i.label for i in c.items}
            assert {"context", "query", "gen_query", "wiki", "len", "unique", "return"} <= labels
            assert any(i.label == "len" and "len(x)" in i.detail for i in c.items)
            # rename the signature GenerateQuery everywhere
            edit = await s.client.text_document_rename_async(T.RenameParams(text_document=s.doc(), position=T.Position(2, 12), new_name="MakeQuery"))
            assert sorted((e.range.start.line, e.range.start.character) for e in edit.changes[URI]) == [(2, 10), (14, 34)]
            # outline
            syms = await s.client.text_document_document_symbol_async(T.DocumentSymbolParams(text_document=s.doc()))
            assert [x.name for x in syms] == ["GenerateQuery", "Answer", "wiki", "gen_query", "answer", "multihop", "em"]
            assert [c.name for c in syms[0].children] == ["context", "question", "query"]
            # formatting: an already formatted file needs no edit
            f = await s.client.text_document_formatting_async(
                T.DocumentFormattingParams(text_document=s.doc(), options=T.FormattingOptions(tab_size=2, insert_spaces=True))
            )
            assert not f

    run(go())


BROKEN = """signature QA(question: str -> answer: str)
module qa = Predict(QA, temprature=0.3)

program main(question: str) -> (answer: str) {
  x = len(question question)
  r = qa(question=question)
  return {"answer": r.answr}
}
"""


def test_broken_program_diagnostics_change_completion_and_format():
    async def go():
        async with Session() as s:
            s.open(BROKEN)
            p = await s.published()
            expected = analyze(BROKEN, "/work/example/multihop.lmp").diagnostics
            assert len(p.diagnostics) == len(expected) == 3
            for got, want in zip(p.diagnostics, expected):
                assert got.message == want.message and got.source == "lmc"
                assert (got.range.start.line + 1, got.range.start.character + 1) == (want.span.line, want.span.col)
                assert (got.range.end.line + 1, got.range.end.character + 1) == (want.span.end_line, want.span.end_col)
                assert got.related_information[0].message == want.hint
            assert p.diagnostics[0].message == "unknown setting 'temprature' for Predict"
            assert p.diagnostics[1].message.startswith("unexpected 'question'")
            # fix the syntax error: the rest stays reported, the fixed one goes
            s.change((4, 18), (4, 27), "")
            p = await s.published(version=2)
            assert [d.message for d in p.diagnostics] == ["unknown setting 'temprature' for Predict", "module 'qa' has no output 'answr'"]
            # completion after '.' offers the module's outputs; inside the module's parentheses, its settings
            s.change((6, 22), (6, 27), "")
            await s.published(version=3)
            c = await s.client.text_document_completion_async(T.CompletionParams(text_document=s.doc(), position=T.Position(6, 22)))
            assert [i.label for i in c.items] == ["answer"]
            c = await s.client.text_document_completion_async(T.CompletionParams(text_document=s.doc(), position=T.Position(1, 24)))
            assert "temperature" in {i.label for i in c.items} and "max_tokens" in {i.label for i in c.items}
            # formatting goes through lmc fmt's formatter; a file that does not parse is left alone
            s.change((6, 22), (6, 22), "answer")
            await s.published(version=4)
            f = await s.client.text_document_formatting_async(
                T.DocumentFormattingParams(text_document=s.doc(), options=T.FormattingOptions(tab_size=2, insert_spaces=True))
            )
            text = BROKEN.replace("len(question question)", "len(question)").replace("r.answr", "r.answer")
            assert len(f) == 1 and f[0].new_text == format_source(text) and f[0].new_text != text.replace("  ", "  ")
            s.change((4, 0), (4, 0), "  y = (\n")
            p = await s.published(version=5)
            assert any(d.message.startswith("unexpected") for d in p.diagnostics)
            f = await s.client.text_document_formatting_async(
                T.DocumentFormattingParams(text_document=s.doc(), options=T.FormattingOptions(tab_size=2, insert_spaces=True))
            )
            assert not f

    run(go())


def test_handler_errors_are_lsp_errors_and_the_server_keeps_serving():
    async def go():
        async with Session() as s:
            s.open(MULTIHOP)
            await s.published()
            # a request about a document that was never opened
            with pytest.raises(JsonRpcException, match="is not open"):
                await s.hover(1, 1, uri="file:///nowhere.lmp")
            # a rename to a keyword, and one to a name already declared
            with pytest.raises(JsonRpcException, match="keyword"):
                await s.client.text_document_rename_async(T.RenameParams(text_document=s.doc(), position=T.Position(2, 12), new_name="program"))
            with pytest.raises(JsonRpcException, match="already a name"):
                await s.client.text_document_rename_async(T.RenameParams(text_document=s.doc(), position=T.Position(2, 12), new_name="Answer"))
            # a malformed request (params of the wrong shape), written as raw JSON-RPC, is answered with an error too
            answer = asyncio.get_running_loop().create_future()
            s.client.protocol._request_futures["bad-1"] = answer
            body = json.dumps({"jsonrpc": "2.0", "id": "bad-1", "method": "textDocument/hover", "params": {"textDocument": 3}})
            res = s.client.protocol.writer.write(f"Content-Length: {len(body)}\r\n\r\n{body}".encode())
            if asyncio.iscoroutine(res):
                await res
            with pytest.raises(JsonRpcException):
                await asyncio.wait_for(answer, 10)
            # an unknown method
            with pytest.raises(JsonRpcException):
                await asyncio.wait_for(s.client.protocol.send_request_async("lmc/nothing", {}), 10)
            # still serving
            h = await s.hover(14, 9)
            assert "ChainOfThought" in h.contents.value

    run(go())


def test_every_example_program_opens_without_diagnostics_and_has_an_outline():
    programs = sorted((ROOT / "programs").glob("*.lmp"))

    async def go():
        async with Session() as s:
            for i, path in enumerate(programs):
                uri = f"file:///work/example/p{i}.lmp"
                s.open(path.read_text(), uri=uri)
                p = await s.published(uri=uri)
                assert not p.diagnostics, path.name
                syms = await s.client.text_document_document_symbol_async(T.DocumentSymbolParams(text_document=s.doc(uri)))
                assert syms, path.name

    run(go())


def test_lmc_help_does_not_import_the_language_server():
    code = "import sys; from lmc.cli import main; main(['--help']); print('pygls' in sys.modules, 'lsprotocol' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip().splitlines()[-1] == "False False"
    assert "lsp" in out.stdout
