#!/usr/bin/env bash
# The checks that need a CUDA GPU, as one script for a machine that has one (CI has none):
#
#   OUT=out/gpu_checks bash scripts/gpu_checks.sh
#   SECTIONS="tests train bench" bash scripts/gpu_checks.sh   # only these, in this order
#
# Sections (SECTIONS, default all, in this order):
#   tests     the CUDA tests (test/test_cuda.py, the graph-capture test in test/test_fast_decode.py)
#             with the runtime's other tests;
#   bench     `v2x-vlm bench` on cuda: the shipped student and random-weight Florence-2-base and
#             -large at full-HD input, eager (the decoder step replayed as a captured CUDA graph);
#             each result is recorded into docs/benchmarks.json and docs/BENCHMARKS.md (copied
#             to $OUT);
#   tensorrt  bench with TensorRT asked for: its logged fallback where torch_tensorrt is missing;
#   train     training throughput of the fused student's recipe from the teacher's layers
#             (config/train_synthetic_hazard_student_from_teacher.yaml) on cuda against the same
#             machine's CPUs, on a small world of the training world's kind (PROBE_STEPS,
#             default 300);
#   inductor  bench with inductor on cuda (last: its compile at warm-up is the slowest part).
#
# It runs with the machine's own python3 and packages (PYTHON to choose another) from this
# checkout (PYTHONPATH), so it needs no install; ROS 2, rosbags and mcap are not needed.
# Sections run on when one fails; the exit status is the number of failed sections.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${OUT:-out/gpu_checks}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
v2x() { "$PY" -m v2x_vlm_ros.cli "$@"; }
failed=0
section() { echo; echo "== $* ($(date -u +%H:%M:%S) UTC)"; }

sec_tests() {
  section "CUDA tests"
  PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 "$PY" -m pytest -q -s -rs -p no:cacheprovider test/test_cuda.py \
    test/test_fast_decode.py test/test_engines.py test/test_bench.py test/test_planner.py \
    2>&1 | tee "$OUT/pytest.txt" || failed=$((failed + 1))
}

sec_bench() {
  section "bench on cuda, eager"
  local args benches=(
    "--model models/synthetic-student --batch 1"
    "--config base --batch 1"
    "--config base --batch 4"
    "--config large --batch 1"
    "--model models/synthetic-student --batch 4"
  )
  for args in "${benches[@]}"; do
    echo "-- bench $args"
    # shellcheck disable=SC2086
    v2x bench $args --backend eager --device cuda --image-size 1920x1080 || failed=$((failed + 1))
    cp docs/benchmarks.json docs/BENCHMARKS.md "$OUT/" 2>/dev/null
  done
}

sec_tensorrt() {
  section "bench on cuda, tensorrt asked for (its fallback is logged where torch_tensorrt is missing)"
  v2x bench --config base --device cuda --backend tensorrt --iterations 5 --no-record \
    --json "$OUT/bench_tensorrt.json" || failed=$((failed + 1))
}

probe() {  # probe WORLD DEVICE STEPS WORKERS: the fused student's recipe for STEPS steps
  v2x train config/train_synthetic_hazard_student_from_teacher.yaml --override "data_root=$1" \
    --override student=models/synthetic-teacher --override teacher=models/synthetic-teacher \
    --override codec_order=time --override "device=$2" --override "max_steps=$3" \
    --override "num_workers=$4" --override eval_max_samples=16 --override log_every=50 \
    --override "output_dir=$1_run_$2" --quiet > /dev/null
}

sec_train() {
  section "training throughput: the fused student's recipe, cuda vs cpu"
  local world=${TMPDIR:-/tmp}/gpu_checks_world
  rm -rf "$world" "${world}_run_"*
  v2x synth "$world" --config config/synth_train_hazard.yaml --sequences 48 --workers "$(nproc)" \
    > /dev/null || failed=$((failed + 1))
  probe "$world" cuda "${PROBE_STEPS:-300}" 8 || failed=$((failed + 1))
  probe "$world" cpu 20 0 || failed=$((failed + 1))
  "$PY" - "$world" "$OUT/train_probe.json" <<'EOF' || failed=$((failed + 1))
import json, os, sys
import torch
world, out = sys.argv[1:]
rows = {}
for device in ("cuda", "cpu"):
    with open(f"{world}_run_{device}/summary.json") as fh:
        s = json.load(fh)
    rows[device] = {"steps": s["global_step"], "seconds": s["seconds"],
                    "seconds_per_step": s["seconds"] / s["global_step"]}
rows["gpu"] = torch.cuda.get_device_name(0)
rows["cpu_threads"] = torch.get_num_threads()
rows["cpu_count"] = os.cpu_count()
rows["speedup"] = rows["cpu"]["seconds_per_step"] / rows["cuda"]["seconds_per_step"]
print(json.dumps(rows, indent=1))
json.dump(rows, open(out, "w"), indent=1)
EOF
}

sec_inductor() {
  section "bench on cuda, inductor (compiles at warm-up: last, as the slowest)"
  v2x bench --config base --batch 1 --backend inductor --device cuda --image-size 1920x1080 \
    || failed=$((failed + 1))
  cp docs/benchmarks.json docs/BENCHMARKS.md "$OUT/" 2>/dev/null
}

for name in ${SECTIONS:-tests bench tensorrt train inductor}; do
  "sec_$name"
done
echo "failed sections: $failed"
exit "$failed"
