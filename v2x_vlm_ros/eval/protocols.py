"""The two evaluation protocols: their names, what each does, and whether a result can
stand next to UniV2X's and V2X-VLM's published tables (README, Metrics).

- ``univ2x``: UniV2X's own evaluation of V2X-Seq-SPD, reproduced (``data.dair`` for the
  samples and the ground truth, ``eval.univ2x`` for the metric). The published tables of
  UniV2X and V2X-VLM follow it; a result is comparable with them when it is this protocol
  on a real V2X-Seq-SPD root, UniV2X's ``val`` split of UniV2X's split file, with UniV2X's
  label update.
- ``time``: the project's own: every 10 Hz frame, waypoints by time, a cell-centre
  collision test. Never comparable with the published tables.
"""

from __future__ import annotations

from v2x_vlm_ros.data.splits import UNIV2X_LABEL_UPDATE_FILE, UNIV2X_SPLIT_FILE, same_content

PROTOCOLS = ("time", "univ2x")
DESCRIPTIONS = {
    "time": ("every 10 Hz cooperative frame; waypoint k = the frame nearest t0 + 0.5 k s (within 50 ms, "
             "else masked); labels as written; collision = cell centres inside boxes, out-of-grid "
             "cells dropped, masked steps excluded"),
    "univ2x": ("UniV2X's evaluation: 2 Hz samples (first frame of every 5 ids), UniV2X's val split; "
               "waypoint k = the k-th next sample, masked only past the sequence end; UniV2X's label "
               "update and hidden-box interpolation; UniV2X's raster metric (fillPoly on rounded corners, "
               "32-cell ego footprint shifted by truncation, border clamping)"),
}
COMPARABLE = "comparable with UniV2X / V2X-VLM"
NOT_COMPARABLE = "not comparable with UniV2X / V2X-VLM"


def comparability(protocol: str, layout: str | None = None, synthetic: bool = False,
                  split: str | None = None, univ2x_split_file: bool = False,
                  univ2x_label_update: bool = False, sequences: tuple[int, int] | None = None) -> str:
    """One line saying whether a result stands next to the published tables, and if not,
    why. Without the dataset facts (``layout`` None) a univ2x result is "comparable only
    on V2X-Seq-SPD val"."""
    if protocol != "univ2x":
        return (f"{NOT_COMPARABLE}: {protocol} protocol "
                "(the published tables use UniV2X's protocol, --protocol univ2x)")
    if layout is None:
        return "UniV2X's protocol: " + COMPARABLE + " only on V2X-Seq-SPD's val split with UniV2X's files"
    reasons = []
    if layout != "spd":
        reasons.append("not a V2X-Seq-SPD root")
    if synthetic:
        reasons.append("synthetic data, not V2X-Seq-SPD")
    if split != "val" or not univ2x_split_file:
        reasons.append(f"split {split or 'all'}{'' if univ2x_split_file else ' of another split file'}, "
                       "not val of UniV2X's split file")
    if not univ2x_label_update:
        reasons.append("labels without UniV2X's update_label_info.json")
    if sequences is not None and sequences[0] < sequences[1]:
        reasons.append(f"{sequences[0]} of the split's {sequences[1]} sequences have samples")
    if reasons:
        return f"{NOT_COMPARABLE}: UniV2X's protocol, but " + "; ".join(reasons)
    return f"{COMPARABLE} (UniV2X's protocol on V2X-Seq-SPD, UniV2X's val split)"


def dataset_report(dataset) -> dict:
    """``{"protocol", "comparability", "protocol_details"}`` for a result on ``dataset``
    (a ``DairV2XDataset``)."""
    from v2x_vlm_ros.data.splits import normalize_id

    split = dataset.split
    present = {normalize_id(s.sequence_id) for s in dataset.sample_sequences()}
    wanted = split.sequences if split is not None and split.sequences is not None else None
    details = {"name": dataset.protocol, "description": DESCRIPTIONS[dataset.protocol],
               "split": None if split is None else split.name,
               "split_file": None if split is None else split.path}
    update = None
    if dataset.protocol == "univ2x":
        from v2x_vlm_ros.eval.univ2x import PINNED_FILLPOLY

        info = dataset.univ2x_info()
        update = info["label_update_file"]
        details.update(info)
        details["fillpoly"] = PINNED_FILLPOLY
    text = comparability(dataset.protocol, dataset.layout, bool(dataset.scenarios),
                         None if split is None else split.name,
                         split is not None and same_content(split.path, UNIV2X_SPLIT_FILE),
                         update is not None and same_content(update, UNIV2X_LABEL_UPDATE_FILE),
                         None if wanted is None else (len(present & wanted), len(wanted)))
    return {"protocol": dataset.protocol, "comparability": text, "protocol_details": details}
