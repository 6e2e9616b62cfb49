"""Soak the headless camera loop: ``python -m benchmarks.soak_camera --model M.onnx --minutes 20``.

Runs ``python -m runtime.camera --headless --loop`` on a generated face video (tests/model_fixtures
``make_face_video``, played again at its end) for the given time, samples the process's RSS
(``/proc/PID/status`` VmRSS) every 10 s, then stops it with SIGTERM (a service manager's stop)
and reports frames processed, RSS after warm-up and at the end, the exit code and any stderr
line besides the final two. Markdown to ``--md``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rss_mb(pid: int) -> float | None:
    try:
        return int(re.search(r"VmRSS:\s+(\d+)", open(f"/proc/{pid}/status").read()).group(1)) / 1024
    except (OSError, AttributeError):
        return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--work", default="/tmp/soak_camera")
    ap.add_argument("--md", default=os.path.join(ROOT, "benchmarks", "results", "soak_camera.md"))
    a = ap.parse_args(argv)
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from model_fixtures import make_face_video

    os.makedirs(a.work, exist_ok=True)
    clip = os.path.join(a.work, "face.mp4")
    if not os.path.exists(clip):
        make_face_video(clip, 150)
    out = os.path.join(a.work, "out")
    cmd = [sys.executable, "-m", "runtime.camera", "--source", clip, "--loop", "--headless", "--out", out,
           "--model", a.model, "--threads", "1"]
    p = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    t0, samples = time.time(), []
    while time.time() - t0 < a.minutes * 60 and p.poll() is None:
        time.sleep(10)
        samples.append((round(time.time() - t0), rss_mb(p.pid)))
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    with open(os.path.join(out, "frames.jsonl")) as f:
        frames = sum(1 for _ in f)
    lines = [l for l in err.splitlines() if l.strip()]
    warm = next((m for t, m in samples if t >= 60 and m), samples[0][1] if samples else None)
    res = {"minutes": round((time.time() - t0) / 60, 1), "frames": frames, "rc": p.returncode,
           "rss_mb_after_1_min": round(warm or 0), "rss_mb_end": round(samples[-1][1] or 0) if samples else None,
           "rss_mb_max": round(max(m for _, m in samples if m)) if samples else None,
           "stderr_other": [l for l in lines if not l.startswith(("interrupted after", "wrote "))][:20],
           "samples": samples}
    print(json.dumps({k: v for k, v in res.items() if k != "samples"}, indent=1))
    with open(a.md, "w") as f:
        f.write("# Camera soak: `python -m benchmarks.soak_camera`\n\n"
                f"`runtime.camera --headless --loop` on a generated 640x480 face video, model `{os.path.basename(a.model)}`, "
                f"1 thread, on this shared 2-core machine; stopped with SIGTERM.\n\n"
                f"- {res['minutes']} min, {frames} frames processed, exit {p.returncode}; "
                f"stderr lines besides the closing two: {len(res['stderr_other'])}\n"
                f"- RSS after 1 min {res['rss_mb_after_1_min']} MB, at the end {res['rss_mb_end']} MB, "
                f"max {res['rss_mb_max']} MB\n\n| s | RSS (MB) |\n|---:|---:|\n")
        f.write("".join(f"| {t} | {m:.0f} |\n" for t, m in samples[::max(1, len(samples) // 20)] if m))
    return 0 if p.returncode == 0 and not res["stderr_other"] else 1


if __name__ == "__main__":
    sys.exit(main())
