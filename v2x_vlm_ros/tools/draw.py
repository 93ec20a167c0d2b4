"""Pictures of plans: on the ego camera image, and in bird's-eye view.

- ``project_to_image``: waypoints (ego LiDAR frame, x forward, y left) on the ground plane,
  through the camera's calibration (``lidar_to_camera``, ``K``), to pixels; points behind
  the camera are left out.
- ``draw_on_image``: the plan (and the ground truth) as polylines on the ego image.
- ``bev_inset`` / ``debug_view``: a small bird's-eye view drawn into an image (the vehicle
  node's debug image; it needs no calibration).
- ``bev_figure``: matplotlib bird's-eye views of predicted vs ground-truth trajectories
  with the agents' boxes, one panel per sample.
"""

from __future__ import annotations

import cv2
import numpy as np

from v2x_vlm_ros.geometry import box_corners_xy

PLAN_BGR = (60, 200, 60)
EGO_ONLY_BGR = (30, 150, 240)
TRUTH_BGR = (240, 240, 240)


def project_to_image(
    xy: np.ndarray, camera_from_lidar: np.ndarray, K: np.ndarray, ground_z: float
) -> np.ndarray:
    """(N, 2) pixel coordinates of ground points; NaN rows for points behind the camera."""
    pts = np.column_stack([xy, np.full(len(xy), ground_z), np.ones(len(xy))])
    cam = (camera_from_lidar @ pts.T)[:3]
    out = np.full((len(xy), 2), np.nan)
    ahead = cam[2] > 0.5
    uv = K @ cam[:, ahead]
    out[ahead] = (uv[:2] / uv[2]).T
    return out


def _polyline(image, pixels, color, thickness):
    pts = pixels[np.isfinite(pixels).all(axis=1)]
    if len(pts) >= 2:
        cv2.polylines(image, [np.round(pts).astype(np.int32)], False, color, thickness, cv2.LINE_AA)
    for p in pts:
        cv2.circle(image, tuple(int(v) for v in np.round(p)), max(1, thickness), color, -1, cv2.LINE_AA)


def draw_on_image(
    image: np.ndarray,
    plan: np.ndarray,
    camera_from_lidar,
    K,
    ground_z: float,
    truth: np.ndarray | None = None,
    color=PLAN_BGR,
) -> np.ndarray:
    """A copy of ``image`` with the plan (and the ground truth) projected onto the road,
    both starting at the ego's position."""
    out = image.copy()
    thickness = max(1, round(image.shape[1] / 300))
    origin = np.zeros((1, 2))
    if truth is not None and len(truth):
        _polyline(
            out,
            project_to_image(np.vstack([origin, truth]), camera_from_lidar, K, ground_z),
            TRUTH_BGR,
            thickness,
        )
    _polyline(
        out,
        project_to_image(np.vstack([origin, plan]), camera_from_lidar, K, ground_z),
        color,
        thickness + 1,
    )
    return out


def bev_inset(
    image: np.ndarray,
    plan: np.ndarray,
    truth: np.ndarray | None = None,
    size: int | None = None,
    range_m: float = 50.0,
    color=PLAN_BGR,
) -> np.ndarray:
    """A copy of ``image`` with a square bird's-eye view (x up, y left) in its corner."""
    out = image.copy()
    size = size or max(48, min(image.shape[:2]) // 2)
    panel = np.full((size, size, 3), 30, np.uint8)
    scale = size / range_m

    def px(xy):
        return np.column_stack([size / 2 - xy[:, 1] * scale, size - 4 - xy[:, 0] * scale])

    cv2.rectangle(panel, (size // 2 - 2, size - 8), (size // 2 + 2, size - 1), (200, 200, 200), -1)
    origin = np.zeros((1, 2))
    if truth is not None and len(truth):
        _polyline(panel, px(np.vstack([origin, truth])), TRUTH_BGR, 1)
    _polyline(panel, px(np.vstack([origin, plan])), color, 1)
    h = min(size, out.shape[0])
    w = min(size, out.shape[1])
    out[:h, out.shape[1] - w :] = panel[:h, :w]
    return out


def debug_view(ego: np.ndarray, plan: np.ndarray, mode: str) -> np.ndarray:
    """The vehicle node's debug image: the ego view with the plan in a bird's-eye inset,
    green when fused, orange in the degraded ego-only mode."""
    return bev_inset(ego, plan, color=PLAN_BGR if mode == "fused" else EGO_ONLY_BGR)


def bev_figure(panels: list[dict], path, columns: int = 3, range_m: float = 50.0) -> None:
    """Save a grid of bird's-eye views. Each panel: ``title``, ``plan`` (T, 2), ``truth``
    (T, 2), ``mask`` (T,), ``agents`` (list of AgentBox at the last valid step, or None),
    optionally ``baseline`` (T, 2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(1, int(np.ceil(len(panels) / columns)))
    fig, axes = plt.subplots(rows, columns, figsize=(3.4 * columns, 3.6 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        for agent in panel.get("agents") or []:
            c = box_corners_xy(agent.x, agent.y, agent.yaw, agent.length, agent.width)
            ax.fill(-c[:, 1], c[:, 0], color="0.75" if agent.occupies_road else "0.9", zorder=1)
        truth, mask = panel["truth"], panel["mask"]
        ax.plot(-np.r_[0, truth[mask, 1]], np.r_[0, truth[mask, 0]], "k.-", label="ground truth", zorder=3)
        if panel.get("baseline") is not None:
            b = panel["baseline"]
            ax.plot(-np.r_[0, b[:, 1]], np.r_[0, b[:, 0]], ":", color="tab:gray", label="const. velocity")
        plan = panel["plan"]
        ax.plot(
            -np.r_[0, plan[:, 1]],
            np.r_[0, plan[:, 0]],
            "o-",
            color="tab:green",
            ms=3,
            label="plan",
            zorder=4,
        )
        ax.add_patch(plt.Rectangle((-0.95, -1.8), 1.9, 4.6, color="tab:blue", zorder=2))
        ax.set_xlim(-range_m / 2, range_m / 2)
        ax.set_ylim(-5, range_m)
        ax.set_aspect("equal")
        ax.set_title(panel["title"], fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6, loc="lower right")
    fig.supxlabel("lateral (m, left is left)", fontsize=8)
    fig.supylabel("forward (m)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
