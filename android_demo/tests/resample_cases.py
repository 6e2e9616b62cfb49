"""OpenCV references for resample.test.mjs: runtime.pose.crop on random squares (every angle,
sizes from 0.2x to 15x the output, partly or wholly outside the image) and cv2.resize INTER_AREA
at integer and fractional scales, on a real photo (samples/two_people_three_quarter.jpg).

    python tests/resample_cases.py OUT.json
"""
from __future__ import annotations

import base64
import json
import os
import sys

import cv2
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from runtime.image_io import load_image  # noqa: E402
from runtime.pose import crop  # noqa: E402

b64 = lambda a: base64.b64encode(np.ascontiguousarray(a).tobytes()).decode()  # noqa: E731


def main():
    rgb = load_image(os.path.join(ROOT, "samples", "two_people_three_quarter.jpg")).rgb
    rgb = rgb[:1001, :1503]  # odd sizes: the pre-shrink takes OpenCV's fractional-area path
    h, w = rgb.shape[:2]
    rs = np.random.RandomState(0)
    crops = []
    for i in range(40):
        size = int(rs.choice([96, 128]))
        side = float(size * np.exp(rs.uniform(np.log(0.2), np.log(15))))
        sq = [float(rs.uniform(-0.2, 1.2) * w), float(rs.uniform(-0.2, 1.2) * h), side, float(rs.uniform(-np.pi, np.pi))]
        crops.append({"square": sq, "size": size, "pixels": b64(crop(rgb, sq, size))})
    resizes = []
    for dw, dh in [(640, 426), (751, 500), (501, 333), (300, 200), (128, 85), (97, 61)]:
        resizes.append({"size": [dw, dh], "pixels": b64(cv2.resize(rgb, (dw, dh), interpolation=cv2.INTER_AREA))})
    small = rgb[:640, :640]  # integer scales: OpenCV's fast path
    for k in (2, 3, 5):
        resizes.append({"crop": 640, "size": [640 // k, 640 // k],
                        "pixels": b64(cv2.resize(small, (640 // k, 640 // k), interpolation=cv2.INTER_AREA))})
    with open(sys.argv[1], "w") as f:
        json.dump({"width": w, "height": h, "image": b64(rgb), "crops": crops, "resizes": resizes}, f)


if __name__ == "__main__":
    main()
