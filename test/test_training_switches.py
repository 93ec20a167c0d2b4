"""The training switches on top of the paper's recipe: resolution and JPEG-quality
augmentation, roadside dropout, and VLM-E2E's learnable modality-weighted fusion (its
weights logged and stored with a model that transformers' native classes still load)."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import Florence2ForConditionalGeneration

from v2x_vlm_ros.data.dair import DairV2XDataset
from v2x_vlm_ros.model.configuration import ModelSettings
from v2x_vlm_ros.model.fusion import ModalityWeights, install, token_scale
from v2x_vlm_ros.model.modeling import load_model
from v2x_vlm_ros.training.config import TrainConfig
from v2x_vlm_ros.training.data import Augmentation, PlanningExamples
from v2x_vlm_ros.training.trainer import train

SAMPLE = str(Path(__file__).resolve().parents[1] / "data" / "sample")


def _image(h=81, w=144):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_resolution_augmentation_shrinks_within_its_range():
    aug = Augmentation(resolution=(0.25, 0.5), p=1.0)
    sizes = []
    for k in range(40):
        out = aug(_image(), np.random.default_rng(k))
        h, w = out.shape[:2]
        assert 0.25 * 144 - 1 <= w <= 0.5 * 144 + 1 and abs(w / h - 144 / 81) < 0.15
        sizes.append(w)
    assert len(set(sizes)) > 5  # drawn, not fixed
    assert aug(_image(), np.random.default_rng(3)).shape == aug(_image(), np.random.default_rng(3)).shape


def test_jpeg_quality_augmentation_reencodes_and_p_zero_is_the_identity():
    img = _image()
    low = Augmentation(jpeg_quality=(5, 5), p=1.0)(img, np.random.default_rng(0))
    high = Augmentation(jpeg_quality=(95, 95), p=1.0)(img, np.random.default_rng(0))
    assert low.shape == img.shape
    err_low = np.abs(low.astype(int) - img).mean()
    err_high = np.abs(high.astype(int) - img).mean()
    assert err_low > err_high > 0
    off = Augmentation(resolution=(0.2, 0.3), jpeg_quality=(5, 10), p=0.0)
    assert np.array_equal(off(img, np.random.default_rng(0)), img)
    assert not Augmentation().active


def test_examples_apply_dropout_and_augmentation_deterministically_per_epoch():
    ds = DairV2XDataset(SAMPLE)
    plain = PlanningExamples(ds)
    dropped = PlanningExamples(ds, roadside_dropout=0.5, seed=1)
    n = 60
    none_count = sum(dropped[i]["roadside"] is None for i in range(n))
    assert 15 <= none_count <= 45 and dropped.dropped == none_count
    assert all(plain[i]["roadside"] is not None for i in range(5))
    again = PlanningExamples(ds, roadside_dropout=0.5, seed=1)

    def pattern(examples):
        return [examples[i]["roadside"] is None for i in range(n)]

    assert pattern(again) == pattern(dropped)
    again.set_epoch(1)
    assert pattern(again) != pattern(dropped)
    # uniform fills: the same examples are dropped, now some as a uniform grey image
    mixed = PlanningExamples(ds, roadside_dropout=0.5, seed=1, roadside_dropout_uniform=0.5)
    kinds = []
    for i in range(n):
        road = mixed[i]["roadside"]
        if road is None or not np.array_equal(road, plain[i]["roadside"]):
            kinds.append("none" if road is None else "uniform")
            if road is not None:
                assert road.shape == plain[i]["roadside"].shape and road.dtype == np.uint8
                assert np.all(road == road.flat[0])
    assert len(kinds) == none_count and mixed.dropped == none_count
    assert 0 < kinds.count("uniform") == mixed.uniform < none_count
    aug = PlanningExamples(ds, augment=Augmentation(resolution=(0.3, 0.6), p=1.0), seed=1)
    ex = aug[0]
    assert ex["ego"].shape[1] < plain[0]["ego"].shape[1]
    assert ex["roadside"].shape[1] < plain[0]["roadside"].shape[1]
    assert np.array_equal(plain[0]["ego"], PlanningExamples(ds, augment=Augmentation())[0]["ego"])


def test_token_scale_follows_the_fused_canvas():
    settings = ModelSettings(image_size=(96, 256))  # 3 x 8 cells + the pooled token
    scale = token_scale(torch.tensor([2.0, 0.5, 0.25]), settings, 30)
    assert scale.shape == (30,)
    assert scale[0] == pytest.approx(1.25)  # pooled: the mean of the two images
    cells = scale[1:25].view(3, 8)
    assert torch.all(cells[:, :4] == 2.0) and torch.all(cells[:, 4:] == 0.5)  # ego left, roadside right
    assert torch.all(scale[25:] == 0.25)  # the prompt


def test_modality_weights_start_at_one_and_keep_their_sum():
    w = ModalityWeights()
    assert torch.allclose(w.weights(), torch.ones(3))
    with torch.no_grad():
        w.logits += torch.tensor([1.0, 0.0, -1.0])
    assert w.weights().sum().item() == pytest.approx(3.0) and w.weights()[0] > w.weights()[2]
    assert ModalityWeights((2.0, 0.5, 0.5)).as_tuple() == pytest.approx((2.0, 0.5, 0.5))
    with pytest.raises(ValueError):
        ModalityWeights((1.0, -1.0, 1.0))


def _encode(model, ids):
    with torch.no_grad():
        embeds = model.get_input_embeddings()(ids)
        return model.model.language_model.encoder(inputs_embeds=embeds).last_hidden_state


def test_stored_weights_scale_the_encoder_output_and_can_be_removed(tiny_model_dir):
    loaded = load_model(tiny_model_dir)
    ids = torch.randint(3, 50, (1, 40))
    plain = _encode(loaded.model, ids)
    settings = ModelSettings(image_size=loaded.settings.image_size, modality_weights=(1.5, 0.6, 0.9))
    install(loaded.model, settings)
    weighted = _encode(loaded.model, ids)
    want = token_scale(torch.tensor([1.5, 0.6, 0.9]), settings, 40).view(1, -1, 1)
    assert torch.allclose(weighted, plain * want, atol=1e-6)
    install(loaded.model, ModelSettings(image_size=loaded.settings.image_size))  # none: removes it
    assert torch.allclose(_encode(loaded.model, ids), plain)


def _config(tmp_path, tiny_model_dir, **overrides) -> TrainConfig:
    base = dict(data_root=SAMPLE, student="tiny", teacher=None, tokenizer_from=str(tiny_model_dir),
                freeze_vision=False, epochs=1, batch_size=8, lr=5e-3, val_split=None,
                output_dir=str(tmp_path / "run"), log_every=1, resume=True, seed=3)
    base.update(overrides)
    return TrainConfig(**base)


def test_training_learns_logs_and_stores_modality_weights(tmp_path, tiny_model_dir):
    summary = train(_config(tmp_path, tiny_model_dir, max_steps=6, modality_weights=True,
                            roadside_dropout=0.3, augment_resolution=(0.4, 1.0),
                            augment_jpeg_quality=(30, 90)), progress=False)
    run = tmp_path / "run"
    rows = list(csv.DictReader(open(run / "train_log.csv")))
    weights = [(float(r["w_ego"]), float(r["w_roadside"]), float(r["w_text"])) for r in rows]
    assert len(weights) == 6 and all(sum(w) == pytest.approx(3.0, abs=1e-4) for w in weights)
    assert weights[-1] != weights[0]  # they are trained
    assert summary["roadside_dropped"] > 0
    stored = json.loads((run / "model" / "v2x_vlm.json").read_text())["modality_weights"]
    assert stored == pytest.approx(list(summary["modality_weights"])) and stored != [1.0, 1.0, 1.0]
    # the shipped model stays a plain Florence-2 for transformers, and ours applies the weights
    native = Florence2ForConditionalGeneration.from_pretrained(run / "model", use_safetensors=True)
    ours = load_model(run / "model")
    ids = torch.randint(3, 50, (1, 40))
    want = token_scale(torch.tensor(stored), ours.settings, 40).view(1, -1, 1)
    assert torch.allclose(_encode(ours.model, ids), _encode(native, ids) * want, atol=1e-5)
    card = (run / "model" / "README.md").read_text()
    assert "modality-weighted fusion True" in card and "roadside dropout 0.3" in card


def test_switches_off_write_no_weights_and_no_dropout(tmp_path, tiny_model_dir):
    summary = train(_config(tmp_path, tiny_model_dir, max_steps=2), progress=False)
    assert summary["modality_weights"] is None and summary["roadside_dropped"] == 0
    assert "modality_weights" not in json.loads((tmp_path / "run" / "model" / "v2x_vlm.json").read_text())
    rows = list(csv.DictReader(open(tmp_path / "run" / "train_log.csv")))
    assert rows[0]["w_ego"] == ""


def test_resume_with_modality_weights_continues_exactly(tmp_path, tiny_model_dir):
    opts = dict(modality_weights=True, roadside_dropout=0.3, augment_resolution=(0.4, 1.0))
    train(_config(tmp_path / "a", tiny_model_dir, max_steps=6, **opts), progress=False)
    train(_config(tmp_path / "b", tiny_model_dir, max_steps=3, **opts), progress=False)
    resumed = train(_config(tmp_path / "b", tiny_model_dir, max_steps=6, **opts), progress=False)
    straight = json.loads((tmp_path / "a" / "run" / "summary.json").read_text())
    assert resumed["modality_weights"] == pytest.approx(straight["modality_weights"], abs=1e-6)


def test_bad_switch_values_are_rejected():
    with pytest.raises(ValueError, match="augment_resolution"):
        TrainConfig(augment_resolution=(0.0, 1.0))
    with pytest.raises(ValueError, match="augment_jpeg_quality"):
        TrainConfig(augment_jpeg_quality=(50, 120))
    with pytest.raises(ValueError, match="roadside_dropout"):
        TrainConfig(roadside_dropout=1.5)
    with pytest.raises(ValueError) as err:
        TrainConfig(roadside_dropout_uniform=-0.1)
    assert str(err.value) == "roadside_dropout_uniform must be in [0, 1], got -0.1"


def test_paired_scenes_are_drawn_more_often_with_pair_weight():
    from v2x_vlm_ros.training.data import EpochSampler, pair_weights

    ds = DairV2XDataset(SAMPLE)
    assert pair_weights(ds, 1.0) is None
    weights = pair_weights(ds, 4.0)
    seqs = [ds[i].sequence_id for i in range(len(ds))]
    paired = {"0000", "0001", "0006", "0007"}  # the sample's two pairs (sidecar: variant)
    assert [w == 4.0 for w in weights] == [s in paired for s in seqs]
    plain = EpochSampler(len(ds), 0, 0.25)
    heavy = EpochSampler(len(ds), 0, 0.25, weights=weights)
    share = {name: np.mean([seqs[i] in paired for i in s.indices()]) for name, s in
             (("plain", plain), ("heavy", heavy))}
    assert share["plain"] < 0.6 < share["heavy"]  # 4 of 9 sequences: ~44 % uniformly, ~76 % weighted
    picked = heavy.indices()
    assert len(picked) == len(set(picked)) == plain.count  # without replacement, same count
    heavy.set_epoch(1)
    assert heavy.indices() != picked and EpochSampler(len(ds), 0, 0.25, weights=weights).indices() == picked
    with pytest.raises(ValueError):
        EpochSampler(3, 0, weights=[1.0, 0.0, 1.0])


def test_hidden_hazard_frames_and_their_twins_get_hazard_weight():
    """Read straight from the sample's sidecar: a frame where a conflict agent is in the
    roadside list and not the ego list gets ``hazard_weight``, and so does the frame at the
    same position of its twin; other frames of paired sequences get ``pair_weight``."""
    from v2x_vlm_ros.training.data import pair_weights

    ds = DairV2XDataset(SAMPLE)
    sidecar = json.loads((Path(SAMPLE) / "visibility.json").read_text())["sequences"]
    hidden = {}
    for seq, entry in sidecar.items():
        frames = sorted(entry["frames"])
        for pos, frame in enumerate(frames):
            seen = entry["frames"][frame]
            if set(entry["conflict"]) & (set(seen["roadside"]) - set(seen["ego"])):
                hidden[(seq, frame)] = (entry["pair"], pos)
    assert hidden  # the sample has hidden-hazard frames
    twins = {(twin, sorted(sidecar[twin]["frames"])[pos]) for twin, pos in hidden.values()}
    assert not twins & set(hidden)
    keys = [(ds[i].sequence_id, ds[i].vehicle_frame) for i in range(len(ds))]
    weights = pair_weights(ds, 2.0, hazard_weight=8.0)
    paired = {"0000", "0001", "0006", "0007"}
    for key, w in zip(keys, weights):
        want = 8.0 if key in hidden or key in twins else 2.0 if key[0] in paired else 1.0
        assert w == want, key
    assert sum(w == 8.0 for w in weights) == len(hidden) + len(twins)
    assert pair_weights(ds, 1.0, hazard_weight=1.0) is None
    with pytest.raises(ValueError, match="hazard_weight must be > 0, got 0"):
        TrainConfig(hazard_weight=0)


def test_scenario_weights_multiply_the_frames_of_their_scenarios():
    """Factors read against the sample's scenarios.json (written out here, not looked up
    through the code under test): on top of pair and hazard weights."""
    from v2x_vlm_ros.training.data import EpochSampler, pair_weights

    ds = DairV2XDataset(SAMPLE)
    scenario = {"0000": "occluded_crossing", "0001": "occluded_crossing", "0002": "left_turn",
                "0003": "right_turn", "0004": "follow_lead", "0005": "straight",
                "0006": "hidden_queue", "0007": "hidden_queue", "0008": "stop_sign"}
    base = pair_weights(ds, 2.0, hazard_weight=8.0)
    scaled = pair_weights(ds, 2.0, hazard_weight=8.0,
                          scenario_weights={"follow_lead": 3.0, "occluded_crossing": 0.5})
    seqs = [ds[i].sequence_id for i in range(len(ds))]
    factor = {"follow_lead": 3.0, "occluded_crossing": 0.5}
    assert scaled == [b * factor.get(scenario[s], 1.0) for b, s in zip(base, seqs)]
    assert {w for w, s in zip(scaled, seqs) if s == "0004"} == {3.0}
    assert {w for w, s in zip(scaled, seqs) if s == "0000"} <= {1.0, 4.0}  # 2 x 0.5, 8 x 0.5
    # alone (pair and hazard weights 1), scenario weights still give weights
    only = pair_weights(ds, 1.0, scenario_weights={"straight": 4.0})
    assert only == [4.0 if scenario[s] == "straight" else 1.0 for s in seqs]
    share = np.mean([seqs[i] == "0005" for i in EpochSampler(len(ds), 0, 0.25, weights=only).indices()])
    assert share > 0.2  # one sequence in nine (11 %) uniformly, about a third weighted
    with pytest.raises(ValueError) as err:
        TrainConfig(scenario_weights={"follow_lead": 2, "folow_lead": 2})
    assert str(err.value).startswith("scenario_weights: unknown scenario(s) ['folow_lead']; known: [")
    with pytest.raises(ValueError, match=r"scenario_weights: straight must be a number > 0, got 0"):
        TrainConfig(scenario_weights={"straight": 0})


def test_balance_turn_weights_scales_the_rarer_turn_command_up():
    from v2x_vlm_ros.data.records import Command
    from v2x_vlm_ros.training.data import balance_turn_weights

    F, L, R = Command.FORWARD, Command.LEFT, Command.RIGHT
    # LEFT weighs 1 + 1 = 2, RIGHT 2 + 2 + 1 = 5: LEFT frames x 2.5, the others as they were
    assert balance_turn_weights([F, L, R, R, L, R], [1, 1, 2, 2, 1, 1]) == [1, 2.5, 2, 2, 2.5, 1]
    # RIGHT the rarer: 1 against 3
    assert balance_turn_weights([L, R, F], [3, 1, 7]) == [3, 3, 7]
    assert balance_turn_weights([F, R, R], [1, 1, 1]) is None  # no LEFT frame to balance against
    with pytest.raises(ValueError, match="3 commands for 2 weights"):
        balance_turn_weights([F, L, R], [1, 1])


def test_balance_turns_in_pair_weights(tmp_path):
    """Through ``pair_weights``: alone on a dataset without a sidecar (real data) it weighs
    from the index's commands; on the sample, whose only turns are to the right (its 6 s
    left-turn sequence ends before the turn), it changes nothing."""
    from types import SimpleNamespace

    from v2x_vlm_ros.data.records import Command
    from v2x_vlm_ros.training.data import pair_weights

    F, L, R = Command.FORWARD, Command.LEFT, Command.RIGHT
    real = SimpleNamespace(root=tmp_path, scenarios={},
                           _index=[SimpleNamespace(command=c) for c in (F, R, R, R, L, F)])
    assert pair_weights(real, 1.0) is None
    assert pair_weights(real, 1.0, balance_turns=True) == [1, 1, 1, 1, 3, 1]
    ds = DairV2XDataset(SAMPLE)
    commands = [ds[i].command for i in range(len(ds))]
    assert L not in commands and R in commands
    base = pair_weights(ds, 2.0, hazard_weight=8.0)
    assert pair_weights(ds, 2.0, hazard_weight=8.0, balance_turns=True) == base
    with pytest.raises(ValueError) as err:
        TrainConfig(balance_turns="yes")
    assert str(err.value) == "balance_turns must be true or false, got 'yes'"


def test_command_twin_swaps_the_turn_and_mirrors_the_ground_truth():
    from v2x_vlm_ros.data.records import Command
    from v2x_vlm_ros.training.data import command_twin

    xy = np.array([[4.0, 0.5], [8.0, 2.0], [11.0, 6.0]])
    command, mirrored = command_twin(Command.LEFT, xy)
    assert command == Command.RIGHT
    assert mirrored.tolist() == [[4.0, -0.5], [8.0, -2.0], [11.0, -6.0]]
    assert xy[2, 1] == 6.0  # the input is left alone
    assert command_twin(Command.RIGHT, xy)[0] == Command.LEFT
    with pytest.raises(ValueError) as err:
        command_twin(Command.FORWARD, xy)
    assert str(err.value) == "a command twin needs a LEFT or RIGHT frame, got FORWARD"


def test_command_twins_on_the_sample():
    """Which frames may be twinned, read here from the sample's own files: a turn (last valid
    waypoint 2 m or more to a side), the ego not turning yet, a sequence whose sidecar
    ``conflict`` list is empty (0006's right turn into a hidden queue is left out, its twin
    0007 kept); and what a twinned example holds."""
    from v2x_vlm_ros.data.records import Command
    from v2x_vlm_ros.training.data import COMMAND_TWIN_MAX_YAW_RATE, PlanningExamples, command_twin_frames

    ds = DairV2XDataset(SAMPLE)
    sidecar = json.loads((Path(SAMPLE) / "visibility.json").read_text())["sequences"]
    want = []
    for i in range(len(ds)):
        s = ds[i]
        valid = np.flatnonzero(s.future_mask)
        turn = valid.size > 0 and abs(float(s.future_xy[valid[-1], 1])) >= 2.0
        want.append(turn and abs(s.motion.yaw_rate_rps) <= COMMAND_TWIN_MAX_YAW_RATE
                    and not sidecar[s.sequence_id]["conflict"])
    ok = command_twin_frames(ds)
    assert ok == want
    seqs = {ds[i].sequence_id for i in range(len(ds)) if ok[i]}
    assert seqs and "0006" not in seqs and seqs <= {"0003", "0007"}
    every = PlanningExamples(ds, command_twins=1.0, command_twin_ok=ok)
    for i in range(len(ds)):
        e, s = every[i], ds[i]
        if ok[i]:
            assert e["command"] == Command.LEFT and s.command == Command.RIGHT and e["command_twin"]
            assert np.array_equal(e["future_xy"], s.future_xy * [1.0, -1.0])
        else:
            assert e["command"] == s.command and np.array_equal(e["future_xy"], s.future_xy)
            assert not e["command_twin"]
    assert every.twinned == sum(ok)
    half = [PlanningExamples(ds, command_twins=0.5, command_twin_ok=ok, seed=3) for _ in range(2)]
    drawn = [[half[k][i]["command"] != ds[i].command for i in range(len(ds))] for k in range(2)]
    assert drawn[0] == drawn[1]  # a pure function of (seed, epoch, index)
    assert 0.25 < sum(drawn[0]) / sum(ok) < 0.75
    with pytest.raises(ValueError, match="command_twins needs command_twin_ok, one flag per sample"):
        PlanningExamples(ds, command_twins=0.5)
    with pytest.raises(ValueError) as err:
        TrainConfig(command_twins=1.5)
    assert str(err.value) == "command_twins must be in [0, 1], got 1.5"


def test_scenario_weights_need_a_worlds_scenarios(tmp_path):
    import shutil

    from v2x_vlm_ros.training.data import pair_weights

    root = tmp_path / "sample"
    shutil.copytree(SAMPLE, root)
    (root / "scenarios.json").unlink()
    ds = DairV2XDataset(root)
    with pytest.raises(ValueError) as err:
        pair_weights(ds, 1.0, scenario_weights={"straight": 2.0})
    assert str(err.value) == (f"scenario_weights need {root}/scenarios.json (a synthetic world's sidecar); "
                              "this dataset has none")
    assert pair_weights(ds, 1.0) is None


def test_scenario_weights_reach_a_run_from_a_yaml_override_and_its_card(tmp_path, tiny_model_dir, capsys):
    from v2x_vlm_ros.cli import main

    config = tmp_path / "train.yaml"
    config.write_text(f"train:\n  data_root: {SAMPLE}\n  student: tiny\n  teacher: null\n"
                      f"  tokenizer_from: {tiny_model_dir}\n  val_split: null\n  epochs: 1\n"
                      f"  max_steps: 1\n  batch_size: 4\n  output_dir: {tmp_path / 'run'}\n")
    assert main(["train", str(config), "--override", "scenario_weights={follow_lead: 3, straight: 0.5}",
                 "--quiet"]) == 0
    capsys.readouterr()
    card = (tmp_path / "run" / "model" / "README.md").read_text()
    assert "scenario weights {'follow_lead': 3.0, 'straight': 0.5}" in card
    assert main(["train", str(config), "--override", "scenario_weights={stop: 3}", "--check"]) == 2
    assert "scenario_weights: unknown scenario(s) ['stop']" in capsys.readouterr().err


def _sidecar_labels(ds) -> list[int]:
    """The probe's labels read straight from the sample's sidecar: 1 where a conflict agent
    is in the frame's roadside list (seen by the ego camera or not)."""
    sidecar = json.loads((Path(SAMPLE) / "visibility.json").read_text())["sequences"]
    out = []
    for i in range(len(ds)):
        entry = sidecar[ds[i].sequence_id]
        frame = entry["frames"][ds[i].vehicle_frame]
        road = set(entry["conflict"]) & set(frame["roadside"])
        # 1: only the roadside camera sees it; -1: the ego camera sees it too; 0: not seen
        out.append(0 if not road else (1 if road - set(frame["ego"]) else -1))
    return out


def test_roadside_hazard_labels_come_from_the_sidecar():
    from v2x_vlm_ros.training.data import roadside_hazard_labels

    ds = DairV2XDataset(SAMPLE)
    labels = roadside_hazard_labels(ds)
    assert labels == _sidecar_labels(ds)
    assert {-1, 0, 1} <= set(labels)  # all three kinds in the sample
    # an example carries its label, or -1 when no roadside image reaches the model
    i = labels.index(1)
    assert PlanningExamples(ds, hazard_labels=labels)[i]["roadside_hazard"] == 1
    assert PlanningExamples(ds, hazard_labels=labels, roadside_dropout=1.0)[i]["roadside_hazard"] == -1
    blank = PlanningExamples(ds, hazard_labels=labels, roadside_dropout=1.0, roadside_dropout_uniform=1.0)[i]
    assert blank["roadside"] is not None and blank["roadside_hazard"] == -1  # a uniform view shows nothing
    assert PlanningExamples(ds, hazard_labels=labels, fusion=False)[i]["roadside_hazard"] == -1
    assert PlanningExamples(ds)[i]["roadside_hazard"] == -1


def test_hazard_probe_reads_only_the_roadside_half():
    from v2x_vlm_ros.training.losses import RoadsideHazardHead, hazard_loss

    torch.manual_seed(0)
    head = RoadsideHazardHead(8)
    cells = torch.randn(2, 3, 6, 8)
    base = head(cells)
    ego_changed = cells.clone()
    ego_changed[:, :, :3] = 100.0  # the left (ego) three columns
    assert torch.equal(head(ego_changed), base)
    # the largest roadside cell decides
    scores = head.score(cells[:, :, 3:]).squeeze(-1)
    assert torch.allclose(base, scores.flatten(1).max(1).values)
    with pytest.raises(ValueError, match=r"got \(2, 3, 8\)"):
        head(cells[..., 0, :])
    logits = torch.tensor([2.0, -1.0, 0.5], requires_grad=True)
    labels = torch.tensor([1.0, 0.0, -1.0])
    # by hand: -(log sigmoid(2) + log(1 - sigmoid(-1))) / 2, the unknown label left out
    want = -(np.log(1 / (1 + np.exp(-2.0))) + np.log(1 - 1 / (1 + np.exp(1.0)))) / 2
    assert float(hazard_loss(logits, labels).detach()) == pytest.approx(want, rel=1e-6)
    none = hazard_loss(logits, torch.full((3,), -1.0))
    none.backward()
    assert float(none.detach()) == 0.0 and torch.equal(logits.grad, torch.zeros(3))


def test_training_with_the_hazard_probe_logs_checkpoints_and_does_not_ship_it(tmp_path, tiny_model_dir):
    from safetensors.torch import load_file

    opts = dict(lambda_hazard=1.0, roadside_dropout=0.2)
    train(_config(tmp_path / "a", tiny_model_dir, max_steps=4, **opts), progress=False)
    run = tmp_path / "a" / "run"
    rows = list(csv.DictReader(open(run / "train_log.csv")))
    assert len(rows) == 4 and all(float(r["hazard"]) > 0 for r in rows)
    # loss = traj + 0.1 align + 1.0 hazard
    r = rows[0]
    assert float(r["loss"]) == pytest.approx(float(r["traj"]) + 0.1 * float(r["align"]) + float(r["hazard"]),
                                             rel=1e-5)
    probe = load_file(run / "checkpoint" / "hazard_head.safetensors")
    assert set(probe) == {"score.weight", "score.bias"}
    shipped = load_file(run / "model" / "model.safetensors")
    assert not any(k.startswith("score.") or "hazard" in k for k in shipped)
    # resumed in two parts: the probe ends where the straight run's does
    train(_config(tmp_path / "b", tiny_model_dir, max_steps=2, **opts), progress=False)
    train(_config(tmp_path / "b", tiny_model_dir, max_steps=4, **opts), progress=False)
    resumed = load_file(tmp_path / "b" / "run" / "checkpoint" / "hazard_head.safetensors")
    assert all(torch.allclose(probe[k], resumed[k], atol=1e-6) for k in probe)


def test_hazard_probe_needs_fusion_and_a_sidecar(tmp_path, tiny_model_dir):
    import shutil

    with pytest.raises(ValueError, match="lambda_hazard needs fusion: the probe reads the roadside half"):
        TrainConfig(lambda_hazard=1.0, fusion=False)
    with pytest.raises(ValueError, match="lambda_hazard must be >= 0, got -1"):
        TrainConfig(lambda_hazard=-1.0)
    copy = tmp_path / "sample"
    shutil.copytree(SAMPLE, copy)
    (copy / "visibility.json").unlink()
    message = f"lambda_hazard needs the probe's labels: {copy} has no visibility.json"
    with pytest.raises(ValueError, match=message):
        train(_config(tmp_path, tiny_model_dir, data_root=str(copy), max_steps=1, lambda_hazard=1.0),
              progress=False)


def _tiny_builder(tiny_model_dir):
    """(loaded tiny model, its BatchBuilder)."""
    from v2x_vlm_ros.model.codec import build_codec, loc_token_name
    from v2x_vlm_ros.training.data import BatchBuilder

    loaded = load_model(tiny_model_dir)
    ids = [loaded.tokenizer.convert_tokens_to_ids(loc_token_name(i)) for i in range(1000)]
    return loaded, BatchBuilder(loaded.tokenizer, loaded.settings,
                                loaded.model.config.text_config.max_position_embeddings,
                                build_codec(loaded.settings.codec, ids))


def _tiny_batch(tiny_model_dir):
    from v2x_vlm_ros.data.records import Command, EgoMotion

    loaded, builder = _tiny_builder(tiny_model_dir)
    t = 0.5 * np.arange(1, 11)
    examples = [{"ego": _image(), "roadside": _image(), "description": "a car", "command": Command.FORWARD,
                 "motion": EgoMotion(v, 0.0, 0.0, 0.5), "future_xy": np.column_stack([v * t, np.zeros(10)]),
                 "future_mask": np.ones(10, bool)} for v in (4.0, 9.0)]
    return loaded, builder(examples)


def test_a_command_twin_is_not_distilled(tiny_model_dir):
    """Its labels are kept (the mirrored turn) and its distillation positions dropped; the
    other example of the batch keeps both."""
    from v2x_vlm_ros.data.records import Command, EgoMotion
    from v2x_vlm_ros.training.losses import IGNORE_INDEX

    _, builder = _tiny_builder(tiny_model_dir)
    t = 0.5 * np.arange(1, 11)
    turn = np.column_stack([6.0 * t, -0.4 * t ** 2])
    examples = [{"ego": _image(), "roadside": _image(), "description": "a car", "command": Command.LEFT,
                 "motion": EgoMotion(6.0, 0.0, 0.0, 0.5), "future_xy": turn * [1.0, sign],
                 "future_mask": np.ones(10, bool), "command_twin": twin} for sign, twin in ((-1.0, True),
                                                                                            (1.0, False))]
    batch = builder(examples)
    assert not batch["traj_mask"][0].any()
    assert int(batch["traj_mask"][1].sum()) == 20  # 10 waypoints, x and y
    assert bool((batch["labels"][0, 1:-1] != IGNORE_INDEX).all())
    assert not torch.equal(batch["labels"][0], batch["labels"][1])  # the turn the other way


def test_the_teacher_sees_a_uniform_roadside_as_left_out(tiny_model_dir):
    """A uniform roadside image (roadside_dropout_uniform) reaches the student; the
    teacher's batch holds the roadside left out instead (the input it learned "no roadside
    view" from), and nothing else differs. Without a teacher, or without a uniform
    example, no second batch is built."""
    from v2x_vlm_ros.training.data import PairedCollate

    ds = DairV2XDataset(SAMPLE)
    _, builder = _tiny_builder(tiny_model_dir)
    real = PlanningExamples(ds)
    blank = PlanningExamples(ds, roadside_dropout=1.0, roadside_dropout_uniform=1.0, seed=3)
    left_out = PlanningExamples(ds, roadside_dropout=1.0, seed=3)
    examples = [real[0], blank[1], real[2]]
    assert [e["roadside_blank"] for e in examples] == [False, True, False]
    assert left_out[1]["roadside"] is None and not left_out[1]["roadside_blank"]
    batch = PairedCollate(builder, None, distill=True)(examples)
    student_px, teacher_px = batch["pixel_values"], batch["teacher"]["pixel_values"]
    # the teacher's inputs are those of the roadside left out for example 1, the same otherwise
    expected = builder([real[0], left_out[1], real[2]])["pixel_values"]
    assert torch.equal(teacher_px, expected)
    assert torch.equal(teacher_px[[0, 2]], student_px[[0, 2]])
    assert not torch.equal(teacher_px[1], student_px[1])
    for key in ("input_ids", "labels", "traj_mask"):
        assert torch.equal(batch["teacher"][key], batch[key])
    # the student's own roadside half is the uniform image: one value per channel
    width = student_px.shape[-1]
    right = student_px[1, :, :, width // 2 + 2:]
    assert torch.allclose(right, right[:, :1, :1].expand_as(right))
    assert "teacher" not in PairedCollate(builder, None, distill=False)(examples)
    assert "teacher" not in PairedCollate(builder, None, distill=True)([real[0], real[2]])


def test_plan_state_is_the_decoder_state_that_writes_the_first_plan_token(tiny_model_dir):
    from v2x_vlm_ros.training.losses import PlanStateHazardHead
    from v2x_vlm_ros.training.trainer import forward_planner

    loaded, batch = _tiny_batch(tiny_model_dir)
    model = loaded.model.eval()
    with torch.no_grad():
        logits, _, _, state = forward_planner(model, batch, keep_plan_state=True)
        assert forward_planner(model, batch)[3] is None
        # the first plan token (labels[:, 1]) is read from that state
        assert torch.allclose(model.lm_head(state), logits[:, 1], atol=1e-5)
        # later plan tokens do not reach it (the decoder is causal); the image does
        later = dict(batch, labels=batch["labels"].clone())
        later["labels"][:, 3:-1] = later["labels"][:, 2:3]
        assert torch.allclose(forward_planner(model, later, keep_plan_state=True)[3], state, atol=1e-6)
        other = dict(batch, pixel_values=batch["pixel_values"].flip(-1))
        assert not torch.allclose(forward_planner(model, other, keep_plan_state=True)[3], state, atol=1e-3)
    head = PlanStateHazardHead(state.shape[-1])
    assert head(state).shape == (2,)
    with pytest.raises(ValueError) as err:
        head(state[:, None])
    assert str(err.value) == f"need (batch, dim) decoder states, got (2, 1, {state.shape[-1]})"


def test_spread_label_targets_change_the_trained_loss_and_are_on_the_card(tmp_path, tiny_model_dir):
    """label_sigma_bins reaches the trajectory loss (same seed, same first batch: another
    loss) and the model card says how the targets were written."""
    def first_traj(run, **kw):
        train(_config(tmp_path, tiny_model_dir, max_steps=1, output_dir=str(tmp_path / run), **kw),
              progress=False)
        rows = list(csv.DictReader(open(tmp_path / run / "train_log.csv")))
        return float(rows[0]["traj"]), (tmp_path / run / "model" / "README.md").read_text()

    onehot, card0 = first_traj("onehot")
    spread, card = first_traj("spread", label_sigma_bins=2.0)
    again, _ = first_traj("spread_again", label_sigma_bins=2.0)
    assert spread == pytest.approx(again, rel=1e-6)  # deterministic: the difference is the targets
    assert abs(spread - onehot) > 1e-3
    assert "targets spread over 2.0 bins (0: one-hot)" in card
    assert "targets spread over 0.0 bins (0: one-hot)" in card0


@pytest.mark.parametrize("value, message", [
    (-1.0, "label_sigma_bins must be >= 0 (0: one-hot targets), got -1.0"),
    (float("inf"), "label_sigma_bins must be >= 0 (0: one-hot targets), got inf"),
    (True, "label_sigma_bins must be >= 0 (0: one-hot targets), got True"),
    ("3", "label_sigma_bins must be >= 0 (0: one-hot targets), got '3'"),
])
def test_label_sigma_bins_config_errors(value, message):
    with pytest.raises(ValueError) as err:
        TrainConfig(data_root=SAMPLE, label_sigma_bins=value)
    assert str(err.value) == message
    assert TrainConfig(data_root=SAMPLE, label_sigma_bins=3).label_sigma_bins == 3.0


def test_decision_weight_scales_the_first_waypoints_losses_and_is_on_the_card(tmp_path, tiny_model_dir):
    """decision_weight w adds (w - 1) x the first waypoint's terms to the trajectory and the
    distillation losses (same seed, same first batch): both are affine in w, and w = 1 is
    the plain mean."""
    def first_step(run, **kw):
        train(_config(tmp_path, tiny_model_dir, max_steps=1, teacher=str(tiny_model_dir),
                      output_dir=str(tmp_path / run), **kw), progress=False)
        row = next(csv.DictReader(open(tmp_path / run / "train_log.csv")))
        return float(row["traj"]), float(row["kd"]), (tmp_path / run / "model" / "README.md").read_text()

    traj1, kd1, card1 = first_step("w1")
    traj2, kd2, _ = first_step("w2", decision_weight=2.0)
    traj5, kd5, card5 = first_step("w5", decision_weight=5)
    assert traj2 > traj1 + 1e-3 and kd2 > kd1 + 1e-4
    assert traj5 - traj1 == pytest.approx(4 * (traj2 - traj1), rel=1e-4)
    assert kd5 - kd1 == pytest.approx(4 * (kd2 - kd1), rel=1e-4)
    assert "loss weight of the first waypoint written 5.0" in card5
    assert "loss weight of the first waypoint written 1.0" in card1


@pytest.mark.parametrize("value, message", [
    (0, "decision_weight must be a number > 0 (1: every position alike), got 0"),
    (float("nan"), "decision_weight must be a number > 0 (1: every position alike), got nan"),
    (True, "decision_weight must be a number > 0 (1: every position alike), got True"),
    ("4", "decision_weight must be a number > 0 (1: every position alike), got '4'"),
])
def test_decision_weight_config_errors(value, message):
    with pytest.raises(ValueError) as err:
        TrainConfig(data_root=SAMPLE, decision_weight=value)
    assert str(err.value) == message
    assert TrainConfig(data_root=SAMPLE, decision_weight=4).decision_weight == 4.0


def test_training_with_the_hazard_probe_on_the_decoder(tmp_path, tiny_model_dir):
    from safetensors.torch import load_file

    train(_config(tmp_path, tiny_model_dir, max_steps=3, lambda_hazard=1.0, hazard_probe_on="decoder",
                  freeze_vision=True), progress=False)
    run = tmp_path / "run"
    rows = list(csv.DictReader(open(run / "train_log.csv")))
    assert len(rows) == 3 and all(float(r["hazard"]) > 0 for r in rows)
    r = rows[0]  # loss = traj + 0.1 align + 1.0 hazard
    assert float(r["loss"]) == pytest.approx(float(r["traj"]) + 0.1 * float(r["align"]) + float(r["hazard"]),
                                             rel=1e-5)
    assert not (run / "checkpoint" / "hazard_head.safetensors").exists()
    probe = load_file(run / "checkpoint" / "plan_state_hazard_head.safetensors")
    d_model = load_model(run / "model").model.config.text_config.d_model
    assert probe["score.weight"].shape == (1, d_model)
    shipped = load_file(run / "model" / "model.safetensors")
    assert not any("hazard" in k or k.startswith("score.") for k in shipped)


def test_resuming_with_the_hazard_probe_moved_is_refused(tmp_path, tiny_model_dir):
    """Both places hold a (dim -> 1) linear probe: the vision probe's weights must not be
    loaded into the decoder's."""
    train(_config(tmp_path, tiny_model_dir, max_steps=1, lambda_hazard=1.0), progress=False)
    ckpt = tmp_path / "run" / "checkpoint"
    with pytest.raises(ValueError) as err:
        train(_config(tmp_path, tiny_model_dir, max_steps=2, lambda_hazard=1.0, hazard_probe_on="decoder"),
              progress=False)
    assert str(err.value) == (
        f"{ckpt}: no plan_state_hazard_head.safetensors: this run trains a probe the checkpoint was "
        "written without (lambda_hazard, hazard_probe_on or lambda_objects changed since); resume with "
        f"the settings it was written with, or start a new output_dir with student: {ckpt / 'student'}")


@pytest.mark.parametrize("kwargs, message", [
    (dict(lambda_hazard=1.0, hazard_probe_on="encoder"),
     "hazard_probe_on must be 'vision' or 'decoder', got 'encoder'"),
    (dict(stage="vision", lambda_objects=1.0, lambda_hazard=1.0, hazard_probe_on="decoder",
          freeze_vision=False),
     "stage 'vision' runs no decoder: hazard_probe_on 'decoder' needs stage 'plan'"),
])
def test_hazard_probe_on_config_errors(kwargs, message):
    with pytest.raises(ValueError) as err:
        TrainConfig(data_root=SAMPLE, **kwargs)
    assert str(err.value) == message


def _sample_without_boxes(tmp_path) -> Path:
    """A copy of the sample whose sidecar was written before roadside_boxes existed."""
    import shutil

    copy = tmp_path / "sample"
    shutil.copytree(SAMPLE, copy)
    data = json.loads((copy / "visibility.json").read_text())
    for entry in data["sequences"].values():
        for frame in entry["frames"].values():
            del frame["roadside_boxes"]
    (copy / "visibility.json").write_text(json.dumps(data))
    return copy


def test_roadside_object_boxes_come_from_the_sidecar(tmp_path):
    from v2x_vlm_ros.training.data import roadside_object_boxes

    ds = DairV2XDataset(SAMPLE)
    boxes = roadside_object_boxes(ds)
    sidecar = json.loads((Path(SAMPLE) / "visibility.json").read_text())["sequences"]
    for i in range(len(ds)):
        frame = sidecar[ds[i].sequence_id]["frames"][ds[i].vehicle_frame]
        assert boxes[i] == [frame["roadside_boxes"][t] for t in frame["roadside_boxes"]]
        assert sorted(frame["roadside_boxes"]) == sorted(frame["roadside"])
    assert sum(len(b) for b in boxes) > len(ds) / 2 and max(len(b) for b in boxes) >= 2
    # an example carries its boxes, or None when no roadside image reaches the model
    i = max(range(len(ds)), key=lambda k: len(boxes[k]))
    assert PlanningExamples(ds, roadside_boxes=boxes)[i]["roadside_boxes"] == boxes[i]
    assert PlanningExamples(ds, roadside_boxes=boxes, roadside_dropout=1.0)[i]["roadside_boxes"] is None
    assert PlanningExamples(ds, roadside_boxes=boxes, roadside_dropout=1.0,
                            roadside_dropout_uniform=1.0)[i]["roadside_boxes"] is None
    assert PlanningExamples(ds)[i]["roadside_boxes"] is None
    # a sidecar written before the boxes existed: no targets at all
    copy = _sample_without_boxes(tmp_path)
    assert roadside_object_boxes(DairV2XDataset(copy)) is None


def test_roadside_cell_targets_by_hand():
    from v2x_vlm_ros.training.losses import roadside_cell_targets

    nan = float("nan")
    boxes = torch.tensor([
        # a large box: cells covered >= 25 % (rows 1-2, columns 3-5; row 3 is covered 20 %)
        [[0.55, 0.30, 0.95, 0.80], [0.0, 0.0, 0.1, 0.1], [nan] * 4],
        # one smaller than a cell: its centre's cell (0.35, 0.265) -> row 1, column 2
        [[0.34, 0.26, 0.36, 0.27], [nan] * 4, [nan] * 4],
        [[nan] * 4] * 3,  # nothing seen
    ])
    want = torch.zeros(3, 4, 6)
    want[0, 1:3, 3:6] = 1
    want[0, 0, 0] = 1  # covers 24 % of the cell, but its centre is there
    want[1, 1, 2] = 1
    assert torch.equal(roadside_cell_targets(boxes, 4, 6), want)
    with pytest.raises(ValueError, match=r"need \(batch, boxes, 4\) boxes, got \(3, 4\)"):
        roadside_cell_targets(boxes[0], 4, 6)


def test_objects_probe_reads_the_roadside_half_per_cell():
    from v2x_vlm_ros.training.data import _boxes_tensor
    from v2x_vlm_ros.training.losses import RoadsideObjectsHead, objects_loss

    torch.manual_seed(0)
    head = RoadsideObjectsHead(8)
    cells = torch.randn(2, 2, 4, 8)
    logits = head(cells)
    assert logits.shape == (2, 2, 2)
    changed = cells.clone()
    changed[:, :, :2] = 50.0  # the ego half
    assert torch.equal(head(changed), logits)
    assert torch.allclose(logits, head.score(cells[:, :, 2:]).squeeze(-1))
    # boxes: sample 0 has one road user in the top-left roadside cell, sample 1 is unknown
    batch = _boxes_tensor([[[0.1, 0.1, 0.3, 0.3]], None])
    assert batch["roadside_known"].tolist() == [True, False]
    assert batch["roadside_boxes"].shape == (2, 1, 4) and torch.isnan(batch["roadside_boxes"][1]).all()
    x = logits[0].detach().double()
    target = torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    want = -(target * torch.log(torch.sigmoid(x)) + (1 - target) * torch.log(1 - torch.sigmoid(x))).mean()
    got = objects_loss(logits, batch["roadside_boxes"], batch["roadside_known"])
    assert float(got.detach()) == pytest.approx(float(want), rel=1e-5)
    none = objects_loss(logits, batch["roadside_boxes"], torch.tensor([False, False]))
    assert float(none.detach()) == 0.0


def test_training_with_the_objects_probe_logs_checkpoints_and_resumes(tmp_path, tiny_model_dir):
    from safetensors.torch import load_file

    opts = dict(lambda_objects=2.0, roadside_dropout=0.2)
    train(_config(tmp_path / "a", tiny_model_dir, max_steps=4, **opts), progress=False)
    run = tmp_path / "a" / "run"
    rows = list(csv.DictReader(open(run / "train_log.csv")))
    assert len(rows) == 4 and all(float(r["objects"]) > 0 for r in rows)
    r = rows[0]  # loss = traj + 0.1 align + 2.0 objects
    want = float(r["traj"]) + 0.1 * float(r["align"]) + 2 * float(r["objects"])
    assert float(r["loss"]) == pytest.approx(want, rel=1e-5)
    probe = load_file(run / "checkpoint" / "objects_head.safetensors")
    assert set(probe) == {"score.weight", "score.bias"}
    assert not any(k.startswith("score.") for k in load_file(run / "model" / "model.safetensors"))
    train(_config(tmp_path / "b", tiny_model_dir, max_steps=2, **opts), progress=False)
    train(_config(tmp_path / "b", tiny_model_dir, max_steps=4, **opts), progress=False)
    resumed = load_file(tmp_path / "b" / "run" / "checkpoint" / "objects_head.safetensors")
    assert all(torch.allclose(probe[k], resumed[k], atol=1e-6) for k in probe)


def test_objects_probe_needs_fusion_and_boxes(tmp_path, tiny_model_dir):
    with pytest.raises(ValueError, match="lambda_objects needs fusion: the probe reads the roadside half"):
        TrainConfig(lambda_objects=1.0, fusion=False)
    with pytest.raises(ValueError, match="lambda_objects must be >= 0, got -1"):
        TrainConfig(lambda_objects=-1.0)
    copy = _sample_without_boxes(tmp_path)
    message = (f"lambda_objects needs roadside boxes: {copy}/visibility.json is missing or was written "
               "without 'roadside_boxes'")
    with pytest.raises(ValueError, match=message):
        train(_config(tmp_path, tiny_model_dir, data_root=str(copy), max_steps=1, lambda_objects=1.0),
              progress=False)
