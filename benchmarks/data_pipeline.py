"""Input throughput per CPU core, to size a machine: ``python -m benchmarks.data_pipeline`` (``make bench-data``).

1. The training input pipeline (``training.data.make_dataset``, train=True): per training example
   read and decode two JPEGs (side view and frontal target), resize, flip and colour jitter, batch.
   tf.data's private thread pool is limited to 1 and then 2 threads
   (``tf.data.Options().threading.private_threadpool_size``, one thread per op). The files are read
   once before timing, so they come from the page cache, as a crop set that fits in RAM does.
2. ``training.prepare`` (detection, pose network, canonical crop, JPEG write) with 1 and 2 worker
   processes, on multipie30 images (128 px crops, upscaled to 256 px for detection) and on
   public-domain photos of 1600x1067 px (../shared/samples, each linked several times), closer
   to a camera's raw photos.

Reported: wall images/s, and CPU seconds per image over every thread and worker process. On a
machine shared with other work the wall rate falls and the CPU time does not, so the sizing
arithmetic uses the CPU time. Writes ``benchmarks/results/data_pipeline.md`` and ``.json``.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from runtime.image_io import atomic_write_bytes  # noqa: E402
from training.datasets import DEFAULT_DATA_ROOT  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
SAMPLES = os.path.join(DEFAULT_DATA_ROOT, "..", "samples")
KFACE_IMAGES = 1_600_000  # the original project's K-Face set
GPU_RATES = (500, 1000, 2000, 5000)  # training examples per second a GPU might consume
CORES = (2, 8, 16, 32, 64)


def _cpu() -> float:
    """CPU seconds of this process (all threads) and of its finished child processes."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def bench_tfdata(manifest: dict, rows: list[dict], threads: int, batch: int = 64, batches: int = 30,
                 warm: int = 3) -> dict:
    import tensorflow as tf

    from training.data import make_dataset

    ds = make_dataset({**manifest, "pairs": {"train": rows}}, "train", batch, train=True, seed=0)
    opts = tf.data.Options()
    opts.threading.private_threadpool_size = threads
    opts.threading.max_intra_op_parallelism = 1
    it = iter(ds.with_options(opts))
    for _ in range(warm):
        next(it)
    t0, c0 = time.perf_counter(), _cpu()
    for _ in range(batches):
        b = next(it)
    float(b["x"][0, 0, 0, 0])  # the last batch is materialised
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    n = batches * batch
    return {"threads": threads, "batch": batch, "examples": n, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
            "examples_per_s": round(n / wall, 1), "per_thread_per_s": round(n / wall / threads, 1),
            "cpu_ms_per_example": round(1000 * cpu / n, 3)}


def _link_tree(files: list[tuple[str, str]], root: str) -> None:
    for rel, src in files:
        os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
        os.symlink(os.path.abspath(src), os.path.join(root, rel))


def bench_prepare(files: list[tuple[str, str]], workers: int, scheme: str = "multipie") -> dict:
    """``files``: (relative name, source path). Crops into a temporary folder, deleted after."""
    from training.prepare import prepare

    with tempfile.TemporaryDirectory(prefix="bench-prepare-") as tmp:
        src, dst = os.path.join(tmp, "src"), os.path.join(tmp, "dst")
        _link_tree(files, src)
        t0, c0 = time.perf_counter(), _cpu()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rep = prepare(src, dst, scheme, workers=workers, manifest=False, progress=False)
        wall, cpu = time.perf_counter() - t0, _cpu() - c0
    n = rep["images"]
    if n and rep["faces"] < n / 2:  # a broken pipeline fails fast and would look cheap
        why = rep["failures"][0]["reason"] if rep["failures"] else "?"
        raise RuntimeError(f"training.prepare found faces in only {rep['faces']} of {n} images ({why}): "
                           "the timing would not be that of a working pipeline")
    return {"workers": workers, "images": n, "faces": rep["faces"], "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "images_per_s": round(n / wall, 2), "per_worker_per_s": round(n / wall / workers, 2),
            "cpu_ms_per_image": round(1000 * cpu / n, 1)}


def worker_startup_cpu(image: str) -> float:
    """CPU seconds of a fresh worker process: imports, FaceAnalyzer, one image cropped (models
    load on first use). The 2-worker rows pay this twice, over only a few hundred images."""
    code = ("import sys, tempfile, os; sys.path.insert(0, sys.argv[1]); from training import prepare as p; "
            "p.init_worker({'detector': 'auto', 'size': 128, 'min_face': 24}); "
            "d = tempfile.mkdtemp(); r = p.crop_one(sys.argv[2], os.path.join(d, 'x.jpg'), 'x.jpg'); "
            "assert r['ok'], r")
    c0 = _cpu()
    subprocess.run([sys.executable, "-c", code, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."), image],
                   check=True, capture_output=True)
    return round(_cpu() - c0, 2)


def select_pairs(manifest: dict, n: int) -> list[dict]:
    rows = manifest["pairs"]["train"]
    return rows[:: max(1, len(rows) // n)][:n]


def select_images(root: str, n: int) -> list[tuple[str, str]]:
    """n multipie30 images spread over identities, cameras and lightings."""
    files = sorted(glob.glob(os.path.join(root, "*", "*.jpg")))
    step = max(1, len(files) // n)
    return [(os.path.relpath(f, root), f) for f in files[::step][:n]]


def select_photos(folder: str, copies: int) -> list[tuple[str, str]]:
    photos = sorted(glob.glob(os.path.join(folder, "*.jpg")))
    return [(f"photo_{i:03d}/{os.path.basename(p)}", p) for i in range(copies) for p in photos]


def sizing(res: dict) -> dict:
    """The arithmetic of the README: cores to feed a GPU, hours to prepare K-Face."""
    td = res["tfdata"]
    cpu_ms = max(r["cpu_ms_per_example"] for r in td)  # the costlier setting: sizing errs on the safe side
    out = {"tfdata_cpu_ms_per_example": cpu_ms,
           "cores_to_feed": {str(r): round(r * cpu_ms / 1000, 2) for r in GPU_RATES}}
    for key in ("prepare_multipie30", "prepare_photos"):
        if res.get(key):
            ms = res[key][0]["cpu_ms_per_image"]  # 1 worker, in the main process: no start-up over N images
            out[key] = {"cpu_ms_per_image": ms,
                        "kface_hours_on_cores": {str(c): round(KFACE_IMAGES * ms / 1000 / c / 3600, 2) for c in CORES}}
    return out


def markdown(res: dict, cfg: dict) -> str:
    lines = ["# Input throughput per CPU core", "",
             f"Command: `{cfg['command']}`  ", f"Machine: {cfg['machine']}; {cfg['date']}; load average "
             f"{cfg['load_before']:.1f} before, {cfg['load_after']:.1f} after. {cfg['note']}".rstrip(), "",
             "CPU time counts every thread and worker process; on a shared machine the wall rate falls "
             "and the CPU time does not, so the sizing below uses CPU time (one dedicated core does "
             "1000 / (CPU ms per image) images per second).", "",
             f"## tf.data training pipeline ({cfg['pairs']} multipie30 training pairs, page cache warm)", "",
             "Per training example: two 128 px JPEGs read and decoded, resized, flipped and jittered, "
             "batched by 64 (`training.data.make_dataset`, train=True).", "",
             "| tf.data threads | examples/s (wall) | per thread (wall) | CPU ms per example |",
             "|---:|---:|---:|---:|"]
    for r in res["tfdata"]:
        lines.append(f"| {r['threads']} | {r['examples_per_s']} | {r['per_thread_per_s']} | {r['cpu_ms_per_example']} |")
    for key, title in (("prepare_multipie30", f"multipie30, {cfg['prepare_images']} images of 128 px "
                                              "(upscaled to 256 px for detection)"),
                       ("prepare_photos", f"{cfg['photos']} public-domain photos of 1600x1067 px")):
        if not res.get(key):
            continue
        lines += ["", f"## training.prepare: {title}", "",
                  "| workers | images | faces | images/s (wall) | per worker (wall) | CPU ms per image |",
                  "|---:|---:|---:|---:|---:|---:|"]
        for r in res[key]:
            lines.append(f"| {r['workers']} | {r['images']} | {r['faces']} | {r['images_per_s']} | "
                         f"{r['per_worker_per_s']} | {r['cpu_ms_per_image']} |")
    lines += ["", f"A fresh worker process (imports, models, first image): {res['worker_startup_cpu_s']} s CPU. The "
                  "2-worker rows pay it twice over only these few hundred images, and two processes share the "
                  "cores' caches; the sizing uses the 1-worker CPU time per image (start-up is negligible over "
                  "1.6 M images).", ""]
    s = res["sizing"]
    lines += ["## Sizing", "",
              f"tf.data: {s['tfdata_cpu_ms_per_example']} CPU ms per training example, so a GPU that trains at "
              "R examples/s needs R x that / 1000 cores for the input alone (plus the training process's own "
              "thread, and headroom):", "",
              "| GPU examples/s | " + " | ".join(str(r) for r in GPU_RATES) + " |",
              "|---|" + "---:|" * len(GPU_RATES),
              "| cores for tf.data | " + " | ".join(f"{v:.1f}" for v in s["cores_to_feed"].values()) + " |"]
    for key, what in (("prepare_multipie30", "128 px crops"), ("prepare_photos", "1600x1067 photos")):
        if key in s:
            lines += ["", f"training.prepare on {KFACE_IMAGES:,} images at {s[key]['cpu_ms_per_image']} CPU ms per "
                          f"image ({what}), one worker per core:", "",
                      "| cores | " + " | ".join(str(c) for c in CORES) + " |", "|---|" + "---:|" * len(CORES),
                      "| hours | " + " | ".join(f"{v:.1f}" for v in s[key]["kface_hours_on_cores"].values()) + " |"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.data_pipeline", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.path.join(DEFAULT_DATA_ROOT, "multipie30"))
    ap.add_argument("--pairs", type=int, default=400, help="training pairs for the tf.data pipeline")
    ap.add_argument("--batches", type=int, default=30, help="timed batches of 64 per thread setting")
    ap.add_argument("--prepare-images", type=int, default=300, help="multipie30 images for training.prepare")
    ap.add_argument("--photo-copies", type=int, default=15, help="links to each sample photo for training.prepare")
    ap.add_argument("--samples", default=SAMPLES, help="folder of large photos (public domain)")
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--note", default="", help="free text for the report (e.g. other load on the machine)")
    ap.add_argument("--from-json", help="re-render the report of an earlier run's data_pipeline.json, measuring nothing")
    a = ap.parse_args(argv)
    if a.from_json:
        with open(a.from_json) as f:
            old = json.load(f)
        old["results"]["sizing"] = sizing(old["results"])
        md = markdown(old["results"], old["config"])
        atomic_write_bytes(os.path.join(a.out, "data_pipeline.json"), json.dumps(old, indent=1).encode())
        atomic_write_bytes(os.path.join(a.out, "data_pipeline.md"), md.encode())
        print(md)
        return 0
    if not os.path.isdir(a.data):
        print(f"error: {a.data}: multipie30 not found (set FRONTALIZE_DATA)", file=sys.stderr)
        return 2
    from training.datasets import build_manifest

    load_before = os.getloadavg()[0]
    t0 = time.time()
    manifest = build_manifest(a.data, "multipie")
    pairs = select_pairs(manifest, a.pairs)
    res = {"tfdata": []}
    for threads in (1, 2):
        res["tfdata"].append(bench_tfdata(manifest, pairs, threads, batches=a.batches))
        print("tf.data", res["tfdata"][-1], flush=True)
    images = select_images(a.data, a.prepare_images)
    bench_prepare(images[:4], 1)  # imports and model files: not timed
    res["worker_startup_cpu_s"] = worker_startup_cpu(images[0][1])
    res["prepare_multipie30"] = []
    photos = select_photos(a.samples, a.photo_copies) if os.path.isdir(a.samples) else []
    res["prepare_photos"] = []
    for workers in (1, 2):
        res["prepare_multipie30"].append(bench_prepare(images, workers))
        print("prepare multipie30", res["prepare_multipie30"][-1], flush=True)
        if photos:
            res["prepare_photos"].append(bench_prepare(photos, workers))
            print("prepare photos", res["prepare_photos"][-1], flush=True)
    res["sizing"] = sizing(res)
    import cv2
    import tensorflow as tf

    cfg = {"pairs": len(pairs), "prepare_images": len(images), "photos": len(photos),
           "command": shlex.join(["python", "-m", "benchmarks.data_pipeline"] + list(argv if argv is not None else sys.argv[1:])),
           "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
                      f"{platform.python_version()}, TensorFlow {tf.__version__}, OpenCV {cv2.__version__}",
           "date": time.strftime("%Y-%m-%d"), "seconds": round(time.time() - t0, 1), "note": a.note,
           "load_before": load_before, "load_after": os.getloadavg()[0]}
    os.makedirs(a.out, exist_ok=True)
    atomic_write_bytes(os.path.join(a.out, "data_pipeline.json"),
                       json.dumps({"config": cfg, "results": res}, indent=1).encode())
    md = markdown(res, cfg)
    atomic_write_bytes(os.path.join(a.out, "data_pipeline.md"), md.encode())
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
