#!/usr/bin/env bash
# The README's quality run: four variants, same data, steps and seed. Evaluates on SICK from tests/data/sick2014 (kept in the repository, not the wheel).
set -euo pipefail
cd "$(dirname "$0")/../.."
for variant in mnrl_pairs mnr_plus_symmetric_pairs mnrl_triplets mnr_plus_triplets; do
    st-mnr-plus train --config "examples/quality/${variant}.toml"
done
