"""Every shipped training config loads into TrainConfig (a typo would only show at run time)."""

from pathlib import Path

import pytest

from v2x_vlm_ros.config import load_section
from v2x_vlm_ros.training.config import TrainConfig

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "config").glob("train_*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_train_config_loads(path):
    cfg = load_section(TrainConfig, path, "train")
    assert cfg.output_dir.startswith("runs/")


def test_the_paper_recipe_keeps_the_paper_defaults():
    cfg = load_section(TrainConfig, Path(CONFIGS[0]).parent / "train_dair_student.yaml", "train")
    assert (cfg.lr, cfg.batch_size, cfg.epochs) == (1e-6, 4, 10)
    assert (cfg.lambda_align, cfg.lambda_kd, cfg.temperature) == (0.1, 0.5, 2.0)
    assert cfg.freeze_vision and cfg.student == "florence-community/Florence-2-base"
    assert len(CONFIGS) == 9


def test_the_vision_stage_config_pretrains_the_encoder_for_a_planner():
    cfg = load_section(TrainConfig, Path(CONFIGS[0]).parent / "train_synthetic_vision.yaml", "train")
    assert cfg.stage == "vision" and cfg.lambda_objects > 0 and not cfg.freeze_vision
    assert cfg.roadside_dropout == 0.0 and not cfg.uses_teacher
    assert cfg.image_size == (128, 384)  # the planners' fused input


ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "scripts" / "train_synthetic_models.sh"


def _recipe(tmp_path, *stages, check=True, recipe=RECIPE, **env_extra):
    import os
    import subprocess
    import sys

    env = dict(os.environ, V2X_VLM=str(Path(sys.executable).parent / "v2x-vlm"),
               RUNS=str(tmp_path / "runs"), CHECK="1" if check else "0", **env_extra)
    # a hang guard, not a timing: about 20 `train --check` processes, each importing torch
    return subprocess.run(["bash", str(recipe), *stages], env=env, capture_output=True, text=True,
                          timeout=900)


def test_the_recipe_scripts_training_stages_are_valid_settings(tmp_path):
    done = _recipe(tmp_path)
    assert done.returncode == 0, done.stderr
    checked = [line.split()[-1] for line in done.stdout.splitlines() if line.startswith("checked: train")]
    # the time-order run, endpoint first, then the probe ramp's three runs
    teacher = "config/train_synthetic_teacher.yaml"
    student = "config/train_synthetic_hazard_student.yaml"
    # the ego-only student before the fused one, which starts from it
    assert checked == ["config/train_synthetic_vision.yaml", *[teacher] * 5,
                       "config/train_synthetic_hazard_student_ego_only.yaml", student, *[student] * 13]
    assert not (tmp_path / "runs").exists()  # a check writes nothing, no stamps either


def test_the_recipe_starts_from_the_pinned_teacher_even_after_another_is_shipped(tmp_path):
    """The chain starts from models/synthetic-teacher as of a pinned commit: a retrained teacher
    shipped at that path (here: one whose codec has 1000 bins, which the teacher runs' 400-bin
    settings would refuse) is not where it starts; the pinned one comes from git."""
    import json
    import shutil
    import subprocess

    repo = tmp_path / "repo"
    for part in ("scripts", "config", "models/synthetic-teacher"):
        shutil.copytree(ROOT / part, repo / part)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "pinned"], check=True)
    pinned = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True,
                            text=True).stdout.strip()
    recipe = repo / "scripts" / "train_synthetic_models.sh"
    settings = repo / "models" / "synthetic-teacher" / "v2x_vlm.json"
    shipped = json.loads(settings.read_text())
    shipped["codec"]["bins"] = 1000
    settings.write_text(json.dumps(shipped))

    done = _recipe(tmp_path, "teacher_time", recipe=recipe, BASE_TEACHER_COMMIT=pinned)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "checked: train config/train_synthetic_teacher.yaml"
    assert not (tmp_path / "runs").exists()
    # the shipped one would have been refused (the check above is not lax) ...
    from v2x_vlm_ros.cli import main

    assert main(["train", str(repo / "config" / "train_synthetic_teacher.yaml"), "--override",
                 f"student={repo}/models/synthetic-teacher", "--override", "codec_reference=none",
                 "--override", "codec_x_range=[-10,80]", "--override", "codec_bins=400", "--check"]) == 2
    # ... and a history without the pinned commit stops the stage, saying why
    missing = "0123456789abcdef0123456789abcdef01234567"
    refused = _recipe(tmp_path, "teacher_time", recipe=recipe, BASE_TEACHER_COMMIT=missing)
    assert refused.returncode != 0 and "checked:" not in refused.stdout
    assert f"the recipe starts from models/synthetic-teacher as of commit {missing}: it needs a git " \
        "clone with that history" in refused.stderr


def test_the_students_take_the_teacher_named_by_TEACHER(tmp_path):
    """TEACHER=DIR makes the ego-only student start from and distil DIR and the fused student
    (and its ablations, which start from the ego-only one) distil DIR, e.g. the shipped
    models/synthetic-teacher without the teacher stages: a teacher whose codec the students'
    settings do not match (1000 bins here) is refused by their check, naming it."""
    import json
    import shutil

    shipped = ROOT / "models" / "synthetic-teacher"
    done = _recipe(tmp_path, "student_ego", "student", TEACHER=str(shipped))
    assert done.returncode == 0, done.stderr
    fused = "config/train_synthetic_hazard_student.yaml"
    assert done.stdout.splitlines()[-1] == f"checked: train {fused}"
    other = tmp_path / "other-teacher"
    shutil.copytree(shipped, other)
    settings = json.loads((other / "v2x_vlm.json").read_text())
    settings["codec"]["bins"] = 1000
    (other / "v2x_vlm.json").write_text(json.dumps(settings))
    refused = _recipe(tmp_path, "student_ego", TEACHER=str(other))
    assert refused.returncode != 0 and "checked:" not in refused.stdout
    assert str(other) in refused.stderr and "codec_bins" in refused.stderr
    assert not (tmp_path / "runs").exists()


def test_the_recipe_script_refuses_an_unknown_stage_before_running_any(tmp_path):
    done = _recipe(tmp_path, "vision", "studnet", check=False)
    assert done.returncode == 2
    stages = "worlds vision teacher_time teacher_order teacher student_ego student eval ablations table5"
    assert f"unknown stage 'studnet' (stages: {stages})" in done.stderr
    assert "== vision" not in done.stdout and not (tmp_path / "runs").exists()


def test_train_check_prints_the_resolved_settings_and_names_a_bad_override(tmp_path, capsys):
    import json

    from v2x_vlm_ros.cli import main

    config = str(ROOT / "config" / "train_synthetic_student.yaml")
    assert main(["train", config, "--override", "lambda_hazard=4", "--override", f"output_dir={tmp_path}/x",
                 "--check"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["lambda_hazard"] == 4 and shown["codec_bins"] == 420
    assert shown["output_dir"] == f"{tmp_path}/x"
    assert not (tmp_path / "x").exists()
    assert main(["train", config, "--override", "hazard_weight=0", "--check"]) == 2
    assert "hazard_weight must be > 0, got 0" in capsys.readouterr().err


def test_the_recipe_scripts_ablations_are_the_commands_experiments_prints(tmp_path):
    """Each Table 5 run of the script is `v2x-vlm experiments`' training command for that
    ablation (eval/experiment_tables.py), with only the inputs and output moved under $RUNS."""
    import os
    import shlex
    import subprocess

    from v2x_vlm_ros.eval.experiment_tables import train_command

    log = tmp_path / "argv.log"
    stub = tmp_path / "v2x-vlm"
    stub.write_text(f'#!/usr/bin/env bash\nprintf "%q " "$@" >> {log}\necho >> {log}\n')
    stub.chmod(0o755)
    runs = tmp_path / "runs"
    env = dict(os.environ, V2X_VLM=str(stub), RUNS=str(runs), CHECK="1")
    done = subprocess.run(["bash", str(RECIPE), "ablations"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    calls = [shlex.split(line) for line in log.read_text().splitlines()]
    config = "config/train_synthetic_hazard_student.yaml"
    names = ["no_fusion", "no_hazard_probe", "no_roadside_dropout", "no_hazard_weight",
             "no_distillation", "no_alignment", "no_scene_text", "no_augmentation",
             "no_modality_weights", "no_roadside_crop", "no_pair_weight", "no_roadside_motion",
             "no_vision_training"]
    assert len(calls) == len(names)
    # each from the ego-only student, on the world with early crossers, taught by the teacher
    inputs = {f"data_root={runs}/synthetic/train_world_early",
              f"student={runs}/student-ego-only/checkpoint/student",
              f"teacher={runs}/teacher/checkpoint/student"}
    for name, call in zip(names, calls):
        assert call[:2] == ["train", config] and call[-1] == "--check"
        overrides = [v for k, v in zip(call[2:-1:2], call[3:-1:2]) if k == "--override"]
        assert len(overrides) * 2 == len(call) - 3
        printed = shlex.split(train_command(name, config))
        want = [v for k, v in zip(printed[3::2], printed[4::2]) if k == "--override"]
        want = [v.replace("output_dir=runs/", f"output_dir={runs}/") for v in want]
        assert set(overrides) - inputs == set(want), name
        assert set(overrides) & inputs == inputs


def test_the_recipe_scripts_eval_stage_resumes_where_it_was_cut_off(tmp_path):
    """The eval stage (about 25 min) cut off by a failing evaluation leaves no result for it and
    no stamp; run again, it evaluates only what it had not written, then tabulates."""
    import os
    import shlex
    import subprocess

    log = tmp_path / "argv.log"
    stub = tmp_path / "v2x-vlm"
    # a stand-in for v2x-vlm: logs its arguments, writes its --json file, and fails once the
    # file $FAIL_ON names (a basename) is asked for
    stub.write_text(f'''#!/usr/bin/env bash
printf "%q " "$@" >> {log}; echo >> {log}
while [ $# -gt 0 ]; do
  if [ "$1" = --json ]; then
    case "$2" in *"${{FAIL_ON:-nothing}}"*) exit 1;; esac
    echo '{{}}' > "$2"
  fi
  shift
done
''')
    stub.chmod(0o755)
    runs = tmp_path / "runs"

    def run_eval(**extra):
        log.write_text("")
        env = dict(os.environ, V2X_VLM=str(stub), RUNS=str(runs), CHECK="0", **extra)
        done = subprocess.run(["bash", str(RECIPE), "eval"], env=env, capture_output=True, text=True,
                              timeout=60)
        return done, [shlex.split(line) for line in log.read_text().splitlines()]

    def written(call):  # the --json (or twin-test's) file of a call, its basename
        return Path(call[call.index("--json") + 1]).name if "--json" in call else None

    done, calls = run_eval(FAIL_ON="test-fused-swap.json")
    assert done.returncode != 0
    assert [written(c) for c in calls] == [
        "test-cv.json.partial", "test-teacher.json.partial", "test-ego-only.json.partial",
        "test-fused.json.partial", "test-fused-none.json.partial", "test-fused-grey.json.partial",
        "test-fused-swap.json.partial"]
    assert calls[5][calls[5].index("--roadside") + 1] == "grey"
    left = sorted(p.name for p in (runs / "eval").iterdir())
    assert "test-fused-swap.json" not in left and "test-fused-grey.json" in left
    assert not (runs / ".done-eval").exists()

    done, calls = run_eval()
    assert done.returncode == 0, done.stderr
    made = [(c[0], written(c)) for c in calls]
    assert made[:3] == [("eval", "test-fused-swap.json.partial"),
                        ("eval", "test-fused-description-empty.json.partial"),
                        ("eval", "test-fused-command-swap.json.partial")]
    assert calls[2][calls[2].index("--command") + 1] == "swap"
    assert made[3][0] == "table" and "--slice" in calls[3]
    assert f"{runs}/eval/test-fused-command-swap.json" in calls[3]
    assert [w for _, w in made[4:13]] == [f"val-{n}.json.partial" for n in (
        "cv", "teacher", "ego-only", "fused", "fused-none", "fused-grey", "fused-swap",
        "fused-description-empty", "fused-command-swap")]
    assert made[13][0] == "table"
    assert made[14:] == [("twin-test", "twin-fused.json.partial"), ("twin-test", "twin-teacher.json.partial")]
    assert calls[14][1] == f"{runs}/student/checkpoint/student"
    assert calls[15][1] == f"{runs}/teacher/checkpoint/student"  # $TEACHER's default
    assert (runs / ".done-eval").exists()
    assert not list((runs / "eval").glob("*.partial"))

    # the shipped students instead of the student stages' outputs
    for name in (".done-eval", "eval/test-ego-only.json", "eval/test-fused.json", "eval/twin-fused.json"):
        (runs / name).unlink()
    done, calls = run_eval(FUSED="models/synthetic-student", EGO_ONLY="models/synthetic-student-ego-only")
    assert done.returncode == 0, done.stderr
    models = [(written(c), c[c.index("--model") + 1] if "--model" in c else c[1]) for c in calls
              if c[0] != "table"]
    assert models == [("test-ego-only.json.partial", "models/synthetic-student-ego-only"),
                      ("test-fused.json.partial", "models/synthetic-student"),
                      ("twin-fused.json.partial", "models/synthetic-student")]


def test_the_recipe_scripts_ablations_score_each_run_and_skip_rows_scored_earlier(tmp_path):
    """Each Table 5 run's last exported epoch is scored on the acceptance and seed-5000 worlds
    into $ABLATION_EVALS; a row with both files there (a table kept between sessions) is
    neither trained nor scored again, and table5 passes its files to experiments, the runs'
    last epochs for rows without files."""
    import os
    import shlex
    import subprocess

    log = tmp_path / "argv.log"
    stub = tmp_path / "v2x-vlm"
    # logs its arguments; `train` leaves a finished run with two exported epochs (as the
    # recipe's export_each_epoch does), `eval` writes its --json file
    stub.write_text(f'''#!/usr/bin/env bash
printf "%q " "$@" >> {log}; echo >> {log}
cmd=$1
while [ $# -gt 0 ]; do
  case "$1" in
    output_dir=*) [ "$cmd" = train ] && mkdir -p "${{1#output_dir=}}/epochs/epoch-2" \\
        "${{1#output_dir=}}/epochs/epoch-10" && echo '{{}}' > "${{1#output_dir=}}/summary.json";;
    --json) echo '{{}}' > "$2";;
  esac
  shift
done
''')
    stub.chmod(0o755)
    runs, kept = tmp_path / "runs", tmp_path / "kept"
    kept.mkdir()
    for name in ("no_fusion", "no_hazard_probe"):  # scored in an earlier session
        for world in ("test_world", "world_s5000"):
            (kept / f"{name}-{world}.json").write_text("{}")
    (kept / "no_roadside_dropout-test_world.json").write_text("{}")  # one world only: trained again

    def run(*stages):
        log.write_text("")
        env = dict(os.environ, V2X_VLM=str(stub), RUNS=str(runs), CHECK="0", ABLATION_EVALS=str(kept))
        done = subprocess.run(["bash", str(RECIPE), *stages], env=env, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout, [shlex.split(line) for line in log.read_text().splitlines()]

    out, calls = run("ablations")
    assert "(no_fusion: scored earlier" in out and "(no_hazard_probe: scored earlier" in out
    trained = [c[c.index("--override") + 1:] for c in calls if c[0] == "train"]
    names = [next(v for v in c if v.startswith("output_dir=")).rsplit("/ablation-", 1)[1] for c in trained]
    assert names == ["no-roadside-dropout", "no-hazard-weight", "no-distillation", "no-alignment",
                     "no-scene-text", "no-augmentation", "no-modality-weights", "no-roadside-crop",
                     "no-pair-weight", "no-roadside-motion", "no-vision-training"]
    evals = [c for c in calls if c[0] == "eval"]
    # each trained row: its last epoch (10, not 2: numbers sorted as numbers) on both worlds;
    # no_roadside_dropout's acceptance file is kept, only its other world is scored
    assert [(Path(c[1]).name, Path(c[c.index("--json") + 1]).name) for c in evals[:3]] == [
        ("world_s5000", "no_roadside_dropout-world_s5000.json.partial"),
        ("test_world", "no_hazard_weight-test_world.json.partial"),
        ("world_s5000", "no_hazard_weight-world_s5000.json.partial")]
    assert all(c[c.index("--model") + 1].endswith("/epochs/epoch-10") for c in evals)
    assert all(c[c.index("--batch-size") + 1] == "8" for c in evals)
    assert len(evals) == 1 + 2 * 10 and not list(kept.glob("*.partial"))
    assert len(list(kept.glob("*.json"))) == 26

    _, calls = run("ablations")  # every row scored now: nothing trained, nothing scored
    assert calls == []

    (kept / "no_alignment-world_s5000.json").unlink()
    _, calls = run("table5")
    assert [(c[0], Path(c[1]).name) for c in calls] == [
        ("experiments", "test_world"), ("experiments", "world_s5000")]
    given = [dict(c[j + 1].split("=", 1) for j, v in enumerate(c) if v == "--ablation") for c in calls]
    assert [len(g) for g in given] == [13, 13]
    on_fresh = given[1]
    assert on_fresh["no_alignment"] == f"{runs}/ablation-no-alignment/epochs/epoch-10"
    assert on_fresh["no_fusion"] == f"{kept}/no_fusion-world_s5000.json"
    assert [c[c.index("--tables") + 1] for c in calls] == ["1,5,6", "5"]
    assert calls[1][calls[1].index("--out") + 1] == f"{runs}/experiments-world_s5000"


def test_the_recipe_script_passes_TRAIN_ARGS_to_every_run_and_SYNTH_WORKERS_to_every_world(tmp_path):
    """On a CUDA machine the same stages run with TRAIN_ARGS (e.g. device=cuda) added to each
    training command, after the stage's own overrides, and SYNTH_WORKERS render processes;
    without them the commands are unchanged."""
    import os
    import shlex
    import subprocess

    log = tmp_path / "argv.log"
    stub = tmp_path / "v2x-vlm"
    stub.write_text(f'#!/usr/bin/env bash\nprintf "%q " "$@" >> {log}\necho >> {log}\n')
    stub.chmod(0o755)

    def calls(*stages, check, **extra):
        log.write_text("")
        env = dict(os.environ, V2X_VLM=str(stub), RUNS=str(tmp_path / "runs"), CHECK=check, **extra)
        done = subprocess.run(["bash", str(RECIPE), *stages], env=env, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        return [shlex.split(line) for line in log.read_text().splitlines()]

    extra = ["--override", "device=cuda", "--override", "num_workers=8"]
    trained = calls("student", "ablations", check="1", TRAIN_ARGS=" ".join(extra))
    plain = calls("student", "ablations", check="1")
    assert len(trained) == len(plain) == 14
    for with_args, without in zip(trained, plain):
        assert with_args == without[:-1] + extra + ["--check"]
    worlds = calls("worlds", check="0", SYNTH_WORKERS="16")
    assert [c[:2] for c in worlds] == [["synth", str(tmp_path / "runs" / "synthetic" / w)]
                                       for w in ("train_world_hzb", "train_world_early", "test_world",
                                                 "val_world", "world_s5000")]
    assert all(c[-2:] == ["--workers", "16"] for c in worlds)
    assert all("--workers" not in c for c in calls("worlds", check="0"))
