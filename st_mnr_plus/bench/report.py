"""Ratios, tables, JSON comparison and the PNG of a ``st-mnr-plus bench`` run."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from st_mnr_plus.common.errors import ConfigurationError

__all__ = ["BenchSettingsError", "compare", "format_comparison", "format_table", "load_results", "plot", "ratios"]


class BenchSettingsError(ConfigurationError):
    """A setting of ``st-mnr-plus bench`` that cannot be run, named with what it must be."""


SCHEMA = 1


def ratios(results: Sequence[dict[str, Any]], baselines: dict[str, str | Sequence[str]]) -> list[dict[str, Any]]:
    """One row per (group, variant that is not a baseline of the group, baseline): speed-up and memory ratio.

    ``baselines`` maps a group to its baseline's name, or to several (the cached section compares each of its
    variants with sentence-transformers' loss in each mini-batch setting): every other variant of the group is
    compared with each. ``speedup`` is the baseline's median time over the variant's (above 1: the variant is
    faster); ``memory_ratio`` is the variant's peak extra memory over the baseline's (below 1: it needs less),
    where both report one.
    """
    by_group: dict[str, dict[str, dict[str, Any]]] = {}
    for result in results:
        by_group.setdefault(result["group"], {})[result["name"]] = result
    rows = []
    for group, variants in by_group.items():
        names = baselines.get(group)
        baseline_names: list[str | None] = [names] if isinstance(names, str) else list(names or []) or [None]
        for name, result in variants.items():
            if name in baseline_names:
                continue
            for baseline_name in baseline_names:
                rows.append(_ratio_row(group, result, baseline_name, variants.get(baseline_name)))
    return rows


def _ratio_row(
    group: str, result: dict[str, Any], baseline_name: str | None, baseline: dict[str, Any] | None
) -> dict[str, Any]:
    """The comparison of one variant's result with its baseline's (``None``: the group has none)."""
    row: dict[str, Any] = {"group": group, "variant": result["name"], "baseline": baseline_name}
    ours, theirs = result.get("stats", {}), (baseline or {}).get("stats", {})
    row["variant_median_s"] = ours.get("median")
    row["baseline_median_s"] = theirs.get("median")
    row["speedup"] = theirs["median"] / ours["median"] if ours.get("median") and theirs.get("median") else None
    mine, base = result["extra"].get("peak_extra_gib"), (baseline or {}).get("extra", {}).get("peak_extra_gib")
    row["memory_ratio"] = mine / base if mine is not None and base else None
    for key in ("samples_per_s", "peak_extra_gib", "encoder_padded_tokens"):
        if key in result["extra"]:
            row[f"variant_{key}"] = result["extra"][key]
        if baseline is not None and key in baseline["extra"]:
            row[f"baseline_{key}"] = baseline["extra"][key]
    errors = [
        f"{r['name']}: {r['extra'][key]}"
        for r in (result, baseline)
        if r is not None
        for key in ("error", "memory_error")
        if key in r["extra"]
    ]
    if errors:
        row["error"] = "; ".join(errors)
    return row


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _detail(row: dict[str, Any]) -> str:
    parts = []
    if "variant_samples_per_s" in row:
        parts.append(
            f"{row['variant_samples_per_s']:.1f} vs {row.get('baseline_samples_per_s', float('nan')):.1f} samples/s"
        )
    if "variant_encoder_padded_tokens" in row:
        base = row.get("baseline_encoder_padded_tokens")
        parts.append(
            f"encoder tokens {row['variant_encoder_padded_tokens']:,} vs " + (f"{base:,}" if base is not None else "-")
        )
    if "variant_peak_extra_gib" in row:
        base = row.get("baseline_peak_extra_gib")
        parts.append(
            f"peak +{row['variant_peak_extra_gib']:.3f} vs " + (f"+{base:.3f} GiB" if base is not None else "- GiB")
        )
    if "error" in row:
        parts.append(f"error: {row['error']}")
    return "; ".join(parts)


def _render(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * width for width in widths))
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


#: The columns naming a comparison: title -> cell of a ratio row.
_NAMES: dict[str, Callable[[dict[str, Any]], str]] = {
    "group": lambda row: row["group"],
    "ours": lambda row: row["variant"],
    "vs": lambda row: row["baseline"] or "-",
}


def _cells(columns: dict[str, Callable[[dict[str, Any]], str]], rows: list[dict[str, Any]]) -> tuple[list, list]:
    """The header and the cells of ``rows`` for ``columns`` (title -> cell of a row)."""
    return list(columns), [[cell(row) for cell in columns.values()] for row in rows]


def format_table(document: dict[str, Any]) -> str:
    """The ratio table of one run, preceded by a line naming the machine."""
    machine = document["machine"]
    title = (
        f"st-mnr-plus bench on {machine['device_name']} ({machine['device']}, {machine['threads']} threads), "
        f"torch {machine['torch']}, sentence-transformers {machine['sentence_transformers']}, {document['created']}"
    )
    columns = {
        **_NAMES,
        "ours (median)": lambda row: _seconds(row["variant_median_s"]),
        "theirs (median)": lambda row: _seconds(row["baseline_median_s"]),
        "speed-up": lambda row: _times(row["speedup"]),
        "memory ours/theirs": lambda row: _times(row["memory_ratio"]),
        "detail": _detail,
    }
    header, rows = _cells(columns, document["ratios"])
    return f"{title}\n{_render(header, rows)}\nspeed-up = theirs / ours (median time); memory = ours / theirs."


def load_results(path: str | Path) -> dict[str, Any]:
    """Read a JSON file written by ``st-mnr-plus bench``.

    Raises:
        ValueError: If the file is not valid JSON or not a bench result.
    """
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, json.JSONDecodeError) as error:
        raise BenchSettingsError(f"--compare {str(path)!r}: not a readable JSON file ({error})") from error
    if not isinstance(document, dict) or "ratios" not in document or "results" not in document:
        raise BenchSettingsError(
            f"--compare {str(path)!r}: not a result of st-mnr-plus bench (no 'ratios'/'results' keys)"
        )
    return document


def compare(new: dict[str, Any], old: dict[str, Any]) -> list[dict[str, Any]]:
    """Match the ratios of two runs by (group, variant, baseline): old and new speed-up and memory ratio.

    Comparisons present in only one run are listed with ``None`` for the other, so that a changed setting
    (another batch size, a new group) is visible rather than silently dropped.
    """
    key = lambda row: (row["group"], row["variant"], row["baseline"])  # noqa: E731
    old_rows = {key(row): row for row in old["ratios"]}
    new_rows = {key(row): row for row in new["ratios"]}
    rows = []
    for k in [*new_rows, *(k for k in old_rows if k not in new_rows)]:
        before, after = old_rows.get(k, {}), new_rows.get(k, {})
        row = {"group": k[0], "variant": k[1], "baseline": k[2]}
        for metric in ("speedup", "memory_ratio", "variant_median_s"):
            row[f"old_{metric}"], row[f"new_{metric}"] = before.get(metric), after.get(metric)
        old_s, new_s = before.get("variant_median_s"), after.get("variant_median_s")
        row["time_change"] = new_s / old_s if old_s and new_s else None
        rows.append(row)
    return rows


def format_comparison(rows: list[dict[str, Any]], old_label: str) -> str:
    columns = {
        **_NAMES,
        "speed-up old": lambda row: _times(row["old_speedup"]),
        "speed-up new": lambda row: _times(row["new_speedup"]),
        "ours' time new/old": lambda row: _times(row["time_change"]),
        "memory old": lambda row: _times(row["old_memory_ratio"]),
        "memory new": lambda row: _times(row["new_memory_ratio"]),
    }
    header, body = _cells(columns, rows)
    return f"compared with {old_label}:\n{_render(header, body)}"


def plot(document: dict[str, Any], path: str | Path, old: dict[str, Any] | None = None) -> None:
    """Bar chart of the speed-ups (and memory ratios) of ``document``, beside ``old``'s when given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    rows = document["ratios"]
    labels = [f"{row['group']}\n{row['variant']} vs {row['baseline']}" for row in rows]
    old_rows = {(r["group"], r["variant"], r["baseline"]): r for r in (old or {}).get("ratios", [])}
    metrics = [("speedup", "speed-up (theirs / ours time)")]
    if any(row["memory_ratio"] is not None for row in rows):
        metrics.append(("memory_ratio", "peak extra memory (ours / theirs)"))
    fig, axes = plt.subplots(1, len(metrics), figsize=(6.5 * len(metrics), 0.55 * len(rows) + 1.6), squeeze=False)
    for axis, (metric, title) in zip(axes[0], metrics, strict=True):
        # Ratios on a log axis, each bar drawn from 1 (no difference): 0.5x and 2x are equally long.
        positions = list(range(len(rows)))
        height = 0.38 if old else 0.7
        series = [("new", [row[metric] for row in rows], "#3b75af", -height / 2 if old else 0.0)]
        if old:
            keys = [(r["group"], r["variant"], r["baseline"]) for r in rows]
            series.insert(0, ("old", [(old_rows.get(k) or {}).get(metric) for k in keys], "#bbbbbb", height / 2))
        values_seen = [1.0]
        for label, values, color, shift in series:
            ys = [p + shift for p, v in zip(positions, values, strict=True) if v]
            vs = [v for v in values if v]
            axis.barh(ys, [v - 1.0 for v in vs], left=1.0, height=height, color=color, label=label)
            for y, v in zip(ys, vs, strict=True):
                axis.text(
                    v,
                    y,
                    f" {v:.2f}x ",
                    va="center",
                    ha="left" if v >= 1 else "right",
                    fontsize=8,
                )
            values_seen += vs
        axis.set_xscale("log")
        low, high = min(values_seen), max(values_seen)
        axis.set_xlim(low / 2.5, high * 2.5)
        axis.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}x"))
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.axvline(1.0, color="black", linewidth=0.8)
        if old:
            axis.legend(loc="best", fontsize=8)
        axis.set_yticks(positions)
        axis.set_yticklabels(labels if axis is axes[0][0] else [""] * len(rows), fontsize=8)
        axis.invert_yaxis()
        axis.set_title(title, fontsize=10)
    machine = document["machine"]
    fig.suptitle(
        f"st-mnr-plus bench: {machine['device_name']} ({machine['device']}), {document['created']}", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
