#!/usr/bin/env bash
# Rebuild the synthetic-world planners from nothing (issue 11; docs/TRAINING.md), in stages
# that survive interruption: a stage whose stamp ($RUNS/.done-STAGE) exists is skipped, and
# a training stage cut off mid-run resumes from its checkpoint when the script runs again.
#
#   bash scripts/train_synthetic_models.sh                  # every stage, in order
#   bash scripts/train_synthetic_models.sh teacher student  # only these (their inputs must exist)
#   CHECK=1 bash scripts/train_synthetic_models.sh          # validate every training stage's
#                                                           # settings (v2x-vlm train --check), run nothing
#
# Stages and their cost on a 2-core CPU machine (measured, docs/TRAINING.md):
#   worlds   the hazard-rich training world (450 sequences, seed 300, 256 x 144), the fused
#            student's world with early crossers (600 sequences, seed 300,
#            config/synth_train_hazard_early.yaml), the acceptance world (`synth` defaults,
#            30 sequences, seed 2000), a second held-out world (10 sequences, seed 3000) and
#            a fresh one of the acceptance world's form (seed 5000, Table 5's second world);
#            about 33 min
#   vision   the vision encoder pretrained on the dense roadside probe alone; about 25 min
#   teacher_time  the shipped teacher's text side (as of commit 2cd5127) planning on the frozen
#            encoder, waypoints in time order, hidden-hazard frames and their twins drawn 8 times
#            as often; 5 epochs of 304 steps
#   teacher_order  from it: waypoint 10 (the decision) written first, no probe yet; 1 epoch
#            of 507 steps (about 6 min)
#   teacher  from it: the decoder probe ramped up (lambda_hazard 1 for 1 epoch, 2 for 4, 4 for
#            2, as the lost chain did; 7 x 507 steps, about 45 min), each run from the previous
#            one's checkpoint (2 epochs at lambda 2 gave a weaker teacher). Adding the probe
#            before the order was learned gave a teacher worse than constant velocity
#            (validation L2 5.63 m; docs/TRAINING.md, "Rebuilding")
#   student_ego  the ego-only student (config/train_synthetic_hazard_student_ego_only.yaml):
#            layers 0 and 2 of the teacher's 3, its frozen encoder, distilled from it (the
#            teacher shown the ego camera only), turns balanced and mirrored with their
#            command; 8 epochs of 507 steps, about 47 min
#   student  the fused student (config/train_synthetic_hazard_student.yaml): the ego-only
#            student given the roadside view (rows 10-60 % of it, and in its blue channel the
#            same box 0.5 s earlier) and trained on, vision encoder included, on the world
#            with early crossers, distilled from the teacher, roadside dropout (half of it as
#            uniform views), the hazard probe; 3 epochs of 675 steps, about 52 min
#   eval     constant velocity and every model on both held-out worlds, the roadside,
#            description and command ablations of the fused student, the twin test of the
#            fused student and the teacher; JSON (and each table, .md) in $RUNS/eval, about
#            20 min (2026-12-06); cut off, it resumes at the first evaluation it had not written
#   ablations  Table 5: the fused student's recipe with one switch off, 13 runs of its length
#            (about 52 min each), each from the ego-only student (fusion, hazard probe,
#            roadside dropout, hazard weighting, distillation, alignment, scene text,
#            augmentation, modality weights, roadside crop, pair weighting, roadside motion,
#            vision training);
#            $RUNS/ablation-NAME; each run's last epoch is then scored on the acceptance
#            and seed-5000 worlds, the eval JSON in $ABLATION_EVALS (default
#            $RUNS/eval/ablations) as NAME-WORLD.json. A row whose two JSON files are there
#            already is neither trained nor scored again, so a table kept between sessions,
#            e.g. the committed one,
#            ABLATION_EVALS=docs/experiments/ablations/motion-recipe, is completed row by row
#            (docs/experiments/ablations/crop-recipe: the 11 rows of the recipe before
#            roadside motion and vision training were added to it)
#   table5   `v2x-vlm experiments` Tables 1, 5 and 6 on the acceptance world ($RUNS/experiments)
#            and Table 5 on the seed-5000 world ($RUNS/experiments-world_s5000): every
#            ablation scored or trained so far (its JSON from $ABLATION_EVALS where there is
#            one, else its last epoch) next to the full recipe
# Outputs go to $RUNS (default runs/, ignored by git). Nothing is written to docs/.
# The students, their ablations, eval and table5 read the teacher from $TEACHER (default: the
# `teacher` stage's $RUNS/teacher/checkpoint/student). The shipped models/synthetic-teacher is
# that stage's output, so the students can be trained without the teacher stages:
#   TEACHER=models/synthetic-teacher bash scripts/train_synthetic_models.sh worlds student_ego student
# and the eval and table5 stages score the students FUSED and EGO_ONLY (default: the student
# stages' outputs);
# the shipped models' cards, from a clean clone:
#   TEACHER=models/synthetic-teacher FUSED=models/synthetic-student \
#     EGO_ONLY=models/synthetic-student-ego-only bash scripts/train_synthetic_models.sh worlds eval
# On another machine, TRAIN_ARGS are added to every training run and SYNTH_WORKERS sets the
# worlds' render processes (default: the configs' 2), e.g. on a CUDA machine with 16 cores:
#   TRAIN_ARGS="--override device=cuda --override num_workers=8 --override checkpoint_every=100" \
#     SYNTH_WORKERS=16 TEACHER=models/synthetic-teacher bash scripts/train_synthetic_models.sh ...
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUNS=${RUNS:-runs}
if [ -z "${V2X_VLM:-}" ]; then
  source scripts/bootstrap.sh
  V2X_VLM=v2x-vlm
fi
CHECK=${CHECK:-0}
if [ "$CHECK" = 1 ]; then  # a check writes nothing under $RUNS: what it must extract goes here
  SCRATCH=$(mktemp -d)
  trap 'rm -rf "$SCRATCH"' EXIT
fi
TEACHER=${TEACHER:-$RUNS/teacher/checkpoint/student}
# the students the eval stage scores (the shipped ones: FUSED=models/synthetic-student
# EGO_ONLY=models/synthetic-student-ego-only)
FUSED=${FUSED:-$RUNS/student/checkpoint/student}
EGO_ONLY=${EGO_ONLY:-$RUNS/student-ego-only/checkpoint/student}
read -r -a TRAIN_EXTRA <<< "${TRAIN_ARGS:-}"  # words: overrides hold no spaces
SYNTH_EXTRA=()
[ -n "${SYNTH_WORKERS:-}" ] && SYNTH_EXTRA=(--workers "$SYNTH_WORKERS")
TRAIN_WORLD=$RUNS/synthetic/train_world_hzb
EARLY_WORLD=$RUNS/synthetic/train_world_early  # the fused student's: early crossers too
TEST_WORLD=$RUNS/synthetic/test_world
VAL_WORLD=$RUNS/synthetic/val_world
FRESH_WORLD=$RUNS/synthetic/world_s5000  # Table 5's second world, of the acceptance world's form
ABLATION_EVALS=${ABLATION_EVALS:-$RUNS/eval/ablations}

train() {  # train CONFIG OVERRIDES...: the run, or with CHECK=1 its settings checked
  if [ "$CHECK" = 1 ]; then
    "$V2X_VLM" train "$@" "${TRAIN_EXTRA[@]}" --check > /dev/null && echo "checked: train $1"
  else
    "$V2X_VLM" train "$@" "${TRAIN_EXTRA[@]}" --quiet
  fi
}

stage() {  # stage NAME: run stage_NAME unless its stamp exists
  local stamp=$RUNS/.done-$1
  if [ "$CHECK" != 1 ] && [ -f "$stamp" ]; then
    echo "== $1: done earlier ($stamp)"
    return
  fi
  echo "== $1 ($(date -u +%H:%M:%S) UTC)"
  "stage_$1"
  if [ "$CHECK" != 1 ]; then
    mkdir -p "$RUNS" && date -u +%FT%TZ > "$stamp"
  fi
}

stage_worlds() {
  [ "$CHECK" = 1 ] && { echo "(worlds: written by v2x-vlm synth, not checked)"; return; }
  # a world cut off mid-write is written again
  rm -rf "$TRAIN_WORLD" "$EARLY_WORLD" "$TEST_WORLD" "$VAL_WORLD" "$FRESH_WORLD"
  "$V2X_VLM" synth "$TRAIN_WORLD" --config config/synth_train_hazard.yaml --sequences 450 "${SYNTH_EXTRA[@]}" > /dev/null
  "$V2X_VLM" synth "$EARLY_WORLD" --config config/synth_train_hazard_early.yaml "${SYNTH_EXTRA[@]}" > /dev/null
  "$V2X_VLM" synth "$TEST_WORLD" --config config/synth_test.yaml "${SYNTH_EXTRA[@]}" > /dev/null
  "$V2X_VLM" synth "$VAL_WORLD" --config config/synth_test.yaml --sequences 10 --seed 3000 "${SYNTH_EXTRA[@]}" > /dev/null
  "$V2X_VLM" synth "$FRESH_WORLD" --config config/synth_test.yaml --seed 5000 "${SYNTH_EXTRA[@]}" > /dev/null
}

stage_vision() {
  train config/train_synthetic_vision.yaml --override "data_root=$TRAIN_WORLD" \
    --override "output_dir=$RUNS/synthetic-vision"
}

teacher_overrides=(  # every teacher run: the frozen encoder at 128 x 384, hidden hazards drawn 8x;
  # the pinned teacher's codec (absolute waypoints, x in [-10, 80] m, 400 bins), which every run
  # from it keeps (a model directory keeps its codec; the config's, for a preset, would be refused)
  --override "data_root=$TRAIN_WORLD" --override freeze_vision=true --override 'image_size=[128,384]'
  --override codec_reference=none --override 'codec_x_range=[-10,80]' --override codec_bins=400
  --override 'augment_resolution=[0.7,1.0]' --override hazard_weight=8 --override lr=0.0005
  --override eval_max_samples=64 --override export_each_epoch=true
)

# The chain starts from the teacher shipped at commit 2cd5127 (its tokenizer, codec and text
# side), pinned: once a retrained teacher is shipped at models/synthetic-teacher, that one is
# taken from git instead, so the recipe still starts where it did.
BASE_TEACHER_COMMIT=${BASE_TEACHER_COMMIT:-2cd5127}
base_teacher() {  # prints the directory of the pinned teacher (extracted under $RUNS if need be)
  local files=(':(exclude)models/synthetic-teacher/README.md')
  if git diff --quiet "$BASE_TEACHER_COMMIT" -- models/synthetic-teacher "${files[@]}" 2>/dev/null; then
    echo models/synthetic-teacher
    return
  fi
  local out=${SCRATCH:-$RUNS}/base-teacher
  if [ ! -f "$out/model.safetensors" ]; then
    mkdir -p "$out"
    git archive "$BASE_TEACHER_COMMIT" models/synthetic-teacher | tar -x -C "$out" --strip-components=2 \
      || { echo "the recipe starts from models/synthetic-teacher as of commit $BASE_TEACHER_COMMIT:" \
                "it needs a git clone with that history" >&2; return 1; }
  fi
  echo "$out"
}

stage_teacher_time() {
  # From the pinned teacher's text side (its tokenizer and codec: absolute x in [-10, 80] m,
  # 400 bins) on the vision stage's encoder, frozen; the projector kept on the dense probe.
  local base
  base=$(base_teacher)
  train config/train_synthetic_teacher.yaml "${teacher_overrides[@]}" \
    --override "student=$base" --override "init_vision_from=$RUNS/synthetic-vision/model" \
    --override lambda_objects=1 --override epochs=5 --override epoch_fraction=0.15 \
    --override warmup_steps=50 --override "output_dir=$RUNS/teacher-time"
}

stage_teacher_order() {
  # The time-order planner's last epoch, its decision (waypoint 10) written first.
  train config/train_synthetic_teacher.yaml "${teacher_overrides[@]}" \
    --override "student=$RUNS/teacher-time/checkpoint/student" --override codec_order=endpoint_first \
    --override epochs=1 --override epoch_fraction=0.25 --override warmup_steps=20 \
    --override "output_dir=$RUNS/teacher-order"
}

stage_teacher() {
  # The decoder made to read the hidden road user through the hazard probe, its weight raised
  # run by run (a run that finished is resumed at its end and only exported again).
  local from=$RUNS/teacher-order run out lambda epochs warmup
  for run in "teacher-probe1 1 1 20" "teacher-probe2 2 4 50" "teacher 4 2 50"; do
    read -r out lambda epochs warmup <<< "$run"
    out=$RUNS/$out
    train config/train_synthetic_teacher.yaml "${teacher_overrides[@]}" \
      --override "student=$from/checkpoint/student" --override codec_order=endpoint_first \
      --override "lambda_hazard=$lambda" --override hazard_probe_on=decoder --override "epochs=$epochs" \
      --override epoch_fraction=0.25 --override "warmup_steps=$warmup" --override "output_dir=$out"
    from=$out
  done
}

# the students' inputs under $RUNS (their configs name the same under runs/): the ego-only
# student starts from the teacher's layers, the fused one from the ego-only student
ego_inputs=(--override "data_root=$TRAIN_WORLD" --override "student=$TEACHER" --override "teacher=$TEACHER")
fused_inputs=(
  --override "data_root=$EARLY_WORLD" --override "student=$RUNS/student-ego-only/checkpoint/student"
  --override "teacher=$TEACHER"
)

stage_student_ego() {
  train config/train_synthetic_hazard_student_ego_only.yaml "${ego_inputs[@]}" \
    --override "output_dir=$RUNS/student-ego-only"
}

stage_student() {
  train config/train_synthetic_hazard_student.yaml "${fused_inputs[@]}" --override "output_dir=$RUNS/student"
}

# Table 5: the fused student's recipe with one switch off each (the overrides of
# eval/experiment_tables.py's OVERRIDES, which `v2x-vlm experiments` prints as commands),
# the ones about the roadside view first. no_fusion is the matched control: the ego-only
# student trained on exactly as the fused one, without the roadside view (and so without the
# probe that reads it); without its run, Table 5 shows the ego-only student there.
ablations=(
  "no_fusion fusion=false lambda_hazard=0 roadside_crop=null roadside_motion_s=null roadside_motion_layout=stack"
  "no_hazard_probe lambda_hazard=0"
  "no_roadside_dropout roadside_dropout=0"
  "no_hazard_weight hazard_weight=1"
  "no_distillation distillation=false"
  "no_alignment alignment=false"
  "no_scene_text scene_text=false"
  "no_augmentation augment_resolution=null augment_jpeg_quality=null"
  "no_modality_weights modality_weights=false"
  "no_roadside_crop roadside_crop=null"
  "no_pair_weight pair_weight=1"
  "no_roadside_motion roadside_motion_s=null roadside_motion_layout=stack"
  "no_vision_training freeze_vision=true"
)

ablation_dir() {  # ablation_dir NAME: where its run goes (as experiments' commands name it)
  echo "$RUNS/ablation-${1//_/-}"
}

ablation_eval() {  # ablation_eval NAME WORLD: where the row's eval JSON on that world goes
  echo "$ABLATION_EVALS/$1-$(basename "$2").json"
}

last_epoch() {  # last_epoch RUN: the finished run's last exported epoch (float16, as shipped)
  if [ ! -f "$1/summary.json" ] || [ ! -d "$1/epochs" ]; then
    echo "$1: not a finished run with exported epochs" >&2
    return 1
  fi
  find "$1/epochs" -mindepth 1 -maxdepth 1 -name 'epoch-*' | sort -V | tail -n 1
}

stage_ablations() {
  local spec name switch overrides world model
  for spec in "${ablations[@]}"; do
    read -r name overrides <<< "$spec"
    if [ -f "$(ablation_eval "$name" "$TEST_WORLD")" ] && [ -f "$(ablation_eval "$name" "$FRESH_WORLD")" ]; then
      echo "($name: scored earlier, $ABLATION_EVALS)"
      continue
    fi
    local args=()
    for switch in $overrides; do args+=(--override "$switch"); done
    train config/train_synthetic_hazard_student.yaml "${fused_inputs[@]}" "${args[@]}" \
      --override "output_dir=$(ablation_dir "$name")"
    [ "$CHECK" = 1 ] && continue
    model=$(last_epoch "$(ablation_dir "$name")")
    mkdir -p "$ABLATION_EVALS"
    for world in "$TEST_WORLD" "$FRESH_WORLD"; do
      evaluate "$(ablation_eval "$name" "$world")" "$world" --planner model --model "$model" --batch-size 8
    done
  done
}

stage_table5() {
  # Tables 1, 5 and 6 on the acceptance world, Table 5 on the seed-5000 one: every ablation
  # scored (its JSON) or trained (its last epoch) so far next to the full recipe
  [ "$CHECK" = 1 ] && { echo "(table5: v2x-vlm experiments, not checked)"; return; }
  local spec name world json tables out
  for world in "$TEST_WORLD" "$FRESH_WORLD"; do
    local args=()
    for spec in "${ablations[@]}"; do
      read -r name _ <<< "$spec"
      json=$(ablation_eval "$name" "$world")
      if [ -f "$json" ]; then
        args+=(--ablation "$name=$json")
      elif [ -f "$(ablation_dir "$name")/summary.json" ]; then
        args+=(--ablation "$name=$(last_epoch "$(ablation_dir "$name")")")
      fi
    done
    tables=5 out=$RUNS/experiments-$(basename "$world")
    [ "$world" = "$TEST_WORLD" ] && tables=1,5,6 out=$RUNS/experiments
    "$V2X_VLM" experiments "$world" --model "$FUSED" \
      --teacher "$TEACHER" --ego-only-model "$EGO_ONLY" \
      "${args[@]}" --train-config config/train_synthetic_hazard_student.yaml --tables "$tables" --quiet \
      --out "$out" > /dev/null
  done
}

evaluate() {  # evaluate JSON ARGS...: `v2x-vlm eval ARGS` into JSON (its table beside it, .md),
  # unless JSON exists: an eval stage cut off resumes at the first evaluation it had not written
  local json=$1
  shift
  if [ -f "$json" ]; then
    echo "($json: written earlier)"
    return
  fi
  "$V2X_VLM" eval "$@" --quiet --json "$json.partial" > "${json%.json}.md"
  mv "$json.partial" "$json"
}

stage_eval() {
  [ "$CHECK" = 1 ] && { echo "(eval: v2x-vlm eval, not checked)"; return; }
  local out=$RUNS/eval
  mkdir -p "$out"
  for world in test val; do
    local root=$RUNS/synthetic/${world}_world
    evaluate "$out/$world-cv.json" "$root" --planner constant-velocity
    evaluate "$out/$world-teacher.json" "$root" --planner model --model "$TEACHER"
    evaluate "$out/$world-ego-only.json" "$root" --planner model --model "$EGO_ONLY"
    evaluate "$out/$world-fused.json" "$root" --planner model --model "$FUSED"
    for ablation in none grey swap; do
      evaluate "$out/$world-fused-$ablation.json" "$root" --planner model --model "$FUSED" --roadside "$ablation"
    done
    evaluate "$out/$world-fused-description-empty.json" "$root" --planner model --model "$FUSED" \
      --description empty
    # does it turn the way it is told? LEFT planned as RIGHT and RIGHT as LEFT
    evaluate "$out/$world-fused-command-swap.json" "$root" --planner model --model "$FUSED" \
      --command swap
    "$V2X_VLM" table "$out/$world-cv.json" "$out/$world-teacher.json" "$out/$world-ego-only.json" \
      "$out/$world-fused.json" "$out/$world-fused-none.json" "$out/$world-fused-grey.json" \
      "$out/$world-fused-swap.json" "$out/$world-fused-description-empty.json" \
      "$out/$world-fused-command-swap.json" \
      --names constant-velocity teacher "student, ego only" "student, fused" "fused, roadside none" \
      "fused, roadside grey" "fused, roadside swapped" "fused, description empty" \
      "fused, turn command swapped" \
      --slice hidden_hazard --out "$out/$world-hidden_hazard.md" > /dev/null
  done
  # the twin test (frame pairs that differ only in the roadside image) of both fused planners
  local name model
  for name in fused teacher; do
    model=$FUSED
    [ "$name" = teacher ] && model=$TEACHER
    [ -f "$out/twin-$name.json" ] && continue
    "$V2X_VLM" twin-test "$model" --data "$TEST_WORLD" --scenario occluded_crossing \
      --quiet --json "$out/twin-$name.json.partial" > /dev/null
    mv "$out/twin-$name.json.partial" "$out/twin-$name.json"
  done
}

all=(worlds vision teacher_time teacher_order teacher student_ego student eval ablations table5)
stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=("${all[@]}")
for name in "${stages[@]}"; do
  if ! declare -F "stage_$name" > /dev/null; then
    echo "unknown stage '$name' (stages: ${all[*]})" >&2
    exit 2
  fi
done
for name in "${stages[@]}"; do
  stage "$name"
done
