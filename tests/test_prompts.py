"""Prompt rendering (chat and completion, with demos and feedback) and reply parsing with type coercion."""

from __future__ import annotations

import asyncio

import pytest

from lmc import ir as I
from lmc import prompts
from lmc.errors import OutputParseError
from lmc.types import JSON, STR, Type, list_of, literal, optional

INT, FLOAT, BOOL = Type("int"), Type("float"), Type("bool")


def predictor(outputs, inputs=(("question", STR, None),), instructions="Answer well.") -> I.Predictor:
    sig = I.SignatureIR("S", instructions, tuple(I.FieldSpec(*f) for f in inputs), tuple(I.FieldSpec(*f) for f in outputs))
    return I.Predictor("p", "p", "main", sig, instructions)


QA = predictor((("answer", STR, "a few words"),))
DEMOS = ({"question": "Capital of France?", "answer": "Paris"}, {"question": "2+2?", "answer": "4"})


# ---------------------------------------------------------------- chat


def test_chat_prompt_has_system_fields_and_demo_turns():
    pr = prompts.render(QA, {"question": "Capital of Peru?"}, mode="chat", demos=DEMOS)
    roles = [m["role"] for m in pr.messages]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]
    system = pr.messages[0]["content"]
    assert system.startswith("Answer well.")
    assert "Inputs:\n- question" in system and "Outputs:\n- answer — a few words" in system
    assert "<answer>...</answer>" in system
    assert pr.messages[1]["content"] == "<question>\nCapital of France?\n</question>"
    assert pr.messages[2]["content"] == "<answer>Paris</answer>"
    assert pr.messages[-1]["content"] == "<question>\nCapital of Peru?\n</question>"
    assert pr.demos_used == 2 and not pr.json_mode


def test_chat_prompt_type_hints_lists_and_feedback():
    p = predictor(
        (("label", literal("yes", "no"), None), ("score", FLOAT, None), ("ok", BOOL, None), ("tags", list_of(STR), None)),
        inputs=(("context", list_of(STR), "passages"),),
    )
    pr = prompts.render(p, {"context": ["one", "two"]}, mode="chat", feedback={"previous_answer": "label: maybe", "feedback": "Pick yes or no."})
    system = pr.messages[0]["content"]
    assert "- label — one of: yes, no" in system and "- score — a number" in system
    assert "- ok — true or false" in system and "- tags — JSON (list[str])" in system
    user = pr.messages[-1]["content"]
    assert "<context>\n[1] one\n[2] two\n</context>" in user
    assert "Your previous answer was:\nlabel: maybe" in user and "It was not accepted: Pick yes or no." in user


def test_json_mode_prompt_and_demo_answers():
    pr = prompts.render(QA, {"question": "q"}, mode="chat", demos=DEMOS[:1], json_mode=True)
    assert 'one JSON object with the keys "answer"' in pr.messages[0]["content"]
    assert pr.messages[2]["content"] == '{"answer": "Paris"}'
    assert pr.json_mode


def test_repair_prompt_appends_reply_and_error():
    pr = prompts.render(QA, {"question": "q"}, mode="chat")
    fixed = prompts.repair_prompt(pr, "garbage", "missing output field 'answer'")
    assert fixed.messages[:-2] == pr.messages
    assert fixed.messages[-2] == {"role": "assistant", "content": "garbage"}
    assert "missing output field 'answer'" in fixed.messages[-1]["content"]


# ---------------------------------------------------------------- completion


def test_completion_prompt_blocks_demos_and_stops():
    p = predictor((("reasoning", STR, None), ("answer", INT, None)))
    demos = ({"question": "1+1?", "reasoning": "one and one", "answer": 2},)
    pr = prompts.render(p, {"question": "2+3?"}, mode="completion", demos=demos)
    assert pr.mode == "completion" and pr.messages is None
    assert pr.text.startswith("Answer well.")
    assert "Question: 1+1?\nReasoning: one and one\nAnswer: 2" in pr.text
    assert pr.text.endswith("Question: 2+3?\nReasoning:")
    assert "\n\n" in pr.stop and "\nQuestion:" in pr.stop


def test_completion_parse_splits_later_labels():
    p = predictor((("reasoning", STR, None), ("answer", INT, None)))
    assert prompts.parse(p, " two plus three\nAnswer: 5", mode="completion") == {"reasoning": "two plus three", "answer": 5}
    with pytest.raises(OutputParseError, match="missing output field 'answer'"):
        prompts.parse(p, "I am not sure", mode="completion")


def test_completion_single_literal_stops_at_newline():
    p = predictor((("sentiment", literal("positive", "negative"), None),))
    pr = prompts.render(p, {"question": "x"}, mode="completion")
    assert "\n" in pr.stop
    assert prompts.parse(p, " Positive", mode="completion") == {"sentiment": "positive"}


# ---------------------------------------------------------------- parsing and coercion


@pytest.mark.parametrize(
    "tp, text, expected",
    [
        (INT, "42", 42),
        (INT, "The answer is 1,234.", 1234),
        (FLOAT, "3.5 km", 3.5),
        (FLOAT, "-2", -2.0),
        (BOOL, "Yes.", True),
        (BOOL, "false", False),
        (literal("positive", "negative"), "  POSITIVE. ", "positive"),
        (literal("positive", "negative"), "Sentiment: negative", "negative"),
        (list_of(STR), '["a", "b"]', ["a", "b"]),
        (list_of(STR), "- a\n- b", ["a", "b"]),
        (list_of(INT), "1, 2, 3", [1, 2, 3]),
        (JSON, '{"x": [1, 2]}', {"x": [1, 2]}),
        (optional(STR), "none", None),
        (STR, "  text  ", "text"),
    ],
)
def test_tagged_reply_coerces_to_declared_type(tp, text, expected):
    p = predictor((("value", tp, None),))
    assert prompts.parse(p, f"<value>{text}</value>", mode="chat") == {"value": expected}


def test_chat_parse_tolerates_missing_close_tags_and_bare_single_output():
    p = predictor((("reasoning", STR, None), ("answer", INT, None)))
    assert prompts.parse(p, "<reasoning>add them<answer>5", mode="chat") == {"reasoning": "add them", "answer": 5}
    assert prompts.parse(QA, "Lima", mode="chat") == {"answer": "Lima"}
    assert prompts.parse(p, '```json\n{"reasoning": "r", "answer": "7"}\n```', mode="chat", json_mode=True) == {"reasoning": "r", "answer": 7}


@pytest.mark.parametrize(
    "tp, text, message",
    [
        (INT, "many", "expected a number"),
        (INT, "2.5", "expected an integer"),
        (BOOL, "perhaps", "expected true or false"),
        (literal("positive", "negative"), "neutral", 'expected one of "positive" | "negative"'),
        (JSON, "not json", "expected JSON"),
    ],
)
def test_bad_values_name_the_field_and_quote_the_raw_reply(tp, text, message):
    p = predictor((("value", tp, None),))
    with pytest.raises(OutputParseError) as err:
        prompts.parse(p, f"<value>{text}</value>", mode="chat")
    assert message in err.value.message and "output 'value'" in err.value.message
    assert err.value.raw == f"<value>{text}</value>" and err.value.field == "value"


def test_missing_field_is_an_error():
    p = predictor((("reasoning", STR, None), ("answer", INT, None)))
    with pytest.raises(OutputParseError, match="missing output field 'answer'"):
        prompts.parse(p, "<reasoning>hm</reasoning>", mode="chat")


# ---------------------------------------------------------------- the repair ladder in a real call


def _run(script):
    from lmc.check import check_source
    from lmc.interpreter import run_example
    from lmc.runtime import Runtime
    from lmc.lm import LMClient, parse_lm
    from lmc.lower import lower
    from tests.fakelm import FakeLM

    ir = lower(check_source("signature S(q: str -> n: int)\nmodule m = Predict(S)\nprogram main(q: str) -> (n: int) { return m(q=q) }\n", "s.lmp"))
    fake = FakeLM(script)
    rt = Runtime(ir, LMClient(cache_dir=None, backend=fake), lm=parse_lm("openai/test"))
    return asyncio.run(run_example(rt, {"q": "how many?"})), fake


def test_parse_failure_repairs_then_json_mode_then_fails_with_raw_output():
    result, fake = _run(["lots", "still lots", "so many"])
    assert not result.ok and result.error_kind == "parse"
    assert '"so many"' in result.error and "predictor 'm'" in result.error
    assert len(fake.calls) == 3
    second, third = fake.calls[1].req, fake.calls[2].req
    assert second.messages[-2] == {"role": "assistant", "content": "lots"}
    assert "I could not read that reply" in second.messages[-1]["content"]
    assert third.json_mode and "one JSON object" in third.messages[0]["content"]


def test_repair_succeeds_on_the_second_try():
    result, fake = _run(["lots", "<n>7</n>"])
    assert result.outputs == {"n": 7} and len(fake.calls) == 2


def test_json_mode_rescues_the_third_try():
    result, fake = _run(["lots", "lots", '{"n": 9}'])
    assert result.outputs == {"n": 9} and [c.error is None for c in result.trace] == [False, False, True]
