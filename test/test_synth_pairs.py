"""Paired scenes (the same sequence with and without the hidden agent), the visibility
sidecar, and that nothing on the ego's side predicts the yield."""

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from v2x_vlm_ros.data.labels import read_label_file
from v2x_vlm_ros.data.synth import SynthConfig, generate, simulate
from v2x_vlm_ros.data.synth.config import HIDDEN_AGENTS
from v2x_vlm_ros.data.synth.visibility import (VISIBILITY_FILE, VisibilityError, hidden_hazard_frames,
                                               read_visibility)

CFG = SynthConfig(num_sequences=4, seed=7, image_size=(96, 54), jpeg_quality=60, conflict_share=1.0,
                  scenarios=("occluded_crossing", "hidden_queue"))


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    summary = generate(root, CFG, progress=False)
    return root, summary


def _json(path: Path):
    return json.loads(path.read_text())


def _frames(root: Path) -> dict:
    seqs = defaultdict(list)
    for rec in _json(root / "vehicle-side/data_info.json"):
        seqs[rec["sequence_id"]].append(rec)
    return {k: sorted(v, key=lambda r: r["frame_id"]) for k, v in seqs.items()}


def _coop(root: Path) -> dict:
    return {r["vehicle_frame"]: r["infrastructure_frame"] for r in _json(root / "cooperative/data_info.json")}


@pytest.mark.parametrize("agent_seq, twin_seq", [("0000", "0001"), ("0002", "0003")])
def test_twins_are_identical_except_the_hidden_agent(pairs, agent_seq, twin_seq):
    root, summary = pairs
    info = {s["sequence_id"]: s for s in summary["sequences"]}
    assert info[agent_seq]["variant"] == "agent" and info[twin_seq]["variant"] == "twin"
    assert info[agent_seq]["pair"] == twin_seq and info[twin_seq]["pair"] == agent_seq
    vis = read_visibility(root)["sequences"]
    hidden = set(vis[agent_seq]["hidden"])
    assert hidden and set(vis[agent_seq]["conflict"]) <= hidden and vis[twin_seq]["conflict"] == []
    frames = _frames(root)
    a_recs, t_recs = frames[agent_seq], frames[twin_seq]
    assert len(a_recs) == len(t_recs) == 120
    onset = info[agent_seq]["yield_onset_s"]  # where the informed ego starts to differ
    assert 0.0 < onset < 8.0 and info[twin_seq]["yield_onset_s"] == onset
    coop = _coop(root)
    veh, inf = root / "vehicle-side", root / "infrastructure-side"
    same_image = differ_roadside = 0
    for k, (a, t) in enumerate(zip(a_recs, t_recs)):
        a_vis = vis[agent_seq]["frames"][a["frame_id"]]
        t_vis = vis[twin_seq]["frames"][t["frame_id"]]
        before_onset = k / 10.0 < onset - 0.2
        # same capture times (relative), same poses until the informed ego brakes
        assert int(a["image_timestamp"]) - int(a_recs[0]["image_timestamp"]) == \
            int(t["image_timestamp"]) - int(t_recs[0]["image_timestamp"])
        a_pose = (veh / a["calib_novatel_to_world_path"]).read_bytes()
        t_pose = (veh / t["calib_novatel_to_world_path"]).read_bytes()
        if not before_onset:
            continue
        assert a_pose == t_pose
        # the same labels, but for the hidden agents
        labels = root / "cooperative/label"
        a_labels = {b.track_id: b for b in read_label_file(labels / f"{a['frame_id']}.json")}
        t_labels = {b.track_id: b for b in read_label_file(labels / f"{t['frame_id']}.json")}
        assert set(t_labels) == set(a_labels) - hidden
        for track, box in t_labels.items():
            assert box.x == a_labels[track].x and box.y == a_labels[track].y
        # while no hidden agent shows in the ego camera, the ego image is byte-identical
        if not set(a_vis["ego"]) & hidden:
            assert (veh / a["image_path"]).read_bytes() == (veh / t["image_path"]).read_bytes()
            assert t_vis["ego"] == [x for x in a_vis["ego"] if x not in hidden]
            same_image += 1
        if set(a_vis["roadside"]) & hidden:
            ra = (inf / "image" / f"{coop[a['frame_id']]}.jpg").read_bytes()
            rt = (inf / "image" / f"{coop[t['frame_id']]}.jpg").read_bytes()
            differ_roadside += ra != rt
    assert same_image >= 5 and differ_roadside >= 5, (same_image, differ_roadside)
    # descriptions: the same words while the ego cannot see the difference
    desc = {json.loads(line)["vehicle_frame"]: json.loads(line)["description"]
            for line in (root / "descriptions.jsonl").read_text().splitlines()}
    assert desc[a_recs[0]["frame_id"]] == desc[t_recs[0]["frame_id"]]


def test_twin_drives_on_where_the_agent_sequence_yields(pairs):
    root, summary = pairs
    for agent_seq, twin_seq in (("0000", "0001"), ("0002", "0003")):
        sims = [simulate(CFG, int(s)) for s in (agent_seq, twin_seq)]
        v_agent, v_twin = (s.scene.ego.motion.traj.v for s in sims)
        assert v_agent.min() < 1.0, agent_seq  # the informed ego yields (nearly to a stand)
        if sims[1].scene.scenario == "occluded_crossing":
            assert v_twin.min() > v_twin[0] - 1.5  # nothing there: it keeps its speed
        else:
            assert v_twin.min() > 2.0  # the right turn slows for the arc only


def test_visibility_sidecar_matches_the_id_masks(pairs):
    root, _ = pairs
    data = read_visibility(root)
    assert data["min_visible_pixels"] == CFG.min_visible_pixels
    frames = _frames(root)
    checked = 0
    for seq_id in ("0000", "0002"):
        sim = simulate(CFG, int(seq_id))
        entry = data["sequences"][seq_id]
        assert entry["agents"][entry["conflict"][0]]["role"] in ("crossing", "queue")
        assert set(entry["agents"]) == {a.track_id for a in sim.scene.agents}
        vr = sim.vehicle_renderer(CFG.mask_size)
        ir = sim.infra_renderer(CFG.mask_size)
        for k in range(0, 120, 13):
            fid = frames[seq_id][k]["frame_id"]
            _, _, vis = sim.render_vehicle(k, vr, with_image=False)
            _, imask, ivis = sim.render_infra(int(sim.pairing[k]), ir, with_image=False)
            want_ego = sorted(a.track_id for a in sim.scene.agents
                              if vis.get(sim.ident(a), (0, 0))[0] >= CFG.min_visible_pixels)
            want_road = sorted(a.track_id for a in sim.scene.agents
                               if ivis.get(sim.ident(a), (0, 0))[0] >= CFG.min_visible_pixels)
            assert sorted(entry["frames"][fid]["ego"]) == want_ego
            assert sorted(entry["frames"][fid]["roadside"]) == want_road
            boxes = entry["frames"][fid]["roadside_boxes"]
            assert sorted(boxes) == want_road
            h, w = imask.shape
            for a in sim.scene.agents:
                if a.track_id not in boxes:
                    continue
                x0, y0, x1, y1 = (round(v * n) for v, n in zip(boxes[a.track_id], (w, h, w, h)))
                pixels = imask == sim.ident(a)
                inside = pixels[y0:y1, x0:x1]
                assert inside.sum() == pixels.sum()  # every visible pixel is in the box
                # and the box is tight: each edge row / column holds one of them
                assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
            checked += 1
    assert checked >= 16
    # hidden-hazard frames: only in the sequences with the agent, and the early frames are
    # among them (the agents are hidden from the ego but seen by the roadside at first)
    slice_frames = hidden_hazard_frames(data)
    by_seq = defaultdict(int)
    for seq, _ in slice_frames:
        by_seq[seq] += 1
    assert set(by_seq) == {"0000", "0002"} and min(by_seq.values()) >= 20
    assert ("0000", frames["0000"][0]["frame_id"]) in slice_frames


def test_hidden_hazard_rule_on_a_hand_written_sidecar():
    data = {"schema": "v2x_vlm_ros/visibility/1", "sequences": {
        "0000": {"conflict": ["1"], "frames": {
            "000000": {"ego": [], "roadside": ["1", "2"]},  # hidden hazard
            "000001": {"ego": ["1"], "roadside": ["1"]},  # the ego sees it too
            "000002": {"ego": [], "roadside": ["2"]},  # nobody sees it
            "000003": {"ego": ["2"], "roadside": ["1"]}}},  # hidden hazard
        "0001": {"conflict": [], "frames": {"000004": {"ego": [], "roadside": ["1"]}}}}}
    assert hidden_hazard_frames(data) == {("0000", "000000"), ("0000", "000003")}


def test_bad_sidecars_are_named(tmp_path):
    assert read_visibility(tmp_path) is None  # real data has none
    (tmp_path / VISIBILITY_FILE).write_text("{not json")
    with pytest.raises(VisibilityError, match=VISIBILITY_FILE):
        read_visibility(tmp_path)
    (tmp_path / VISIBILITY_FILE).write_text(json.dumps({"schema": "other", "sequences": {}}))
    with pytest.raises(VisibilityError, match="schema"):
        read_visibility(tmp_path)


def _speeds(sim, until_s: float) -> np.ndarray:
    traj = sim.scene.ego.motion.traj
    return np.interp(np.arange(0.0, until_s + 1e-9, 0.1), traj.t, traj.v)


def _best_balanced_accuracy(feature, label) -> float:
    x, y = np.asarray(feature), np.asarray(label, bool)
    best = 0.5
    for threshold in np.unique(x):
        for sign in (1.0, -1.0):
            pred = sign * x >= sign * threshold
            best = max(best, 0.5 * ((pred & y).sum() / y.sum() + (~pred & ~y).sum() / (~y).sum()))
    return best


def test_no_rule_on_the_egos_own_speed_predicts_the_hidden_hazard():
    """Over the sequences that go straight on (same command), whether the ground truth will
    yield to a hidden hazard is not told by the ego's speed history: the ego brakes the
    same way at stop signs, behind slow cars and in random slow-downs, and each hazard has
    a twin whose history is identical until the informed ego starts braking. (In the old
    world every occluded_crossing ego braked from the first frame and no other scenario
    braked without a visible lead: braking near the junction was a perfect cue.)"""
    cfg = SynthConfig(num_sequences=80, seed=31, image_size=(96, 54),
                      scenarios=("occluded_crossing", "follow_lead", "straight", "stop_sign"))
    sims = [simulate(cfg, i) for i in range(80)]
    label = [bool(s.scene.conflict) for s in sims]
    assert 8 <= sum(label) <= len(sims) - 20
    assert {s.notes.get("hidden_category") for s in sims if s.scene.conflict} <= set(HIDDEN_AGENTS)
    for window in (1.0, 2.0):
        speeds = [_speeds(s, window) for s in sims]
        drop = [v[0] - v[-1] for v in speeds]
        lowest = [v.min() / v[0] for v in speeds]
        assert _best_balanced_accuracy(drop, label) < 0.75, window
        assert _best_balanced_accuracy(lowest, label) < 0.75, window
    # within a pair: the same speeds up to the informed ego's onset
    for i, s in enumerate(sims[:-1]):
        twin = sims[i + 1]
        if s.scene.variant == "agent" and twin.scene.variant == "twin" and s.scene.conflict:
            onset = s.notes["yield_onset_s"]
            assert abs(onset - s.notes["brake_onset_s"]) < 0.05  # going straight: its first braking
            k = int(round(10 * onset)) - 1
            assert np.array_equal(_speeds(s, 12.0)[:k], _speeds(twin, 12.0)[:k])


def test_driver_attention_text_says_what_only_the_roadside_sees(tmp_path):
    """The attention option (VLM-E2E) writes, from both cameras, where to look: on the
    hidden-hazard frames it names the hidden agent as seen by the roadside camera; without
    the option the description stays the ego camera's alone."""
    cfg = SynthConfig(num_sequences=2, seed=7, duration_s=6.0, image_size=(64, 36), conflict_share=1.0,
                      scenarios=("occluded_crossing",), attention_text=True)
    generate(tmp_path / "on", cfg, progress=False)
    generate(tmp_path / "off", SynthConfig(**{**cfg.__dict__, "attention_text": False}), progress=False)
    on = [json.loads(line) for line in (tmp_path / "on" / "descriptions.jsonl").read_text().splitlines()]
    off = [json.loads(line) for line in (tmp_path / "off" / "descriptions.jsonl").read_text().splitlines()]
    hidden = hidden_hazard_frames(read_visibility(tmp_path / "on"))
    assert len(hidden) > 10
    for a, b in zip(on, off):
        assert "roadside camera" not in b["description"].lower()
        assert len(a["description"]) < 300
        if (a["sequence_id"], a["vehicle_frame"]) in hidden:
            assert "seen by the roadside camera:" in a["description"], a["description"]
    # the twin (no hidden agent) is told there is nothing hidden near the junction
    twin = [a["description"] for a in on if a["sequence_id"] == "0001"]
    assert any("no hidden road user" in text for text in twin)


EARLY = SynthConfig(num_sequences=40, seed=2, duration_s=12.0, image_size=(160, 90), conflict_share=0.0,
                    early_cross_share=1.0, scenarios=("occluded_crossing",))


@pytest.mark.parametrize("index", [0, 2, 4, 6])
def test_early_crossers_cross_the_egos_road_clear_of_it_and_are_no_hazard(index):
    """``early_cross_share``: a hidden agent that does not conflict crosses the ego's road all
    the same, early: it is on the ego's lane during the sequence, never near the ego, the
    roadside camera sees it moving while the ego camera does not, and the ground truth keeps
    its speed exactly as in the twin without it. A car or cyclist comes from behind the parked
    truck, where the roadside camera sees it: mostly while the ego camera sees it too (it is
    early, past the truck's shadow), at first by the roadside camera alone."""
    from v2x_vlm_ros.data.synth.agents import boxes_overlap, inflate
    from v2x_vlm_ros.data.synth.world import LANE

    sim = simulate(EARLY, index)
    scene = sim.scene
    key = scene.key_agent
    assert scene.variant == "agent" and key.role == "passing" and scene.conflict == []
    assert sim.notes["crosses_early"] is True and sim.notes["brake_onset_s"] == float("inf")
    times = np.arange(0.0, 12.0, 0.05)  # the frames' span
    _, _, _, v = key.pose(times)
    corners = key.corners(times)
    # on the ego's lane (y in [-LANE, 0], the crossing x range) at some time, moving
    on_lane = (corners[..., 1].min(axis=1) < -0.2) & (corners[..., 1].max(axis=1) > -LANE + 0.2) \
        & (np.abs(corners[..., 0].mean(axis=1)) < 20.0)
    assert on_lane.any() and np.all(v[on_lane] > 0.5)
    # never within 1 m of the ego's footprint (the ego keeps its speed)
    near = boxes_overlap(inflate(corners, 1.0, 1.0), scene.ego.corners(times))
    assert not near.any()
    # the ego reaches the agent's crossing line after the agent has left its lane
    ego = scene.ego.corners(times)
    ego_there = np.flatnonzero(ego[..., 0].max(axis=1) >= corners[on_lane][..., 0].min())
    assert ego_there.size and times[on_lane].max() + 0.9 < times[ego_there[0]]
    twin = simulate(EARLY, index + 1)
    assert twin.scene.variant == "twin" and twin.scene.key_agent is None
    assert np.array_equal(np.stack(twin.scene.ego.pose(times)), np.stack(scene.ego.pose(times)))
    if key.category == "Pedestrian":  # it crosses at the zebra, beyond the roadside's view
        return
    # the roadside camera sees it moving, at first alone
    ident = sim.ident(key)
    vr, ir = sim.vehicle_renderer(size=EARLY.mask_size), sim.infra_renderer(size=EARLY.mask_size)
    seen = []
    for k in range(0, 40, 2):
        ego_px = sim.render_vehicle(k, vr)[2].get(ident, (0, 0))[0]
        road_px = sim.render_infra(int(sim.pairing[k]), ir)[2].get(ident, (0, 0))[0]
        seen.append((road_px >= EARLY.min_visible_pixels, ego_px >= EARLY.min_visible_pixels))
    assert sum(road for road, _ in seen) >= 8
    assert any(road and not ego for road, ego in seen)


def test_early_crossers_leave_the_hazards_draws_alone():
    """Early crossers are drawn only for the agents that do not conflict: the conflicting
    scenes of a world are the same with and without them, and a world without them (the
    default, 0) is drawn as before (no extra random draw)."""
    times = np.arange(-0.6, 12.0, 0.1)
    base = SynthConfig(num_sequences=40, seed=5, duration_s=12.0, image_size=(160, 90),
                       scenarios=("occluded_crossing",))
    mixed = SynthConfig(num_sequences=40, seed=5, duration_s=12.0, image_size=(160, 90),
                        early_cross_share=0.5, scenarios=("occluded_crossing",))
    roles = {"crossing": 0, "waiting": 0, "passing": 0}
    for index in range(0, 24, 2):
        a, b = simulate(base, index).scene, simulate(mixed, index).scene
        roles[b.key_agent.role] += 1
        if a.conflict:
            assert b.key_agent.role == "crossing"
            for x, y in ((a.ego, b.ego), (a.key_agent, b.key_agent)):
                assert np.array_equal(np.stack(x.pose(times)), np.stack(y.pose(times)))
        else:
            assert a.key_agent.role == "waiting" and b.key_agent.role in ("waiting", "passing")
    assert roles["crossing"] and roles["passing"]
    with pytest.raises(ValueError, match=r"early_cross_share must be in \[0, 1\], got -0.1"):
        SynthConfig(early_cross_share=-0.1)
