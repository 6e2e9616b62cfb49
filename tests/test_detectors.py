"""Face candidate detectors (runtime/detectors.py, runtime/mtcnn.py, runtime/blazeface.py) on the
bundled public-domain photos; true face boxes drawn by hand in benchmarks/samples_faces.json."""
import json
import math
import os

import cv2
import numpy as np
import pytest

from conftest import ROOT, SAMPLES

FACES = json.load(open(os.path.join(ROOT, "benchmarks", "samples_faces.json")))


def photo(name, long_side=None):
    """A bundled photo (RGB) and its true face boxes, optionally scaled to ``long_side``."""
    from runtime.image_io import load_image

    rgb = load_image(os.path.join(SAMPLES, name)).rgb
    s = 1.0 if long_side is None else long_side / max(rgb.shape[:2])
    if s != 1.0:
        rgb = cv2.resize(rgb, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    return rgb, [np.array(b, float) * s for b in FACES[name]["faces"]]


def side(b):
    return math.sqrt((b[2] - b[0]) * (b[3] - b[1]))


def hits(box, truth):
    """The benchmark's rule: the box holds the true centre and its side is 0.5-2x the true side."""
    cx, cy = (truth[0] + truth[2]) / 2, (truth[1] + truth[3]) / 2
    return box[0] <= cx <= box[2] and box[1] <= cy <= box[3] and 0.5 <= side(box) / side(truth) <= 2.0


def found(boxes, truth):
    return any(hits(b, truth) for b, _ in boxes)


@pytest.fixture(scope="module")
def frontal():
    return photo("grace_hopper.jpg")


@pytest.fixture(scope="module")
def profile():
    return photo("profile_woman.jpg", 480)  # ~85 degree profile


# backend pass -> bundled photos (scaled to 480 px) whose faces it must all find; HOG is a
# frontal detector and the Haar cascade a profile one, so each gets the view it is made for.
CASES = {
    "blazeface-short": (dict(pad=0.25), ["grace_hopper.jpg", "profile_woman.jpg"]),
    "blazeface-full": (dict(), ["grace_hopper.jpg", "profile_woman.jpg", "three_quarter_bridge.jpg"]),
    "blazeface-back": (dict(), ["grace_hopper.jpg", "profile_woman.jpg", "profile_hard_hat.jpg"]),
    "mtcnn": (dict(), ["grace_hopper.jpg", "profile_woman.jpg", "two_people_three_quarter.jpg"]),
    "hog": (dict(pad=0.25), ["grace_hopper.jpg", "astronaut.jpg"]),
    "haar-profile": (dict(pad=0.25, mirror=True), ["two_people_three_quarter.jpg"]),
    "mmod": (dict(min_side=256, max_side=256, pad=0.25), ["grace_hopper.jpg", "profile_woman.jpg"]),
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_backend_finds_faces(kind):
    from runtime.detectors import Pass, PassRunner

    view, names = CASES[kind]
    run = PassRunner(Pass(kind, **view), threads=1)
    for name in names:
        rgb, truths = photo(name, 480)
        boxes = run(rgb)
        for t in truths:
            assert found(boxes, t), f"{kind} missed the face {t.round()} in {name}: {[(b.round(), s) for b, s in boxes]}"


def test_blazeface_variants_io():
    from runtime.blazeface import VARIANTS, BlazeFace

    for v, (_, size, _) in VARIANTS.items():
        bf = BlazeFace(threads=1, variant=v)
        assert bf.size == size and bf.interp.get_input_details()[0]["shape"].tolist() == [1, size, size, 3]
        assert len(bf.anchors) == bf.interp.get_output_details()[0]["shape"][1]  # 896 / 2304 / 896


def test_mtcnn_tflite_io(frontal):
    """The three files' tensors, P-Net's resizable input (transposed: [1, W, H, 3]) and its output
    grid, and the transposed layout proven by O-Net's landmarks: eyes above the mouth, left eye left."""
    from runtime.mtcnn import MTCNN

    m = MTCNN(threads=1)
    for name, size in (("rnet", 24), ("onet", 48)):
        it = m.nets[name][0]
        assert it.get_input_details()[0]["shape"].tolist() == [1, size, size, 3]
    out = m.run_net("pnet", np.zeros((1, 100, 60, 3), np.float32))
    assert out["prob1"].shape == (1, 45, 25, 2) and out["conv4-2"].shape == (1, 45, 25, 4)  # (W-12)/2+1, (H-12)/2+1
    rgb, (truth,) = frontal
    boxes = m(rgb)
    assert boxes and hits(boxes[0][0], truth) and boxes[0][1] > 0.95
    lm = m.landmarks[0]  # left eye, right eye, nose, left mouth corner, right mouth corner (image x, y)
    assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]
    assert max(lm[0, 1], lm[1, 1]) < lm[2, 1] < min(lm[3, 1], lm[4, 1])


def test_mtcnn_missing_file(tmp_path):
    from runtime.errors import ModelError
    from runtime.mtcnn import MTCNN

    with pytest.raises(ModelError, match="cannot load MTCNN pnet"):
        MTCNN(assets=str(tmp_path))


def test_merge_keeps_every_detector():
    """Two detectors' overlapping boxes -> one candidate naming both, best score kept; a separate
    box stays separate; largest first."""
    from runtime.detectors import merge

    a = np.array([100, 100, 200, 200], float)
    b = np.array([105, 98, 206, 204], float)
    c = np.array([400, 50, 440, 90], float)
    out = merge([(a, 0.7, "mtcnn", 0.99), (b, 0.9, "blazeface", 0.8), (c, 0.6, "hog", 0.1)], 0.4)
    assert len(out) == 2
    big, small = out
    assert set(big.detectors) == {"mtcnn", "blazeface"} and big.detectors[0] == "blazeface"
    assert big.score == 0.9 and np.allclose(big.box, b) and big.votes == 2
    assert small.detectors == ("hog",) and np.allclose(small.box, c)
    assert merge([], 0.4) == []


def test_prepare_maps_back():
    from runtime.detectors import prepare

    rgb = np.zeros((100, 160, 3), np.uint8)
    view, s, off = prepare(rgb, min_side=320, pad=0.25)
    assert s == 2.0 and off == 80 and view.shape == (200 + 160, 320 + 160, 3)
    assert view[0, 0].tolist() == [128, 128, 128]
    view, s, off = prepare(np.zeros((1200, 1600, 3), np.uint8), max_side=640)
    assert view.shape == (480, 640, 3) and s == 0.4 and off == 0


def test_candidates_on_photos():
    """The default preset finds all five faces of the navy photos and boxes nothing else there."""
    from runtime.detectors import CandidateDetector

    det = CandidateDetector("default", threads=1)
    for name in ("profile_hard_hat.jpg", "profile_woman.jpg", "three_quarter_bridge.jpg",
                 "two_people_three_quarter.jpg"):
        rgb, truths = photo(name)
        cands = det(rgb)
        for t in truths:
            assert any(hits(c.box, t) for c in cands), f"missed {t.round()} in {name}"
        assert len(cands) == len(truths), f"{name}: {[(c.box.round(), c.detectors) for c in cands]}"
        sides = [c.side for c in cands]
        assert sides == sorted(sides, reverse=True)


def test_no_face_in_textures():
    """Photos without a face (scikit-image's coffee cup, rocket, brick wall, gravel) and a blank
    frame give at most one candidate in all (the verification stage removes the rest)."""
    data = pytest.importorskip("skimage.data")
    from runtime.detectors import CandidateDetector

    det = CandidateDetector("default", threads=1)
    imgs = [data.coffee(), data.rocket(), np.dstack([data.brick()] * 3), np.dstack([data.gravel()] * 3),
            np.full((480, 640, 3), 200, np.uint8)]
    counts = [len(det(np.ascontiguousarray(i))) for i in imgs]
    assert sum(counts) <= 1, counts
    assert counts[-1] == 0


def test_candidate_detector_rejects_bad_input():
    from runtime.detectors import CandidateDetector, Pass

    det = CandidateDetector([Pass("blazeface-short")], threads=1)
    with pytest.raises(ValueError, match="RGB uint8"):
        det(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="unique"):
        CandidateDetector([Pass("hog"), Pass("hog")])
    with pytest.raises(ValueError, match="unknown preset"):
        CandidateDetector("nope")


def test_analyzer_keeps_every_navy_face_and_nothing_else(analyzer):
    """Candidates -> pose network -> rules (runtime.detect): the five faces of the navy photos, each
    once, and no other box on them or on the astronaut (her suit's patch is an MTCNN box that the
    pose network scores 0.93). The hard-hat profile (looking down, sunglasses) is found by one
    BlazeFace pass only and kept by the sure-BlazeFace rule (BLAZEFACE_SURE)."""
    for name in ("profile_hard_hat.jpg", "profile_woman.jpg", "three_quarter_bridge.jpg",
                 "two_people_three_quarter.jpg", "astronaut.jpg", "grace_hopper.jpg"):
        rgb, truths = photo(name)
        faces, _ = analyzer.analyze(rgb)
        assert len(faces) == len(truths), f"{name}: {[(f.box.round(), f.detector, f.score) for f in faces]}"
        for t in truths:
            assert any(hits(f.det_box, t) for f in faces), f"missed {t.round()} in {name}"
    faces, _ = analyzer.analyze(photo("profile_hard_hat.jpg")[0])
    assert "+" not in faces[0].detector and faces[0].yaw > 45  # nose towards the image's right


def test_needed_score_rules():
    from runtime.detect import MIN_SCORE, SINGLE_MIN_SCORE, SURE_MIN_SCORE, FaceAnalyzer

    fa = FaceAnalyzer.__new__(FaceAnalyzer)
    fa.min_score = MIN_SCORE
    assert fa.needed_score("bf-full+mtcnn", 0.6) == MIN_SCORE
    assert fa.needed_score("mtcnn", 0.999) == SINGLE_MIN_SCORE
    assert fa.needed_score("bf-back-p25", 0.9) == SINGLE_MIN_SCORE
    assert fa.needed_score("bf-back-p25", 0.9996) == pytest.approx(SURE_MIN_SCORE)
    fa.min_score = 0.8  # a stricter user setting stays stricter for every kind
    assert fa.needed_score("bf-back-p25", 0.9996) > SURE_MIN_SCORE and fa.needed_score("mtcnn", 1.0) >= 0.95
