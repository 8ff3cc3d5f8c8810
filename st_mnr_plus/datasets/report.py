"""The build report: every input row is kept or skipped for exactly one reason, and counted."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from st_mnr_plus.common.errors import ConfigurationError

#: Every reason an input row can be skipped for, in the order reports list them.
SKIP_REASONS: tuple[str, ...] = (
    "malformed",
    "no_consensus",
    "neutral",
    "contradiction",
    "empty_text",
    "duplicate",
    "entailment_without_partner",
    "contradiction_without_partner",
    "over_cap",
)

_SKIP_DOC = {
    "malformed": "malformed line or row (on_error='skip')",
    "no_consensus": "no-consensus label ('-' or -1)",
    "neutral": "neutral label",
    "contradiction": "contradiction label (pairs use entailment rows only)",
    "empty_text": "empty or whitespace-only text",
    "duplicate": "exact duplicate of an earlier row",
    "entailment_without_partner": "entailment whose premise has no contradiction",
    "contradiction_without_partner": "contradiction whose premise has no entailment",
    "over_cap": "left out by max_triplets_per_premise",
}


@dataclass
class BuildReport:
    """What a build read, kept and skipped: nothing is dropped without being counted here.

    Every input row is either kept (it contributed to the output) or skipped for exactly one reason, so
    ``rows_read == rows_kept + sum(skipped.values())``. Reasons are checked in the order of
    :data:`SKIP_REASONS`: a neutral row with an empty text counts as ``neutral``.

    Attributes:
        output: ``"pairs"`` or ``"triplets"``.
        sources: How each source was named (file path, hub id or dataset description).
        rows_read: Input rows (lines of a file without header and blank lines, or dataset rows).
        rows_kept: Input rows that contributed to the output.
        rows_out: Rows of the output dataset. For pairs without reversal it equals ``rows_kept``; for triplets a
            premise with several entailments and contradictions yields several rows.
        reversed_added: Reversed pairs added by ``add_reversed=True``.
        reversed_duplicates: Reversed pairs not added because the output already held that exact pair.
        skipped: Input rows skipped, by reason (every key of :data:`SKIP_REASONS`, zeros included).
        rows_read_by_source: Input rows read from each source, keyed like ``sources``.
    """

    output: str = "pairs"
    sources: list[str] = field(default_factory=list)
    rows_read: int = 0
    rows_kept: int = 0
    rows_out: int = 0
    reversed_added: int = 0
    reversed_duplicates: int = 0
    skipped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SKIP_REASONS, 0))
    rows_read_by_source: dict[str, int] = field(default_factory=dict)

    @property
    def rows_skipped(self) -> int:
        """All skipped input rows."""
        return sum(self.skipped.values())

    def as_dict(self) -> dict[str, Any]:
        """The counts as plain JSON-serialisable values (copies), ``rows_skipped`` included after ``rows_kept``."""
        items = list(asdict(self).items())
        items.insert([key for key, _ in items].index("rows_kept") + 1, ("rows_skipped", self.rows_skipped))
        return dict(items)

    def __str__(self) -> str:
        n_sources = len(self.sources)
        lines = [
            f"NLI build ({self.output}): read {self.rows_read:,} rows from {n_sources} source"
            f"{'' if n_sources == 1 else 's'}, kept {self.rows_kept:,}, output {self.rows_out:,} rows."
        ]
        if self.reversed_added or self.reversed_duplicates:
            lines.append(
                f"  reversed pairs: {self.reversed_added:,} added, {self.reversed_duplicates:,} already present"
            )
        lines.append(f"  skipped {self.rows_skipped:,} rows:")
        for reason in SKIP_REASONS:
            if self.skipped[reason]:
                lines.append(f"    {reason:<30} {self.skipped[reason]:>10,}  {_SKIP_DOC[reason]}")
        if n_sources > 1:
            lines.append("  rows read by source:")
            lines.extend(f"    {name}: {count:,}" for name, count in self.rows_read_by_source.items())
        return "\n".join(lines)


class EmptyBuildError(ConfigurationError):
    """Every row was filtered out. The message says which filters removed them; ``report`` has the counts."""

    def __init__(self, message: str, report: BuildReport) -> None:
        super().__init__(message)
        self.report = report


def empty_message(report: BuildReport) -> str:
    reasons = ", ".join(f"{r} {n:,}" for r, n in report.skipped.items() if n) or "none"
    if report.rows_read == 0:
        cause = "the sources hold no rows"
    else:
        cause = f"every row was filtered out (skipped by reason: {reasons})"
    return (
        f"build_nli produced no {report.output} from {', '.join(report.sources)}: read {report.rows_read:,} rows, "
        f"{cause}. Pairs need entailment rows; triplets need a premise with both an entailment and a contradiction."
    )


__all__ = ["SKIP_REASONS", "BuildReport", "EmptyBuildError", "empty_message"]
