"""The quality benchmark's table (markdown) and figure (PNG), from its ``results.json``.

    python -m benchmarks.quality.report benchmarks/quality/results/results.json [--out folder]

A variant is called better (worse) than MNRL only when its mean STS average beats (trails) that of MNRL trained on
the same rows (pairs or triplets) by more than two standard deviations of the difference,
``2 * sqrt(sd_variant**2 + sd_mnrl**2)``, each ``sd`` over the seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

from benchmarks.quality.variants import BASELINES, STARTS

METRICS = ("stsb", "sickr", "sts_avg", "sick_triplets")
# The variants whose training curves the figure draws (all of them would be unreadable).
CURVES = (
    "mnrl",
    "symmetric",
    "learnable_scale",
    "learnable_scale_own_lr",
    "fn_margin",
    "fn_ratio",
    "mnrl_triplets",
    "triplets_own",
    "recommended",
    "batch_4096",
)


def mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def aggregate(results: dict[str, Any], start: str) -> dict[str, dict[str, Any]]:
    """Per variant of ``start`` (table order): mean and std of every metric over the seeds, and run details."""
    rows: dict[str, dict[str, Any]] = {}
    for variant in STARTS[start].variants:
        runs = [r for r in results["runs"] if r["start"] == start and r["variant"] == variant.name]
        if not runs:
            continue
        runs.sort(key=lambda r: r["seed"])
        row: dict[str, Any] = {"variant": variant, "runs": runs, "seeds": [r["seed"] for r in runs]}
        for metric in METRICS:
            row[metric] = mean_std([r["scores"][metric] for r in runs])
        row["steps"] = runs[0]["steps"]
        row["batch_size"] = runs[0]["batch_size"]
        row["train_rows"] = runs[0]["train_rows"]
        row["train_s"] = statistics.fmean(r["train_s"] for r in runs)
        row["eval_s"] = statistics.fmean(r["eval_s"] for r in runs)
        scales = [r["final_scale"] for r in runs if r.get("final_scale") is not None]
        row["final_scale"] = statistics.fmean(scales) if scales else None
        rows[variant.name] = row
    for row in rows.values():
        baseline = rows.get(BASELINES[row["variant"].kind])
        row["delta"], row["delta_sd"], row["verdict"] = compare(row, baseline)
    return rows


def compare(row: dict[str, Any], baseline: dict[str, Any] | None) -> tuple[float, float, str]:
    if baseline is None or row is baseline:
        return math.nan, math.nan, "baseline" if row is baseline else "no baseline"
    (mean, sd), (base_mean, base_sd) = row["sts_avg"], baseline["sts_avg"]
    delta = mean - base_mean
    delta_sd = math.sqrt(sd**2 + base_sd**2)
    if math.isnan(delta_sd):
        return delta, delta_sd, "one seed"
    if row["variant"].epochs is not None:
        return delta, delta_sd, f"not comparable ({row['variant'].epochs:g} epochs)"
    if delta > 2 * delta_sd:
        return delta, delta_sd, "**better**"
    if delta < -2 * delta_sd:
        return delta, delta_sd, "**worse**"
    return delta, delta_sd, "within noise"


def _pm(value: tuple[float, float], percent: bool = False) -> str:
    mean, sd = value
    if percent:
        return f"{100 * mean:.1f} ± {100 * sd:.1f}"
    return f"{mean:.4f} ± {sd:.4f}"


def markdown(results: dict[str, Any]) -> str:
    lines: list[str] = []
    meta = results.get("meta", {})
    for start_name, entry in results["starts"].items():
        rows = aggregate(results, start_name)
        if not rows:
            continue
        start = STARTS[start_name]
        settings = entry.get("settings", start.settings())
        seeds = sorted({seed for row in rows.values() for seed in row["seeds"]})
        commits = sorted({run.get("commit") or "?" for row in rows.values() for run in row["runs"]})
        before = entry["before"]
        budget = (
            f"{settings['max_steps']} steps"
            if settings["max_steps"]
            else f"{settings['epochs']:g} epochs (steps differ with the batch size)"
        )
        lines += [
            f"**{start.label}**: {budget}, batch {settings['batch_size']} unless named, learning rate "
            f"{settings['learning_rate']:g} (AdamW, linear decay, 10% warm-up), seeds {', '.join(map(str, seeds))}; "
            f"mean ± std over the seeds. Before training: STSb {before['stsb']:.4f}, SICK-R {before['sickr']:.4f}, "
            f"STS average {before['sts_avg']:.4f}, SICK triplets {100 * before['sick_triplets']:.1f}%. "
            f"Trained at commit {', '.join(commits)}.",
            "",
            "| variant | rows | batch | steps | STSb test | SICK-R test | STS average | Δ vs MNRL, same rows (σ of Δ) | verdict "
            "| SICK triplets % | train s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
        ]
        for row in rows.values():
            delta = "" if math.isnan(row["delta"]) else f"{row['delta']:+.4f} ({row['delta_sd']:.4f})"
            label = row["variant"].label
            if row["final_scale"] is not None and row["variant"].loss_kwargs.get("learnable_scale"):
                label += f", final scale {row['final_scale']:.1f}"
            lines.append(
                f"| {label} | {row['train_rows']:,} | {row['batch_size']:,} | {row['steps']} | {_pm(row['stsb'])} "
                f"| {_pm(row['sickr'])} | {_pm(row['sts_avg'])} | {delta} | {row['verdict']} "
                f"| {_pm(row['sick_triplets'], percent=True)} | {row['train_s']:.0f} |"
            )
        waiting = [v.label for v in start.variants if v.name not in rows]
        if waiting:
            lines += ["", "Not run: " + "; ".join(waiting) + "."]
        lines.append("")
    if meta:
        lines.append(
            f"Measured {meta.get('date')} ({meta.get('machine')}; torch "
            f"{meta.get('torch')}, sentence-transformers {meta.get('sentence_transformers')}). Train s: mean wall "
            "time of the training per run, noisy (shared machine)."
        )
    return "\n".join(lines) + "\n"


def figure(results: dict[str, Any], path: Path) -> Path | None:
    """One PNG: the STS average of every variant (a panel per start), and the GloVe training curves."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no figure.", file=sys.stderr)
        return None
    starts = [name for name in results["starts"] if aggregate(results, name)]
    sizes = [max(3, len(aggregate(results, name))) for name in starts]
    fig = plt.figure(figsize=(14, 4 + 0.3 * sum(sizes) + 4.5), layout="constrained")
    grid = fig.add_gridspec(len(starts) + 1, 2, height_ratios=[*sizes, 14])
    for index, start_name in enumerate(starts):
        _variants_panel(fig.add_subplot(grid[index, :]), results, start_name)
    curve_start = "glove" if "glove" in starts else (starts[0] if starts else None)
    if curve_start is not None:
        _curves_panels(fig.add_subplot(grid[-1, 0]), fig.add_subplot(grid[-1, 1]), results, curve_start)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _variants_panel(ax: Any, results: dict[str, Any], start_name: str) -> None:
    rows = aggregate(results, start_name)
    labels = [row["variant"].label for row in rows.values()]
    means = [row["sts_avg"][0] for row in rows.values()]
    sds = [0 if math.isnan(row["sts_avg"][1]) else row["sts_avg"][1] for row in rows.values()]
    positions = list(range(len(rows)))[::-1]
    colors = [
        "tab:green" if "better" in row["verdict"] else "tab:red" if "worse" in row["verdict"] else "tab:blue"
        for row in rows.values()
    ]
    ax.errorbar(means, positions, xerr=sds, fmt="none", ecolor="black", capsize=3)
    ax.scatter(means, positions, c=colors, zorder=3)
    for name, color in zip(BASELINES.values(), ("grey", "tab:orange"), strict=True):
        if name in rows:
            base_mean, base_sd = rows[name]["sts_avg"]
            base_sd = 0 if math.isnan(base_sd) else base_sd
            label = f"{rows[name]['variant'].label} ± 2 std"
            ax.axvspan(base_mean - 2 * base_sd, base_mean + 2 * base_sd, color=color, alpha=0.2, label=label)
            ax.axvline(base_mean, color=color, lw=1)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")
    ax.set_yticks(positions, labels, fontsize="small")
    before = results["starts"][start_name]["before"]["sts_avg"]
    ax.set_title(
        f"{STARTS[start_name].label}: STS average (STSb + SICK-R test), before training {before:.3f}",
        fontsize="medium",
    )
    ax.set_xlabel(
        "Spearman, mean ± std over the seeds (red: worse, green: better than MNRL on the same rows by > 2 std)"
    )
    ax.grid(axis="x", alpha=0.3)


def _curves_panels(ax_dev: Any, ax_loss: Any, results: dict[str, Any], start_name: str) -> None:
    rows = aggregate(results, start_name)
    before_dev = results["starts"][start_name].get("before_dev")
    for name in CURVES:
        if name not in rows:
            continue
        runs = rows[name]["runs"]
        for ax, key in ((ax_dev, "dev_curve"), (ax_loss, "loss_curve")):
            points = _mean_curve([r[key] for r in runs])
            if not points:
                continue
            if key == "dev_curve" and before_dev is not None:
                points = [(0.0, before_dev), *points]
            ax.plot(*zip(*points, strict=True), marker=".", label=rows[name]["variant"].label)
    ax_dev.set_title(f"{start_name}: STSb dev during training (mean over seeds)", fontsize="medium")
    ax_dev.set(xlabel="epoch", ylabel="Spearman")
    ax_loss.set_title(f"{start_name}: training loss (mean over seeds)", fontsize="medium")
    ax_loss.set(xlabel="epoch", ylabel="loss", yscale="log")
    ax_dev.legend(fontsize="x-small")


def _mean_curve(curves: list[list[list[float]]]) -> list[tuple[float, float]]:
    """Average curves point by point (seeds log at the same steps; a shorter one truncates)."""
    curves = [c for c in curves if c]
    if not curves:
        return []
    length = min(len(c) for c in curves)
    return [(curves[0][i][0], statistics.fmean(c[i][1] for c in curves)) for i in range(length)]


def write_report(results_path: Path, out: Path) -> list[Path]:
    results = json.loads(Path(results_path).read_text())
    out.mkdir(parents=True, exist_ok=True)
    table = out / "table.md"
    table.write_text(markdown(results))
    written = [table]
    png = figure(results, out / "quality.png")
    if png is not None:
        written.append(png)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality.report", description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path, help="results.json written by benchmarks.quality.run")
    parser.add_argument("--out", type=Path, help="folder for table.md and quality.png (default: next to results)")
    args = parser.parse_args(argv)
    for path in write_report(args.results, args.out or args.results.parent):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
