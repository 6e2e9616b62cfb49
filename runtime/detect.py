"""Face detection, pose and the canonical crop: ``FaceAnalyzer``.

1. Candidate boxes (``detect``, ``runtime.detectors.CandidateDetector``): every detector's boxes,
   at the scales and paddings measured best, merged with OpenCV's NMS (a detector that finds
   something does not hide what the others find).
2. The pose network (``runtime.pose``) reads each candidate in two passes: face score, yaw and the
   two framing keypoints (eye midpoint E, mouth midpoint M). Candidates it does not take for a
   face (score < ``min_score``) are dropped, which removes most detector false alarms; candidates
   that converge on the same face are merged (NMS on the canonical squares).
3. The canonical crop: E at (64, 41.4) of a 128 px square, M 47.5 px below it, turned upright.
   Training crops are made by this same code (``training.prepare``), so a generator sees faces
   framed as it was trained, at every yaw.

Yaw: degrees, positive = nose towards the image's right (multipie30's camera table, camera 240 is
+90), estimated by the pose network, right at profiles (dlib's 68-point model read +90 as -3).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from .assets import asset
from .detectors import PRESETS, CandidateDetector
from .pose import PoseNet, REFINE_SCALE, crop, square_bbox, square_corners

MIN_SCORE = 0.5  # pose-network face score below which a candidate is not a face
MERGE_IOU = 0.4  # canonical squares overlapping more than this are one face
# A smaller face whose centre lies within HEAD_ZONE x the canonical side of a larger face's centre
# is dropped: on cfp400 the pose network scores the ear of a profile as a face looking the other
# way (78 of 5,600 photos, all at 0.44-0.66 x side; the two real neighbours of the bundled
# two-person photo sit 1.05 x side apart).
HEAD_ZONE = 0.75
# A candidate that only one detector pass found needs this face score: the astronaut's suit
# (samples/astronaut.jpg, MTCNN alone) scores 0.93. Cost, measured on the crops of `make crops`:
# 0 of 5,598 cfp400 faces (7 single-detector profiles, all >= 0.95), 7 of 15,579 multipie30
# faces (dark +90° views), 0 of 7,196 multipie137 faces.
SINGLE_MIN_SCORE = 0.95
# ...unless that pass was BlazeFace and it is sure (its own score >= BLAZEFACE_SURE): then the pose
# network's score need only reach SURE_MIN_SCORE. The navy photo's hard-hat profile (looking down,
# sunglasses) is found by the back-camera pass alone at 0.9996 and scored 0.28 by the pose network.
# Measured on every candidate of cfp400's 5,600 photos: besides ears inside a found head (dropped
# by HEAD_ZONE) the rule admits no other box (0.12 is the next score of such a candidate); the
# astronaut's suit is an MTCNN box, untouched.
BLAZEFACE_SURE, SURE_MIN_SCORE = 0.95, 0.25


@dataclass
class Face:
    crop: np.ndarray  # size x size x 3 RGB uint8, canonical framing
    box: np.ndarray  # axis-aligned bounds [x0,y0,x1,y1] of the crop square in image pixels (may extend past the image)
    det_box: np.ndarray  # detector box [x0,y0,x1,y1]
    landmarks: np.ndarray  # (2,2): eye midpoint E and mouth midpoint M, image pixels
    yaw: float  # degrees, estimated
    detector: str
    score: float = 0.0  # pose-network face score, 0..1
    square: tuple = (0.0, 0.0, 0.0, 0.0)  # crop square (cx, cy, side, angle in radians)
    extra: dict = field(default_factory=dict)

    @property
    def size(self) -> float:
        """Side of the canonical crop square in image pixels."""
        return float(self.square[2])

    @property
    def corners(self) -> np.ndarray:
        return square_corners(self.square)


class FaceAnalyzer:
    """``detector``: a ``runtime.detectors.PRESETS`` name: ``default`` (BlazeFace short, back-camera and
    full-range, MTCNN; for photos) or ``fast`` (the two BlazeFace passes; the camera loop)."""

    DETECTORS = ("default", "fast")

    def __init__(self, detector: str = "default", crop_size: int = 128, min_face: int = 24, threads: int = 2,
                 pose_model: str | None = None, min_score: float = MIN_SCORE):
        detector = {"auto": "default", "cascade": "default"}.get(detector, detector)
        if detector not in PRESETS:
            raise ValueError(f"detector must be one of {sorted(PRESETS)}")
        self.detector, self.crop_size, self.min_face, self.min_score = detector, crop_size, min_face, min_score
        self.candidates = CandidateDetector(detector, threads=1)
        self.pose = PoseNet(pose_model or asset("posenet.onnx"), threads)

    def detect(self, rgb: np.ndarray) -> list[tuple[np.ndarray, float, str]]:
        """Candidate boxes [(box, score, '+'-joined detectors)] in ``rgb``'s pixels, largest first."""
        return self.candidates.detect(rgb)

    def analyze(self, rgb: np.ndarray, max_faces: int | None = None) -> tuple[list[Face], list[str]]:
        """All faces (largest first) and notes about candidates that were dropped."""
        cands = self.detect(rgb)
        return self.faces_from_candidates(rgb, cands, max_faces)

    def faces_from_candidates(self, rgb, cands, max_faces=None) -> tuple[list[Face], list[str]]:
        notes = []
        poses = self.pose.refine(rgb, [c[0] for c in cands])
        faces = []
        for (box, score, name), p in zip(cands, poses):
            if p.score < self.needed_score(name, score):
                continue
            faces.append(self._face(rgb, p, box, name))
        faces = self._merge(faces)
        kept = []
        for f in sorted(faces, key=lambda f: -f.size):
            if f.size * 0.73 < self.min_face:  # a face spans ~0.73 of the canonical side, brow to chin
                notes.append(f"face of {f.size * 0.73:.0f} px skipped (smaller than {self.min_face} px)")
                continue
            if any(np.hypot(f.square[0] - k.square[0], f.square[1] - k.square[1]) < HEAD_ZONE * k.square[2]
                   for k in kept):
                continue  # inside a larger face's head: the ear of a profile (see HEAD_ZONE)
            kept.append(f)
        if not kept and cands and not notes:
            notes.append(f"{len(cands)} candidate box(es), none looked like a face")
        return kept[:max_faces] if max_faces else kept, notes

    def needed_score(self, name: str, det_score: float) -> float:
        """The pose network's face score a candidate needs: by how many passes found it, and how sure."""
        if "+" in name:
            return self.min_score
        if name.startswith("bf-") and det_score >= BLAZEFACE_SURE:
            return self.min_score * SURE_MIN_SCORE / MIN_SCORE  # 0.25 at the default min_score
        return max(self.min_score, SINGLE_MIN_SCORE)

    def _face(self, rgb, p, det_box, name) -> Face:
        return Face(crop(rgb, p.square, self.crop_size), square_bbox(p.square), np.asarray(det_box, float),
                    np.stack([p.E, p.M]), p.yaw, name, p.score, p.square)

    @staticmethod
    def _merge(faces: list[Face]) -> list[Face]:
        if len(faces) < 2:
            return faces
        rects = [[float(f.box[0]), float(f.box[1]), float(f.box[2] - f.box[0]), float(f.box[3] - f.box[1])] for f in faces]
        keep = cv2.dnn.NMSBoxes(rects, [f.score for f in faces], 0.0, MERGE_IOU)
        return [faces[int(k)] for k in np.asarray(keep).reshape(-1)]

    def track(self, rgb: np.ndarray, face: Face) -> Face | None:
        """The same face in a new frame, read from where it was (one pose pass, no detector);
        None when the pose network no longer sees a face there."""
        cx, cy, side, angle = face.square
        p = self.pose.predict(rgb, [(cx, cy, side * REFINE_SCALE, angle)])[0]
        if p.score < self.min_score:
            return None
        return self._face(rgb, p, face.det_box, face.detector)

    def face_from_box(self, rgb, box, score=1.0, name="given") -> Face:
        """The face in a given box, whatever the face score (for callers that know a face is there)."""
        p = self.pose.refine(rgb, [box])[0]
        return self._face(rgb, p, box, name)
