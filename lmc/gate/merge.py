"""Joining the shard reports of one evaluation into the full report."""

from __future__ import annotations

import math
from typing import Sequence

from lmc.errors import ReportError

from .report import OPTIONAL_COUNTERS, ExampleResult, Report, describe_ref, list_ids, summarize
from .shards import Shard


def merge_reports(reports: Sequence[Report]) -> Report:
    """Join the shard reports of one evaluation into a full report; refuse mixed runs, gaps and overlaps.

    Accounting (calls, tokens, cost, duration) is summed over shards, so
    `duration_s` of a merged report is total compute time, not wall time.
    """
    if not reports:
        raise ReportError("no reports to merge")
    first = reports[0]
    by_index = _by_shard(reports)
    examples = _examples(by_index)
    if len(examples) != first.data.n_total:
        raise ReportError(
            f"merged shards cover {len(examples)} of {first.data.n_total} examples of {first.data.path}; some shard report is incomplete"
        )
    examples.sort(key=lambda e: e.line)
    sums = {
        k: sum(getattr(r.summary, k) for r in reports) for k in ("calls", "cached_calls", "prompt_tokens", "completion_tokens", *OPTIONAL_COUNTERS)
    }
    summary = summarize(
        examples, cost=math.fsum(r.summary.cost for r in reports), duration_s=math.fsum(r.summary.duration_s for r in reports), **sums
    )
    return Report(first.program, first.target, first.metric, first.data, None, tuple(examples), summary, first.lmc_version)


def _by_shard(reports: Sequence[Report]) -> dict[int, Report]:
    """The reports by shard index, once they are shown to be every shard of one evaluation."""
    first = reports[0]
    shards: dict[int, Shard] = {}  # id(report) -> its shard
    for r in reports:
        if r.shard is None:
            raise ReportError(f"{r.where}: is not a shard report (shard is null); only reports written with --shard can be merged")
        shards[id(r)] = r.shard
    for r in reports[1:]:
        for what in ("program", "target", "metric", "data"):
            if getattr(r, what) != getattr(first, what):
                raise ReportError(
                    f"{r.where}: {what} differs from {first.where} ({describe_ref(getattr(r, what))} vs "
                    f"{describe_ref(getattr(first, what))}); shards must come from one evaluation"
                )
    counts = sorted({s.count for s in shards.values()})
    if len(counts) > 1:
        raise ReportError(f"shards were split in different ways (counts {', '.join(map(str, counts))}); re-run with one N")
    count = counts[0]
    by_index: dict[int, Report] = {}
    for r in reports:
        shard = shards[id(r)]
        if shard.index in by_index:
            raise ReportError(f"shard {shard} is given twice ({by_index[shard.index].where} and {r.where})")
        by_index[shard.index] = r
    missing = [f"{i}/{count}" for i in range(1, count + 1) if i not in by_index]
    if missing:
        raise ReportError(f"missing shard(s) {', '.join(missing)}; got {len(reports)} of {count}")
    return by_index


def _examples(by_index: dict[int, Report]) -> list[ExampleResult]:
    """Every shard's examples in shard order; an id or a line in two shards is refused."""
    owner: dict[str, str] = {}
    overlap: list[str] = []
    examples: list[ExampleResult] = []
    for i in sorted(by_index):
        r = by_index[i]
        for ex in r.examples:
            if ex.id in owner:
                overlap.append(ex.id)
            owner[ex.id] = r.where
            examples.append(ex)
    if overlap:
        raise ReportError(f"id(s) {list_ids(overlap)} appear in more than one shard")
    lines: set[int] = set()
    for ex in examples:
        if ex.line in lines:
            raise ReportError(f"line {ex.line} appears in more than one shard")
        lines.add(ex.line)
    return examples
