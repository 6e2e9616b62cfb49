"""Where the geometric frontal's distance at small yaw comes from (issue 22, GENERATOR_V2.md "The 0-degree gap").

``python -m benchmarks.geo_gap 0,15,30`` (needs ``make tddfa`` and ../shared/data/multipie30): on
multipie30 044-049 (held out), faceres distance of variants of ``runtime.geometry``'s output to the
same instant's frontal crop, per |yaw|. Variants: the stage as shipped (``geo``); without inpainting,
without the blurred surround, without the face-region test, without all three (``none``); the spline
made stiff (nearly affine); the output re-framed so the pose network's E and M land on the canonical
spots (``geo_em``) or mapped back onto the person's own 68-point layout (``geo_affback``); and two plain
crops of the photo, no warp: framed on 3DDFA's E and M (``em3ddfa``) and on a similarity of its 68
points to the mean face (``sim68``). Research-only faces: the rows it saves go to /tmp.
"""
import os
import sys

import cv2
import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
os.chdir(ROOT)
from benchmarks.frontal_eval import largest_crop, probes, read_rgb  # noqa: E402
from runtime.pipeline import Frontalizer  # noqa: E402
from runtime.geometry import GeometricFrontalizer  # noqa: E402
import runtime.geometry as G  # noqa: E402
from runtime.tddfa import Tddfa  # noqa: E402
from training.judges import load_judge  # noqa: E402
fr = Frontalizer('runtime/assets/frontalizer.onnx', threads=2)
td = Tddfa('artifacts/tddfa_mb05.onnx', threads=2)
geo = GeometricFrontalizer()
J = load_judge('faceres')
yaws = [int(a) for a in sys.argv[1].split(',')] if len(sys.argv) > 1 else [0]
items = [it for it in probes(os.path.join(ROOT, '..', 'shared', 'data'), ['multipie30']) if abs(it['yaw']) in yaws]
res = {}


def fz(self, rgb, landmarks, size=128, inpaint=True, surround=True, inside_on=True):
    landmarks = np.asarray(landmarks, np.float64)
    pos, vis, cam = self.sample_map(landmarks, size)
    src, f = rgb, 1.0
    scale = np.linalg.norm(cam[0, :2]) * G.CANON / size
    if scale > 1.5:
        f = 1.0 / scale
        src = cv2.resize(rgb, (max(1, round(rgb.shape[1] * f)), max(1, round(rgb.shape[0] * f))), interpolation=cv2.INTER_AREA)
    p = (pos * f).astype(np.float32)
    seen = cv2.remap(src, p[..., 0], p[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
    region, lo = self.face_region(landmarks, cam)
    inside = cv2.remap(region.astype(np.float32), (pos[..., 0] - lo[0]).astype(np.float32), (pos[..., 1] - lo[1]).astype(np.float32), cv2.INTER_LINEAR, borderValue=0)
    mask = self.face_mask(size)
    inside = np.where(mask > 0.05, inside, 1.0)
    if not inside_on: inside = np.ones_like(inside)
    facing = 1 / (1 + np.exp(-G.SHARPNESS * (vis - G.TAU)))
    wa = inside * facing
    wb = wa[:, ::-1]
    wb2 = wb * (1 - wa)
    out = (seen * wa[..., None] + seen[:, ::-1] * wb2[..., None]) / (wa + wb2 + 1e-6)[..., None]
    out = np.clip(out, 0, 255).astype(np.uint8)
    hole = ((np.maximum(wa, wb) < G.HOLE_BELOW) & (mask > 0.05)).astype(np.uint8)
    if hole.any() and inpaint:
        out = cv2.inpaint(out, hole, size / 32, cv2.INPAINT_TELEA)
    if not surround: return out
    keep = np.maximum(mask, facing * (1 - wb2 / (wa + wb2 + 1e-6)))
    keep = cv2.GaussianBlur(keep.astype(np.float32), (0, 0), size / 64)[..., None]
    sur = cv2.GaussianBlur(out, (0, 0), size / 16).astype(np.float32)
    return np.clip(out * keep + sur * (1 - keep), 0, 255).astype(np.uint8)
for it in items:
    rgb = read_rgb(it['path']); f = largest_crop(fr, rgb)
    t = largest_crop(fr, read_rgb(it['target']))
    if f is None or t is None: continue
    lm = td.read(rgb, [f.square])[0].landmarks
    outs = {'raw': f.crop, 'geo': geo.frontalize(rgb, lm, 128)}
    # variant: identity TPS (camera only)
    G.TPS_SMOOTHING = 1e6; outs['stiff_tps'] = geo.frontalize(rgb, lm, 128); G.TPS_SMOOTHING = 2.0
    outs['no_inpaint'] = fz(geo, rgb, lm, inpaint=False)
    outs['no_surround'] = fz(geo, rgb, lm, surround=False)
    outs['no_inside'] = fz(geo, rgb, lm, inside_on=False)
    outs['none'] = fz(geo, rgb, lm, inpaint=False, surround=False, inside_on=False)
    E = (lm[36:42].mean(0) + lm[42:48].mean(0)) / 2; M = (lm[48] + lm[54]) / 2
    from runtime.pose import canonical_square, crop as pcrop
    outs['em3ddfa'] = pcrop(rgb, canonical_square(E, M))
    # the geo output mapped back with a full affine from the mean 68 to the person's 68 (E/M framed)
    sq = canonical_square(E, M); from runtime.pose import box_affine, apply
    lmc = apply(box_affine(*sq, size=128), lm)
    A2, _ = cv2.estimateAffine2D(geo.shape68[:, :2].astype(np.float32), lmc.astype(np.float32))
    outs['geo_affback'] = cv2.warpAffine(outs['geo'], A2, (128, 128), borderMode=cv2.BORDER_REPLICATE)
    pos, _, _ = geo.sample_map(lm, 128)
    def frame_pt(p):
        d = np.linalg.norm(pos - p, axis=-1); i, j = np.unravel_index(d.argmin(), d.shape)
        J2 = np.stack([np.gradient(pos[..., 0], axis=1)[i, j], np.gradient(pos[..., 0], axis=0)[i, j]]), np.stack([np.gradient(pos[..., 1], axis=1)[i, j], np.gradient(pos[..., 1], axis=0)[i, j]])
        Jm = np.stack(J2)  # d(photo)/d(u,v)
        return np.array([j + 0.5, i + 0.5]) + np.linalg.solve(Jm, p - pos[i, j])
    qE, qM = frame_pt(f.landmarks[0]), frame_pt(f.landmarks[1])
    src_pts = np.float32([qE, qM]); dst = np.float32([[64, 41.4], [64, 88.9]])
    S, _ = cv2.estimateAffinePartial2D(np.r_[src_pts, src_pts + (src_pts[1]-src_pts[0])[::-1] * [1, -1]].astype(np.float32), np.r_[dst, dst + (dst[1]-dst[0])[::-1] * [1, -1]].astype(np.float32))
    outs['geo_em'] = cv2.warpAffine(outs['geo'], S, (128, 128), borderMode=cv2.BORDER_REPLICATE)
    # variant: crop of photo warped by similarity from landmarks to mean shape (2D align only)
    s = geo.shape68[:, :2]
    A, _ = cv2.estimateAffinePartial2D(lm.astype(np.float32), s.astype(np.float32))
    outs['sim68'] = cv2.warpAffine(rgb, A, (128, 128), flags=cv2.INTER_AREA)
    # variant: geo face pasted onto the raw crop? compute geo at 128 and blend face mask into raw crop
    e = J.embed(np.stack([t.crop] + list(outs.values())))
    for k, v in zip(outs, e[1:]):
        res.setdefault((abs(it['yaw']), k), []).append(float(np.linalg.norm(v - e[0])))
    if len(res[(abs(it['yaw']),'raw')]) in (1, 6) and it['yaw'] == 0:
        outs = {k: outs[k] for k in ('raw', 'em3ddfa', 'geo', 'geo_em', 'none')}
        row = np.concatenate([t.crop] + list(outs.values()), 1)
        cv2.imwrite(f'/tmp/exp/row_{os.path.basename(it["path"])}.png', cv2.cvtColor(cv2.resize(row, None, fx=2, fy=2), cv2.COLOR_RGB2BGR))
for k in sorted(res): print(k, round(np.mean(res[k]), 3), len(res[k]))
