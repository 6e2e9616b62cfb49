"""A geometric frontal face made of this photo's pixels (Generator v2's first stage; no learned part).

For one face: the 68 landmarks that ``runtime.tddfa`` reads (the hidden side included) and a mean 3D
face in the canonical 128 px frame (``face_geometry.npz``: the 68 points and a dense depth map,
made by ``python -m training.face_geometry``) give

1. a weak-perspective camera (2x4, least squares) that maps the mean 3D face onto this face;
2. a thin-plate spline over the 68 points' residuals: this face's own shape, not the mean's;
3. for each pixel (u, v) of the frontal output, the photo's position of the surface point there:
   the photo is sampled at its own resolution (area-averaged first where the face is much larger
   than the output), so visible pixels arrive sharp;
4. the hidden side from its mirror twin (u -> 128 - u), blended by how squarely each point faces the
   camera (surface normal . view direction, from the camera's rotation);
5. samples that fall outside the face in the photo (the convex hull of the landmarks with the
   forehead) or that neither side sees are holes, filled by OpenCV's inpainting from the face around
   them; outside the face (hair, ears, background) the photo where it is seen directly and a blur
   elsewhere, so no mirrored background structure or crop padding shows.

``GeometricFrontalizer(...).frontalize(rgb, landmarks, size)`` -> (size, size, 3) uint8 RGB.
"""
from __future__ import annotations

import cv2
import numpy as np

CANON = 128  # the frame of the mean face's coordinates
TAU, SHARPNESS = 0.15, 12.0  # visibility blend: sigmoid(SHARPNESS * (n . view - TAU))
HOLE_BELOW = 0.5  # confidence under which a pixel is inpainted
FOREHEAD = 0.35  # the face region reaches this x (brow-chin height) above the brows
TPS_SMOOTHING = 2.0


def tps_fit(points: np.ndarray, values: np.ndarray, smoothing: float = TPS_SMOOTHING) -> np.ndarray:
    """Thin-plate spline weights (n + 3, k) through ``values`` (n, k) at ``points`` (n, 2)."""
    n = len(points)
    d = np.linalg.norm(points[:, None] - points[None], axis=-1)
    a = np.zeros((n + 3, n + 3))
    a[:n, :n] = d ** 2 * np.log(d + 1e-9) + smoothing * np.eye(n)
    a[:n, n:] = np.c_[np.ones(n), points]
    a[n:, :n] = a[:n, n:].T
    b = np.zeros((n + 3, values.shape[1]))
    b[:n] = values
    return np.linalg.solve(a, b)


def tps_eval(points: np.ndarray, weights: np.ndarray, query: np.ndarray) -> np.ndarray:
    d = np.linalg.norm(query[:, None] - points[None], axis=-1)
    return (d ** 2 * np.log(d + 1e-9)) @ weights[:len(points)] + np.c_[np.ones(len(query)), query] @ weights[len(points):]


class GeometricFrontalizer:
    def __init__(self, path: str | None = None):
        from .assets import asset

        with np.load(path or asset("face_geometry.npz")) as z:
            self.shape68 = z["shape68"].astype(np.float64)  # (68, 3): x, y, depth (towards the camera)
            self.depth = z["depth"].astype(np.float32)  # (128, 128) at pixel centres
        self._masks: dict[int, np.ndarray] = {}  # face_mask per output size: the same for every face

    def face_mask(self, size: int) -> np.ndarray:
        """Soft (size, size) mask of the face in the frontal frame: jaw contour + lifted brows."""
        if size not in self._masks:
            self._masks[size] = self._face_mask(size)
        return self._masks[size]

    def _face_mask(self, size: int) -> np.ndarray:
        s = self.shape68[:, :2]
        brows = s[17:27].copy()
        brows[:, 1] -= FOREHEAD * (s[8, 1] - brows[:, 1].min())
        hull = cv2.convexHull(np.r_[s[:17], brows[::-1]].astype(np.float32) * size / CANON)
        m = np.zeros((size, size), np.float32)
        cv2.fillConvexPoly(m, hull[:, 0].astype(np.int32), 1.0)
        return cv2.GaussianBlur(m, (0, 0), size / 64)

    def sample_map(self, landmarks: np.ndarray, size: int):
        """(photo positions (size, size, 2) of the frontal pixels, visibility (size, size), camera (2, 4))."""
        x = np.c_[self.shape68, np.ones(68)]
        cam = np.linalg.lstsq(x, landmarks, rcond=None)[0].T
        g = (np.arange(size) + 0.5) * CANON / size
        u, v = np.meshgrid(g, g)
        z = cv2.resize(self.depth, (size, size), interpolation=cv2.INTER_LINEAR)
        pos = np.stack([u, v, z, np.ones_like(u)], -1) @ cam.T
        w = tps_fit(self.shape68[:, :2], landmarks - x @ cam.T)
        pos += tps_eval(self.shape68[:, :2], w, np.c_[u.ravel(), v.ravel()]).reshape(size, size, 2)
        r1, r2 = cam[0, :3] / np.linalg.norm(cam[0, :3]), cam[1, :3] / np.linalg.norm(cam[1, :3])
        view = np.cross(r1, r2)  # the frontal frame's direction towards this camera
        k = size / CANON
        n = np.stack([-np.gradient(z, axis=1) / k, -np.gradient(z, axis=0) / k, np.ones_like(z)], -1)
        vis = (n / np.linalg.norm(n, axis=-1, keepdims=True)) @ view
        return pos, vis, cam

    def face_region(self, landmarks: np.ndarray, cam: np.ndarray):
        """(mask, offset): the photo's face region (hull of the landmarks and the lifted brows), eroded."""
        up = -cam[:, 1] * CANON  # the frontal frame's "up" in the photo, per canonical crop height
        brows = landmarks[17:27] + FOREHEAD * (self.shape68[8, 1] - self.shape68[17:27, 1].min()) / CANON * up
        pts = np.r_[landmarks, brows].astype(np.float32)
        lo = np.floor(pts.min(0)) - 4
        hi = np.ceil(pts.max(0)) + 4
        m = np.zeros((int(hi[1] - lo[1]), int(hi[0] - lo[0])), np.uint8)
        cv2.fillConvexPoly(m, cv2.convexHull(pts - lo)[:, 0].astype(np.int32), 1)
        side = np.linalg.norm(cam[0, :2]) * CANON
        return cv2.erode(m, np.ones((3, 3), np.uint8), iterations=max(1, int(side / 100))), lo

    def frontalize(self, rgb: np.ndarray, landmarks: np.ndarray, size: int = 128) -> np.ndarray:
        landmarks = np.asarray(landmarks, np.float64)
        pos, vis, cam = self.sample_map(landmarks, size)
        src, f = rgb, 1.0
        scale = np.linalg.norm(cam[0, :2]) * CANON / size  # photo pixels per output pixel
        if scale > 1.5:  # shrink first so a large face is averaged, not aliased
            f = 1.0 / scale
            src = cv2.resize(rgb, (max(1, round(rgb.shape[1] * f)), max(1, round(rgb.shape[0] * f))),
                             interpolation=cv2.INTER_AREA)
        p = (pos * f).astype(np.float32)
        seen = cv2.remap(src, p[..., 0], p[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
        region, lo = self.face_region(landmarks, cam)
        inside = cv2.remap(region.astype(np.float32), (pos[..., 0] - lo[0]).astype(np.float32),
                           (pos[..., 1] - lo[1]).astype(np.float32), cv2.INTER_LINEAR, borderValue=0)
        mask = self.face_mask(size)
        inside = np.where(mask > 0.05, inside, 1.0)  # outside the face the surround is blurred anyway
        facing = 1 / (1 + np.exp(-SHARPNESS * (vis - TAU)))
        wa = inside * facing
        wb = wa[:, ::-1]  # the mirror twin's weight
        wb2 = wb * (1 - wa)
        out = (seen * wa[..., None] + seen[:, ::-1] * wb2[..., None]) / (wa + wb2 + 1e-6)[..., None]
        out = np.clip(out, 0, 255).astype(np.uint8)
        hole = ((np.maximum(wa, wb) < HOLE_BELOW) & (mask > 0.05)).astype(np.uint8)
        if hole.any():
            out = cv2.inpaint(out, hole, size / 32, cv2.INPAINT_TELEA)
        # outside the face, keep what the photo shows where it is seen directly (a near-frontal photo's
        # own hair and ears), blur the rest (the mirrored or unseen surround of a turned head)
        keep = np.maximum(mask, facing * (1 - wb2 / (wa + wb2 + 1e-6)))
        keep = cv2.GaussianBlur(keep.astype(np.float32), (0, 0), size / 64)[..., None]
        surround = cv2.GaussianBlur(out, (0, 0), size / 16).astype(np.float32)
        return np.clip(out * keep + surround * (1 - keep), 0, 255).astype(np.uint8)
