"""Self-supervised training pairs for the refiner (Rotate-and-Render, Zhou et al., CVPR 2020).

A frontal photo is fitted with the geometric stage's 3D face (``runtime.geometry``), rendered
turned to a yaw from its own pixels, and that render goes through the user's path (detect -> crop
-> 3DDFA_V2 -> geometric frontal). The result carries exactly the artefacts the geometry makes
(mirror seams, stretched far cheek, lighting that is not symmetric), and the photo itself, warped
into the output's frame by the landmarks, is its pixel-aligned target. Multi-PIE's real side views
(training ids only) go through the same path against their real frontals.

``python -m training.rotate_render --out artifacts/rnr`` (``make rnr-pairs``) writes one PNG per
pair, ``[input | target | loss mask]`` side by side (128 x 384), and ``pairs.json``. It is resumable
(a finished pair is skipped; each PNG is written to a temporary name and renamed), runs on worker
processes with a progress bar, and draws yaws from a seed per photo, so a rerun writes the same set.

Only training identities are read: cfp400 folds 01-07 (ids 001-350) and multipie30 020-043. The
held-out people (cfp400 351-400, multipie30 044-049) never reach a pair.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import zlib

import cv2
import numpy as np

from runtime.errors import FrontalizeError
from runtime.geometry import GeometricFrontalizer, remap

CFP_TRAIN = range(1, 351)  # folds 01-07; fold 08 (351-400) is the test set
MULTIPIE_TRAIN = range(20, 44)  # 044-049 are held out
YAWS = (0, 15, 30, 45, 60, 75, 90)  # rendered |yaw|, jittered by up to +-7 degrees
RENDER_LO, RENDER_HI = -64.0, 192.0  # model units rendered: the face and a flat surround around it
HEAD_GROW = 25  # model units: the face mask grown by this is what turns (hair and ears go along)
BACK = 200.0  # depth given to the background, behind any face point
PINHOLE = 10.0  # model units of depth below its closed neighbourhood at which a pixel is a pinhole
ECC_MIN, ECC_SHIFT = 0.6, 6.0  # ECC's refinement is kept above this correlation and below this shift (px)
INNER = slice(17, 68)  # brows, nose, eyes, mouth: the points the target is aligned by
MULTIPIE_CAMS = {"110": -90, "120": -75, "090": -60, "080": -45, "130": -30, "140": -15, "050": 15, "041": 30,
                 "190": 45, "200": 60, "010": 75, "240": 90}


def turn(geo: GeometricFrontalizer, rgb: np.ndarray, landmarks: np.ndarray, degrees: float) -> np.ndarray:
    """``rgb`` with its face (68 ``landmarks``, image pixels) turned by ``degrees`` of yaw about the
    model's vertical axis: the face's fitted surface, coloured by the photo where it shows it now,
    splatted with a z-buffer at the new pose. The eye-mouth centre stays where it was."""
    fit = geo.fit(landmarks)
    a = math.radians(degrees)
    Rt = fit.R @ np.array([[math.cos(a), 0, -math.sin(a)], [0, 1, 0], [math.sin(a), 0, math.cos(a)]])
    step = min(1.0, 0.6 / fit.s)  # <= 0.6 photo pixels between surface samples: no splat holes
    g = np.arange(RENDER_LO, RENDER_HI, step)
    xy = np.stack(np.meshgrid(g, g), -1)
    Y = geo.surface(xy, fit.field, fit.mean)
    em = fit.shape68[[36, 39, 42, 45, 48, 54]].mean(0)
    shift = fit.cam(em) - fit.cam(em, Rt)
    colour = remap(rgb, fit.cam(Y), borderMode=cv2.BORDER_REFLECT)
    # the head turns in front of a background that stays: the move fades out beyond the face
    head = cv2.GaussianBlur(cv2.dilate(geo.face_mask(), np.ones((HEAD_GROW, HEAD_GROW), np.uint8)), (0, 0), HEAD_GROW / 3)
    m = remap(head, xy, 0.5, borderValue=0)[..., None]
    dst = ((fit.cam(Y, Rt) + shift) * m + fit.cam(Y) * (1 - m)).reshape(-1, 2)
    z = ((Y @ Rt[2]) * m[..., 0] - BACK * (1 - m[..., 0])).reshape(-1)
    h, w = rgb.shape[:2]
    ij = np.round(dst).astype(np.int64)
    ok = (ij[:, 0] >= 0) & (ij[:, 1] >= 0) & (ij[:, 0] < w) & (ij[:, 1] < h)
    ij, z, colour = ij[ok], z[ok], colour.reshape(-1, 3)[ok]
    pix = ij[:, 1] * w + ij[:, 0]
    order = np.lexsort((z, pix))  # per pixel, the nearest sample last
    last = np.r_[pix[order][1:] != pix[order][:-1], True]
    out = np.zeros((h * w, 3), np.uint8)
    zbuf = np.full(h * w, -1e6, np.float32)
    out[pix[order][last]] = colour[order][last]
    zbuf[pix[order][last]] = z[order][last]
    out, zbuf = out.reshape(h, w, 3), zbuf.reshape(h, w)
    # a pixel no sample hit, or one where the background shows through a pinhole of the surface, is inpainted
    k = np.ones((3, 3), np.uint8)
    holes = (zbuf < cv2.erode(cv2.dilate(zbuf, k), k) - PINHOLE) | (zbuf < -1e5)
    return cv2.inpaint(out, holes.astype(np.uint8), 2, cv2.INPAINT_TELEA)
    return out


def target_in_output(photo: np.ndarray, landmarks: np.ndarray, out: np.ndarray, out68: np.ndarray,
                     mask: np.ndarray) -> np.ndarray:
    """The frontal ``photo`` warped into the frame of the geometric output ``out``: a similarity of the
    inner landmarks, then refined by ECC (Euclidean, inside the face ``mask``) when that holds, so the
    L1 term does not learn to blur a misregistered edge. One resampling of the photo in all."""
    size = out.shape[0]
    m, _ = cv2.estimateAffinePartial2D(landmarks[INNER].astype(np.float32), out68[INNER].astype(np.float32),
                                       method=cv2.LMEDS)
    first = cv2.warpAffine(photo, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    inv = np.linalg.inv(np.r_[m, [[0, 0, 1]]])
    try:
        gray = [cv2.GaussianBlur(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), (0, 0), 1.0) for im in (out, first)]
        w = np.eye(2, 3, dtype=np.float32)
        cc, w = cv2.findTransformECC(gray[0], gray[1], w, cv2.MOTION_EUCLIDEAN,
                                     (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-4),
                                     (mask > 128).astype(np.uint8), 3)
        if cc > ECC_MIN and np.abs(w[:, 2]).max() < ECC_SHIFT and abs(w[1, 0]) < 0.1:
            inv = inv @ np.r_[w, [[0, 0, 1]]]  # output -> first -> photo
    except cv2.error:  # ECC did not converge: the landmarks' similarity alone
        pass
    return cv2.warpAffine(photo, inv[:2], (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT)


class PairMaker:
    """The user's path (``runtime.pipeline``'s detector and crop, 3DDFA_V2, the geometric stage), once per worker."""

    def __init__(self, size: int = 128):
        from runtime.pipeline import Frontalizer
        from runtime.tddfa import Tddfa

        self.frontalizer = Frontalizer(threads=1)
        self.tddfa = Tddfa(threads=1)
        # beyond the photo's edge its reflection, not the runtime's black: the loss is not spent on padding
        self.geo = GeometricFrontalizer(border=cv2.BORDER_REFLECT_101)
        self.size = size

    def landmarks(self, rgb: np.ndarray):
        faces, _ = self.frontalizer.faces(rgb)
        if not faces:
            return None
        face = max(faces, key=lambda f: f.square[2])
        return face, self.tddfa.read(rgb, [face.square])[0]

    def pair(self, side: np.ndarray, frontal: np.ndarray, frontal68: np.ndarray) -> dict | None:
        """(input, target, mask, yaw): ``side`` through the user's path, ``frontal`` aligned to it."""
        found = self.landmarks(side)
        if found is None:
            return None
        face, pose = found
        info: dict = {}
        out = self.geo.frontalize(side, pose.landmarks, face.square, self.size, info=info)
        mask = np.clip(info["face_mask"] * 255, 0, 255).astype(np.uint8)
        target = target_in_output(frontal, frontal68, out, info["landmarks68"], mask)
        return {"input": out, "target": target, "mask": mask, "yaw": float(pose.yaw)}


def read(path: str) -> np.ndarray:
    from runtime.image_io import load_image

    return load_image(path).rgb


def list_jobs(data: str, renders: int) -> list[dict]:
    """Every pair to make: ``renders`` turned copies of each cfp400 training frontal (and of its
    mirror), and each multipie30 training side view (lights 07 and 12, neutral) with its frontal."""
    jobs = []
    for pid in CFP_TRAIN:
        folder = os.path.join(data, "cfp400", "Data", "Images", f"{pid:03d}", "frontal")
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            for k in range(renders):
                rng = np.random.default_rng(zlib.crc32(f"{pid}/{name}/{k}".encode()))
                yaw = float(rng.choice(YAWS) + rng.uniform(-7, 7)) * rng.choice([-1, 1])
                jobs.append({"id": f"cfp_{pid:03d}_{name[:-4]}_{k}", "kind": "render", "person": f"cfp{pid:03d}",
                             "path": os.path.join(folder, name), "turn": yaw, "mirror": bool(k % 2)})
    pat = re.compile(r"^(\d{3})_01_01_(\d{3})_(07|12)\.jpg$")
    for pid in MULTIPIE_TRAIN:
        folder = os.path.join(data, "multipie30", f"{pid:03d}")
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            m = pat.match(name)
            if m and m.group(2) in MULTIPIE_CAMS:
                jobs.append({"id": f"mp_{name[:-4]}", "kind": "real", "person": f"mp{pid:03d}",
                             "path": os.path.join(folder, name), "turn": float(MULTIPIE_CAMS[m.group(2)]),
                             "frontal": os.path.join(folder, f"{m.group(1)}_01_01_051_{m.group(3)}.jpg")})
    return jobs


_MAKER: PairMaker | None = None


def make_one(job: dict, out_dir: str) -> dict:
    global _MAKER
    if _MAKER is None:
        cv2.setNumThreads(1)
        _MAKER = PairMaker()
    dst = os.path.join(out_dir, job["id"] + ".png")
    row = {"id": job["id"], "person": job["person"], "kind": job["kind"], "turn": job["turn"]}
    try:
        if job["kind"] == "render":
            frontal = read(job["path"])
            if job["mirror"]:
                frontal = np.ascontiguousarray(frontal[:, ::-1])
            found = _MAKER.landmarks(frontal)
            if found is None or abs(found[1].yaw) > 15:
                return {**row, "skipped": "no frontal face" if found is None else f"source yaw {found[1].yaw:.0f}"}
            lm = found[1].landmarks
            side = turn(_MAKER.geo, frontal, lm, job["turn"])
        else:
            side, frontal = read(job["path"]), read(job["frontal"])
            found = _MAKER.landmarks(frontal)
            if found is None:
                return {**row, "skipped": "no frontal face"}
            lm = found[1].landmarks
        p = _MAKER.pair(side, frontal, lm)
    except (FrontalizeError, ValueError, cv2.error, np.linalg.LinAlgError) as e:
        return {**row, "skipped": f"{type(e).__name__}: {str(e).splitlines()[0][:80]}"}
    if p is None:
        return {**row, "skipped": "no face in the render"}
    tile = np.concatenate([p["input"], p["target"], np.repeat(p["mask"][..., None], 3, -1)], 1)
    tmp = dst + ".tmp.png"
    cv2.imwrite(tmp, cv2.cvtColor(tile, cv2.COLOR_RGB2BGR))
    os.replace(tmp, dst)
    return {**row, "yaw": round(p["yaw"], 2), "file": os.path.basename(dst)}


def _make_one(args):
    return make_one(*args)


def prepare(data: str, out_dir: str, renders: int = 2, workers: int = 2, limit: int | None = None) -> dict:
    from multiprocessing import get_context

    from tqdm import tqdm

    os.makedirs(out_dir, exist_ok=True)
    for f in os.listdir(out_dir):
        if f.endswith(".tmp.png"):
            os.remove(os.path.join(out_dir, f))
    jobs = list_jobs(data, renders)[:limit]
    if not jobs:
        raise SystemExit(f"error: no training photos under {data} (cfp400/, multipie30/)")
    index_path = os.path.join(out_dir, "pairs.json")
    done = {}
    if os.path.exists(index_path):
        with open(index_path) as f:
            done = {r["id"]: r for r in json.load(f)["pairs"]}
    todo = [j for j in jobs if j["id"] not in done or ("file" in done[j["id"]]
                                                         and not os.path.exists(os.path.join(out_dir, done[j["id"]]["file"])))]

    def save():
        rows = [done[j["id"]] for j in jobs if j["id"] in done]
        tmp = index_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"data": os.path.abspath(data), "renders": renders, "pairs": rows}, f, indent=0)
        os.replace(tmp, index_path)

    with get_context("spawn").Pool(workers) as pool:
        for i, row in enumerate(tqdm(pool.imap_unordered(_make_one, [(j, out_dir) for j in todo], chunksize=4),
                                     total=len(todo), desc="rotate-and-render pairs", unit="pair")):
            done[row["id"]] = row
            if i % 200 == 199:
                save()
    save()
    made = sum("file" in r for r in done.values())
    print(f"{made} pairs in {out_dir} ({len(done) - made} skipped; {len(todo)} made this run)")
    return done


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.environ.get("FRONTALIZE_DATA", "../shared/data"))
    ap.add_argument("--out", default="artifacts/rnr")
    ap.add_argument("--renders", type=int, default=2, help="turned copies of each frontal photo (odd ones mirrored)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None, help="only the first N pairs (a quick look)")
    a = ap.parse_args(argv)
    prepare(a.data, a.out, a.renders, a.workers, a.limit)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
