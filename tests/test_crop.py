"""Canonical crop geometry (runtime.pose) against hand-computed values, and the crop of a real photo."""
import math

import numpy as np
import pytest

from runtime.pose import (CANON_E_Y, CANON_EM, CANON_SIZE, apply, box_affine, canonical_square, crop, det_square,
                          invert, square_bbox, square_corners)


def test_canonical_square_puts_eye_and_mouth_midpoints_on_their_spots():
    e, m = np.array([200.0, 150.0]), np.array([200.0, 245.0])  # upright face, E-M = 95 px
    cx, cy, side, angle = canonical_square(e, m)
    assert angle == pytest.approx(0.0)
    assert side == pytest.approx(95 * CANON_SIZE / CANON_EM)  # 256 px
    aff = box_affine(cx, cy, side, angle, CANON_SIZE)
    np.testing.assert_allclose(apply(aff, [e, m]), [[64, CANON_E_Y], [64, CANON_E_Y + CANON_EM]], atol=1e-9)


def test_canonical_square_turns_with_a_tilted_head():
    e = np.array([100.0, 100.0])
    d = 47.5 * np.array([math.sin(math.radians(30)), math.cos(math.radians(30))])  # head tilted 30 deg
    cx, cy, side, angle = canonical_square(e, e + d)
    assert side == pytest.approx(128.0)
    assert angle == pytest.approx(math.radians(-30))
    np.testing.assert_allclose(apply(box_affine(cx, cy, side, angle, 128), [e, e + d]),
                               [[64, CANON_E_Y], [64, CANON_E_Y + CANON_EM]], atol=1e-9)


def test_box_affine_inverse_and_corners_agree():
    sq = (50.0, 60.0, 40.0, 0.3)
    aff = box_affine(*sq, size=96)
    corners = square_corners(sq)
    np.testing.assert_allclose(apply(aff, corners), [[0, 0], [96, 0], [96, 96], [0, 96]], atol=1e-9)
    np.testing.assert_allclose(apply(invert(aff), apply(aff, corners)), corners, atol=1e-9)
    b = square_bbox(sq)
    assert b[0] == pytest.approx(corners[:, 0].min()) and b[3] == pytest.approx(corners[:, 1].max())


def test_crop_is_the_squares_pixels_and_black_outside():
    img = np.arange(40 * 50 * 3, dtype=np.uint32).reshape(40, 50, 3).astype(np.uint8)
    # an upright square whose pixel grid coincides with the image's: an exact copy
    out = crop(img, (25.0, 20.0, 20.0, 0.0), size=20)
    np.testing.assert_array_equal(out, img[10:30, 15:35])
    # past the image's corner: zeros where there is no image
    out = crop(np.full((10, 10, 3), 200, np.uint8), (0.0, 0.0, 10.0, 0.0), size=10)
    assert (out[:4, :4] == 0).all() and (out[6:, 6:] == 200).all()


def test_crop_of_a_large_face_is_area_averaged_not_aliased():
    img = np.zeros((800, 800, 3), np.uint8)
    img[:, ::2] = 255  # one-pixel stripes: any point sampling gives 0 or 255
    out = crop(img, (400.0, 400.0, 640.0, 0.0), size=128)
    assert 100 < out[10:-10, 10:-10].mean() < 155 and out[10:-10, 10:-10].std() < 40


def test_first_pass_box_is_centred_on_the_detection():
    cx, cy, side, angle = det_square([10, 20, 110, 100])
    assert (cx, cy, angle) == (60, 60, 0.0) and side == pytest.approx(170.0)


def test_face_crop_is_its_square_on_a_real_photo(grace, analyzer):
    """The crop is the image resampled at the face's canonical square; E and M land on their spots."""
    faces, _ = analyzer.analyze(grace)
    assert len(faces) == 1
    f = faces[0]
    np.testing.assert_array_equal(f.crop, crop(grace, f.square, analyzer.crop_size))
    aff = box_affine(*f.square, size=128)
    np.testing.assert_allclose(apply(aff, f.landmarks), [[64, CANON_E_Y], [64, CANON_E_Y + CANON_EM]], atol=1e-6)
    assert abs(f.yaw) < 20  # Grace Hopper faces the camera
