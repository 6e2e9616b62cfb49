"""Benchmark report from pytest-benchmark's JSON: ``python -m benchmarks.report [--json PATH]``.

Writes ``benchmarks/results/bench.md`` (table: median ms, FPS, CPU ms, peak memory, model
size, speed-up vs the original Keras VGG U-Net; the issue's two bars, checked) and
``benchmarks/results/bench.png`` (bar chart of median ms per image / per frame, log scale).
FPS for a generator = 1000 / median ms; for the camera pipeline = 1000 / mean ms per frame
(detection frames are slower than tracked ones: the mean is the sustained rate).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from runtime.image_io import atomic_write_bytes  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_JSON = os.path.join(HERE, "results", "bench.json")
SPEEDUP_BAR, FPS_BAR = 20.0, 30.0


def load(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def rows_of(data: dict) -> tuple[list[dict], list[dict]]:
    gens, pipes = [], []
    for b in data["benchmarks"]:
        e, st = b["extra_info"], b["stats"]
        per = e["frames"] if e.get("per_frame") else 1  # whole-video rounds -> per frame
        row = {"case": e.get("case", b["name"]), "median_ms": st["median"] * 1e3 / per, "mean_ms": st["mean"] * 1e3 / per,
               "min_ms": st["min"] * 1e3 / per, "rounds": st["rounds"], **e}
        (pipes if b["group"].startswith("camera") else gens).append(row)
    return gens, pipes


def _f(v, fmt="{:.1f}", none="-"):
    return none if v is None else fmt.format(v)


def render(data: dict) -> tuple[str, dict]:
    gens, pipes = rows_of(data)
    original = next((r for r in gens if r.get("original")), None)
    base = original["median_ms"] if original else None
    lines = ["# Benchmarks", ""]
    mi = data.get("machine_info", {})
    cpu = mi.get("cpu", {}).get("brand_raw", mi.get("processor", "?"))
    loads = [r.get("loadavg_1m") for r in gens + pipes if r.get("loadavg_1m") is not None]
    cores = gens[0].get("cpu_count") if gens else None
    busy = cores is not None and max(loads, default=0) > cores
    lines += [f"Run {data.get('datetime', '?')} on {cpu}, {cores or '?'} cores, "
              f"Python {mi.get('python_version', '?')}; load average during the run "
              f"{min(loads, default=0):.1f}-{max(loads, default=0):.1f} "
              + ("(above the core count: other work, or the camera loops' own threads, competed; the CPU ms "
                 "column is the load-robust figure)."
                 if busy else "(below the core count: no other work competed)."), ""]
    if gens:
        src = next((r["source"] for r in gens if r.get("model") == "edge_generator"), "?")
        cal = next((r.get("calibration") for r in gens if r.get("model") == "edge_generator" and r.get("calibration")), "")
        lines += [f"Edge generator weights: `{src}`" + (f"; int8 calibration: {cal}." if cal else "."),
                  "Batch 1, one 128x128 face crop, uint8 in/out (pre/post-processing included), 2 threads.", "",
                  "| case | engine | format | size MB | median ms | FPS | CPU ms | peak RSS MB (+model) | speed-up vs original |",
                  "|---|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in sorted(gens, key=lambda r: r["median_ms"]):
            up = base / r["median_ms"] if base else None
            lines.append(f"| {r['case']} | {r['engine']} | {r['format']} | {_f(r.get('size_mb'), '{:.2f}')} | "
                         f"{r['median_ms']:.2f} | {1000 / r['median_ms']:.1f} | {_f(r.get('cpu_ms_per_image'), '{:.2f}')} | "
                         f"{_f(r.get('rss_peak_mb'), '{:.0f}')} (+{_f(r.get('rss_delta_mb'), '{:.0f}')}) | "
                         f"{_f(up, '{:.1f}x')} |")
        lines.append("")
    if pipes:
        lines += ["Camera pipeline, per frame, 640x480 video with one face. `pipeline-*`: `runtime.camera.process_frame` "
                  "+ mp4v write, one frame per round, all on one thread. `camera-loop-*`: `python -m runtime.camera "
                  "--headless --loop` for 600 frames (decode, generator and output on threads of their own, as "
                  "shipped), time per frame = round / frames, start-up included; sustained FPS: the loop's rate "
                  "past start-up (frames 30-600, median of the rounds).", "",
                  "| case | detect every | median ms | mean ms | FPS (1000/mean) | sustained FPS | CPU ms/frame | face found |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in sorted(pipes, key=lambda r: r["mean_ms"]):
            lines.append(f"| {r['case']} | {r.get('detect_every')} | {r['median_ms']:.1f} | {r['mean_ms']:.1f} | "
                         f"{1000 / r['mean_ms']:.1f} | {_f(r.get('sustained_fps'))} | {_f(r.get('cpu_ms_per_frame'))} | "
                         f"{r.get('faces', 0)}/{r.get('frames', 0)} |")
        lines.append("")
        for r in pipes:
            if r.get("in_loop_fps"):
                lines.append(f"- `{r['case']}`: {r['in_loop_fps']:.1f} FPS in the loop's own readout (start-up excluded); "
                             "stage medians ms: " + ", ".join(f"{k} {v:.1f}" for k, v in r.get("stage_median_ms", {}).items()))
        lines.append("")
    edge = [r for r in gens if r.get("model") == "edge_generator" and r["engine"] != "keras"]
    fastest = min(edge, key=lambda r: r["median_ms"]) if edge else None
    # The bar is judged on the camera loop as shipped when it was measured, else the per-frame cases.
    shipped = [r for r in pipes if r.get("per_frame")] or pipes
    best_pipe = min(shipped, key=lambda r: r["mean_ms"]) if shipped else None
    checks = {}
    if fastest and base:
        up = base / fastest["median_ms"]
        checks["speedup"] = up >= SPEEDUP_BAR
        lines.append(f"- Bar: edge generator, fastest format (`{fastest['case']}`) vs the original Keras model: "
                     f"**{up:.1f}x** per image (needs >= {SPEEDUP_BAR:.0f}x): **{'PASS' if checks['speedup'] else 'FAIL'}**")
    if best_pipe:
        fps = 1000 / best_pipe["mean_ms"]
        checks["fps"] = fps >= FPS_BAR
        lines.append(f"- Bar: headless camera pipeline (`{best_pipe['case']}`): **{fps:.1f} FPS** with start-up "
                     f"(needs >= {FPS_BAR:.0f}): **{'PASS' if checks['fps'] else 'FAIL'}**")
    geo = next((r for r in pipes if r["case"] == "camera-loop-geometry"), None)
    if geo:  # the default generator since issue 22's geometric stage: reported, not a pass/fail bar here
        tfl = next((r for r in pipes if r["case"] == "camera-loop-tflite-fp32"), None)
        fps = geo.get("sustained_fps") or 1000 / geo["mean_ms"]
        lines.append(f"- Default (geometric) generator in the headless camera loop: **{fps:.1f} FPS** sustained"
                     + (f" ({1000 / geo['mean_ms']:.1f} with start-up)" if geo.get("sustained_fps") else "")
                     + (f"; the learned TFLite generator's loop: {tfl.get('sustained_fps') or 1000 / tfl['mean_ms']:.1f}"
                        if tfl else "") + " (issue 22 asks for >= 100 FPS)")
    lines += ["", "![bench](bench.png)", ""]
    return "\n".join(lines), checks


def chart(data: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gens, pipes = rows_of(data)
    rows = sorted(gens, key=lambda r: -r["median_ms"]) + sorted(pipes, key=lambda r: -r["mean_ms"])
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.2))
    names = [r["case"] for r in rows]
    vals = [r["mean_ms"] if r in pipes else r["median_ms"] for r in rows]
    colors = ["#c44e52" if r.get("original") else "#8172b2" if r in pipes else
              "#4c72b0" if r.get("model") == "edge_generator" else "#dd8452" for r in rows]
    ax.barh(names, vals, color=colors)
    ax.set_xscale("log")
    ax.set_xlabel("ms (log): generator median per image; camera pipeline mean per frame")
    for y, v in enumerate(vals):
        ax.text(v, y, f" {v:.1f} ms ({1000 / v:.0f}/s)", va="center", fontsize=8)
    ax.set_xlim(min(vals) / 2, max(vals) * 6)
    ax.set_title("Frontalization speed (2 threads, batch 1); red = original Keras VGG U-Net")
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", default=DEFAULT_JSON, help="pytest-benchmark JSON (--benchmark-json)")
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    args = p.parse_args(argv)
    if not os.path.exists(args.json):
        print(f"error: {args.json}: no such file (run: pytest benchmarks --benchmark-only --benchmark-json={args.json})",
              file=sys.stderr)
        return 1
    data = load(args.json)
    md, checks = render(data)
    atomic_write_bytes(os.path.join(args.out, "bench.md"), md.encode())
    chart(data, os.path.join(args.out, "bench.png"))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
