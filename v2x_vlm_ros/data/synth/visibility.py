"""The visibility sidecar of a synthetic world: ``visibility.json`` beside ``scenarios.json``.

Per sequence (by the sequence id the writer gave it):

- ``scenario`` and ``variant`` ("agent" / "twin" for the two sequences of a pair, else
  null) and ``pair`` (the other sequence's id, or null);
- ``agents``: ``{track_id: {"category", "role"}}`` for every road user of the sequence
  (the ego, track "0", is not listed);
- ``conflict``: the track ids the ground-truth ego yields to (the hidden hazard: a crossing
  agent, the tail of a hidden queue); ``hidden``: the ones the twin leaves out;
- ``frames``: ``{vehicle_frame_id: {"ego": [track ids], "roadside": [track ids]}}``: the
  agents with at least ``min_visible_pixels`` visible pixels in the ego camera's id mask
  and in the id mask of the roadside frame paired with that vehicle frame; and
  ``roadside_boxes``: ``{track id: [x0, y0, x1, y1]}``, the box around each roadside-seen
  agent's visible pixels in that roadside frame, as fractions of the image's width and
  height (x1, y1 exclusive). Worlds written before the boxes existed lack the key.

A frame is a *hidden hazard* when a conflict agent is seen by the roadside camera and not
by the ego camera (``hidden_hazard_frames``): only the roadside view can tell the ground
truth's yield there.
"""

from __future__ import annotations

import json
from pathlib import Path

from v2x_vlm_ros.data.errors import DatasetError

VISIBILITY_FILE = "visibility.json"
SCHEMA = "v2x_vlm_ros/visibility/1"


def sequence_entry(written, pair: str | None, seen: dict) -> tuple[str, dict]:
    """(sequence id, entry) from a ``WrittenSequence`` and what ``generate._build`` saw."""
    frames = {fid: seen["frames"][k] for k, fid in enumerate(written.vehicle_frames)}
    return written.sequence_id, {"scenario": seen["scenario"], "variant": seen["variant"], "pair": pair,
                                 "agents": seen["agents"], "conflict": seen["conflict"],
                                 "hidden": seen["hidden"], "frames": frames}


def write_visibility(root: Path, config, entries: list[tuple[str, dict]]) -> Path:
    path = Path(root) / VISIBILITY_FILE
    data = {"schema": SCHEMA, "min_visible_pixels": config.min_visible_pixels,
            "mask_size": list(config.mask_size), "sequences": dict(entries)}
    path.write_text(json.dumps(data, separators=(",", ":"), sort_keys=True), encoding="utf-8")
    return path


class VisibilityError(DatasetError):
    """A visibility sidecar that cannot be read; names the file and what is wrong."""


def read_visibility(root) -> dict | None:
    """The sidecar of a dataset root (None when there is none, e.g. real DAIR-V2X data)."""
    path = Path(root) / VISIBILITY_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VisibilityError(path, None, f"{type(exc).__name__}: {exc}") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA \
            or not isinstance(data.get("sequences"), dict):
        raise VisibilityError(path, "schema", f"expected {{'schema': {SCHEMA!r}, 'sequences': {{...}}}}")
    for seq_id, entry in data["sequences"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("frames"), dict) \
                or not isinstance(entry.get("conflict"), list):
            raise VisibilityError(path, f"sequences.{seq_id}", "expected 'conflict' [...] and 'frames' {...}")
    return data


def hidden_hazard_frames(visibility: dict) -> set[tuple[str, str]]:
    """{(sequence id, vehicle frame id)} where a conflict agent is seen by the roadside
    camera and not by the ego camera."""
    out = set()
    for seq_id, entry in visibility["sequences"].items():
        conflict = set(entry["conflict"])
        if not conflict:
            continue
        for frame_id, seen in entry["frames"].items():
            road, ego = set(seen.get("roadside", ())), set(seen.get("ego", ()))
            if (road - ego) & conflict:
                out.add((str(seq_id), str(frame_id)))
    return out


def harmless_hidden_frames(visibility: dict) -> set[tuple[str, str]]:
    """{(sequence id, vehicle frame id)} of the sequences whose ground truth yields to none of
    the agents the twin leaves out (``hidden``; they wait at their line, or cross early) where
    one of them is seen by the roadside camera, whether the ego camera sees it or not (an
    early crosser is mostly past the parked truck's shadow): the negatives of ``hidden_hazard_frames``, where the roadside view
    shows an agent at the junction and the plan is to drive on."""
    out = set()
    for seq_id, entry in visibility["sequences"].items():
        if entry["conflict"]:  # a hidden queue: its cars beyond the tail are no less in the way
            continue
        harmless = {str(a) for a in entry.get("hidden", ())}
        for frame_id, seen in entry["frames"].items():
            if {str(a) for a in seen.get("roadside", ())} & harmless:
                out.add((str(seq_id), str(frame_id)))
    return out


def hazard_twin_pairs(visibility: dict) -> dict[tuple[str, str], tuple[str, str]]:
    """{hidden-hazard frame: the frame at the same position in its twin} (``pair``: the same
    scene without the hazard), for the twins of the same length."""
    sequences = visibility["sequences"]
    order = {seq: sorted(entry["frames"]) for seq, entry in sequences.items()}
    out = {}
    for seq, frame in hidden_hazard_frames(visibility):
        twin = sequences[seq].get("pair")
        if twin in order and len(order[twin]) == len(order[seq]):
            out[(seq, frame)] = (str(twin), order[twin][order[seq].index(frame)])
    return out


def hazard_twin_frames(visibility: dict) -> set[tuple[str, str]]:
    """For each hidden-hazard frame, the frame at the same position in its twin, where the
    ground truth drives on (``hazard_twin_pairs``). A planner that brakes there was not told
    by the roadside view: it brakes on what the ego sees (the junction ahead), and pays here
    what it gains on the hidden-hazard frames."""
    return set(hazard_twin_pairs(visibility).values())


def hidden_hazard_twin_frames(visibility: dict) -> set[tuple[str, str]]:
    """The hidden-hazard frames and the same frames of their twins (``hazard_twin_frames``).
    On these frames the two scenes differ only in what the roadside camera sees, and their
    ground truths differ."""
    return hidden_hazard_frames(visibility) | hazard_twin_frames(visibility)


def roadside_conflict_frames(visibility: dict) -> dict[tuple[str, str], bool | None]:
    """Every frame of the sidecar: does the roadside camera see one of the sequence's
    conflicting agents (``conflict``: the road users the ground-truth ego yields to) that
    the ego camera does not? True for a hidden-hazard frame, False when the roadside camera
    sees no conflicting agent, None when the ego camera sees the one the roadside sees: there
    the ego half of the image tells as much, and in a fused image every cell carries some of
    the ego half (the vision encoder's channel attention is global), so such a label teaches
    "the junction is close" rather than "the roadside camera shows a car"."""
    out = {}
    for seq, entry in visibility["sequences"].items():
        conflict = {str(a) for a in entry.get("conflict", [])}
        for frame, seen in entry["frames"].items():
            road = conflict & {str(a) for a in seen["roadside"]}
            hidden = road - {str(a) for a in seen.get("ego", ())}
            out[(str(seq), str(frame))] = True if hidden else (False if not road else None)
    return out
