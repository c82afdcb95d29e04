"""Never clobber: no command overwrites one of its inputs or fails to write only after paying for LM calls.

Every case runs the real CLI against the loopback server and asserts the refusal
came before the first request, and that the input is byte-for-byte unchanged.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lmserver import LoopbackServer
from tests.test_programs_run import typed_responder

ROOT = Path(__file__).resolve().parent.parent
SENTIMENT = ROOT / "programs" / "sentiment.lmp"


@pytest.fixture(scope="module")
def server():
    with LoopbackServer(typed_responder) as srv:
        yield srv


@pytest.fixture
def ws(tmp_path, monkeypatch, server):
    """A folder with the program, labeled data and a passes file; the server's counters reset."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LMC_LM", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    shutil.copy(SENTIMENT, tmp_path / "prog.lmp")
    rows = [{"id": f"r{i}", "review": f"review number {i}", "sentiment": "positive" if i % 2 else "negative"} for i in range(8)]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "passes.yaml").write_text("- none\n")
    (tmp_path / "d.stats.json").write_text(json.dumps(rows))  # a dev set that happens to sit where a stats file goes
    os.mkfifo(tmp_path / "fifo")
    server.reset_counters()
    return tmp_path


@pytest.fixture
def lmc(capsys, server):
    def run(*args) -> tuple[int, str]:
        from lmc.cli import main

        code = main([str(a) for a in args] + ["--lm", "openai/test", "--api-base", server.url])
        cap = capsys.readouterr()
        assert "Traceback" not in cap.err
        return code, cap.err

    return run


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}  # (is_file skips the FIFO)


def refused(result, *fragments: str) -> None:
    code, err = result
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for f in fragments:
        assert f in lines[0], err


CASES = [
    (["eval", "prog.lmp", "--data", "data.jsonl", "--report", "data.jsonl"], "--report data.jsonl is the --data file"),
    (["eval", "prog.lmp", "--data", "data.jsonl", "--junit", "data.jsonl"], "--junit data.jsonl is the --data file"),
    (["eval", "prog.lmp", "--data", "data.jsonl", "--summary", "data.jsonl"], "--summary data.jsonl is the --data file"),
    (["eval", "prog.lmp", "--data", "data.jsonl", "--report", "prog.lmp"], "--report prog.lmp is the target"),
    (["eval", "prog.lmp", "--data", "data.jsonl", "--report", "r.json", "--junit", "r.json"], "--report and --junit are both r.json"),
    (["compile", "prog.lmp", "--train", "data.jsonl", "-o", "data.jsonl", "--optimizer", "none"], "-o data.jsonl is the --train file"),
    (["compile", "prog.lmp", "--train", "data.jsonl", "-o", "prog.lmp", "--optimizer", "none"], "-o prog.lmp is the program"),
    (["compile", "prog.lmp", "--train", "data.jsonl", "-o", "passes.yaml", "--passes", "passes.yaml"], "-o passes.yaml is the --passes file"),
    (
        ["compile", "prog.lmp", "--train", "data.jsonl", "--dev", "d.stats.json", "-o", "d.lmc.json", "--optimizer", "none"],
        "the stats file next to -o d.stats.json is the --dev file",
    ),
    (["run", "prog.lmp", "--data", "data.jsonl", "--out", "o.jsonl", "--trace", "data.jsonl"], "--trace data.jsonl is the --data file"),
    (["run", "prog.lmp", "--data", "data.jsonl", "--out", "prog.lmp"], "--out prog.lmp is the program"),
    (["run", "prog.lmp", "-i", "review=x", "--trace", "prog.lmp"], "--trace prog.lmp is the program"),
    (["run", "prog.lmp", "--data", "data.jsonl", "--out", "o.jsonl", "--trace", "o.jsonl"], "--out and --trace are both o.jsonl"),
    (
        ["run", "prog.lmp", "--data", "data.jsonl", "--out", "o.jsonl", "--cache-dir", "passes.yaml"],
        "--cache-dir passes.yaml: is a file; expected a directory",
    ),
    (["eval", "prog.lmp", "--data", "data.jsonl", "--report", "data.jsonl/r.json"], "'data.jsonl' is a file"),
    (["eval", "prog.lmp", "--data", "data.jsonl", "--report", "."], "is a directory; expected a file path"),
    (["eval", "prog.lmp", "--data", "data.jsonl", "--summary", "/dev/null"], "--summary /dev/null: is a character device, not a regular file"),
    (["eval", "prog.lmp", "--data", "data.jsonl", "--junit", "fifo"], "--junit fifo: is a FIFO (named pipe)"),
]


@pytest.mark.parametrize("args, message", CASES, ids=[" ".join(a[:1] + a[-2:]) for a, _ in CASES])
def test_an_output_on_an_input_is_refused_before_any_lm_call(ws, lmc, server, args, message):
    before = snapshot(ws)
    refused(lmc(*args), message)
    assert server.requests == 0
    assert snapshot(ws) == before


@pytest.mark.parametrize("link", ["hard", "sym"])
def test_links_to_an_input_are_the_input(ws, lmc, server, link):
    (os.link if link == "hard" else os.symlink)(ws / "data.jsonl", ws / "alias.jsonl")
    before = (ws / "data.jsonl").read_bytes()
    refused(lmc("eval", "prog.lmp", "--data", "data.jsonl", "--report", "alias.jsonl"), "is the --data file")
    refused(lmc("run", "prog.lmp", "--data", "alias.jsonl", "--out", "data.jsonl"), "is the --data file")
    refused(lmc("compile", "prog.lmp", "--train", "data.jsonl", "-o", "alias.jsonl", "--optimizer", "none"), "is the --train file")
    assert server.requests == 0 and (ws / "data.jsonl").read_bytes() == before


def test_a_symlinked_folder_is_seen_through(ws, lmc, server):
    (ws / "sub").mkdir()
    shutil.move(ws / "data.jsonl", ws / "sub" / "data.jsonl")
    os.symlink(ws / "sub", ws / "view")
    refused(lmc("eval", "prog.lmp", "--data", "sub/data.jsonl", "--summary", "view/data.jsonl"), "is the --data file")
    assert server.requests == 0


def test_compiling_an_artifact_onto_itself_is_refused(ws, lmc, server):
    assert lmc("compile", "prog.lmp", "--train", "data.jsonl", "-o", "a.lmc.json", "--optimizer", "none")[0] == 0
    server.reset_counters()
    before = (ws / "a.lmc.json").read_bytes()
    refused(lmc("compile", "a.lmc.json", "--train", "data.jsonl", "-o", "a.lmc.json", "--optimizer", "labeled"), "-o a.lmc.json is the program")
    assert server.requests == 0 and (ws / "a.lmc.json").read_bytes() == before


def test_an_output_on_a_retriever_corpus_is_refused(ws, lmc, server):
    (ws / "corpus.jsonl").write_text('{"text": "a fact"}\n')
    (ws / "rag.lmp").write_text(
        'retriever facts = bm25("corpus.jsonl", text="text", k=1)\n\nprogram main(q: str) -> (a: str) {\n  return {"a": join(facts(q), " ")}\n}\n'
    )
    refused(lmc("run", "rag.lmp", "-i", "q=x", "--trace", "corpus.jsonl"), "is the corpus of retriever 'facts'")


def test_the_configuration_file_is_an_input(ws, lmc, server):
    (ws / "lmc.yaml").write_text("concurrency: 2\n")
    refused(lmc("run", "prog.lmp", "--data", "data.jsonl", "--out", "lmc.yaml"), "is the configuration")


def test_report_merge_never_overwrites_a_shard(ws, lmc, server):
    for i in (1, 2):
        code, err = lmc("eval", "prog.lmp", "--data", "data.jsonl", "--shard", f"{i}/2", "--report", f"s{i}.json")
        assert code == 0, err
    before = (ws / "s1.json").read_bytes()
    code, err = lmc_no_lm("report", "merge", "s1.json", "s2.json", "-o", "s1.json")
    assert code == 2 and "-o s1.json is the shard report" in err
    code, err = lmc_no_lm("report", "merge", "s1.json", "s2.json", "--summary", "s2.json")
    assert code == 2 and "--summary s2.json is the shard report" in err
    assert (ws / "s1.json").read_bytes() == before


def lmc_no_lm(*args) -> tuple[int, str]:
    import contextlib
    import io

    from lmc.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stderr(buf), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(args))
    return code, buf.getvalue()


def test_emit_prompts_never_writes_over_the_artifact(ws, lmc, server):
    assert lmc("compile", "prog.lmp", "--train", "data.jsonl", "-o", "a.lmc.json", "--optimizer", "none")[0] == 0
    (ws / "prompts").mkdir()
    os.link(ws / "a.lmc.json", ws / "prompts" / "classify.txt")  # where the prompt of predictor 'classify' goes
    before = (ws / "a.lmc.json").read_bytes()
    code, err = lmc_no_lm("inspect", "a.lmc.json", "--emit-prompts", "prompts")
    assert code == 2 and "--emit-prompts prompts/classify.txt is the artifact a.lmc.json" in err, err
    assert (ws / "a.lmc.json").read_bytes() == before


def _unshare_works() -> bool:
    if not shutil.which("unshare") or os.geteuid() != 0:
        return False
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _unshare_works(), reason="needs root and mount namespaces for a read-only bind mount")
@pytest.mark.parametrize(
    "command",
    [
        ["eval", "prog.lmp", "--data", "data.jsonl", "--report", "ro/r.json"],
        ["eval", "prog.lmp", "--data", "data.jsonl", "--junit", "ro/deeper/r.xml"],
        ["compile", "prog.lmp", "--train", "data.jsonl", "-o", "ro/a.lmc.json", "--optimizer", "none"],
        ["run", "prog.lmp", "--data", "data.jsonl", "--out", "ro/o.jsonl"],
        ["run", "prog.lmp", "--data", "data.jsonl", "--out", "o.jsonl", "--cache-dir", "ro/cache"],
    ],
)
def test_a_read_only_folder_is_refused_before_any_lm_call(ws, server, command):
    """Root ignores permission bits, so the folder is a read-only bind mount in a private mount namespace."""
    (ws / "ro").mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LITELLM_LOCAL_MODEL_COST_MAP": "True", "OPENAI_API_KEY": "sk-t"}
    env.pop("LMC_LM", None)
    lmc = " ".join([sys.executable, "-m", "lmc", *command, "--lm", "openai/test", "--api-base", server.url])
    script = f"mount --bind ro ro && mount -o remount,bind,ro ro && exec {lmc}"
    done = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script], cwd=ws, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr
    assert "Read-only file system" in done.stderr and done.stderr.startswith("error: "), done.stderr
    assert server.requests == 0
