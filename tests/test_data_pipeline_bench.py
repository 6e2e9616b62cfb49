"""benchmarks.data_pipeline on a tiny generated data set: the tf.data and training.prepare
measurements return what the report needs, and the sizing arithmetic follows from them."""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

pytest.importorskip("tensorflow")

from conftest import SAMPLES  # noqa: E402
from synthetic_faces import multipie_manifest, write_multipie  # noqa: E402

from benchmarks import data_pipeline as dp  # noqa: E402


def test_tfdata_and_prepare_measurements_and_sizing(tmp_path):
    root = str(tmp_path / "data")
    write_multipie(root, ["001", "002"])
    m = multipie_manifest(root, {"train": ["001", "002"]}, str(tmp_path / "manifest.json"))
    td = dp.bench_tfdata(m, dp.select_pairs(m, 8), threads=1, batch=4, batches=3, warm=1)
    assert td["examples"] == 12 and td["wall_s"] > 0 and td["cpu_s"] > 0
    assert td["cpu_ms_per_example"] == pytest.approx(1000 * td["cpu_s"] / 12, abs=0.1)  # both rounded

    images = dp.select_images(root, 3)
    assert len(images) == 3 and all(os.path.isfile(src) for _, src in images)
    # a pipeline that finds no face (here: plain grey pictures) fails fast, and is not timed as if it worked
    grey = []
    for i in range(3):
        path = str(tmp_path / f"grey{i}.jpg")
        cv2.imwrite(path, np.full((128, 128, 3), 90 + 20 * i, np.uint8))
        grey.append((f"g/grey{i}.jpg", path))
    with pytest.raises(RuntimeError, match="found faces in only 0 of 3 images"):
        dp.bench_prepare(grey, workers=1)
    photos = [(f"p{i}/{name}", os.path.join(SAMPLES, name)) for i, name in
              enumerate(["grace_hopper.jpg", "astronaut.jpg"])]
    pr = dp.bench_prepare(photos, workers=1)
    assert (pr["images"], pr["faces"]) == (2, 2) and pr["cpu_s"] > 0

    res = {"tfdata": [td, {**td, "threads": 2, "cpu_ms_per_example": 2 * td["cpu_ms_per_example"]}],
           "prepare_multipie30": [pr, {**pr, "workers": 2, "cpu_ms_per_image": 0.5 * pr["cpu_ms_per_image"]}],
           "prepare_photos": [], "worker_startup_cpu_s": 1.0}
    s = dp.sizing(res)
    # the costlier thread setting sizes the machine: R examples/s need R x cost cores
    assert s["cores_to_feed"]["1000"] == pytest.approx(2 * td["cpu_ms_per_example"], abs=0.01)
    hours = s["prepare_multipie30"]["kface_hours_on_cores"]  # from the 1-worker row
    assert hours["2"] == pytest.approx(dp.KFACE_IMAGES * pr["cpu_ms_per_image"] / 1000 / 2 / 3600, abs=0.01)
    res["sizing"] = s
    md = dp.markdown(res, {"command": "x", "machine": "m", "date": "d", "note": "", "load_before": 1.0,
                           "load_after": 1.0, "pairs": 8, "prepare_images": 3, "photos": 0})
    assert "| cores for tf.data |" in md and "## training.prepare: multipie30" in md and "1600x1067" not in md
