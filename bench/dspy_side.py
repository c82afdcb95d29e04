"""The DSPy 3.4.1 side of the benchmarks: classification compiles on llama.cpp's server, and per-call overhead.

Subcommands (each prints or writes JSON; run with the bench virtualenv's python):
  job JOB.json                                 (one compile + test evaluation, described by bench_compare.py)
  overhead --api-base URL --calls N            (per-call time at zero server latency, sequential)
  throughput --api-base URL --calls N --threads T
  serve --latency S                            (a loopback server answering both DSPy's and lmc's formats)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import threading
import time
import traceback
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# DSPy asks for this many new tokens: what lmc itself sends in chat mode for a label output, and the
# endpoint's cap (llama_endpoint.MAX_TOKENS_CAP); lmc's completion prompts ask for 16.
DSPY_MAX_TOKENS = 64
# llama.cpp's server runs one request at a time; more threads only queue.
THREADS = 2
CHAT_END = "[[ ## completed ## ]]"

# ------------------------------------------------------------------ configurations

# How DSPy talks to the base model. Each is tried on a small sample (bench_compare.py's config study, per-example
# answers kept); the best unconstrained one is the "same endpoint" row, the best constrained one the
# "each at its best" row. `grammar` is llama.cpp's own request field (GBNF), sent through `extra_body`:
#   "chat"  - the answer DSPy's ChatAdapter asks for, one of the labels only;
#   "json"  - a JSON object whose one key is the output field and whose value is one of the labels.
CONFIGS: dict[str, dict] = {
    "chat": {"about": "DSPy's defaults: ChatAdapter over chat completions (JSONAdapter retry on a parse failure)"},
    "chat-stop": {"stop": [CHAT_END], "about": "ChatAdapter, generation stops at its end marker"},
    "chat-stop-nofallback": {
        "stop": [CHAT_END],
        "adapter_kw": {"use_json_adapter_fallback": False},
        "about": "ChatAdapter, end-marker stop, no JSONAdapter retry",
    },
    "json": {"adapter": "json", "about": "JSONAdapter over chat completions"},
    "xml": {"adapter": "xml", "about": "XMLAdapter over chat completions"},
    "text": {"model_type": "text", "stop": [CHAT_END], "about": "ChatAdapter over plain completions (model_type='text'), end-marker stop"},
    "text-nofallback": {
        "model_type": "text",
        "stop": [CHAT_END],
        "adapter_kw": {"use_json_adapter_fallback": False},
        "about": "ChatAdapter over plain completions, end-marker stop, no JSONAdapter retry (which "
        "sends response_format, refused on plain completions)",
    },
    "text-json": {"model_type": "text", "adapter": "json", "about": "JSONAdapter over plain completions"},
    "text-xml": {"model_type": "text", "adapter": "xml", "about": "XMLAdapter over plain completions"},
    "chat-grammar": {"stop": [CHAT_END], "grammar": "chat", "about": "ChatAdapter + llama.cpp grammar: the answer block with one of the labels"},
    "json-grammar": {"adapter": "json", "grammar": "json", "about": 'JSONAdapter + llama.cpp grammar: {"<field>": one of the labels}'},
}
CONSTRAINED = ("chat-grammar", "json-grammar")


def _gbnf_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def grammar(kind: str, field: str, labels: list[str]) -> str:
    """A GBNF grammar that admits exactly the answers of one configuration, with one of `labels` as the value."""
    choice = " | ".join(_gbnf_str(label) for label in labels)
    if kind == "chat":
        return f"root ::= {_gbnf_str(f'[[ ## {field} ## ]]' + chr(10))} ({choice}) {_gbnf_str(chr(10) * 2 + CHAT_END)}"
    if kind == "json":
        # JSONAdapter's demos are indented JSON, so whitespace is allowed where json.dumps(indent=2) puts it.
        key = _gbnf_str(json.dumps(field) + ":")
        return f'root ::= "{{" ws {key} ws "\\"" ({choice}) "\\"" ws "}}"\nws ::= [ \\t\\n]*'
    raise ValueError(f"unknown grammar kind {kind}")


def make_lm(config: str, api_base: str, field: str, labels: list[str], constrained: bool = True):
    import dspy

    cfg = CONFIGS[config]
    kwargs: dict = {"api_base": api_base, "api_key": "none", "temperature": 0.0, "max_tokens": DSPY_MAX_TOKENS}
    if cfg.get("stop"):
        kwargs["stop"] = list(cfg["stop"])
    if cfg.get("grammar") and constrained:
        kwargs["extra_body"] = {"grammar": grammar(cfg["grammar"], field, labels)}
    lm = dspy.LM("openai/gemma-3-270m", model_type=cfg.get("model_type", "chat"), **kwargs)
    adapter_cls = {"chat": dspy.ChatAdapter, "json": dspy.JSONAdapter, "xml": dspy.XMLAdapter}[cfg.get("adapter", "chat")]
    return lm, adapter_cls(**cfg.get("adapter_kw", {}))


# ------------------------------------------------------------------ the task


def make_signature(task: dict):
    """The .lmp program's one signature as a DSPy signature: same instruction, field names, labels, descriptions."""
    from typing import Literal

    import dspy

    out_type = Literal[tuple(task["labels"])]  # type: ignore[valid-type]
    fields = {
        task["input"]: (str, dspy.InputField(desc=task.get("input_desc") or None) if task.get("input_desc") else dspy.InputField()),
        task["output"]: (out_type, dspy.OutputField(desc=task["output_desc"]) if task.get("output_desc") else dspy.OutputField()),
    }
    return dspy.make_signature(fields, task["instructions"], signature_name=task["signature"])


def examples(path: str, task: dict) -> list:
    import dspy

    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return [
        dspy.Example(id=r.get("id"), **{task["input"]: r[task["input"]], task["output"]: r[task["output"]]}).with_inputs(task["input"]) for r in rows
    ]


def make_metric(field: str):
    def metric(example, pred, trace=None) -> bool:
        return str(getattr(pred, field, "") or "").strip().lower() == str(example[field]).strip().lower()

    return metric


def make_feedback_metric(field: str):
    """make_metric's score as GEPA wants it, with the words lmc's `accuracy` gives evolve about the same answer."""
    import dspy

    from lmc.metrics import explain

    right = make_metric(field)

    def metric(gold, pred, trace=None, pred_name=None, pred_trace=None):
        score = float(right(gold, pred))
        return dspy.Prediction(score=score, feedback=explain("accuracy", gold[field], getattr(pred, field, None), score))

    return metric


def tfidf_vectorizer(texts: list[str]):
    """A bag-of-words TF-IDF embedder for KNNFewShot (lmc's `knn` ranks by BM25 over the same words), no model."""
    import numpy as np

    def words(text: str) -> list[str]:
        return re.findall(r"[a-z0-9]+", text.lower())

    docs = [set(words(t)) for t in texts]
    vocab = {w: i for i, w in enumerate(sorted(set().union(*docs)))}
    idf = np.zeros(len(vocab), dtype=np.float32)
    for d in docs:
        for w in d:
            idf[vocab[w]] += 1
    idf = np.log((1 + len(docs)) / (1 + idf)) + 1

    def embed(batch: list[str]):
        out = np.zeros((len(batch), len(vocab)), dtype=np.float32)
        for row, text in enumerate(batch):
            for w, n in Counter(words(text)).items():
                if w in vocab:
                    out[row, vocab[w]] = (1 + math.log(n)) * idf[vocab[w]]
            norm = np.linalg.norm(out[row])
            if norm:
                out[row] /= norm
        return out

    return embed


# ------------------------------------------------------------------ compile and evaluate


class RawCapture:
    """A DSPy callback keeping every LM output of the example running on the current thread."""

    def __init__(self):
        from dspy.utils.callback import BaseCallback

        local = threading.local()
        self.local = local

        class Callback(BaseCallback):
            def on_lm_end(self, call_id, outputs, exception=None):
                calls = getattr(local, "calls", None)
                if calls is None:
                    return
                if exception is not None:
                    calls.append({"error": f"{type(exception).__name__}: {exception}"[:500]})
                    return
                for o in outputs or []:
                    calls.append({"text": o.get("text") if isinstance(o, dict) else str(o)})

        self.callback = Callback()

    def start(self) -> None:
        self.local.calls = []

    def stop(self) -> list[dict]:
        calls, self.local.calls = self.local.calls, None
        return calls


def compile_program(opt: str, student, train: list, dev: list, settings: dict, metric, task: dict, free_lm=None):
    """DSPy's optimizer paired with lmc's `opt`; `free_lm()` gives an unconstrained LM where the task's is not."""
    import dspy

    d, k = settings["max_demos"], settings["max_labeled"]
    if opt == "zero-shot":
        return student, {}
    if opt == "labeled":
        return dspy.LabeledFewShot(k=k).compile(student, trainset=train), {}
    if opt == "bootstrap":
        return dspy.BootstrapFewShot(metric=metric, max_bootstrapped_demos=d, max_labeled_demos=k, max_rounds=1).compile(student, trainset=train), {}
    if opt in ("random-search", "ensemble"):
        best = dspy.BootstrapFewShotWithRandomSearch(
            metric=metric, max_bootstrapped_demos=d, max_labeled_demos=k, num_candidate_programs=settings["candidates"], num_threads=THREADS
        ).compile(student, trainset=train, valset=dev)
        scores = [round(c["score"], 2) for c in best.candidate_programs]
        if opt == "random-search":
            return best, {"candidate_dev_scores": scores}
        members = [c["program"] for c in best.candidate_programs[: settings["ensemble_size"]]]
        # size=None: every member votes on every input (DSPy samples `size` members at random otherwise).
        return dspy.Ensemble(reduce_fn=dspy.majority).compile(members), {"candidate_dev_scores": scores, "members": len(members)}
    if opt == "mipro":
        # MIPROv2 writes its instruction proposals with `prompt_model`. A grammar that admits only this task's
        # answer would make every proposal unreadable, so a constrained configuration proposes with the same
        # endpoint unconstrained (what a DSPy user does: the constraint belongs to the task model only).
        prompt_model = free_lm() if free_lm is not None else None
        tele = dspy.MIPROv2(
            metric=metric,
            auto=None,
            num_candidates=settings["candidates"],
            num_threads=THREADS,
            seed=0,
            max_bootstrapped_demos=d,
            max_labeled_demos=k,
            verbose=False,
            prompt_model=prompt_model,
        )
        program = tele.compile(
            student, trainset=train, valset=dev, num_trials=settings["trials"], minibatch_size=settings["minibatch"], minibatch_full_eval_steps=5
        )
        return program, {}
    if opt == "evolve":
        # Reflections go to the same endpoint, without the task's grammar as for MIPROv2's proposals; the
        # budget is lmc's --max-calls as max_metric_calls (see bench_compare.settings). Unparsed answers are
        # shown to the reflection LM, as evolve shows them: by default GEPA drops them, and where no answer
        # parses (DSPy zero-shot on this model) it then has nothing to reflect on and never proposes.
        tele = dspy.GEPA(
            metric=make_feedback_metric(task["output"]),
            max_metric_calls=settings["max_calls"],
            reflection_minibatch_size=settings["reflection_minibatch"],
            reflection_lm=free_lm() if free_lm is not None else dspy.settings.lm,
            add_format_failure_as_feedback=True,
            num_threads=THREADS,
            seed=0,
            track_stats=True,
        )
        program = tele.compile(student, trainset=train, valset=dev)
        r = program.detailed_results
        return program, {
            "metric_calls": r.total_metric_calls,
            "candidates": [
                {"dev": round(s, 3), "parents": p, "instructions": c.predictors()[0].signature.instructions[:300]}
                for c, s, p in zip(r.candidates, r.val_aggregate_scores, r.parents)
            ],
        }
    if opt == "knn":
        texts = [" | ".join(f"{key}: {value}" for key, value in ex.inputs().items()) for ex in train]
        tele = dspy.KNNFewShot(
            k=settings["knn_k"],
            trainset=train,
            vectorizer=dspy.Embedder(tfidf_vectorizer(texts)),
            metric=metric,
            max_bootstrapped_demos=settings["knn_k"],
            max_labeled_demos=settings["knn_k"],
        )
        return tele.compile(student), {
            "note": "KNNFewShot bootstraps the k nearest train examples at run time, so its teacher calls are counted with the test evaluation"
        }
    raise SystemExit(f"unknown optimizer {opt}")


def evaluate(program, test: list, task: dict, capture: RawCapture) -> list[dict]:
    """Every test example's answer, raw LM text and correctness (a failure scores as wrong, as in lmc)."""
    field, inp = task["output"], task["input"]

    def one(ex) -> dict:
        capture.start()
        parsed = error = None
        try:
            pred = program(**ex.inputs())
            parsed = getattr(pred, field, None)
        except Exception as e:  # noqa: BLE001 - one failed example must not stop the evaluation
            error = f"{type(e).__name__}: {e}"[:800]
        calls = capture.stop()
        texts = [c.get("text") for c in calls if "text" in c]
        row = {
            "id": ex.id,
            "input": ex[inp],
            "gold": ex[field],
            "raw": texts[-1] if texts else None,
            "parsed": parsed,
            "correct": parsed is not None and str(parsed).strip().lower() == ex[field].lower(),
            "lm_calls": len(calls),
        }
        if len(texts) > 1:
            row["raw_all"] = texts
        if error:
            row["error"] = error
        return row

    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(one, test))


def run_job(job: dict) -> dict:
    import dspy

    from llama_endpoint import take_counts

    task, settings = job["task"], job["settings"]
    # In-memory cache only: repeats within one compile are free (as in lmc's fresh per-run cache directory),
    # nothing carries over between runs.
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=True)
    lm, adapter = make_lm(job["config"], job["api_base"], task["output"], task["labels"])
    capture = RawCapture()
    # A base model fails often; DSPy's default of 10 errors would cancel the evaluation (and the compile)
    # instead of scoring a failure as wrong, which is what lmc does.
    dspy.configure(lm=lm, adapter=adapter, max_errors=10**6, callbacks=[capture.callback])
    metric = make_metric(task["output"])
    train, dev, test = (examples(job["files"][k], task) for k in ("train", "dev", "test"))
    student = dspy.Predict(make_signature(task))
    take_counts(job["api_base"])
    start = time.perf_counter()
    free_lm = None
    if CONFIGS[job["config"]].get("grammar"):
        # The same configuration without its grammar, for MIPROv2's instruction proposals and GEPA's reflections.

        def free_lm():
            return make_lm(job["config"], job["api_base"], task["output"], task["labels"], constrained=False)[0]

    program, info = compile_program(job["optimizer"], student, train, dev, settings, metric, task, free_lm)
    compile_wall = time.perf_counter() - start
    compile_wire = take_counts(job["api_base"])
    start = time.perf_counter()
    answers = evaluate(program, test, task, capture)
    eval_wall = time.perf_counter() - start
    eval_wire = take_counts(job["api_base"])
    with open(job["answers"], "w") as f:
        for row in answers:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    predictors = program.predictors() if hasattr(program, "predictors") else []
    instructions = predictors[0].signature.instructions if predictors else None
    return {
        "compile_wall_s": round(compile_wall, 1),
        "compile_wire": compile_wire,
        "eval_wall_s": round(eval_wall, 1),
        "eval_wire": eval_wire,
        "demos": [len(p.demos) for p in predictors],
        "instructions": (instructions or "")[:600],
        "dspy_config": job["config"],
        "dspy_config_about": CONFIGS[job["config"]]["about"],
        "optimizer_info": info,
        "dspy_version": _version("dspy"),
    }


def _version(pkg: str) -> str:
    from importlib.metadata import version

    return version(pkg)


def job_main(args: argparse.Namespace) -> dict:
    job = json.loads(Path(args.job).read_text())
    try:
        out = run_job(job)
    except Exception:  # noqa: BLE001 - the driver records the failure with its traceback
        traceback.print_exc()
        raise SystemExit(1) from None
    Path(job["out"]).write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    return {"ok": True}


# ------------------------------------------------------------------ overhead and throughput


def dual_responder(request: dict) -> str:
    """DSPy's chat adapter format for DSPy's requests, lmc's tagged fields for everyone else."""
    text = json.dumps(request.get("messages") or request.get("prompt") or "")
    if "[[ ## " in text:
        return "[[ ## answer ## ]]\nok\n\n[[ ## completed ## ]]"
    return "<answer>ok</answer>"


def serve(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT))
    from tests.lmserver import LoopbackServer

    with LoopbackServer(dual_responder, latency=args.latency) as srv:
        print(srv.url, flush=True)
        time.sleep(args.seconds)


def _qa_program(api_base: str):
    import dspy

    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    lm = dspy.LM("openai/test", api_base=api_base, api_key="x", cache=False)
    dspy.configure(lm=lm)
    return dspy.Predict("question -> answer")


def overhead(args: argparse.Namespace) -> dict:
    """Seconds per sequential `Predict` call at zero server latency (best of 3 passes after a warm-up)."""
    import dspy

    predict = _qa_program(args.api_base)
    for i in range(20):
        assert predict(question=f"warm up {i}?").answer == "ok"
    best = float("inf")
    for rep in range(3):
        start = time.perf_counter()
        for i in range(args.calls):
            predict(question=f"question number {rep}-{i}?")
        best = min(best, (time.perf_counter() - start) / args.calls)
    # DSPy 3.4 picks an engine per LM ("auto": its vendored lm15 client or litellm); say which one ran.
    return {
        "dspy_ms_per_call": round(best * 1000, 3),
        "calls": args.calls,
        "dspy_engine": type(
            getattr(predict.lm or dspy.settings.lm, "_engine_store", {}) and next(iter(dspy.settings.lm._engine_store.values()))
        ).__name__,
        "litellm_loaded": "litellm" in sys.modules,
    }


def throughput(args: argparse.Namespace) -> dict:
    """Wall time of `calls` Predict calls through dspy.Evaluate with `threads` threads."""
    import dspy

    predict = _qa_program(args.api_base)
    data = [dspy.Example(question=f"question number {i}?", answer="ok").with_inputs("question") for i in range(args.calls)]
    warm = [dspy.Example(question=f"warm {i}?", answer="ok").with_inputs("question") for i in range(args.threads)]
    metric = lambda ex, pred, trace=None: pred.answer == ex.answer  # noqa: E731
    dspy.Evaluate(devset=warm, metric=metric, num_threads=args.threads, display_progress=False)(predict)
    start = time.perf_counter()
    res = dspy.Evaluate(devset=data, metric=metric, num_threads=args.threads, display_progress=False)(predict)
    took = time.perf_counter() - start
    score = res.score if hasattr(res, "score") else res
    return {"dspy_elapsed_s": round(took, 3), "threads": args.threads, "calls": args.calls, "score": score}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    j = sub.add_parser("job")
    j.add_argument("job", help="a job file written by bench_compare.py")
    o = sub.add_parser("overhead")
    o.add_argument("--api-base", required=True)
    o.add_argument("--calls", type=int, default=300)
    t = sub.add_parser("throughput")
    t.add_argument("--api-base", required=True)
    t.add_argument("--calls", type=int, default=400)
    t.add_argument("--threads", type=int, default=16)
    v = sub.add_parser("serve")
    v.add_argument("--latency", type=float, default=0.0)
    v.add_argument("--seconds", type=float, default=900.0)
    a = ap.parse_args()
    if a.cmd == "serve":
        serve(a)
        return
    out = {"job": job_main, "overhead": overhead, "throughput": throughput}[a.cmd](a)
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
