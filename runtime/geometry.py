"""A geometric frontal face made of this photo's pixels (Generator v2's geometric stage; no learned part).

The output is framed like the user's canonical crop (``runtime.pose.crop`` of the same square), and
the face in it is this face turned to frontal: a frontal photo comes back as its own crop.

For one face, from the 68 landmarks that ``runtime.tddfa`` reads (hidden side included) and a mean 3D
face in the canonical 128 px frame (``face_geometry.npz``: the 68 points and a dense depth map, made by
``python -m training.face_geometry``):

1. a scaled-orthographic camera [sR | t] of the mean face onto the landmarks, in the output frame
   (a face turned past 15-30 degrees is fitted again to the mean face at 0.8 of its depth: geo10);
2. this face's own shape: each landmark's residual taken back into 3D along the camera's image
   plane (what the photo shows of the shape, nothing more: a profile changes depth, not width) and
   spread over the face by a thin-plate spline;
3. the frontal camera: the same camera with the yaw taken out (pitch and roll kept), and a
   similarity that keeps the eye and mouth midpoints where the photo has them, so at yaw 0 the two
   cameras are one and every output pixel samples the photo where the crop does;
4. for each output pixel, the surface point there (a fixed-point inverse of the frontal camera),
   then the photo at that point's position, sampled at the photo's own resolution;
5. the hidden side from its mirror twin: where the twin is seen squarely and the point itself is
   not (or is occluded, by a z-buffer of the surface), blurred into a soft seam; nothing is
   mirrored below ``GATE_YAW`` so a near-frontal face keeps its asymmetry;
6. where neither side is usable inside the face, OpenCV's inpainting; outside the face, the same
   warp of the photo, left sharp (geo7: blurring what was not seen directly made the pose readers
   read fewer outputs as frontal and did not help identity; see models/GENERATOR_V2.md).

``GeometricFrontalizer().frontalize(rgb, landmarks, square, size)`` -> (size, size, 3) uint8 RGB.
``GeometryEngine`` (``pipeline.load_generator("geometry")``, the default of the CLI, API and camera)
puts it with ``runtime.tddfa`` behind the generators' interface.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import cv2
import numpy as np

from .engines import Engine
from .errors import ModelError
from .pose import CROP_RULE, apply, box_affine

CANON = 128  # the frame of the mean face's coordinates
TPS_SMOOTHING = 2.0
DEAD_ZONE = 4.0  # degrees of yaw left unturned: 3DDFA reads frontal photos within about this
# ... only up to 15 degrees of yaw, gone by 30 (geo9): a turned face left 4 degrees short read as turned
# (multipie30 training ids 030-043: within 10 degrees of frontal by 3DDFA_V2 at 75/90: 59/36 -> 77/93 %,
# pose network at 60: 52 -> 70 %; faceres distance to the true frontal +0.000 to +0.006)
DEAD_ZONE_FADE = (15.0, 30.0)
# The mean face's depth (its 68 points and the dense map, about the eyes' plane) is used at DEPTH_SCALE
# for faces turned DEPTH_SCALE_RAMP[1] degrees or more, in full up to DEPTH_SCALE_RAMP[0] degrees, in
# DEPTH_SCALE_STEPS steps between (the yaw from a first fit at full depth). Chosen on multipie30
# training ids 030-043 (geo10, models/GENERATOR_V2.md): at 0.8, 3DDFA_V2 reads 98-100 % of the outputs
# at 45-90 deg within 10 deg of frontal (was 71-91 %) and faceres distance drops 0.004-0.016 at 30-90
# deg; at 0 and 15 deg the full depth keeps a frontal photo closest to itself (0.012 vs 0.018 at 0.8).
DEPTH_SCALE, DEPTH_SCALE_RAMP, DEPTH_SCALE_STEPS = 0.8, (15.0, 30.0), 20
DEPTH_FLOOR = -25.0  # the mean depth is clamped here beyond the face, so the inverse map does not fold
ITERS = 4  # fixed-point steps of the inverse map
VIS_MIN = 0.05  # a point seen this obliquely (normal . view) or less is not used directly
MIRROR_MARGIN = 0.3  # the twin replaces a point when it is seen this much more squarely
OCCLUSION_EPS = 9.0  # model units behind the z-buffer's front surface that still count as seen
# Mirroring and the face-region test come in from 22 to 28 degrees of yaw. Below, little is hidden and
# the photo's own pixels keep identity best (multipie30 training ids 030-043 at 15 deg, faceres
# distance to the true frontal 0.521 -> 0.457, raw photo 0.464; 30 deg and up unchanged); a slower
# ramp blends two different samples into ghost contours.
GATE_YAW, GATE_RAMP = 22.0, 6.0
REFINE_FROM, REFINE_RAMP = 60.0, 15.0  # a refiner (geometry+<file>) is blended in from 60 to 75 degrees of yaw
FOREHEAD = 0.35  # the face region reaches this x (brow-chin height) above the brows
# The spline is evaluated once on this lattice (model units) and read back bilinearly: it is smooth
# at this spacing (8 units: outputs on samples/ 42-66 dB from 4 units, except the garbage mouths of the
# profiles), and evaluating it per pixel cost ~90 % of the time; 4 units took a third more per face.
FIELD_LO, FIELD_STEP, FIELD_N = -64.0, 8.0, 33


def tps_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """r^2 log r between the rows of ``a`` (m, 2) and ``b`` (n, 2), from squared distances (no sqrt)."""
    d2 = np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T, 0.0)
    return 0.5 * d2 * np.log(d2 + 1e-18)


def tps_fit(points: np.ndarray, values: np.ndarray, smoothing: float = TPS_SMOOTHING) -> np.ndarray:
    """Thin-plate spline weights (n + 3, k) through ``values`` (n, k) at ``points`` (n, 2)."""
    n = len(points)
    a = np.zeros((n + 3, n + 3))
    a[:n, :n] = tps_kernel(points, points) + smoothing * np.eye(n)
    a[:n, n:] = np.c_[np.ones(n), points]
    a[n:, :n] = a[:n, n:].T
    b = np.zeros((n + 3, values.shape[1]))
    b[:n] = values
    return np.linalg.solve(a, b)


def tps_eval(points: np.ndarray, weights: np.ndarray, query: np.ndarray) -> np.ndarray:
    return tps_kernel(query, points) @ weights[:len(points)] + np.c_[np.ones(len(query)), query] @ weights[len(points):]


def ramp(x, width):
    return np.clip(x / width, 0.0, 1.0)


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 similarity taking the two points ``src`` onto ``dst``."""
    a = complex(*(dst[1] - dst[0])) / complex(*(src[1] - src[0]))
    m = np.array([[a.real, -a.imag], [a.imag, a.real]])
    return np.c_[m, dst[0] - m @ src[0]]


def remap(img: np.ndarray, xy: np.ndarray, offset: float = 0.0, **kw) -> np.ndarray:
    """``img`` sampled (bilinear) at positions ``xy`` (..., 2) - ``offset``."""
    m = np.asarray(xy, np.float32)
    m = np.ascontiguousarray(m - np.float32(offset) if offset else m)
    return cv2.remap(img, m[:, None] if m.ndim == 2 else m, None, cv2.INTER_LINEAR, **kw)


@dataclass
class MeanFace:
    """The mean face with its depth at one scale (``GeometricFrontalizer.mean``)."""
    scale: float
    shape68: np.ndarray  # (68, 3): x, y, depth (towards the camera)
    depth: np.ndarray  # (128, 128) float32 at pixel centres, floored at DEPTH_FLOOR (positions)
    normals: np.ndarray  # (128, 128, 3) float32, from the unfloored depth (visibility)
    grid_depth: np.ndarray  # the depth on the z-buffer's grid (model units 0..127)
    affine_pinv: np.ndarray  # (4, 68): the camera's least squares over [shape68 1]


@dataclass
class FaceFit:
    """A scaled-orthographic camera [s R[:2] | t] of this face's 3D shape onto its landmarks."""
    s: float
    R: np.ndarray  # (3, 3); row 2 is the view direction in model coordinates
    t: np.ndarray  # (2,)
    shape68: np.ndarray  # (68, 3): this face's landmarks in model coordinates
    field: np.ndarray  # (FIELD_N, FIELD_N, 3): its offset from the mean face, on the lattice
    yaw: float  # radians
    mean: MeanFace  # the mean face it was fitted with

    def cam(self, Y: np.ndarray, R: np.ndarray | None = None) -> np.ndarray:
        return self.s * Y @ (self.R if R is None else R)[:2].T + self.t


class GeometricFrontalizer:
    """``border``: what is sampled beyond the photo's edge. Black, like ``runtime.pose.crop``'s padding:
    a reflection (tried) puts mirrored copies of face parts at the crop's edges, and on held-out
    multipie30 the pose readers then read fewer outputs as frontal (3DDFA_V2 within 10 deg at 45-75:
    79/67/54 % -> 71/50/38 %). The refiner's training pairs use the reflection (training.rotate_render)."""

    def __init__(self, path: str | None = None, border: int = cv2.BORDER_CONSTANT):
        from .assets import asset

        self.border = border
        with np.load(path or asset("face_geometry.npz")) as z:
            self.shape68 = z["shape68"].astype(np.float64)  # (68, 3): x, y, depth (towards the camera), full depth
            self.depth_full = z["depth"].astype(np.float32)  # (128, 128) at pixel centres, unfloored
        self.gradient = np.gradient(self.depth_full)[::-1]  # (d/dx, d/dy): the normals at any depth scale
        self._means: dict[float, MeanFace] = {}
        self._masks: dict[int, np.ndarray] = {}
        # Per-face work that does not depend on the face, done once: the spline's solve over the mean
        # face's 68 points and its evaluation on the lattice (field = tps_lattice @ residuals); per
        # depth scale, in mean(): the camera's least squares and the mean surface on the z-buffer's grid.
        X2 = self.shape68[:, :2]
        gf = FIELD_LO + FIELD_STEP * np.arange(FIELD_N)
        lattice = np.stack(np.meshgrid(gf, gf), -1).reshape(-1, 2)
        self.tps_lattice = tps_eval(X2, tps_fit(X2, np.eye(len(X2))), lattice)  # (FIELD_N^2, 68)
        g = np.arange(CANON, dtype=np.float32)
        self.grid = np.stack(np.meshgrid(g, g), -1)
        self.grid_field_map = cv2.convertMaps(*((self.grid - FIELD_LO) / FIELD_STEP).transpose(2, 0, 1), cv2.CV_16SC2)
        self._pixels: dict[int, np.ndarray] = {}

    def mean(self, scale: float = 1.0) -> MeanFace:
        """The mean face with its depth times ``scale``. Positions use a floored depth (no folds),
        visibility the real one (the far side of the head turns away, so its surround comes from the
        near side)."""
        if scale not in self._means:
            k = np.float32(scale)
            depth = np.maximum(self.depth_full * k, np.float32(DEPTH_FLOOR))
            gx, gy = self.gradient
            normals = np.stack([-k * gx, -k * gy, np.ones_like(gx)], -1)
            normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
            shape68 = self.shape68 * [1.0, 1.0, scale]
            self._means[scale] = MeanFace(scale, shape68, depth, normals,
                                          remap(depth, self.grid, 0.5, borderMode=cv2.BORDER_REPLICATE),
                                          np.linalg.pinv(np.c_[shape68, np.ones(len(shape68))]))
        return self._means[scale]

    @staticmethod
    def depth_scale(yaw: float) -> float:
        """The depth scale for a face read at ``yaw`` (radians) at full depth (see DEPTH_SCALE)."""
        lo, hi = DEPTH_SCALE_RAMP
        step = np.rint(ramp(math.degrees(abs(yaw)) - lo, hi - lo) * DEPTH_SCALE_STEPS)
        return 1.0 - (1.0 - DEPTH_SCALE) * float(step) / DEPTH_SCALE_STEPS

    def face_mask(self, size: int = CANON) -> np.ndarray:
        """Soft (size, size) mask of the mean face in model coordinates: jaw contour + lifted brows."""
        if size not in self._masks:
            s = self.shape68[:, :2]
            brows = s[17:27].copy()
            brows[:, 1] -= FOREHEAD * (s[8, 1] - brows[:, 1].min())
            hull = cv2.convexHull(np.r_[s[:17], brows[::-1]].astype(np.float32) * size / CANON)
            m = np.zeros((size, size), np.float32)
            cv2.fillConvexPoly(m, hull[:, 0].astype(np.int32), 1.0)
            self._masks[size] = cv2.GaussianBlur(m, (0, 0), size / 64)
        return self._masks[size]

    def face_region(self, landmarks: np.ndarray, cam: np.ndarray):
        """(mask, offset): the photo's face region (hull of the landmarks and the lifted brows), eroded.
        ``cam``: the 2x4 camera from model coordinates to image pixels."""
        up = -cam[:, 1] * CANON  # the model's "up" in the photo, per canonical crop height
        brows = landmarks[17:27] + FOREHEAD * (self.shape68[8, 1] - self.shape68[17:27, 1].min()) / CANON * up
        pts = np.r_[landmarks, brows].astype(np.float32)
        lo = np.floor(pts.min(0)) - 4
        hi = np.ceil(pts.max(0)) + 4
        m = np.zeros((int(hi[1] - lo[1]), int(hi[0] - lo[0])), np.uint8)
        cv2.fillConvexPoly(m, cv2.convexHull(pts - lo)[:, 0].astype(np.int32), 1)
        side = np.linalg.norm(cam[0, :3]) * CANON
        return cv2.erode(m, np.ones((3, 3), np.uint8), iterations=max(1, int(side / 100))), lo

    def surface(self, xy: np.ndarray, field: np.ndarray, mean: MeanFace | None = None) -> np.ndarray:
        """3D points (..., 3) float32 of this face's surface over model positions ``xy`` (..., 2);
        ``mean``: the mean face it was fitted with (``fit.mean``; full depth when not given)."""
        xy = np.asarray(xy, np.float32)
        y = remap(field, (xy - FIELD_LO) * (1 / FIELD_STEP), borderMode=cv2.BORDER_REPLICATE)
        y[..., 0] += xy[..., 0]  # channel by channel: numpy is ~10x slower on a (..., 2) slice
        y[..., 1] += xy[..., 1]
        y[..., 2] += remap((mean or self.mean()).depth, xy, 0.5, borderMode=cv2.BORDER_REPLICATE)
        return y

    def fit(self, points: np.ndarray, depth_scale: float = 1.0) -> FaceFit:
        """The camera and this face's shape from its 68 landmarks ``points`` (68, 2) in any pixel frame,
        with the mean face's depth at ``depth_scale``."""
        mean = self.mean(depth_scale)
        X = mean.shape68
        L = np.asarray(points, np.float64)
        # 1. scaled-orthographic camera, fitted affine then made a scaled rotation
        P = (mean.affine_pinv @ L).T
        u, sv, vt = np.linalg.svd(P[:, :3], full_matrices=False)
        s, R2 = sv.mean(), u @ vt
        t = (L - s * X @ R2.T).mean(0)
        (a0, a1, a2), (b0, b1, b2) = R2
        R = np.r_[R2, [[a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0]]]  # row 2: the view direction
        # 2. this face's shape: residuals back along the image plane, spread by a thin-plate spline
        d68 = (L - (s * X @ R2.T + t)) @ R2 / s
        field = (self.tps_lattice @ d68).reshape(FIELD_N, FIELD_N, 3).astype(np.float32)
        v = R[2]
        return FaceFit(s, R, t, X + d68, field, math.atan2(-v[0], v[2]), mean)

    def frontalize(self, rgb: np.ndarray, landmarks: np.ndarray, square, size: int = 128,
                   info: dict | None = None) -> np.ndarray:
        """This face turned to frontal in the frame of ``runtime.pose.crop(rgb, square, size)``.
        ``info``, when given, receives ``landmarks68`` (where the output shows the 68 points) and
        ``face_mask`` (the mean face's soft mask in the output), for training pairs."""
        crop_aff = box_affine(*square, size=size)
        points = apply(crop_aff, np.asarray(landmarks, np.float64))
        fit = self.fit(points)
        k = self.depth_scale(fit.yaw)
        if k != 1.0:  # a turned face: fitted again with the shallower mean face
            fit = self.fit(points, k)
        s, R, t, Y68, yaw = fit.s, fit.R, fit.t, fit.shape68, fit.yaw
        R2, cam = R[:2], fit.cam

        def surface(xy):
            return self.surface(xy, fit.field, fit.mean)

        # 3. the frontal camera: R without its yaw about the model's vertical axis, then a similarity
        # that puts the eye and mouth midpoints back where the photo has them
        lo, hi = DEAD_ZONE_FADE
        dead = DEAD_ZONE * (1 - float(ramp(math.degrees(abs(yaw)) - lo, hi - lo)))
        turn = math.copysign(max(0.0, abs(yaw) - math.radians(dead)), yaw)
        c, sn = math.cos(turn), math.sin(turn)
        A2 = (R @ np.array([[c, 0, -sn], [0, 1, 0], [sn, 0, c]]))[:2]
        em = np.stack([(Y68[36:42].mean(0) + Y68[42:48].mean(0)) / 2, (Y68[48] + Y68[54]) / 2])
        S = similarity(s * em @ A2.T + t, cam(em))

        def frontal(Y):
            return apply(S, s * Y @ A2.T + t)

        # 4. the surface point under each output pixel: fixed-point inverse of the frontal camera
        # frontal(Y) = Y F^T + f0, so xy <- xy + (q - frontal(Y)) L^T with L = (F[:, :2])^-1 is
        # xy + qf - Y K^T with qf = (q - f0) L^T and K = L F (float32 from here: 128 px maps)
        F = S[:, :2] @ (s * A2)
        lin_inv = np.linalg.inv(F[:, :2])
        qf = ((self.pixels(size) - frontal(np.zeros(3))) @ lin_inv.T).astype(np.float32)
        K = (lin_inv @ F).T.astype(np.float32)
        xy = qf
        for _ in range(ITERS):
            xy = xy + qf - surface(xy) @ K
        twin = np.stack([CANON - xy[..., 0], xy[..., 1]], -1)
        ya, yb = surface(xy), surface(twin)

        # each surface point -> (its z-buffer cell, its position in the photo, its depth along the view):
        # one affine map from model coordinates
        inv = cv2.invertAffineTransform(crop_aff)
        cam_crop = np.c_[s * R2, t]
        cam_img = inv @ np.r_[cam_crop, [[0, 0, 0, 1]]]
        M = np.r_[cam_crop * (CANON / size), cam_img, np.r_[R[2], 0][None]]  # (5, 4)
        Mt, Mb = M[:, :3].T.astype(np.float32), M[:, 3].astype(np.float32)
        ta, tb = cv2.split(ya @ Mt + Mb), cv2.split(yb @ Mt + Mb)  # planes: zx, zy, px, py, z

        # visibility: the mean surface's normal . view direction, and a z-buffer for occlusion
        tg = (self.grid_surface(fit) @ Mt[:, [0, 1, 4]] + Mb[[0, 1, 4]]).reshape(-1, 3)
        zbuf = np.full(CANON * CANON, -1e9, np.float32)
        ij = np.rint(tg[:, :2]).astype(np.int32)
        ok = (ij[:, 0] >= 0) & (ij[:, 1] >= 0) & (ij[:, 0] < CANON) & (ij[:, 1] < CANON)
        # flat indices and float32 values: numpy's fast path of ufunc.at (40x the 2-D, float64 one)
        np.maximum.at(zbuf, ij[ok, 1] * CANON + ij[ok, 0], tg[ok, 2])
        zbuf = zbuf.reshape(CANON, CANON)
        zbuf = cv2.erode(cv2.dilate(zbuf, np.ones((3, 3), np.uint8)), np.ones((3, 3), np.uint8))  # close gaps
        facing = (fit.mean.normals @ R[2]).astype(np.float32)

        def seen(xy_, t_):
            vis = remap(facing, xy_, 0.5, borderMode=cv2.BORDER_REPLICATE)
            front = cv2.remap(zbuf, t_[0], t_[1], cv2.INTER_NEAREST, borderValue=-1e9)
            return np.where(t_[4] > front - OCCLUSION_EPS, vis, np.float32(-1.0))

        vis_a, vis_b = seen(xy, ta), seen(twin, tb)

        # 5. samples from the photo at its own resolution (the crop's shrink rule), and the face region
        pa, pb = ta[2:4], tb[2:4]  # (x, y) planes in the photo
        src, f = rgb, 1.0
        k = int(square[2] / (size * 1.5))
        if k >= 2:  # shrink first so a large face is averaged, not aliased
            src = cv2.resize(rgb, (max(1, rgb.shape[1] // k), max(1, rgb.shape[0] // k)), interpolation=cv2.INTER_AREA)
            f = src.shape[1] / rgb.shape[1]

        def sample(p):
            x, y = (p[0] * f, p[1] * f) if k >= 2 else p
            return cv2.remap(src, x, y, cv2.INTER_LINEAR, borderMode=self.border).astype(np.float32)

        sa, sb = sample(pa), sample(pb)
        region, lo = self.face_region(np.asarray(landmarks, np.float64), cam_img)
        region, lo = region.astype(np.float32), lo.astype(np.float32)
        h, wd = rgb.shape[:2]

        def inside(p):
            in_img = (p[0] >= 0) & (p[1] >= 0) & (p[0] <= wd) & (p[1] <= h)
            return in_img * cv2.remap(region, p[0] - lo[0], p[1] - lo[1], cv2.INTER_LINEAR, borderValue=0)

        mask = remap(self.face_mask(), xy, 0.5, borderValue=0)
        if info is not None:
            info.update(landmarks68=frontal(Y68), face_mask=mask)
        ia = np.where(mask > 0.05, inside(pa), np.float32(1.0))
        ib = np.where(mask > 0.05, inside(pb), np.float32(1.0))

        # the blend: the point itself unless its twin is seen much more squarely (a soft seam), both
        # only past GATE_YAW; the face-region test likewise, so a near-frontal photo passes through
        gate = np.float32(ramp(abs(math.degrees(yaw)) - GATE_YAW, GATE_RAMP))
        better = cv2.GaussianBlur(ramp(vis_b - vis_a - MIRROR_MARGIN, 0.2), (0, 0), size / 32)
        better *= gate
        wa = (1 - gate * (1 - ramp(vis_a - VIS_MIN, 0.1))) * (1 - gate * (1 - ia))
        wb = ib * ramp(vis_b - VIS_MIN, 0.1) * (1 - wa * (1 - better))
        wa = wa * (1 - wb)
        out = (sa * wa[..., None] + sb * wb[..., None]) / (wa + wb + 1e-6)[..., None]
        lost = (wa + wb) < 0.05
        out = np.clip(np.where(lost[..., None], sa, out), 0, 255).astype(np.uint8)
        hole = (lost & (mask > 0.05)).astype(np.uint8)
        if hole.any():  # 6. holes inside the face
            out = cv2.inpaint(out, hole, size / 32, cv2.INPAINT_TELEA)
        return out

    def pixels(self, size: int) -> np.ndarray:
        """(size, size, 2) output pixel centres, as OpenCV (and ``crop()``) place them."""
        if size not in self._pixels:
            g = np.arange(size, dtype=np.float64)
            self._pixels[size] = np.stack(np.meshgrid(g, g), -1)
        return self._pixels[size]

    def grid_surface(self, fit: FaceFit) -> np.ndarray:
        """``surface(self.grid, fit.field, fit.mean)``, with the parts that do not depend on the face precomputed."""
        y = cv2.remap(fit.field, *self.grid_field_map, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        y[..., 0] += self.grid[..., 0]
        y[..., 1] += self.grid[..., 1]
        y[..., 2] += fit.mean.grid_depth
        return y


class GeometryEngine(Engine):
    """The geometric generator behind ``runtime.engines.Engine`` (``pipeline.load_generator("geometry")``):
    ``frontalize(rgb, faces)`` reads each face's 68 landmarks and head pose with 3DDFA_V2
    (``runtime.tddfa``, from the face's canonical square) and turns the face to frontal from the
    photo's own pixels. A face's ``yaw`` becomes
    3DDFA_V2's reading (it holds on three-quarter photos; the pose network's is kept in
    ``face.extra["posenet_yaw"]``). There is no crop-in, frontal-out ``run``: it needs the photo."""

    name = "geometry"
    needs_photo = True

    def __init__(self, threads: int = 2, size: int = 128, refiner: Engine | None = None):
        from .tddfa import Tddfa

        name = "geometry" + (f"+{os.path.basename(refiner.path)}" if refiner else "")
        super().__init__(name, {"model": "geometry", "input_size": size, "crop_rule": CROP_RULE}, threads)
        if refiner is not None and (refiner.meta.get("model") != "refiner" or refiner.size != size):
            raise ModelError(f"{refiner.path}: not a {size} px refiner (its metadata says model "
                             f"'{refiner.meta.get('model')}', {refiner.size} px)")
        self.refiner = refiner
        self.tddfa = Tddfa(threads=threads)
        self._last = None  # (landmarks, square) of the last one-face call (the camera loop's previous frame)
        self.geometry = GeometricFrontalizer()
        self.providers = list(self.tddfa.session.get_providers())

    def __repr__(self) -> str:
        return f"<GeometryEngine tddfa_mb05.onnx + face_geometry.npz{f' + {self.refiner!r}' if self.refiner else ''} " \
               f"{self.providers}>"

    def frontalize(self, rgb: np.ndarray | None, faces: list) -> list[np.ndarray]:
        if not faces:
            return []
        if rgb is None:
            raise ValueError("the geometric generator samples the photo: pass the RGB image the faces came from")
        out = []
        previous = [self._video_landmarks(faces)]
        poses = self.tddfa.read(rgb, [f.square for f in faces], previous if len(faces) == 1 else None)
        self._last = (poses[0].landmarks, faces[0].square) if len(faces) == 1 else None
        for face, pose in zip(faces, poses):
            face.extra.setdefault("posenet_yaw", face.yaw)
            face.yaw = pose.yaw
            out.append(self.geometry.frontalize(rgb, pose.landmarks, face.square, self.size))
        if self.refiner is not None:
            # the refiner only where the geometry fails: chosen on the refiner's validation people, it
            # blurs and moves identity away below ~60 degrees and brings it closer at 75-90
            w = [float(ramp(abs(f.yaw) - REFINE_FROM, REFINE_RAMP)) for f in faces]
            todo = [i for i, x in enumerate(w) if x > 0]
            if todo:
                refined = self.refiner.run(np.stack([out[i] for i in todo]))
                for i, r in zip(todo, refined):
                    out[i] = np.clip(out[i] + w[i] * (r.astype(np.float32) - out[i]) + 0.5, 0, 255).astype(np.uint8)
        return out

    def _video_landmarks(self, faces: list):
        """When ``faces`` is one face tracked from the previous frame (the camera loop's
        runtime.camera.FaceTracker: detector "track"), that frame's landmarks moved and scaled as the
        tracker's square moved: 3DDFA_V2 then reads the face in one pass instead of two."""
        if len(faces) != 1 or faces[0].detector != "track" or self._last is None:
            return None
        landmarks, (px, py, pside, _) = self._last
        cx, cy, side, _ = faces[0].square
        return (landmarks - (px, py)) * (side / pside) + (cx, cy)

    def run(self, images, yaw=None) -> np.ndarray:
        raise ModelError("the geometric generator needs the photo, not a crop: use frontalize(rgb, faces)")
