"""DAIR-V2X calibration JSON, both ways (REFERENCE §2).

File shapes:
- ``novatel_to_world``, ``lidar_to_camera``, ``virtuallidar_to_camera``,
  ``virtuallidar_to_world``: ``{"rotation": 3x3, "translation": [[x], [y], [z]]}``
  (virtuallidar_to_world may add ``relative_error: {delta_x, delta_y}``);
- ``lidar_to_novatel``: ``{"transform": {"rotation": ..., "translation": ...}}``;
- ``camera_intrinsic``: ``cam_K`` (9 numbers), ``cam_D`` (5) and, in V2X-Seq-SPD, ``P`` (12).

A file named ``a_to_b`` maps points in frame a to frame b, i.e. it is ``b_from_a``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from v2x_vlm_ros.data.errors import DatasetError
from v2x_vlm_ros.geometry import is_rotation, make_pose


def load_json(path: Path, field: str | None = None):
    """Parse a JSON file, raising ``DatasetError`` naming the file on any failure."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(path, field, "file not found") from None
    except OSError as exc:
        raise DatasetError(path, field, f"cannot read: {exc.strerror or exc}") from None
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(path, field, f"malformed JSON: {exc}") from None


def _numbers(value, count: int, path, field: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise DatasetError(path, field, f"expected {count} numbers, got {value!r:.80}") from None
    if arr.size != count:
        raise DatasetError(path, field, f"expected {count} numbers, got {arr.size}")
    if not np.all(np.isfinite(arr)):
        raise DatasetError(path, field, "contains NaN or infinity")
    return arr


def _rigid(obj, path, prefix: str) -> np.ndarray:
    if not isinstance(obj, dict):
        raise DatasetError(path, prefix or None, "expected an object with rotation and translation")
    for key in ("rotation", "translation"):
        if key not in obj:
            raise DatasetError(path, f"{prefix}{key}", "missing key")
    rot = _numbers(obj["rotation"], 9, path, f"{prefix}rotation").reshape(3, 3)
    trans = _numbers(obj["translation"], 3, path, f"{prefix}translation")
    if not is_rotation(rot, atol=1e-2):
        raise DatasetError(path, f"{prefix}rotation", "not a rotation matrix")
    # Files store rotations to a few decimals; snap to the nearest true rotation (polar
    # decomposition, as UniV2X does) so that rigid inverses stay exact.
    u, _, vt = np.linalg.svd(rot)
    return make_pose(u @ vt, trans)


def read_rigid(path: Path) -> np.ndarray:
    """4x4 ``b_from_a`` from an ``a_to_b`` file with top-level rotation/translation."""
    return _rigid(load_json(path), path, "")


def read_lidar_to_novatel(path: Path) -> np.ndarray:
    """4x4 ``novatel_from_lidar`` (the rotation/translation sit under ``transform``)."""
    data = load_json(path)
    if not isinstance(data, dict) or "transform" not in data:
        raise DatasetError(path, "transform", "missing key")
    return _rigid(data["transform"], path, "transform.")


@dataclass(frozen=True)
class CameraIntrinsics:
    K: np.ndarray  # (3, 3)
    D: np.ndarray  # (5,)

    @property
    def P(self) -> np.ndarray:
        return np.hstack([self.K, np.zeros((3, 1))])


def read_intrinsics(path: Path) -> CameraIntrinsics:
    data = load_json(path)
    if not isinstance(data, dict):
        raise DatasetError(path, None, "expected an object")
    if "cam_K" in data:
        K = _numbers(data["cam_K"], 9, path, "cam_K").reshape(3, 3)
    elif "P" in data:
        K = _numbers(data["P"], 12, path, "P").reshape(3, 4)[:, :3]
    else:
        raise DatasetError(path, "cam_K", "missing key")
    D = _numbers(data.get("cam_D", [0.0] * 5), 5, path, "cam_D")
    return CameraIntrinsics(K, D)


# -- writing (the synthetic world, test fixtures) ---------------------------------------


def _rounded(values, digits: int) -> list:
    return [round(float(v), digits) for v in values]


def rigid_json(b_from_a: np.ndarray, digits: int = 9) -> dict:
    """``{"rotation": 3x3, "translation": [[x], [y], [z]]}`` for an ``a_to_b`` file."""
    return {
        "rotation": [_rounded(row, digits) for row in b_from_a[:3, :3]],
        "translation": [[round(float(v), digits)] for v in b_from_a[:3, 3]],
    }


def lidar_to_novatel_json(novatel_from_lidar: np.ndarray, digits: int = 9) -> dict:
    return {"transform": rigid_json(novatel_from_lidar, digits)}


def intrinsics_json(K: np.ndarray, with_projection: bool = True) -> dict:
    out = {"cam_K": _rounded(np.asarray(K).reshape(-1), 6), "cam_D": [0.0] * 5}
    if with_projection:
        out["P"] = _rounded(np.hstack([K, np.zeros((3, 1))]).reshape(-1), 6)
    return out
