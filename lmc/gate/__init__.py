"""Evaluation reports, the paired regression test, CI gates and their JUnit / Markdown / JSON writers.

Everything here is a pure function from data to data: no LM, no CLI.  `lmc eval`
builds a `Report` with the evaluator, loads a baseline `Report`, calls
`apply_gates`, prints `Verdict.lines` and exits with `Verdict.exit_code`.

The statistical rule (see `stats.paired_test` and docs/ci.md): a candidate *regresses*
when its drop against the baseline is both statistically significant (one-sided
test of "candidate is no worse", level 1 - confidence) and larger than
`max_drop`.  For an unchanged program the false-alarm rate is therefore at most
1 - confidence whatever `max_drop` is, and `max_drop` stops tiny but real drops
from failing the build.

One module per job: `report` (the data model and the strict reader), `shards` and
`merge`, `stats`, `gates` (pairing, options, verdict) and `writers` (JSON, JUnit,
Markdown).  This package re-exports what the rest of lmc uses.
"""

from lmc.files import atomic_write_text as write_text_atomic

from .gates import GateOptions, Verdict, align, apply_gates
from .merge import merge_reports
from .report import (
    ERROR_KINDS,
    INFRA_ERROR_KINDS,
    REPORT_FORMAT,
    DataRef,
    ExampleResult,
    MetricRef,
    ProgramRef,
    Report,
    Summary,
    TargetRef,
    is_report,
    summarize,
)
from .shards import Shard, in_shard, parse_shard, shard_of
from .stats import METHODS, PairedResult, mean_ci, paired_test
from .writers import junit_xml, render_markdown, report_stats, verdict_json, write_junit

__all__ = [
    "ERROR_KINDS",
    "INFRA_ERROR_KINDS",
    "METHODS",
    "REPORT_FORMAT",
    "DataRef",
    "ExampleResult",
    "GateOptions",
    "MetricRef",
    "PairedResult",
    "ProgramRef",
    "Report",
    "Shard",
    "Summary",
    "TargetRef",
    "Verdict",
    "align",
    "apply_gates",
    "in_shard",
    "is_report",
    "junit_xml",
    "mean_ci",
    "merge_reports",
    "paired_test",
    "parse_shard",
    "render_markdown",
    "report_stats",
    "shard_of",
    "summarize",
    "verdict_json",
    "write_junit",
    "write_text_atomic",
]
