"""ROI geometry (the 3DDFA rule) and zero-padded square cropping, against hand-computed values."""
import math

import numpy as np
import pytest

from runtime.crop import crop_square, roi_from_landmarks

R2 = math.sqrt(2.0)
# Landmarks spanning x 100..200, y 175..225: a 100x50 box centred on (150, 200).
LM = np.array([[100, 175], [200, 225], [150, 200], [120, 210], [180, 190]], float)


def test_roi_is_square_of_longer_side_grown_to_its_diagonal():
    box = roi_from_landmarks(LM)
    h = 100 * R2 / 2  # half side: 70.71
    np.testing.assert_allclose(box, [150 - h, 200 - h, 150 + h, 200 + h], atol=1e-9)
    assert box[2] - box[0] == pytest.approx(box[3] - box[1])


def test_roi_taller_than_wide_uses_height():
    box = roi_from_landmarks(LM[:, ::-1])  # 50 wide, 100 tall, centre (200, 150)
    h = 100 * R2 / 2
    np.testing.assert_allclose(box, [200 - h, 150 - h, 200 + h, 150 + h], atol=1e-9)


def test_roi_scale_and_shift():
    side = 100 * R2 * 0.5
    np.testing.assert_allclose(roi_from_landmarks(LM, scale=0.5),
                               [150 - side / 2, 200 - side / 2, 150 + side / 2, 200 + side / 2], atol=1e-9)
    side = 100 * R2 * 0.95  # the multipie30 framing: 0.95 and up by 0.075 of the side
    cy = 200 - 0.075 * side
    np.testing.assert_allclose(roi_from_landmarks(LM, 0.95, -0.075),
                               [150 - side / 2, cy - side / 2, 150 + side / 2, cy + side / 2], atol=1e-9)
    # shift_y moves down (image y grows downwards), x is untouched
    a, b = roi_from_landmarks(LM), roi_from_landmarks(LM, shift_y=0.1)
    np.testing.assert_allclose(b - a, [0, 0.1 * 100 * R2, 0, 0.1 * 100 * R2], atol=1e-9)


def gradient(h=40, w=50):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 5, y * 6, (x + y) % 256], -1).astype(np.uint8)


def test_crop_inside_is_exact_pixels():
    img = gradient()
    out = crop_square(img, [10, 5, 30, 25], size=20)  # same size: no resampling
    np.testing.assert_array_equal(out, img[5:25, 10:30])


def test_crop_rounds_box_to_whole_pixels():
    img = gradient()
    np.testing.assert_array_equal(crop_square(img, [9.6, 4.6, 29.6, 24.6], size=20), img[5:25, 10:30])


def test_crop_past_the_image_is_zero_padded():
    img = gradient(10, 10) + 1  # no zero pixels inside the image
    out = crop_square(img, [-2, -3, 8, 7], size=10)
    assert out.shape == (10, 10, 3)
    assert (out[:3] == 0).all() and (out[:, :2] == 0).all()
    np.testing.assert_array_equal(out[3:, 2:], img[0:7, 0:8])
    # past the bottom-right corner
    out = crop_square(img, [5, 6, 15, 16], size=10)
    np.testing.assert_array_equal(out[:4, :5], img[6:10, 5:10])
    assert (out[4:] == 0).all() and (out[:, 5:] == 0).all()


def test_crop_fully_outside_is_black_and_empty_box_raises():
    img = gradient()
    assert (crop_square(img, [100, 100, 120, 120], size=8) == 0).all()
    with pytest.raises(ValueError):
        crop_square(img, [10, 10, 10, 20])


def test_crop_resizes_to_size():
    img = np.zeros((64, 64, 3), np.uint8)
    img[:, 32:] = 200  # left half black, right half 200
    out = crop_square(img, [0, 0, 64, 64], size=16)
    assert out.shape == (16, 16, 3)
    assert (out[:, :8] == 0).all() and (out[:, 8:] == 200).all()
    up = crop_square(img[:8, 28:36], [0, 0, 8, 8], size=32)  # upscaling keeps the two levels at the ends
    assert up.shape == (32, 32, 3) and up[0, 0, 0] == 0 and up[0, -1, 0] == 200


def test_face_crop_follows_landmarks(grace, analyzer):
    """On a real photo: the crop box is the ROI of the detected landmarks and the crop is its pixels."""
    faces, _ = analyzer.analyze(grace)
    f = faces[0]
    np.testing.assert_allclose(f.box, roi_from_landmarks(f.landmarks, analyzer.crop_scale, analyzer.crop_shift_y))
    np.testing.assert_array_equal(f.crop, crop_square(grace, f.box, analyzer.crop_size))
    x0, y0, x1, y1 = f.det_box
    inside = ((f.landmarks[:, 0] > x0 - 20) & (f.landmarks[:, 0] < x1 + 20)
              & (f.landmarks[:, 1] > y0 - 20) & (f.landmarks[:, 1] < y1 + 40))
    assert inside.mean() > 0.9
