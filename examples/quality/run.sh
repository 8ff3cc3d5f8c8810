#!/usr/bin/env bash
# The README's quality run: four variants, same data, steps and seed. Needs ../shared/data (SICK) beside the repo.
set -euo pipefail
cd "$(dirname "$0")/../.."
for variant in mnrl_pairs mnr_plus_symmetric_pairs mnrl_triplets mnr_plus_triplets; do
    st-mnr-plus train --config "examples/quality/${variant}.toml"
done
