#!/usr/bin/env bash
# The main job (README quick start): replay the bundled sample (data/sample) through the
# onboard services with the shipped demo planner (roadside link at 2 Hz, JPEG), then
# compare planners with the UniV2X metrics. Outputs land in out/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/bootstrap.sh
mkdir -p out

echo "== replay of data/sample with models/synthetic-student (out/replay)"
v2x-vlm replay data/sample --model models/synthetic-student --out out/replay --quiet

echo
echo "== planners on data/sample (out/sample_table.md)"
v2x-vlm eval data/sample --planner constant-velocity --quiet --json out/baseline_sample.json > /dev/null
v2x-vlm eval data/sample --planner model --model models/synthetic-student --quiet \
  --json out/student_sample.json > /dev/null
v2x-vlm eval data/sample --planner model --model models/synthetic-student-ego-only --quiet \
  --json out/ego_only_sample.json > /dev/null
names=(constant-velocity "V2X-VLM student (fused)" "student, ego only")
files=(out/baseline_sample.json out/student_sample.json out/ego_only_sample.json)
v2x-vlm table "${files[@]}" --names "${names[@]}" --out out/sample_table.md
echo
echo "occluded_crossing only (out/sample_occluded.md):"
v2x-vlm table "${files[@]}" --names "${names[@]}" --scenario occluded_crossing --out out/sample_occluded.md
echo
echo "hidden hazard: a yielded-to agent seen by the roadside camera, not by the ego's (out/sample_hidden.md):"
v2x-vlm table "${files[@]}" --names "${names[@]}" --slice hidden_hazard --out out/sample_hidden.md
