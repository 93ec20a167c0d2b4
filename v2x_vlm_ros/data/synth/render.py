"""Drawing the synthetic world with OpenCV: sky, ground polygons, shaded boxes, and an
object-id mask for occlusion truth.

- Ground layers (asphalt, sidewalks, markings) are flat polygons at z = 0 drawn in layer
  order, clipped against the near plane first.
- Objects (``Thing``: buildings, trees, poles, agents) are stacks of upright boxes
  (``Solid``). They are drawn far-to-near (painter's algorithm). The order is exact for
  upright boxes with disjoint footprints: for two footprints a separating line exists, and
  the one on the camera's side of it can hide the other but not the reverse. Within a box
  only the faces turned to the camera are drawn (a box's front faces never overlap).
- The id mask is drawn with the same polygons and order at a fixed resolution; the visible
  fraction of an object is its pixels in the mask over its pixels when drawn alone.
- A camera that never moves (the roadside one) renders the ground and static objects once;
  each frame then redraws only the objects from the first moving one on in the order,
  which gives exactly the pixels of a full redraw.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from v2x_vlm_ros.data.synth.camera import NEAR, Camera, clip_near, normalise, to_pixels
from v2x_vlm_ros.geometry import box_corners_xy

SHIFT = 3  # sub-pixel bits for cv2 drawing


@dataclass(frozen=True)
class Solid:
    """Upright box: footprint centre (x, y), heading ``yaw``, ``length`` along it, ``width``
    across, from height ``z0`` to ``z1`` (local frame, ground at z = 0)."""

    x: float
    y: float
    yaw: float
    length: float
    width: float
    z0: float
    z1: float
    side: tuple  # BGR of the side faces
    top: tuple | None = None  # BGR of the top face (default: ``side``)
    windows: tuple | None = None  # (floor height, window height, BGR): bands on the sides


@dataclass
class Thing:
    """One object for the painter: ``solids`` drawn in order; ``footprint`` (4, 2) is a
    convex outline containing all of them; ``ident`` > 0 is its value in id masks."""

    ident: int
    solids: list
    footprint: np.ndarray
    height: float
    static: bool = True
    kind: str = "object"


@dataclass(frozen=True)
class Lighting:
    name: str  # "clear", "hazy", "overcast" or "low_sun" (descriptions use it)
    sun: tuple  # unit vector towards the sun (local frame)
    ambient: float  # share of light that does not depend on the face direction
    sky_top: tuple  # BGR at the top of the sky
    sky_horizon: tuple  # BGR at the horizon
    far_ground: tuple  # BGR of the ground beyond the modelled area


@dataclass
class GroundLayer:
    color: tuple
    polygons: list  # (N, 2) arrays, local frame
    antialias: bool = False
    _vertices: np.ndarray | None = field(default=None, repr=False)
    _starts: np.ndarray | None = field(default=None, repr=False)

    def packed(self):
        if self._vertices is None:
            pts = [np.column_stack([p, np.zeros(len(p))]) for p in self.polygons]
            self._vertices = np.vstack(pts)
            self._starts = np.cumsum([0] + [len(p) for p in self.polygons[:-1]])
        return self._vertices, self._starts


def shade(color, normal, lighting: Lighting) -> tuple:
    lit = lighting.ambient + (1.0 - lighting.ambient) * max(0.0, float(np.dot(normal, lighting.sun)))
    return tuple(int(min(255, c * (0.35 + 0.85 * lit))) for c in color)


def solid_faces(solid: Solid, eye: np.ndarray, lighting: Lighting):
    """[(polygon (4, 3) local, BGR)] of the faces turned to ``eye``, windows after their face."""
    fp = box_corners_xy(solid.x, solid.y, solid.yaw, solid.length, solid.width)
    out = []
    for i in range(4):
        a, b = fp[i], fp[(i + 1) % 4]
        n = np.array([b[1] - a[1], a[0] - b[0], 0.0])
        n /= np.linalg.norm(n)
        mid = 0.5 * (a + b)
        if (eye[0] - mid[0]) * n[0] + (eye[1] - mid[1]) * n[1] <= 0.0:
            continue
        color = shade(solid.side, n, lighting)
        out.append((np.array([[a[0], a[1], solid.z0], [b[0], b[1], solid.z0],
                              [b[0], b[1], solid.z1], [a[0], a[1], solid.z1]]), color))
        if solid.windows is not None:
            floor, win, wcolor = solid.windows
            edge = b - a
            length = float(np.linalg.norm(edge))
            inset = min(0.8, 0.2 * length) / max(length, 1e-6)
            p, q = a + inset * edge, b - inset * edge
            wc = shade(wcolor, n, lighting)
            z = solid.z0 + 0.5 * floor + 0.8
            while z + win < solid.z1 - 0.4:
                out.append((np.array([[p[0], p[1], z], [q[0], q[1], z], [q[0], q[1], z + win],
                                      [p[0], p[1], z + win]]), wc))
                z += floor
    if eye[2] > solid.z1:
        top = np.column_stack([fp, np.full(4, solid.z1)])
        out.append((top, shade(solid.top or solid.side, np.array([0.0, 0.0, 1.0]), lighting)))
    elif eye[2] < solid.z0:
        bottom = np.column_stack([fp[::-1], np.full(4, solid.z0)])
        out.append((bottom, shade(solid.side, np.array([0.0, 0.0, -1.0]), lighting)))
    return out


def _occludes_first(a: np.ndarray, b: np.ndarray, eye_xy: np.ndarray) -> int:
    """Painter relation of footprints a, b seen from ``eye_xy``: -1 draw a first (b may
    hide a), +1 draw b first, 0 no constraint, None no separating axis (overlap)."""
    for poly in (a, b):
        for i in range(len(poly)):
            e = poly[(i + 1) % len(poly)] - poly[i]
            axis = np.array([-e[1], e[0]])
            pa, pb, c = a @ axis, b @ axis, float(eye_xy @ axis)
            if pa.max() <= pb.min():
                lo, hi, a_low = pa.max(), pb.min(), True
            elif pb.max() <= pa.min():
                lo, hi, a_low = pb.max(), pa.min(), False
            else:
                continue
            if lo <= c <= hi:
                return 0
            eye_low = c < lo
            # the object on the eye's side of the gap is drawn last
            return 1 if eye_low == a_low else -1
    return None


class ViewRenderer:
    """Renders one camera's images and id masks of a scene."""

    def __init__(self, camera: Camera, mask_size, ground: list, statics: list, lighting: Lighting,
                 static_camera: bool = False):
        self.mask_size = (int(mask_size[0]), int(round(mask_size[0] * camera.size[1] / camera.size[0])))
        self.ground, self.statics, self.lighting = ground, statics, lighting
        self.static_camera = static_camera
        self._backgrounds: dict = {}
        self._relations: dict = {}
        self._cache = None
        self.set_pose(camera.local_from_camera, camera)

    def set_pose(self, local_from_camera: np.ndarray, camera: Camera | None = None) -> None:
        """Move the (non-static) camera; the sky is reused while its tilt is unchanged."""
        if camera is None:
            camera = Camera(self.cam.hfov_deg, self.cam.size, local_from_camera)
        self.cam = camera
        key = tuple(np.round(camera.camera_from_local[:3, 2], 6))
        if key not in self._backgrounds:
            self._backgrounds[key] = self._sky_and_far_ground()
        self._background = self._backgrounds[key]

    # -- backgrounds --------------------------------------------------------------------

    def _sky_and_far_ground(self) -> np.ndarray:
        w, h = self.cam.size
        a, b, c = self.cam.horizon()
        xs = (np.arange(w) - 0.5 * w) / self.cam.K[0, 0]
        ys = (np.arange(h) - 0.5 * h) / self.cam.K[1, 1]
        below = (a * xs[None, :] + b * ys[:, None] + c) > 0.0
        lt = self.lighting
        # sky colour by elevation above the horizon
        up = self.cam.camera_from_local[:3, :3] @ np.array([0.0, 0.0, 1.0])
        rays = np.stack(np.broadcast_arrays(xs[None, :], ys[:, None], np.ones((1, 1))), axis=-1)
        elev = (rays @ up) / np.linalg.norm(rays, axis=-1)
        mix = np.clip(elev / 0.5, 0.0, 1.0)[..., None] ** 0.7
        sky = (1.0 - mix) * np.array(lt.sky_horizon) + mix * np.array(lt.sky_top)
        img = np.where(below[..., None], np.array(lt.far_ground, dtype=np.float64), sky)
        return np.clip(img, 0, 255).astype(np.uint8)

    def _draw_ground(self, img: np.ndarray) -> None:
        size = self.cam.size
        hx, hy = self.cam.half_x * 1.05, self.cam.half_y * 1.05
        for layer in self.ground:
            verts, starts = layer.packed()
            pc = self.cam.to_camera(verts)
            z = pc[:, 2]
            zmin = np.minimum.reduceat(z, starts)
            zmax = np.maximum.reduceat(z, starts)
            zs = np.maximum(z, NEAR)
            xn, yn = pc[:, 0] / zs, pc[:, 1] / zs
            out_view = ((np.maximum.reduceat(xn, starts) < -hx) | (np.minimum.reduceat(xn, starts) > hx)
                        | (np.maximum.reduceat(yn, starts) < -hy) | (np.minimum.reduceat(yn, starts) > hy))
            px = to_pixels(np.column_stack([xn, yn]), size, self.cam.hfov_deg, SHIFT)
            ends = np.append(starts[1:], len(verts))
            polys = []
            for i, (s, e) in enumerate(zip(starts, ends)):
                if zmax[i] < NEAR:
                    continue
                if zmin[i] >= NEAR:
                    if not out_view[i]:
                        polys.append(px[s:e])
                    continue
                clipped = clip_near(pc[s:e])
                if clipped is not None:
                    polys.append(to_pixels(normalise(clipped), size, self.cam.hfov_deg, SHIFT))
            if polys:
                cv2.fillPoly(img, polys, layer.color, cv2.LINE_AA if layer.antialias else cv2.LINE_8,
                             SHIFT)

    # -- objects ------------------------------------------------------------------------

    def _view_box(self, thing: Thing):
        """Normalised image bbox (x0, y0, x1, y1) of a thing, or None when out of view."""
        pts = np.vstack([np.column_stack([thing.footprint, np.zeros(4)]),
                         np.column_stack([thing.footprint, np.full(4, thing.height)])])
        pc = self.cam.to_camera(pts)
        if np.all(pc[:, 2] < NEAR):
            return None
        if np.any(pc[:, 2] < NEAR):
            return (-math.inf, -math.inf, math.inf, math.inf)
        n = normalise(pc)
        x0, y0 = n.min(axis=0)
        x1, y1 = n.max(axis=0)
        if x1 < -self.cam.half_x or x0 > self.cam.half_x or y1 < -self.cam.half_y or y0 > self.cam.half_y:
            return None
        return (x0, y0, x1, y1)

    def _relation(self, a: Thing, b: Thing) -> int:
        key = (a.ident, b.ident)
        cacheable = self.static_camera and a.static and b.static
        if cacheable and key in self._relations:
            return self._relations[key]
        rel = _occludes_first(a.footprint, b.footprint, self.cam.position[:2])
        if rel is None:  # overlapping footprints: farther centre first
            da = np.linalg.norm(a.footprint.mean(axis=0) - self.cam.position[:2])
            db = np.linalg.norm(b.footprint.mean(axis=0) - self.cam.position[:2])
            rel = -1 if da >= db else 1
        if cacheable:
            self._relations[key] = rel
        return rel

    def paint_order(self, things: list) -> list:
        """The things in view, in drawing order (far to near)."""
        boxes, visible = [], []
        for t in things:
            box = self._view_box(t)
            if box is not None:
                visible.append(t)
                boxes.append(box)
        n = len(visible)
        if n == 0:
            return []
        bb = np.array(boxes)
        overlap = ((bb[:, None, 0] <= bb[None, :, 2]) & (bb[None, :, 0] <= bb[:, None, 2])
                   & (bb[:, None, 1] <= bb[None, :, 3]) & (bb[None, :, 1] <= bb[:, None, 3]))
        before = [[] for _ in range(n)]  # before[j]: things drawn before j
        indegree = [0] * n
        for i, j in zip(*np.nonzero(np.triu(overlap, 1))):
            rel = self._relation(visible[i], visible[j])
            if rel == -1:
                before[j].append(i)
                indegree[j] += 1
            elif rel == 1:
                before[i].append(j)
                indegree[i] += 1
        after = [[] for _ in range(n)]
        for j in range(n):
            for i in before[j]:
                after[i].append(j)
        eye = self.cam.position[:2]
        dist = [float(np.linalg.norm(t.footprint.mean(axis=0) - eye)) for t in visible]
        heap = [(-dist[i], visible[i].ident, i) for i in range(n) if indegree[i] == 0]
        heapq.heapify(heap)
        order, done = [], [False] * n
        while len(order) < n:
            if not heap:  # a cycle (should not happen): take the farthest remaining
                i = max((k for k in range(n) if not done[k]), key=lambda k: dist[k])
                indegree[i] = 0
                heap.append((-dist[i], visible[i].ident, i))
            _, _, i = heapq.heappop(heap)
            if done[i]:
                continue
            done[i] = True
            order.append(visible[i])
            for j in after[i]:
                indegree[j] -= 1
                if indegree[j] == 0 and not done[j]:
                    heapq.heappush(heap, (-dist[j], visible[j].ident, j))
        return order

    def _thing_polygons(self, thing: Thing):
        """[(normalised polygon, BGR)] of a thing's visible faces, in drawing order."""
        out = []
        eye = self.cam.position
        for solid in thing.solids:
            for poly, color in solid_faces(solid, eye, self.lighting):
                clipped = clip_near(self.cam.to_camera(poly))
                if clipped is not None:
                    out.append((normalise(clipped), color))
        return out

    def _pixels(self, polys, size) -> list:
        """Integer sub-pixel polygons at image ``size`` (one conversion for all faces)."""
        if not polys:
            return []
        pts = to_pixels(np.concatenate([n for n, _ in polys]), size, self.cam.hfov_deg, SHIFT)
        return np.split(pts, np.cumsum([len(n) for n, _ in polys])[:-1])

    def _draw(self, img, mask, polys, ident):
        if img is not None:
            for q, (_, color) in zip(self._pixels(polys, self.cam.size), polys):
                cv2.fillConvexPoly(img, q, color, cv2.LINE_8, SHIFT)
        if mask is not None:
            for q in self._pixels(polys, self.mask_size):
                cv2.fillConvexPoly(mask, q, int(ident), cv2.LINE_8, SHIFT)

    # -- frames -------------------------------------------------------------------------

    def _static_frame(self, with_image: bool):
        img = self._background.copy() if with_image else None
        if img is not None:
            self._draw_ground(img)
        mask = np.zeros(self.mask_size[::-1], np.uint16)
        for thing in self.paint_order(self.statics):
            self._draw(img, mask, self._thing_polygons(thing), thing.ident)
        return img, mask

    def render(self, dynamic: list, with_image: bool = True, visibility_of=None):
        """(image or None, id mask, {ident: (visible pixels, pixels if alone)}) for the
        static scene plus ``dynamic`` things; visibility is measured for ``visibility_of``
        (default: every dynamic thing)."""
        order = self.paint_order(self.statics + list(dynamic))
        if self.static_camera:
            if self._cache is None or (with_image and self._cache[0] is None):
                self._cache = self._static_frame(with_image=True)
            first = next((k for k, t in enumerate(order) if not t.static), len(order))
            img = self._cache[0].copy() if with_image else None
            mask = self._cache[1].copy()
            todo = order[first:]
        else:
            img = self._background.copy() if with_image else None
            if img is not None:
                self._draw_ground(img)
            mask = np.zeros(self.mask_size[::-1], np.uint16)
            todo = order
        polys = {}
        for thing in todo:
            polys[thing.ident] = self._thing_polygons(thing)
            self._draw(img, mask, polys[thing.ident], thing.ident)
        wanted = [t for t in (visibility_of if visibility_of is not None else dynamic)]
        return img, mask, self.visibility(mask, wanted, polys)

    def visibility(self, mask, things, polys=None) -> dict:
        """{ident: (pixels of the thing in ``mask``, pixels it would cover alone)}."""
        polys = polys or {}
        mw, mh = self.mask_size
        out = {}
        for thing in things:
            p = polys.get(thing.ident)
            if p is None:
                p = self._thing_polygons(thing) if self._view_box(thing) is not None else []
            pix = self._pixels(p, self.mask_size)
            if not pix:
                out[thing.ident] = (0, 0)
                continue
            allp = np.vstack(pix) >> SHIFT
            x0, y0 = np.maximum(allp.min(axis=0) - 1, 0)
            x1, y1 = np.minimum(allp.max(axis=0) + 2, (mw, mh))
            if x1 <= x0 or y1 <= y0:
                out[thing.ident] = (0, 0)
                continue
            roi = np.zeros((y1 - y0, x1 - x0), np.uint8)
            offset = np.array([x0, y0], np.int32) << SHIFT
            for q in pix:
                cv2.fillConvexPoly(roi, q - offset, 1, cv2.LINE_8, SHIFT)
            alone = int(np.count_nonzero(roi))
            visible = int(np.count_nonzero((mask[y0:y1, x0:x1] == thing.ident) & (roi > 0)))
            out[thing.ident] = (visible, alone)
        return out
