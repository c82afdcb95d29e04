"""Usage errors of every command: exit 2, the usage line and a did-you-mean, never an internal error."""

from __future__ import annotations

import re

import pytest
import typer

from lmc import __version__
from lmc.cli import app, main


def _commands(group=None, ctx=None, prefix=()) -> list[tuple[tuple[str, ...], object]]:
    """Every leaf command of the app as (words, click command), found by walking the registered groups."""
    if group is None:
        group = typer.main.get_command(app)
    out = []
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if hasattr(cmd, "list_commands"):
            out += _commands(cmd, ctx, prefix + (name,))
        else:
            out.append((prefix + (name,), cmd))
    return out


COMMANDS = _commands()
IDS = [" ".join(words) for words, _ in COMMANDS]


def _long_options(cmd) -> list[str]:
    return [o for p in cmd.params if p.param_type_name == "option" for o in p.opts if o.startswith("--") and o not in ("--help",)]


@pytest.fixture
def run(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def go(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        cap = capsys.readouterr()
        assert "Traceback" not in cap.err and "internal error" not in cap.err, cap.err
        return code, cap.out, cap.err

    return go


def test_the_walk_finds_every_command():
    assert {"check", "fmt", "run", "compile", "inspect", "diff", "eval", "report merge"} <= set(IDS)


@pytest.mark.parametrize("words, cmd", COMMANDS, ids=IDS)
def test_unknown_option_is_a_usage_error(run, words, cmd):
    code, out, err = run(*words, "--no-such-thing")
    assert code == 2, err
    lines = err.strip().splitlines()
    assert lines[0].startswith(f"Usage: lmc {' '.join(words)} "), err
    assert lines[-1].startswith("error: no such option '--no-such-thing'"), err
    assert f"'lmc {' '.join(words)} --help'" in lines[-1]


@pytest.mark.parametrize("words, cmd", COMMANDS, ids=IDS)
def test_every_mistyped_option_gets_a_did_you_mean(run, words, cmd):
    options = _long_options(cmd)
    assert options, f"{words} has no long option"
    for option in options:
        typo = option[:-1] + option[-1] * 2  # one key held down too long: --format -> --formatt
        code, _, err = run(*words, typo)
        assert code == 2, err
        assert f"did you mean '{option}'?" in err, (typo, err)


@pytest.mark.parametrize("words, cmd", COMMANDS, ids=IDS)
def test_missing_arguments_are_usage_errors(run, words, cmd):
    if not any(p.required for p in cmd.params):
        pytest.skip("no required parameter")
    code, _, err = run(*words)
    assert code == 2, err
    assert err.startswith(f"Usage: lmc {' '.join(words)} ")
    assert "error: missing " in err


@pytest.mark.parametrize("words, cmd", COMMANDS, ids=IDS)
def test_a_number_option_given_text_is_a_usage_error(run, words, cmd):
    numeric = [p for p in cmd.params if p.param_type_name == "option" and _annotation(cmd, p) in (int, float)]
    if not numeric:
        pytest.skip("no numeric option")
    for p in numeric:
        code, _, err = run(*words, p.opts[0], "abc")
        assert code == 2, err
        assert f"error: invalid value for option '{p.opts[0]}'" in err, err


def _annotation(cmd, param):
    """The Python type an option was declared with (Optional[int] -> int)."""
    import types
    import typing

    tp = typing.get_type_hints(cmd.callback).get(param.name)
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return tp


@pytest.mark.parametrize("words, cmd", COMMANDS, ids=IDS)
def test_help_exits_0(run, words, cmd):
    code, out, _ = run(*words, "--help")
    assert code == 0 and "Usage" in out


@pytest.mark.parametrize(
    "args, expected",
    [
        (["nosuch"], "error: unknown command 'nosuch' (commands: "),
        (["ru"], "error: unknown command 'ru'; did you mean 'run'?"),
        (["compile"], "error: missing argument PROGRAM"),
        (["run", "--nosuch"], "error: no such option '--nosuch'"),
        (["run", "x.lmp", "-j", "abc"], "error: invalid value for option '-j' / '--jobs' / '--concurrency'"),
        (["report", "mrege"], "did you mean 'merge'?"),
    ],
)
def test_the_reported_cases(run, args, expected):
    code, _, err = run(*args)
    assert code == 2
    assert expected in err, err
    assert err.startswith("Usage: lmc")


def test_no_arguments_prints_help_and_exits_2(run):
    code, out, err = run()
    assert code == 2 and "compile" in out + err


# Options the running commands share under one name but with another meaning each (compile's --out is the
# artifact, run's the results; eval's --data needs gold labels; eval traces only its candidate).
_OTHER_MEANING = {"--out", "--data", "--trace"}
# Help that ends with what the option means for that command: "...; default: ..." or "...; when they run out ...".
_COMMAND_TAIL = re.compile(r"; (default|when they run out)\b.*$")


def test_an_option_the_running_commands_share_reads_the_same_in_each():
    helps: dict[str, dict[str, str]] = {}
    for words, cmd in COMMANDS:
        if words not in (("run",), ("eval",), ("compile",)):
            continue
        for p in cmd.params:
            if p.param_type_name == "option" and p.opts[0] not in _OTHER_MEANING:
                name = max(p.opts, key=len)
                helps.setdefault(name, {})[words[0]] = _COMMAND_TAIL.sub("", p.help or "").replace(f"the {words[0]} ", "the COMMAND ")
    shared = {name: by for name, by in helps.items() if len(by) > 1}
    assert {
        "--lm",
        "--program",
        "--metric",
        "--threshold",
        "--max-calls",
        "--max-lm-errors",
        "--api-base",
        "--cache-dir",
        "--no-cache",
        "--rpm",
    } <= set(shared)
    differ = {name: by for name, by in shared.items() if len(set(by.values())) > 1}
    assert not differ, differ


def test_version(run):
    code, out, err = run("--version")
    assert code == 0 and out.strip() == f"lmc {__version__}"


ENUMERATED = [
    (["check", "x.lmp", "--format", "jsn"], "'jsn' is not one of: text, json; did you mean 'json'?"),
    (["inspect", "x.lmc.json", "--format", "txt"], "'txt' is not one of: text, json; did you mean 'text'?"),
    (["diff", "a.lmc.json", "b.lmc.json", "--format", "markdwn"], "'markdwn' is not one of: text, markdown, json; did you mean 'markdown'?"),
    (["eval", "x.lmp", "--data", "d.jsonl", "--format", "xml"], "'xml' is not one of: text, json"),
    (["report", "merge", "a.json", "--format", "yaml"], "'yaml' is not one of: text, json"),
    (["compile", "x.lmp", "--train", "t.jsonl", "-o", "o.lmc.json", "--optimizer", "miprov2"], "did you mean 'mipro'?"),
    (["compile", "x.lmp", "--train", "t.jsonl", "-o", "o.lmc.json", "--then", "random_search"], "did you mean 'random-search'?"),
]


@pytest.mark.parametrize("args, fragment", ENUMERATED, ids=[" ".join(a[:1] + a[-2:]) for a, _ in ENUMERATED])
def test_enumerated_options_refuse_unknown_values_with_the_list(run, args, fragment):
    code, _, err = run(*args)
    assert code == 2, err
    assert fragment in err, err
    if args[0] != "check":  # check's fast path skips typer (and its usage line) for speed
        assert err.startswith(f"Usage: lmc {args[0]}")


@pytest.mark.parametrize("words", [("run",), ("compile",), ("eval",)], ids=lambda w: w[0])
def test_minus_j_zero_is_a_usage_error_everywhere(run, words):
    required = {"run": ["x.lmp"], "compile": ["x.lmp", "--train", "t", "-o", "o"], "eval": ["x.lmp", "--data", "d"]}
    code, _, err = run(*words, *required[words[0]], "-j", "0")
    assert code == 2 and "greater than or equal to 1" in err, err
