"""Algorithm 2 on tiny models: losses fall, frozen parts stay frozen, resume is exact,
distillation and ablations do what they say, and DDP keeps ranks in sync."""

import csv
import dataclasses
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from v2x_vlm_ros.cli import main
from v2x_vlm_ros.model.configuration import PRESETS, ModelSettings
from v2x_vlm_ros.model.modeling import build_model, load_model, save_model
from v2x_vlm_ros.training.config import TrainConfig
from v2x_vlm_ros.training.trainer import PlannerTrainModule, train

from training_support import SAMPLE, tiny_builder, train_config


def config(tmp_path, tiny_model_dir, **overrides) -> TrainConfig:
    """The shared tiny config at this file's learning rate."""
    return train_config(tmp_path, tiny_model_dir, **{"lr": 2e-3, **overrides})


def log_rows(run: Path) -> list[dict]:
    with open(run / "train_log.csv") as fh:
        return list(csv.DictReader(fh))


def test_a_short_run_lowers_the_loss_and_exports_a_model(tmp_path, tiny_model_dir):
    summary = train(config(tmp_path, tiny_model_dir, max_steps=30, val_split="train", eval_max_samples=16),
                    progress=False)
    rows = log_rows(tmp_path / "run")
    first = sum(float(r["traj"]) for r in rows[:3]) / 3
    last = sum(float(r["traj"]) for r in rows[-3:]) / 3
    assert summary["global_step"] == 30 and last < 0.8 * first
    assert float(rows[0]["align"]) > 0 and float(rows[0]["kd"]) == 0
    evals = list(csv.DictReader(open(tmp_path / "run" / "eval_log.csv")))
    assert len(evals) == 1 and float(evals[0]["l2_avg"]) >= 0 and int(evals[0]["samples"]) == 16
    exported = load_model(tmp_path / "run" / "model")
    assert exported.settings.image_size == (64, 128)
    assert "## Validation" in (tmp_path / "run" / "model" / "README.md").read_text()


def test_export_each_epoch_keeps_every_finished_epochs_model(tmp_path, tiny_model_dir):
    cfg = config(tmp_path, tiny_model_dir, epochs=2, epoch_fraction=0.05, export_each_epoch=True,
                 export_dtype="float32")
    summary = train(cfg, progress=False)
    run = tmp_path / "run"
    assert sorted(p.name for p in (run / "epochs").iterdir()) == ["epoch-1", "epoch-2"]
    per_step = summary["global_step"] // 2
    last = load_file(run / "checkpoint" / "student" / "model.safetensors")
    first = load_file(run / "epochs" / "epoch-1" / "model.safetensors")
    second = load_file(run / "epochs" / "epoch-2" / "model.safetensors")
    assert per_step >= 1 and second.keys() == first.keys()
    assert all(torch.equal(second[k], last[k]) for k in second)  # the last epoch is the final model
    assert not all(torch.equal(first[k], second[k]) for k in first)  # epoch 2 trained on
    assert load_model(run / "epochs" / "epoch-1").settings.image_size == (64, 128)
    # an epoch stopped part-way (max_steps) is not exported; without the switch nothing is
    train(config(tmp_path / "b", tiny_model_dir, epochs=2, epoch_fraction=0.05, export_each_epoch=True,
                 max_steps=per_step + 1), progress=False)
    assert sorted(p.name for p in (tmp_path / "b" / "run" / "epochs").iterdir()) == ["epoch-1"]
    train(config(tmp_path / "c", tiny_model_dir, epochs=1, epoch_fraction=0.05), progress=False)
    assert not (tmp_path / "c" / "run" / "epochs").exists()


def test_resuming_with_other_trained_parameters_says_what_changed(tmp_path, tiny_model_dir):
    train(config(tmp_path, tiny_model_dir, max_steps=1, freeze_vision=True,
                 init_vision_from=str(tiny_model_dir)), progress=False)
    ckpt = tmp_path / "run" / "checkpoint"
    with pytest.raises(ValueError) as err:
        train(config(tmp_path, tiny_model_dir, max_steps=2, freeze_vision=False), progress=False)
    saved = len(json.loads((ckpt / "state.json").read_text())["optimizer"]["param_groups"][0]["params"])
    assert str(err.value).startswith(f"{ckpt}: the checkpoint's optimizer holds {saved} trained tensors, "
                                     "this run trains ")
    assert f"start a new output_dir with student: {ckpt / 'student'}" in str(err.value)


def test_a_model_directory_is_fine_tuned_at_the_given_input_size(tmp_path, tiny_model_dir):
    assert load_model(tiny_model_dir).settings.image_size == (64, 128)
    train(config(tmp_path, tiny_model_dir, student=str(tiny_model_dir), max_steps=2,
                 image_size=(96, 288)), progress=False)
    assert load_model(tmp_path / "run" / "model").settings.image_size == (96, 288)
    assert load_model(tmp_path / "run" / "checkpoint" / "student").settings.image_size == (96, 288)
    train(config(tmp_path / "kept", tiny_model_dir, student=str(tiny_model_dir), max_steps=1), progress=False)
    assert load_model(tmp_path / "kept" / "run" / "model").settings.image_size == (64, 128)


def test_frozen_vision_tower_is_unchanged_and_stays_in_eval_mode(tmp_path, tiny_model_dir):
    train(config(tmp_path, tiny_model_dir, max_steps=5, freeze_vision=True,
                 init_vision_from=str(tiny_model_dir)), progress=False)
    donor = load_file(tiny_model_dir / "model.safetensors")
    trained = load_file(tmp_path / "run" / "checkpoint" / "student" / "model.safetensors")
    tower = [k for k in donor if ".vision_tower." in k]
    assert tower and all(torch.equal(donor[k], trained[k]) for k in tower)
    proj = "model.multi_modal_projector.image_projection.weight"
    assert not torch.equal(donor[proj], trained[proj])  # the projector does train
    module = PlannerTrainModule(load_model(tiny_model_dir).model, None, True, 0.07).train()
    assert module.student.training and not module.student.model.vision_tower.training
    assert not any(p.requires_grad for p in module.student.model.vision_tower.parameters())


def test_resume_continues_exactly_where_the_run_stopped(tmp_path, tiny_model_dir):
    straight = config(tmp_path / "a", tiny_model_dir, max_steps=8)
    train(straight, progress=False)
    interrupted = config(tmp_path / "b", tiny_model_dir, max_steps=4)
    train(interrupted, progress=False)
    state = json.loads((tmp_path / "b" / "run" / "checkpoint" / "state.json").read_text())
    assert state["progress"]["global_step"] == 4 and state["progress"]["step_in_epoch"] == 4
    resumed = train(config(tmp_path / "b", tiny_model_dir, max_steps=8), progress=False)
    assert resumed["global_step"] == 8
    a = load_file(tmp_path / "a" / "run" / "checkpoint" / "student" / "model.safetensors")
    b = load_file(tmp_path / "b" / "run" / "checkpoint" / "student" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    steps = [int(r["step"]) for r in log_rows(tmp_path / "b" / "run")]
    assert steps == list(range(1, 9))  # no step twice, none missing


def test_a_resumed_run_drops_the_log_rows_written_after_its_last_checkpoint(tmp_path, tiny_model_dir):
    """A run killed between checkpoints has logged steps it will train again: the resumed
    log has each step once, with the resumed run's values (and no half-written line)."""
    train(config(tmp_path, tiny_model_dir, max_steps=4, val_split="train", eval_max_samples=4),
          progress=False)
    run = tmp_path / "run"
    with open(run / "train_log.csv", "a") as fh:  # as a killed process left it: 5, 6, a cut line
        fh.write("1,5,99.0,99.0,0,0,0,1.0,,,,,\n1,6,98.0,98.0,0,0,0,2.0,,,,,\n1,7,9")
    with open(run / "eval_log.csv", "a") as fh:
        fh.write("1,6,4,9,9,9,9,0,0,0,0\n")
    train(config(tmp_path, tiny_model_dir, max_steps=8, val_split="train", eval_max_samples=4),
          progress=False)
    rows = log_rows(run)
    assert [int(r["step"]) for r in rows] == list(range(1, 9))
    assert all(float(r["loss"]) < 90 for r in rows)  # the killed run's 5 and 6 are gone
    evals = list(csv.DictReader(open(run / "eval_log.csv")))
    assert [int(r["step"]) for r in evals] == [4, 8] and float(evals[1]["l2_avg"]) != 9.0


def test_a_finished_run_resumed_again_keeps_its_summary(tmp_path, tiny_model_dir):
    cfg = config(tmp_path, tiny_model_dir, max_steps=3, val_split="train", eval_max_samples=4)
    finished = train(cfg, progress=False)
    written = (tmp_path / "run" / "summary.json").read_text()
    assert finished["global_step"] == 3 and set(finished["last_losses"]) >= {"loss", "traj", "align"}
    assert finished["validation"]["num_samples"] == 4
    again = train(cfg, progress=False)  # nothing left to train
    assert (tmp_path / "run" / "summary.json").read_text() == written
    assert again["last_losses"] == json.loads(written)["last_losses"] and again["validation"] is not None
    assert [int(r["step"]) for r in log_rows(tmp_path / "run")] == [1, 2, 3]


def test_a_resumed_run_goes_on_counting_training_time(tmp_path, tiny_model_dir):
    train(config(tmp_path, tiny_model_dir, max_steps=2), progress=False)
    state_file = tmp_path / "run" / "checkpoint" / "state.json"
    state = json.loads(state_file.read_text())
    assert 0 < state["progress"]["seconds"] < 1000
    # as if the first part had taken 1000 s: the resumed run's clock starts there
    state["progress"]["seconds"] = 1000.0
    state_file.write_text(json.dumps(state))
    resumed = train(config(tmp_path, tiny_model_dir, max_steps=3), progress=False)
    assert resumed["seconds"] >= 1000.0
    rows = log_rows(tmp_path / "run")
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert float(rows[1]["seconds"]) < 1000.0 <= float(rows[2]["seconds"])
    card = (tmp_path / "run" / "model" / "README.md").read_text()
    minutes = float(re.search(r"3 steps, ([0-9.]+) min", card).group(1))
    assert minutes >= 1000.0 / 60 - 0.05


def test_distillation_from_a_frozen_teacher(tmp_path, tiny_model_dir):
    before = load_file(tiny_model_dir / "model.safetensors")
    train(config(tmp_path, tiny_model_dir, max_steps=3, teacher=str(tiny_model_dir)), progress=False)
    rows = log_rows(tmp_path / "run")
    assert all(float(r["kd"]) > 0 for r in rows)
    assert float(rows[0]["loss"]) == pytest.approx(
        float(rows[0]["traj"]) + 0.1 * float(rows[0]["align"]) + 0.5 * float(rows[0]["kd"]), rel=1e-5)
    after = load_file(tiny_model_dir / "model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_the_teacher_reuses_the_students_frozen_tower_only_where_the_pixels_match(tiny_model_dir):
    from v2x_vlm_ros.training.trainer import TeacherImageFeatures, same_vision_tower

    teacher = load_model(tiny_model_dir).model
    module = PlannerTrainModule(load_model(tiny_model_dir).model, None, True, 0.07).train()
    assert same_vision_tower(module.student, teacher)
    torch.manual_seed(0)
    pixels = torch.randn(4, 3, 64, 128)
    with torch.no_grad():
        module.image_features(pixels)
        seen = pixels.clone()
        seen[2, :, :, 64:] = 0.0  # the teacher's own input for one example (roadside left out)
        calls = []
        hook = teacher.model.vision_tower.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
        features = TeacherImageFeatures(teacher)
        reused = features(seen, module.tower_output)
        fresh = teacher.model.get_image_features(seen).pooler_output
        hook.remove()
    assert calls == [1, 4]  # one example through the teacher's tower, then the reference
    assert (features.reused, features.computed) == (3, 1)
    assert torch.allclose(reused, fresh, atol=1e-5)
    with torch.no_grad():  # no student output (or other shapes): the teacher's own tower
        assert torch.allclose(features(seen, None), fresh, atol=1e-6)
        assert torch.allclose(features(seen, (pixels[:, :, :32], module.tower_output[1])), fresh, atol=1e-6)
    assert (features.reused, features.computed) == (3, 9)
    with torch.no_grad():
        next(teacher.model.vision_tower.parameters()).add_(1e-3)
    assert not same_vision_tower(module.student, teacher)


def test_distillation_on_a_shared_frozen_tower_trains_as_without_reuse(tmp_path, tiny_model_dir, monkeypatch):
    import v2x_vlm_ros.training.trainer as trainer

    def run(name):
        return train(config(tmp_path / name, tiny_model_dir, max_steps=3, teacher=str(tiny_model_dir),
                            freeze_vision=True, init_vision_from=str(tiny_model_dir)), progress=False)
    shared = run("shared")
    assert (shared["teacher_tower_reused"], shared["teacher_tower_computed"]) == (24, 0)
    monkeypatch.setattr(trainer, "same_vision_tower", lambda a, b: False)
    own = run("own")
    assert (own["teacher_tower_reused"], own["teacher_tower_computed"]) == (0, None)
    for a, b in zip(log_rows(tmp_path / "shared" / "run"), log_rows(tmp_path / "own" / "run"), strict=True):
        for key in ("loss", "traj", "kd"):
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-4), key
    unfrozen = train(config(tmp_path / "unfrozen", tiny_model_dir, max_steps=1, teacher=str(tiny_model_dir)),
                     progress=False)
    assert (unfrozen["teacher_tower_reused"], unfrozen["teacher_tower_computed"]) == (0, None)


def test_ablation_switches(tmp_path, tiny_model_dir):
    train(config(tmp_path, tiny_model_dir, max_steps=2, alignment=False, fusion=False, scene_text=False,
                 teacher=str(tiny_model_dir), distillation=False), progress=False)
    rows = log_rows(tmp_path / "run")
    assert all(float(r["align"]) == 0 and float(r["kd"]) == 0 for r in rows)
    settings = load_model(tmp_path / "run" / "model").settings
    assert not settings.fusion and not settings.scene_text
    assert not (tmp_path / "run" / "checkpoint" / "heads.safetensors").exists()


def test_train_cli_overrides_and_bad_keys(tmp_path, tiny_model_dir, capsys):
    cfg = tmp_path / "t.yaml"
    cfg.write_text(f"train:\n  data_root: {SAMPLE}\n  student: tiny\n  teacher: null\n"
                   f"  tokenizer_from: {tiny_model_dir}\n  val_split: null\n  freeze_vision: false\n")
    assert main(["train", str(cfg), "--quiet", "--override", "max_steps=2",
                 "--override", f"output_dir={tmp_path / 'cli'}"]) == 0
    assert json.loads(capsys.readouterr().out)["global_step"] == 2
    assert main(["train", str(cfg), "--override", "epochz=3"]) == 2
    assert "unknown key(s) ['epochz']" in capsys.readouterr().err
    assert main(["train", str(cfg), "--override", "lr=-1"]) == 2
    assert "lr must be > 0" in capsys.readouterr().err


def test_torchrun_two_cpu_processes_stay_in_sync(tmp_path, tiny_model_dir):
    cfg = tmp_path / "ddp.yaml"
    cfg.write_text(f"train:\n  data_root: {SAMPLE}\n  student: tiny\n  teacher: null\n"
                   f"  tokenizer_from: {tiny_model_dir}\n  val_split: null\n  freeze_vision: false\n"
                   f"  max_steps: 3\n  batch_size: 4\n  output_dir: {tmp_path / 'ddp'}\n  log_every: 1\n")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_port", str(29400 + os.getpid() % 500)]
    proc = subprocess.run([*torchrun, "-m", "v2x_vlm_ros.cli", "train", str(cfg), "--quiet"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["ranks_in_sync"] is True
    assert summary["global_step"] == 3


def _diverge(rank, world, init, out_dir):
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    from v2x_vlm_ros.training.trainer import ranks_in_sync

    torch.manual_seed(rank)  # different weights on purpose
    diverged = torch.nn.Linear(3, 2)
    torch.manual_seed(0)
    equal = torch.nn.Linear(3, 2)
    verdicts = {"equal": ranks_in_sync(equal), "diverged": ranks_in_sync(diverged)}
    torch.distributed.destroy_process_group()
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(verdicts))


def test_the_sync_check_detects_diverged_ranks(tmp_path):
    torch.multiprocessing.spawn(_diverge, args=(2, f"file://{tmp_path}/pg", str(tmp_path)), nprocs=2,
                                join=True)
    for rank in (0, 1):  # every rank reaches the same verdicts
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == {"equal": True, "diverged": False}


def _join_and_leave(rank, world, port, out_dir):
    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    from v2x_vlm_ros.training.trainer import start_processes

    procs = start_processes("cpu")  # joins the group, as under torchrun
    joined = (procs.rank, procs.world, procs.owns_group, torch.distributed.is_initialized())
    procs.close()
    left = torch.distributed.is_initialized()
    torch.distributed.init_process_group("gloo", init_method=f"file://{out_dir}/pg2", rank=rank,
                                         world_size=world)
    borrowed = start_processes("cpu")  # a group the caller made is the caller's to close
    borrowed.close()
    kept = torch.distributed.is_initialized()
    torch.distributed.destroy_process_group()
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps([joined, left, borrowed.owns_group, kept]))


def test_a_run_leaves_the_process_group_it_joined(tmp_path):
    """A gloo group alive at exit can abort a finished torchrun worker (SIGABRT after the
    summary was written); the trainer leaves the group it joined, and only that one."""
    port = 29900 + os.getpid() % 97
    torch.multiprocessing.spawn(_join_and_leave, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        verdict = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert verdict == [[rank, 2, True, True], False, False, True]


def test_a_teacher_with_another_codec_is_refused(tmp_path, tiny_model_dir):
    """Distillation compares tokens: a student writing plans relative to its speed cannot
    learn from a teacher writing absolute waypoints (the tiny model's default codec)."""
    cfg = config(tmp_path, tiny_model_dir, max_steps=1, teacher=str(tiny_model_dir),
                 codec_reference="constant_speed")
    with pytest.raises(ValueError, match=r"the codec settings \(codec_x_range, codec_y_range, "
                                         r"codec_bins, codec_reference, codec_order\) must match"):
        train(cfg, progress=False)
    assert not (tmp_path / "run" / "model").exists()


def test_constant_speed_reference_is_saved_with_the_model_and_trains(tmp_path, tiny_model_dir):
    train(config(tmp_path, tiny_model_dir, max_steps=2, codec_reference="constant_speed",
                 codec_x_range=(-45.0, 60.0), codec_bins=420), progress=False)
    codec = load_model(tmp_path / "run" / "model").settings.codec
    assert (codec.reference, codec.x_range, codec.bins) == ("constant_speed", (-45.0, 60.0), 420)
    card = (tmp_path / "run" / "model" / "README.md").read_text()
    assert "- trajectory tokens relative to constant_speed (x [-45.0, 60.0] m, y [-50.0, 50.0] m, " \
        "420 bins), waypoints in time order" in card
    assert all(float(r["traj"]) > 0 for r in log_rows(tmp_path / "run"))


def test_train_config_names_a_bad_codec_reference():
    with pytest.raises(ValueError) as err:
        TrainConfig(data_root=SAMPLE, codec_reference="velocity")
    assert str(err.value) == "codec_reference must be one of ('none', 'constant_speed'), got 'velocity'"


def test_a_preset_students_codec_comes_from_the_settings_or_the_documented_defaults():
    plain = TrainConfig(data_root=SAMPLE).preset_codec()
    assert (plain.x_range, plain.y_range, plain.bins, plain.reference, plain.order) == \
        ((-20.0, 100.0), (-50.0, 50.0), 1000, "none", "time")
    given = TrainConfig(data_root=SAMPLE, codec_x_range=[-45, 60], codec_bins=420,
                        codec_reference="constant_speed", codec_order="endpoint_first").preset_codec()
    assert (given.x_range, given.y_range, given.bins, given.reference, given.order) == \
        ((-45.0, 60.0), (-50.0, 50.0), 420, "constant_speed", "endpoint_first")


def test_a_model_directory_student_refuses_another_codec_naming_each_setting(tmp_path, tiny_model_dir):
    """Its location tokens mean its own bins: a config asking for others used to be ignored
    silently (only codec_order was applied); now training stops before anything is written."""
    cfg = config(tmp_path, tiny_model_dir, student=str(tiny_model_dir), max_steps=1,
                 codec_x_range=(-45.0, 60.0), codec_y_range=(-50.0, 50.0), codec_bins=420,
                 codec_reference="constant_speed")
    with pytest.raises(ValueError) as err:
        train(cfg, progress=False)
    assert str(err.value) == (
        f"student {tiny_model_dir} is a model directory, which keeps its own trajectory codec (its "
        "location tokens mean its bins): codec_x_range is [-45.0, 60.0], the model's is [-20.0, 100.0]; "
        "codec_bins is 420, the model's is 1000; codec_reference is 'constant_speed', the model's is "
        "'none'. Leave these settings out (null) or give the model's values")
    assert not (tmp_path / "run" / "model").exists()


def test_a_model_directory_student_keeps_its_codec_left_out_or_given_as_it_is(tmp_path, tiny_model_dir):
    train(config(tmp_path / "a", tiny_model_dir, student=str(tiny_model_dir), max_steps=1,
                 codec_order="endpoint_first"), progress=False)
    train(config(tmp_path / "b", tiny_model_dir, student=str(tiny_model_dir), max_steps=1,
                 codec_x_range=[-20, 100], codec_bins=1000, codec_reference="none"), progress=False)
    a = load_model(tmp_path / "a" / "run" / "model").settings.codec
    b = load_model(tmp_path / "b" / "run" / "model").settings.codec
    assert (a.x_range, a.bins, a.reference, a.order) == ((-20.0, 100.0), 1000, "none", "endpoint_first")
    assert (b.x_range, b.bins, b.reference, b.order) == ((-20.0, 100.0), 1000, "none", "time")


def test_a_plain_florence2_directory_takes_the_configs_codec(tmp_path, tiny_model_dir):
    """No planner settings (v2x_vlm.json): a Florence-2 that never wrote trajectories, whose
    codec is chosen by the config as for a preset."""
    import shutil

    plain = tmp_path / "plain"
    shutil.copytree(tiny_model_dir, plain)
    (plain / "v2x_vlm.json").unlink()
    train(config(tmp_path, tiny_model_dir, student=str(plain), max_steps=1, codec_bins=300,
                 codec_x_range=(-10.0, 80.0), image_size=(64, 128)), progress=False)
    codec = load_model(tmp_path / "run" / "model").settings.codec
    assert (codec.x_range, codec.y_range, codec.bins) == ((-10.0, 80.0), (-50.0, 50.0), 300)


def test_train_check_refuses_a_model_directory_students_other_codec(tmp_path, tiny_model_dir, capsys):
    config_path = str(Path(__file__).resolve().parents[1] / "config" / "train_synthetic_hazard_student.yaml")
    args = ["train", config_path, "--override", f"student={tiny_model_dir}",
            "--override", f"teacher={tiny_model_dir}", "--override", f"output_dir={tmp_path}/x"]
    assert main([*args, "--check"]) == 2  # the config gives x [-10, 80], 400 bins; the model has its own
    err = capsys.readouterr().err
    assert "codec_x_range is [-10.0, 80.0], the model's is [-20.0, 100.0]; codec_y_range is [-40.0, 40.0], " \
        "the model's is [-50.0, 50.0]; codec_bins is 400, the model's is 1000" in err
    assert main([*args, "--override", "codec_x_range=null", "--override", "codec_y_range=null",
                 "--override", "codec_bins=null", "--check"]) == 0
    assert not (tmp_path / "x").exists()


def test_labels_are_written_against_each_samples_speed(tiny_model_dir):
    """Two cruising samples at different speeds get the same speed-relative labels; with
    the paper's absolute codec they differ."""
    import numpy as np

    from v2x_vlm_ros.data.records import Command, EgoMotion

    image = np.full((64, 96, 3), 90, np.uint8)
    t = 0.5 * np.arange(1, 11)
    examples = [{"ego": image, "roadside": image, "description": "", "command": Command.FORWARD,
                 "motion": EgoMotion(v, 0.0, 0.0, 0.5), "future_xy": np.column_stack([v * t, np.zeros(10)]),
                 "future_mask": np.ones(10, bool)} for v in (4.0, 10.0)]
    for reference, same in (("constant_speed", True), ("none", False)):
        _, builder = tiny_builder(tiny_model_dir, reference=reference)
        labels = builder(examples)["labels"]
        assert torch.equal(labels[0], labels[1]) == same


def test_endpoint_first_labels_ignore_a_masked_waypoint_where_it_is_written(tiny_model_dir):
    """Waypoint T is written first: a sequence that ends before it hides the first token pair,
    not the last one."""
    from v2x_vlm_ros.model.codec import loc_token_name
    from v2x_vlm_ros.training.losses import IGNORE_INDEX

    loaded, builder = tiny_builder(tiny_model_dir, order="endpoint_first")
    ids = [loaded.tokenizer.convert_tokens_to_ids(loc_token_name(i)) for i in range(1000)]
    xy = np.column_stack([5.0 * np.arange(1, 11), np.zeros(10)])  # 5 m per waypoint
    mask = np.ones(10, bool)
    mask[9] = False  # the sequence ends before the last waypoint
    labels = builder.labels(xy, mask, 10.0)
    assert labels[0] == loaded.tokenizer.bos_token_id and labels[-1] == loaded.tokenizer.eos_token_id
    assert labels[1:3] == [IGNORE_INDEX, IGNORE_INDEX]
    # then waypoints 1..9 in time: x 5 m -> bin floor((5 + 20) / 120 * 1000) = 208, y 0 -> bin 500
    assert labels[3:5] == [ids[208], ids[500]]
    assert labels[19:21] == [ids[math.floor((45.0 + 20.0) / 120.0 * 1000)], ids[500]]
    assert IGNORE_INDEX not in labels[3:21]


def test_a_model_directory_is_fine_tuned_in_another_waypoint_order(tmp_path, tiny_model_dir):
    train(config(tmp_path, tiny_model_dir, max_steps=1, student=str(tiny_model_dir),
                 tokenizer_from=None, codec_order="endpoint_first"), progress=False)
    codec = load_model(tmp_path / "run" / "model").settings.codec
    assert codec.order == "endpoint_first"
    assert load_model(tiny_model_dir).settings.codec.order == "time"  # the source is left as it was
    card = (tmp_path / "run" / "model" / "README.md").read_text()
    assert "bins), waypoints in endpoint_first order" in card


def test_train_config_names_a_bad_codec_order():
    with pytest.raises(ValueError) as err:
        TrainConfig(data_root=SAMPLE, codec_order="backwards")
    assert str(err.value) == \
        "codec_order must be one of ('time', 'endpoint_first') (or null), got 'backwards'"


def test_a_student_of_the_teachers_width_starts_from_its_chosen_layers(tmp_path, tiny_model_dir):
    tokenizer = load_model(tiny_model_dir).tokenizer
    preset = dataclasses.replace(PRESETS["tiny"], layers=3)
    teacher_dir = save_model(tmp_path / "teacher", build_model(preset, tokenizer, seed=5), tokenizer,
                             ModelSettings(image_size=preset.image_size))
    # lr 1e-9: one step moves no weight by more than ~1e-8, so the export shows where it started
    train(config(tmp_path, tiny_model_dir, student=str(teacher_dir), student_layers=[0, 2],
                 teacher=str(teacher_dir), tokenizer_from=None, freeze_vision=True, max_steps=1, lr=1e-9),
          progress=False)
    assert float(log_rows(tmp_path / "run")[0]["kd"]) > 0  # distilled from the 3-layer teacher
    student = load_model(tmp_path / "run" / "model").model
    teacher = load_model(teacher_dir).model
    assert student.config.text_config.encoder_layers == student.config.text_config.decoder_layers == 2
    for stack in ("encoder", "decoder"):
        got = getattr(student.model.language_model, stack).layers[1].fc1.weight
        kept = getattr(teacher.model.language_model, stack).layers[2].fc1.weight
        dropped = getattr(teacher.model.language_model, stack).layers[1].fc1.weight
        assert torch.allclose(got, kept, atol=1e-6) and not torch.allclose(got, dropped, atol=1e-3)
    # resuming reloads the 2-layer checkpoint (not the teacher's layers again)
    summary = train(config(tmp_path, tiny_model_dir, student=str(teacher_dir), student_layers=[0, 2],
                           teacher=str(teacher_dir), tokenizer_from=None, freeze_vision=True, max_steps=2,
                           lr=1e-9), progress=False)
    assert summary["global_step"] == 2


def test_student_layers_need_a_trained_model_and_increasing_numbers():
    with pytest.raises(ValueError) as err:
        TrainConfig(data_root=SAMPLE, student="small-student", student_layers=[0, 2])
    assert str(err.value) == ("student_layers keeps layers of a trained model: student 'small-student' is "
                              "a preset built from scratch (give a model directory, e.g. the teacher's)")
    with pytest.raises(ValueError) as err:
        TrainConfig(data_root=SAMPLE, student="runs/teacher/model", student_layers=[2, 0])
    assert str(err.value) == "student_layers must be increasing layer numbers >= 0, got [2, 0]"
