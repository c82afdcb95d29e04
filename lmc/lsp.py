"""`lmc lsp`: the Language Server Protocol over stdio (pygls), answering from lmc.ide; only that command imports this module.

Diagnostics are published on open and on change: a change after a quiet spell is analysed at
once, changes arriving faster than one analysis every DEBOUNCE_S are folded into the next one.
Each version of a document is reparsed declaration by declaration (lmc.incremental), so an edit
to a 5,000-line file costs one declaration's parse plus the check (bench/bench_lsp.py).  A
request always answers from the latest text.  An exception in a handler is answered as an LSP
error by pygls, and the server goes on serving.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from lsprotocol import types as T
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol

from . import __version__
from .check import Analysis
from .errors import CompileErrors, Diagnostic, LmcError, Span
from .fmt import format_source
from .completion import complete
from .ide import Index, RenameError, Symbol, analyze_for_index, hover, index_source, outline, rename
from .incremental import Reparser

DEBOUNCE_S = 0.15

log = logging.getLogger("lmc.lsp")

_SYMBOL_KINDS = {
    "signature": "Interface",
    "module": "Class",
    "retriever": "Function",
    "tool": "Function",
    "lm": "Constant",
    "metric": "Function",
    "program": "Function",
    "input field": "Field",
    "output field": "Field",
    "input": "Variable",
    "output": "Property",
}
_COMPLETION_KINDS = {
    "keyword": "Keyword",
    "class": "Class",
    "field": "Field",
    "function": "Function",
    "variable": "Variable",
    "module": "Module",
    "property": "Property",
    "value": "Value",
}


@dataclass
class _Doc:
    """What the server holds for one open document."""

    uri: str
    path: str
    reparser: Reparser
    version: int = 0
    analysis: Analysis | None = None
    analysed_version: int = -1
    index: Index | None = None
    task: asyncio.Task | None = None
    last_run: float = 0.0
    lines: list[str] = field(default_factory=list)


_ANSWERED = object()


class _Protocol(LanguageServerProtocol):
    """pygls's protocol, but a request whose params cannot be read is answered with an error, not dropped."""

    def structure_message(self, data):
        try:
            return super().structure_message(data)
        except JsonRpcException as e:
            if isinstance(data, dict) and "id" in data and "method" in data:
                self._send_response(data["id"], None, e.to_response_error())
                return _ANSWERED
            raise

    def handle_message(self, message):
        if message is not _ANSWERED:
            super().handle_message(message)


def uri_path(uri: str) -> str:
    """A file URI's path (for diagnostics' spans); other URIs are kept whole."""
    from urllib.parse import unquote, urlparse

    parsed = urlparse(uri)
    return unquote(parsed.path) if parsed.scheme == "file" else uri


def build_server():  # noqa: C901 - the handlers are registered here, one small function each
    """The pygls LanguageServer with every lmc feature registered (not started)."""
    ls = LanguageServer("lmc", __version__, text_document_sync_kind=T.TextDocumentSyncKind.Incremental, protocol_cls=_Protocol)
    docs: dict[str, _Doc] = {}

    # -- positions: the front end counts characters from 1, LSP code units (UTF-16 by default) from 0
    def codec():
        return ls.workspace.position_encoding

    def to_lsp(doc: _Doc, line: int, col: int) -> Any:
        text = doc.lines[line - 1] if 1 <= line <= len(doc.lines) else ""
        prefix = text[: max(col - 1, 0)]
        if prefix.isascii() or codec() == T.PositionEncodingKind.Utf32:
            units = len(prefix)
        elif codec() == T.PositionEncodingKind.Utf8:
            units = len(prefix.encode("utf-8"))
        else:
            units = len(prefix.encode("utf-16-le")) // 2
        return T.Position(line=max(line - 1, 0), character=units)

    def from_lsp(doc: _Doc, pos: Any) -> tuple[int, int]:
        text = doc.lines[pos.line] if 0 <= pos.line < len(doc.lines) else ""
        if text.isascii() or codec() == T.PositionEncodingKind.Utf32:
            return pos.line + 1, min(pos.character, len(text)) + 1
        units = 0
        for i, c in enumerate(text):
            if units >= pos.character:
                return pos.line + 1, i + 1
            units += len(c.encode("utf-8")) if codec() == T.PositionEncodingKind.Utf8 else (2 if ord(c) > 0xFFFF else 1)
        return pos.line + 1, len(text) + 1

    def rng(doc: _Doc, sp: Span) -> Any:
        return T.Range(start=to_lsp(doc, sp.line, sp.col), end=to_lsp(doc, sp.end_line, sp.end_col))

    # -- documents and diagnostics
    def doc_of(uri: str) -> _Doc:
        doc = docs.get(uri)
        if doc is None:
            raise LmcError(f"{uri} is not open")
        return doc

    def analysis(doc: _Doc) -> Analysis:
        """The analysis of the document's latest text, made now if it is not yet (what diagnostics need)."""
        if doc.analysis is None or doc.analysed_version != doc.version:
            text = ls.workspace.get_text_document(doc.uri).source.replace("\r\n", "\n")
            doc.lines = text.split("\n")
            version = doc.version
            doc.analysis = analyze_for_index(text, doc.path, parsed=doc.reparser.parse(text))
            doc.analysed_version = version
        return doc.analysis

    def refresh(doc: _Doc) -> Index:
        """The index of the latest text (what requests need), built from its analysis on first use."""
        a = analysis(doc)
        if doc.index is None or doc.index.analysis is not a:
            doc.index = index_source(a.source, doc.path, analysis=a)
        return doc.index

    def publish(doc: _Doc) -> None:
        a = analysis(doc)
        doc.last_run = time.monotonic()
        related = _client_has_related_information(ls)
        out = [diagnostic(doc, d, related) for d in a.diagnostics]
        ls.text_document_publish_diagnostics(T.PublishDiagnosticsParams(uri=doc.uri, diagnostics=out, version=doc.version))

    def diagnostic(doc: _Doc, d: Diagnostic, related: bool) -> Any:
        info = None
        message = d.message
        if d.hint and related:
            info = [T.DiagnosticRelatedInformation(location=T.Location(uri=doc.uri, range=rng(doc, d.span)), message=d.hint)]
        elif d.hint:
            message = f"{message}; {d.hint}"
        severity = T.DiagnosticSeverity.Warning if d.severity == "warning" else T.DiagnosticSeverity.Error
        return T.Diagnostic(range=rng(doc, d.span), message=message, severity=severity, source="lmc", related_information=info)

    def schedule(doc: _Doc) -> None:
        """Publish diagnostics for the latest version: now after a quiet spell, else once the spell is over."""
        if doc.task is not None and not doc.task.done():
            return  # the pending run will read the latest text

        async def run() -> None:
            wait = doc.last_run + DEBOUNCE_S - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                publish(doc)
            except Exception:  # a bug in the front end must not stop the server: log it, keep serving
                log.exception("analysing %s failed", doc.uri)

        doc.task = asyncio.get_running_loop().create_task(run())

    @ls.feature(T.TEXT_DOCUMENT_DID_OPEN)
    def did_open(params: T.DidOpenTextDocumentParams) -> None:
        uri = params.text_document.uri
        docs[uri] = _Doc(uri, uri_path(uri), Reparser(uri_path(uri)), version=params.text_document.version)
        schedule(docs[uri])

    @ls.feature(T.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(params: T.DidChangeTextDocumentParams) -> None:
        doc = docs.get(params.text_document.uri)
        if doc is not None:
            doc.version = params.text_document.version
            schedule(doc)

    @ls.feature(T.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(params: T.DidCloseTextDocumentParams) -> None:
        doc = docs.pop(params.text_document.uri, None)
        if doc is not None and doc.task is not None:
            doc.task.cancel()
        ls.text_document_publish_diagnostics(T.PublishDiagnosticsParams(uri=params.text_document.uri, diagnostics=[]))

    # -- questions
    @ls.feature(T.TEXT_DOCUMENT_HOVER)
    def on_hover(params: T.HoverParams):
        doc = doc_of(params.text_document.uri)
        ix = refresh(doc)
        line, col = from_lsp(doc, params.position)
        text = hover(ix, line, col)
        if text is None:
            return None
        at = ix.at(line, col)
        word = ix.word_at(line, col)
        span = at[0] if at is not None else (word[1] if word is not None else None)
        return T.Hover(contents=T.MarkupContent(kind=T.MarkupKind.Markdown, value=text), range=rng(doc, span) if span is not None else None)

    def symbol_at(params: Any) -> tuple[_Doc, Index, tuple[Span, Symbol] | None]:
        """A position request's document, its index, and the symbol named at the position with the span of
        that naming (None off any symbol): what definition, references and rename start from."""
        doc = doc_of(params.text_document.uri)
        ix = refresh(doc)
        return doc, ix, ix.at(*from_lsp(doc, params.position))

    @ls.feature(T.TEXT_DOCUMENT_DEFINITION)
    def on_definition(params: T.DefinitionParams):
        doc, _, found = symbol_at(params)
        return None if found is None else T.Location(uri=doc.uri, range=rng(doc, found[1].span))

    @ls.feature(T.TEXT_DOCUMENT_REFERENCES)
    def on_references(params: T.ReferenceParams):
        doc, ix, found = symbol_at(params)
        if found is None:
            return []
        sym = found[1]
        spans = ix.references(sym)
        if not params.context.include_declaration:
            spans = [sp for sp in spans if sp != sym.span]
        return [T.Location(uri=doc.uri, range=rng(doc, sp)) for sp in spans]

    @ls.feature(T.TEXT_DOCUMENT_PREPARE_RENAME)
    def on_prepare_rename(params: T.PrepareRenameParams):
        doc, _, found = symbol_at(params)
        return None if found is None else rng(doc, found[0])

    @ls.feature(T.TEXT_DOCUMENT_RENAME)
    def on_rename(params: T.RenameParams):
        doc = doc_of(params.text_document.uri)
        ix = refresh(doc)
        try:
            spans = rename(ix, *from_lsp(doc, params.position), params.new_name)
        except RenameError as e:
            raise JsonRpcInvalidParams(str(e)) from None
        edits = [T.TextEdit(range=rng(doc, sp), new_text=params.new_name) for sp in spans]
        return T.WorkspaceEdit(changes={doc.uri: edits})

    @ls.feature(T.TEXT_DOCUMENT_COMPLETION, T.CompletionOptions(trigger_characters=[".", "(", ",", "=", " "]))
    def on_completion(params: T.CompletionParams):
        doc = doc_of(params.text_document.uri)
        ix = refresh(doc)
        items = []
        for c in complete(ix, *from_lsp(doc, params.position)):
            snippet = c.insert is not None and "$" in c.insert
            items.append(
                T.CompletionItem(
                    label=c.label,
                    kind=getattr(T.CompletionItemKind, _COMPLETION_KINDS.get(c.kind, "Text")),
                    detail=c.detail or None,
                    insert_text=c.insert,
                    insert_text_format=T.InsertTextFormat.Snippet if snippet else None,
                )
            )
        return T.CompletionList(is_incomplete=False, items=items)

    @ls.feature(T.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
    def on_symbols(params: T.DocumentSymbolParams):
        doc = doc_of(params.text_document.uri)
        ix = refresh(doc)

        def symbol(sym, children=()) -> Any:
            kind = getattr(T.SymbolKind, _SYMBOL_KINDS.get(sym.kind, "Variable"))
            whole = sym.whole if (sym.whole.line, sym.whole.col) <= (sym.span.line, sym.span.col) else sym.span
            return T.DocumentSymbol(
                name=sym.name,
                kind=kind,
                range=rng(doc, whole),
                selection_range=rng(doc, sym.span),
                detail=sym.kind,
                children=[symbol(c) for c in children] or None,
            )

        return [symbol(sym, kids) for sym, kids in outline(ix)]

    @ls.feature(T.TEXT_DOCUMENT_FORMATTING)
    def on_format(params: T.DocumentFormattingParams):
        doc = doc_of(params.text_document.uri)
        text = ls.workspace.get_text_document(doc.uri).source
        try:
            out = format_source(text, doc.path)
        except CompileErrors as e:
            # Formatting a file that does not parse would lose text: say why and change nothing.
            ls.window_log_message(T.LogMessageParams(type=T.MessageType.Info, message=f"lmc fmt: not formatted: {e}"))
            return []
        if out == text:
            return []
        lines = text.split("\n")
        end = T.Position(line=len(lines), character=0)
        return [T.TextEdit(range=T.Range(start=T.Position(line=0, character=0), end=end), new_text=out)]

    return ls


def _client_has_related_information(ls) -> bool:
    try:
        return bool(ls.client_capabilities.text_document.publish_diagnostics.related_information)
    except AttributeError:
        return False


def serve() -> None:
    """Serve one client over stdin/stdout until it says exit."""
    logging.basicConfig(level=logging.WARNING, format="lmc lsp: %(levelname)s %(name)s: %(message)s")
    build_server().start_io()
