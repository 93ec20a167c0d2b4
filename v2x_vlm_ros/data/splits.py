"""DAIR-V2X split files.

A cooperative split file is ``{"batch_split": {train, val, test}, "vehicle_split": ...,
"infrastructure_split": ..., "cooperative_split": ...}``; we select whole sequences from
``batch_split`` (UniV2X evaluates on the ``val`` batch split), so a sequence's frames
never straddle train and val. A single-side file (``{"train": [...], ...}``) lists frame
ids; it selects vehicle frames instead.

Sequence ids compare by number when both are numeric: the real example file lists batch
``"0"`` while V2X-Seq-SPD names sequences ``"0000"``.

UniV2X's own V2X-Seq-SPD split (``cooperative-split-data-spd.json``, whose ``val`` batch
split is the set UniV2X and V2X-VLM report on) ships with the package
(``v2x_vlm_ros/data/univ2x/``, see SOURCES.md there); ``--split-file univ2x`` names it, and
the univ2x protocol uses it by default.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from v2x_vlm_ros.data.calib import load_json
from v2x_vlm_ros.data.errors import DatasetError

#: UniV2X's data files shipped with the package (AIR-THU/UniV2X @ a6e4f6b, Apache-2.0).
UNIV2X_DATA = Path(str(files("v2x_vlm_ros.data") / "univ2x"))
UNIV2X_SPLIT_FILE = UNIV2X_DATA / "cooperative-split-data-spd.json.gz"
UNIV2X_LABEL_UPDATE_FILE = UNIV2X_DATA / "update_label_info.json.gz"
#: The name that stands for UniV2X's shipped file where a split or update file is asked for.
UNIV2X = "univ2x"

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


def load_json_any(path, field: str | None = None):
    """``load_json`` that also reads gzip-compressed files (``.gz``)."""
    path = Path(path)
    if path.suffix != ".gz":
        return load_json(path, field)
    try:
        raw = gzip.decompress(path.read_bytes())
    except FileNotFoundError:
        raise DatasetError(path, field, "file not found") from None
    except (OSError, EOFError) as exc:
        raise DatasetError(path, field, f"cannot read the gzip file: {exc}") from None
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(path, field, f"malformed JSON: {exc}") from None


def resolve_file(value, shipped: Path) -> Path | None:
    """A split / update file option: None stays None, ``"univ2x"`` is the shipped file."""
    if value is None:
        return None
    return shipped if str(value) == UNIV2X else Path(value)


def same_content(path, shipped: Path = UNIV2X_SPLIT_FILE) -> bool:
    """Does ``path`` hold the same JSON as one of UniV2X's shipped files (the shipped copy
    itself, or the original downloaded elsewhere)?"""
    if path is None:
        return False
    try:
        return load_json_any(path) == load_json_any(shipped)
    except DatasetError:
        return False


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
    data = load_json_any(path)
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
