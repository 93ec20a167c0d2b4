"""DAIR-V2X split files.

A cooperative split file is ``{"batch_split": {train, val, test}, "vehicle_split": ...,
"infrastructure_split": ..., "cooperative_split": ...}``; we select whole sequences from
``batch_split`` (UniV2X evaluates on the ``val`` batch split), so a sequence's frames
never straddle train and val. A single-side file (``{"train": [...], ...}``) lists frame
ids; it selects vehicle frames instead.

Sequence ids compare by number when both are numeric: the real example file lists batch
``"0"`` while V2X-Seq-SPD names sequences ``"0000"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from v2x_vlm_ros.data.calib import load_json
from v2x_vlm_ros.data.errors import DatasetError

#: Where a split file is looked for under a dataset root when none is given.
DEFAULT_SPLIT_FILES = (
    "split_datas/cooperative-split-data.json",
    "split_datas/cooperative-split-data-spd.json",
    "cooperative-split-data.json",
    "cooperative-split-data-spd.json",
)


def normalize_id(value) -> str:
    text = str(value).strip()
    return str(int(text)) if text.isdigit() else text


@dataclass(frozen=True)
class SplitSelection:
    """Which sequences (or, for single-side files, which vehicle frames) a split keeps."""

    name: str
    path: str
    sequences: frozenset[str] | None = None  # normalised sequence ids
    frames: frozenset[str] | None = None  # normalised vehicle frame ids

    def keeps(self, sequence_id: str, frame_id: str) -> bool:
        if self.sequences is not None:
            return normalize_id(sequence_id) in self.sequences
        return normalize_id(frame_id) in self.frames


def find_split_file(root: Path) -> Path | None:
    for rel in DEFAULT_SPLIT_FILES:
        if (Path(root) / rel).is_file():
            return Path(root) / rel
    return None


def _id_list(value, path, field: str) -> frozenset[str]:
    if not isinstance(value, list):
        raise DatasetError(path, field, "expected a list of ids")
    return frozenset(normalize_id(v) for v in value)


def load_split(path: Path, name: str) -> SplitSelection:
    data = load_json(path)
    if not isinstance(data, dict):
        raise DatasetError(path, None, "expected an object")
    if "batch_split" in data:
        table = data["batch_split"]
        if not isinstance(table, dict) or name not in table:
            known = sorted(table) if isinstance(table, dict) else []
            raise DatasetError(path, f"batch_split.{name}", f"no such split; the file has {known}")
        return SplitSelection(name, str(path), sequences=_id_list(table[name], path,
                                                                  f"batch_split.{name}"))
    if name in data:
        return SplitSelection(name, str(path), frames=_id_list(data[name], path, name))
    raise DatasetError(path, name, f"no such split; the file has {sorted(data)}")
