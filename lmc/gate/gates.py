"""The CI gates of `lmc eval`: pairing a candidate with its baseline, the gate options and the verdict."""

from __future__ import annotations

from dataclasses import dataclass

from lmc.errors import EXIT_FAIL, EXIT_INFRA, EXIT_OK, ConfigError, ReportError

from .report import Report, describe_ref, list_ids
from .stats import PairedResult, mean_ci, paired_test


def align(base: Report, cand: Report, *, allow_program_change: bool = False) -> tuple[list[str], list[float], list[float]]:
    """Pair the candidate's examples with the baseline's by id, in the candidate's order.

    Refuses (ReportError) a different dataset file (sha256), a different metric,
    another program (unless `allow_program_change`): the same program is the same
    source, or an edit of it (same name in a file of the same name: the pull-request
    case); a program that merely shares the name is another one.  Also refuses candidate
    ids that the baseline lacks.  A sharded candidate against a full
    baseline is fine: only the candidate's ids are compared.
    """
    if base.data.sha256 != cand.data.sha256:
        raise ReportError(
            f"{base.where}: baseline was evaluated on different data ({base.data.path} sha256 {base.data.sha256[:12]}) "
            f"than the candidate ({cand.data.path} sha256 {cand.data.sha256[:12]}); "
            "re-evaluate the baseline on the same file, e.g. pass its artifact as --baseline"
        )
    if base.metric != cand.metric:
        raise ReportError(
            f"{base.where}: baseline used metric {describe_ref(base.metric)} but the candidate uses {describe_ref(cand.metric)}; "
            "scores under different metrics cannot be compared"
        )
    if not base.program.same_program(cand.program) and not allow_program_change:
        raise ReportError(
            f"{base.where}: the baseline is another program: {base.program.describe()}, the candidate is "
            f"{cand.program.describe()}; pass --allow-different-program if comparing them is intended"
        )
    by_id = {e.id: e for e in base.examples}
    missing = [e.id for e in cand.examples if e.id not in by_id]
    if missing:
        raise ReportError(f"{base.where}: baseline report has no result for {len(missing)} candidate example(s): {list_ids(missing)}")
    ids = [e.id for e in cand.examples]
    return ids, [by_id[i].quality for i in ids], [e.quality for e in cand.examples]


# ---------------------------------------------------------------- gates


@dataclass(frozen=True)
class GateOptions:
    """The gate flags of `lmc eval`; `baseline` is the --baseline path (None when absent)."""

    min_score: float | None = None
    baseline: str | None = None
    max_drop: float | None = None
    max_errors: int | None = None
    confidence: float = 0.95
    allow_program_change: bool = False

    def validate(self) -> None:
        """Raise ConfigError for inconsistent flags; call before evaluating anything."""
        if self.max_drop is not None and self.baseline is None:
            raise ConfigError("--max-drop needs --baseline (an artifact or report to compare against)")
        if self.min_score is not None and not 0.0 <= self.min_score <= 1.0:
            raise ConfigError(f"--min-score must be between 0 and 1, got {self.min_score:g}")
        if self.max_drop is not None and not 0.0 <= self.max_drop <= 1.0:
            raise ConfigError(f"--max-drop must be between 0 and 1, got {self.max_drop:g}")
        if self.max_errors is not None and self.max_errors < 0:
            raise ConfigError(f"--max-errors must be 0 or more, got {self.max_errors}")
        if not 0.5 < self.confidence < 1.0:
            raise ConfigError(f"--confidence must be between 0.5 and 1 (exclusive), got {self.confidence:g}")


@dataclass(frozen=True)
class Verdict:
    """Outcome of the gates: exit code 0/1/3, the failing reasons, lines to print (last = the reason), the paired test."""

    exit_code: int
    reasons: list[str]
    lines: list[str]
    paired: PairedResult | None = None

    @property
    def passed(self) -> bool:
        return self.exit_code == EXIT_OK

    @property
    def label(self) -> str:
        return {EXIT_OK: "pass", EXIT_FAIL: "fail", EXIT_INFRA: "error"}.get(self.exit_code, "fail")


def _pct(x: float) -> str:
    return f"{x:.3f}"


def _signed(x: float) -> str:
    return f"{x:+.3f}"


def fmt_p(x: float) -> str:
    return f"{x:.3g}"


def apply_gates(cand: Report, base: Report | None, opts: GateOptions) -> Verdict:
    """Apply --max-errors, --min-score and the baseline comparison; infrastructure errors (exit 3) outrank quality (exit 1).

    Raises ConfigError for inconsistent options and ReportError when the
    baseline cannot be compared (see `align`).
    """
    opts.validate()
    if opts.baseline is not None and base is None:
        raise ConfigError(f"--baseline {opts.baseline} was given but no baseline report was evaluated")
    if not cand.examples:
        raise ReportError(f"{cand.where}: the report has no examples to gate on")

    lines: list[str] = []
    infra: list[str] = []
    quality: list[str] = []

    scores = cand.quality_scores()
    mean, lo, hi = mean_ci(scores, opts.confidence)
    lines.append(f"score {_pct(mean)} ({opts.confidence:.0%} CI {_pct(lo)}-{_pct(hi)}) on {len(scores)} examples, {cand.summary.errors} error(s)")

    bad = cand.infra_errors()
    if opts.max_errors is not None and len(bad) > opts.max_errors:
        infra.append(
            f"{len(bad)} examples failed with LM/parse errors, more than --max-errors {opts.max_errors} (first: {list_ids([e.id for e in bad])})"
        )

    if opts.min_score is not None and mean < opts.min_score:
        quality.append(f"score {_pct(mean)} is below --min-score {opts.min_score:g}")

    paired = None
    if base is not None:
        ids, b, c = align(base, cand, allow_program_change=opts.allow_program_change)
        max_drop = 0.0 if opts.max_drop is None else opts.max_drop
        paired = paired_test(b, c, ids, max_drop=max_drop, confidence=opts.confidence, threshold=cand.metric.threshold)
        # The p-value of the direction the score moved: for a gain, the drop test's p is near 1 and says nothing.
        which = f"improvement p={fmt_p(paired.p_improved)}" if paired.delta > 0 else f"p={fmt_p(paired.p_value)}"
        lines.append(
            f"baseline {_pct(paired.base_mean)} -> candidate {_pct(paired.cand_mean)}: delta {_signed(paired.delta)} "
            f"({2 * opts.confidence - 1:.0%} CI {_signed(paired.delta_lo)} to {_signed(paired.delta_hi)}), "
            f"{which} one-sided ({paired.method}, {paired.discordant} changed examples)"
        )
        if not base.program.same_program(cand.program):
            lines.append(f"note: comparing program '{cand.program.name}' against another program, '{base.program.name}' (--allow-different-program)")
        elif base.program.sha256 != cand.program.sha256:
            lines.append(f"note: the program's source changed since the baseline (sha256 {base.program.sha256[:12]} -> {cand.program.sha256[:12]})")
        if paired.flipped_to_fail:
            lines.append(f"pass->fail ({len(paired.flipped_to_fail)}): {list_ids(paired.flipped_to_fail, 10)}")
        if paired.flipped_to_pass:
            lines.append(f"fail->pass ({len(paired.flipped_to_pass)}): {list_ids(paired.flipped_to_pass, 10)}")
        if paired.regressed:
            quality.append(
                f"score dropped {-paired.delta:.3f} vs baseline, more than --max-drop {max_drop:g} "
                f"and significant at {opts.confidence:g} (p={fmt_p(paired.p_value)})"
            )

    reasons = infra + quality
    if reasons:
        # Infrastructure errors outrank quality: a flaky LM explains a low score, not the reverse.
        code = EXIT_INFRA if infra else EXIT_FAIL
        lines += ["also: " + r for r in reasons[1:]]
        lines.append("FAIL: " + reasons[0])
    else:
        code = EXIT_OK
        lines.append("PASS: " + _pass_reason(mean, opts, paired))
    return Verdict(code, reasons, lines, paired)


def _pass_reason(mean: float, opts: GateOptions, paired: PairedResult | None) -> str:
    parts = []
    if opts.min_score is not None:
        parts.append(f"score {_pct(mean)} >= --min-score {opts.min_score:g}")
    if paired is not None:
        if paired.p_value < 1 - paired.confidence:
            parts.append(f"drop {-paired.delta:.3f} is significant but within --max-drop {paired.max_drop:g}")
        elif paired.delta > 0 and paired.p_improved < 1 - paired.confidence:
            parts.append(f"significant improvement vs baseline (delta {_signed(paired.delta)}, p={fmt_p(paired.p_improved)})")
        else:
            parts.append(f"no significant drop vs baseline (delta {_signed(paired.delta)}, p={fmt_p(paired.p_value)})")
    if opts.max_errors is not None:
        parts.append(f"LM/parse errors within --max-errors {opts.max_errors}")
    return "; ".join(parts) if parts else f"score {_pct(mean)} (no gates set)"
