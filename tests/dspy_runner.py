"""Runs exported lmc programs inside DSPy (a Python where `import dspy` works); driven by tests/test_export_dspy.py.

Usage: python dspy_runner.py CONFIG.json -> prints one JSON object.  The config
names the LM server and, per case, the exported module, its state file, the
inputs to call it with (or null to only build and load it), and which callables
to pass.  For each case it reports the DSPy parameter names, the state DSPy holds
after `load`, the prediction, the retriever calls and any error.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import traceback
import warnings


def main() -> None:
    config = json.load(open(sys.argv[1]))
    warnings.simplefilter("ignore")
    import dspy

    dspy.configure(lm=dspy.LM("openai/loopback", api_base=config["api_base"], api_key="test-key", cache=False, num_retries=0))
    out = {"dspy_version": dspy.__version__, "cases": {}}
    for name, case in config["cases"].items():
        result: dict = {}
        out["cases"][name] = result
        try:
            spec = importlib.util.spec_from_file_location(case["module_name"], case["module"])
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            searches: list = []

            def wiki(query, k=3, searches=searches):  # bound now: each case has its own list
                searches.append([query, k])
                return [f"passage {i} about {query}" for i in range(k)]

            kwargs = {"retrievers": {r: wiki for r in case.get("retrievers", [])}}
            program = mod.Program(**kwargs)
            result["params"] = [n for n, _ in program.named_parameters()]
            program.load(case["state"])
            dumped = program.dump_state()
            result["state"] = {k: {"signature": v["signature"], "demos": v["demos"]} for k, v in dumped.items()}
            if case.get("inputs") is not None:
                pred = program(**case["inputs"])
                result["prediction"] = {k: pred[k] for k in pred.keys() if k != "trajectory"}
            result["searches"] = searches
        except Exception as e:  # reported to the test, which shows it
            result["error"] = f"{type(e).__name__}: {e}\n{traceback.format_exc()}"
    out["files"] = sorted(os.listdir("."))
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
