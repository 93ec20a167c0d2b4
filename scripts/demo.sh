#!/usr/bin/env bash
# The main job (README quick start): synthesise a small cooperative world in the
# V2X-Seq-SPD layout, then evaluate the constant-velocity baseline on the bundled sample
# with the UniV2X metrics. Outputs land in out/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/bootstrap.sh
mkdir -p out

echo "== synthesise a world (out/world)"
v2x-vlm synth out/world --sequences 5 --seed 1 --image-size 384x216 --duration 8 --quiet \
  > out/world_summary.json
v2x-vlm dataset summary out/world --quiet --json out/world_dataset.json > /dev/null
echo "wrote out/world ($(python -c 'import json; d=json.load(open("out/world_dataset.json")); print(d["samples"], "samples")'))"

echo "== the bundled sample (data/sample)"
v2x-vlm dataset summary data/sample --quiet --json out/sample_summary.json --show-skips 5

echo "== constant-velocity baseline on data/sample, UniV2X metrics"
v2x-vlm eval data/sample --planner constant-velocity --quiet \
  --json out/baseline_sample.json --markdown out/baseline_sample.md
