"""Detection + pose per 640x480 frame, this pipeline beside the previous one, in one run:
``python -m benchmarks.pipeline_timing --old ../old`` (``git worktree add ../old 19ac9cd``).

Frames: the six bundled photos as 640x480 frames, the same as the per-pass timing
(``benchmarks.detection_report.frames_640x480``: centre crop to 4:3, resize). Each analyzer (``FaceAnalyzer(preset)``
of this checkout: ``default`` for photos, ``fast`` for the camera loop; ``--old``: the previous
``FaceAnalyzer("cascade")``, dlib HOG -> Haar profile -> BlazeFace with dlib's 68 landmarks) runs
in its own process with one thread per library where it can be set, warms up on every frame, then
times ``analyze`` on every frame for ``--rounds`` rounds: median wall and CPU ms per frame, faces
found. Writes benchmarks/results/pipeline_timing.md with the load average seen.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "benchmarks", "results", "pipeline_timing.md")


def measure(code_root: str, preset: str, frames_path: str, rounds: int) -> dict:
    """In this process: import the analyzer from ``code_root`` and time it on the saved frames."""
    import numpy as np

    sys.path.insert(0, code_root)
    from runtime.detect import FaceAnalyzer

    fa = FaceAnalyzer(preset, threads=1) if "threads" in FaceAnalyzer.__init__.__code__.co_varnames \
        else FaceAnalyzer(preset)
    imgs = list(np.load(frames_path))
    faces = [len(fa.analyze(f)[0]) for f in imgs]  # warm-up
    wall, cpu = [], []
    for _ in range(rounds):
        for f in imgs:
            t, c = time.perf_counter(), time.process_time()
            fa.analyze(f)
            wall.append((time.perf_counter() - t) * 1000)
            cpu.append((time.process_time() - c) * 1000)
    return {"wall_ms": float(np.median(wall)), "cpu_ms": float(np.median(cpu)), "faces": faces}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.pipeline_timing", description=__doc__.split("\n")[0])
    ap.add_argument("--old", help="checkout of the previous pipeline (main 19ac9cd)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--measure", nargs=3, metavar=("ROOT", "PRESET", "FRAMES"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.measure:
        print(json.dumps(measure(*a.measure, a.rounds)))
        return 0
    import tempfile

    import numpy as np

    sys.path.insert(0, ROOT)
    from benchmarks.detection_report import frames_640x480

    # each analyzer runs in a child process that imports its own checkout's `runtime`: the frames
    # are made once here and handed over in a file
    tmp = tempfile.TemporaryDirectory()
    frames_path = os.path.join(tmp.name, "frames.npy")
    np.save(frames_path, np.stack(frames_640x480()))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    runs = [("this pipeline, `default` (photos)", os.path.abspath(ROOT), "default"),
            ("this pipeline, `fast` (camera loop)", os.path.abspath(ROOT), "fast")]
    if a.old:
        runs.append(("previous pipeline, `cascade` (dlib HOG, Haar, BlazeFace + dlib 68 landmarks)",
                     os.path.abspath(a.old), "cascade"))
    load0 = os.getloadavg()[0]
    rows = []
    for name, root, preset in runs:
        p = subprocess.run([sys.executable, os.path.abspath(__file__), "--measure", root, preset, frames_path,
                            "--rounds", str(a.rounds)], capture_output=True, text=True, env=env, cwd=root)
        if p.returncode:
            raise SystemExit(f"{name}: {p.stderr.strip().splitlines()[-1]}")
        rows.append((name, json.loads(p.stdout.strip().splitlines()[-1])))
    load1 = os.getloadavg()[0]
    lines = ["# Detection + pose per 640x480 frame", "",
             f"`python -m benchmarks.pipeline_timing`, {time.strftime('%Y-%m-%d')}: the six bundled photos "
             f"as 640x480 frames (centre crop to 4:3, as detection_timing.md), {a.rounds} rounds after a warm-up, one process per pipeline, run one "
             f"after the other; load average {load0:.1f} -> {load1:.1f} on {os.cpu_count()} cores.", "",
             "| pipeline | median ms (wall) | median ms (CPU) | faces per photo (astronaut, grace_hopper, hard_hat, "
             "woman, bridge, two_people) |", "|---|---:|---:|---|"]
    for name, r in rows:
        lines.append(f"| {name} | {r['wall_ms']:.1f} | {r['cpu_ms']:.1f} | {' '.join(map(str, r['faces']))} |")
    text = "\n".join(lines) + "\n"
    with open(OUT + ".tmp", "w") as f:
        f.write(text)
    os.replace(OUT + ".tmp", OUT)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
