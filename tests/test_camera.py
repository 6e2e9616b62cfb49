"""The camera loop, headless, on a real generated face video with a real tiny exported model."""
import json
import os
import shutil
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from model_fixtures import ROOT, SAMPLE, ensure_tiny_models, make_face_video, video_transform
from runtime import camera
from runtime.image_io import load_image

FRAMES = 30


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    return ensure_tiny_models(str(tmp_path_factory.getbasetemp() / "tiny_models"))


@pytest.fixture(scope="session")
def video(tmp_path_factory):
    return make_face_video(str(tmp_path_factory.mktemp("video") / "face.mp4"), FRAMES)


def run_camera(capsys, *argv):
    rc = camera.main(list(argv))
    err = capsys.readouterr().err
    return rc, [l for l in err.splitlines() if l.strip()]


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(l) for l in f]


def test_headless_video_writes_annotated_video_and_frame_json(tiny, video, tmp_path, capsys, analyzer):
    out = tmp_path / "cam"
    rc, err = run_camera(capsys, "--source", video, "--model", tiny["edge"]["onnx"], "--headless", "--out", str(out),
                         "--detect-every", "5")
    assert rc == 0
    assert any(l.endswith(f"end of video after {FRAMES} frames") for l in err), err
    assert not any("Traceback" in l for l in err)
    assert not (out / "camera.part.mkv").exists()
    cap = cv2.VideoCapture(str(out / "camera.mkv"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == FRAMES
    ok, frame = cap.read()
    assert ok and frame.shape == (480, 640 + 480, 3)  # input | frontal scaled to the frame height
    rows = read_jsonl(out / "frames.jsonl")
    assert [r["frame"] for r in rows] == list(range(FRAMES))  # a file in headless mode: every frame, in order
    assert all(r["box"] is not None for r in rows)
    # detection on frames 0, 5, 10, ...; optical-flow tracking in between
    assert [r["detector"] != "track" for r in rows] == [i % 5 == 0 for i in range(FRAMES)]
    for r in rows:
        assert {"generator", "draw", "write"} <= set(r["ms"]) and r["fps"] >= 0
        assert ("detect" in r["ms"]) != ("track" in r["ms"])
    t = [r["t"] for r in rows]  # seconds since the loop started, when each frontal was ready: in order
    assert t[0] > 0 and all(b >= a for a, b in zip(t, t[1:])), t
    # Boxes against the truth: the video moves/scales the sample photo by known transforms, so
    # the crop box of the photo's face, transformed, is where each frame's box should be.
    face = analyzer.analyze(load_image(SAMPLE).rgb)[0][0]
    roi0 = np.asarray(face.box, float)  # the canonical square's bounding box, as the loop reports
    errs = {"track": [], "det": []}
    for i, r in enumerate(rows):
        m = video_transform(i, FRAMES)
        centre, side = m[:, :2] @ ((roi0[:2] + roi0[2:]) / 2) + m[:, 2], (roi0[2] - roi0[0]) * m[0, 0]
        box = np.array(r["box"])
        errs["track" if r["detector"] == "track" else "det"].append(
            (np.abs((box[:2] + box[2:]) / 2 - centre).max() / side, abs((box[2] - box[0]) / side - 1)))
    track, det = np.array(errs["track"]), np.array(errs["det"])
    # Centre error as a fraction of the face box side. Typical tracked frames are within 5 %; the
    # worst frame between two detections drifts further and varies from run to run (0.18 and 0.22
    # seen in full-suite runs, below 0.12 in others), so the bound on the worst is 0.3.
    assert np.median(track[:, 0]) < 0.05 and track[:, 0].max() < 0.3, track
    assert track[:, 1].mean() < max(0.1, 1.5 * det[:, 1].mean())  # size as good as detecting


def test_geometric_generator_reads_a_tracked_face_in_one_pass_like_two(video):
    """In the camera loop the default generator starts 3DDFA_V2 from the previous frame's landmarks on
    a tracked face (one network pass instead of two); its reading stays that of the two-pass one."""
    from runtime.detect import FaceAnalyzer
    from runtime.geometry import GeometryEngine

    eng = GeometryEngine(threads=1)
    tracker = camera.FaceTracker(FaceAnalyzer("fast", threads=1), 5)
    runs, run = [], eng.tddfa._run
    eng.tddfa._run = lambda rgb, squares: (runs.append(len(squares)), run(rgb, squares))[1]
    cap = cv2.VideoCapture(video)
    gaps, yaws, detectors = [], [], []
    for _ in range(FRAMES):
        ok, bgr = cap.read()
        assert ok
        rgb, face = camera.track_frame(bgr, tracker, {})
        del runs[:]
        frontal = camera.generate(eng, rgb, face, {})
        assert frontal.shape == (128, 128, 3)
        detectors.append(face.detector)
        if face.detector == "track":
            assert runs == [1]  # one pass
            two = eng.tddfa.read(rgb, [face.square])[0]
            side = np.ptp(two.landmarks, axis=0).max()
            gaps.append(np.linalg.norm(eng._last[0] - two.landmarks, axis=1).mean() / side)
            yaws.append(abs(face.yaw - two.yaw))
        else:
            assert runs == [1, 1]  # a detection frame: both passes
    assert detectors.count("track") == FRAMES - FRAMES // 5
    # landmarks within 2 % of the face's size on average, yaw within 3 degrees
    print(f"one pass vs two: landmarks {np.mean(gaps):.4f} of the face size, yaw max {max(yaws):.2f} deg")
    assert np.mean(gaps) < 0.02 and max(yaws) < 3.0, (np.mean(gaps), max(yaws))


def test_max_frames_stops_early(tiny, video, tmp_path, capsys):
    rc, err = run_camera(capsys, "--source", video, "--model", tiny["edge"]["tflite-fp32"], "--headless",
                         "--out", str(tmp_path), "--max-frames", "7", "--detect-every", "3")
    assert rc == 0 and len(read_jsonl(tmp_path / "frames.jsonl")) == 7
    assert any("--max-frames 7" in l for l in err)



def test_a_filling_disk_stops_the_loop_with_exit_4_and_a_playable_video(tiny, video, capsys, small_disk):
    disk = small_disk.mount(camera.MIN_FREE_BYTES + 3 * 2**20)  # a few seconds of video, then the margin
    rc, err = run_camera(capsys, "--source", video, "--model", tiny["edge"]["onnx"], "--headless", "--loop",
                         "--out", disk, "--max-frames", "5000")
    lines = [l for l in err if l.strip()]
    assert rc == 4 and len(lines) == 1 and "less than 16 MB free; stopped after" in lines[0], lines
    n = int(lines[0].split("stopped after ")[1].split()[0])
    assert 0 < n < 5000 and len(read_jsonl(os.path.join(disk, "frames.jsonl"))) == n  # whole lines only
    cap = cv2.VideoCapture(os.path.join(disk, "camera.mkv"))
    ok, _ = cap.read()
    assert ok and cap.get(cv2.CAP_PROP_FRAME_COUNT) != 0
    cap.release()


def test_loop_plays_a_file_again(tiny, video, tmp_path, capsys):
    rc, err = run_camera(capsys, "--source", video, "--model", tiny["edge"]["onnx"], "--headless", "--loop",
                         "--out", str(tmp_path), "--max-frames", str(FRAMES + 5))
    assert rc == 0 and len(read_jsonl(tmp_path / "frames.jsonl")) == FRAMES + 5
    assert err[-2:] and not any("INFO" in l for l in err)


@pytest.mark.parametrize("source,expect", [
    ("97", "camera 97: cannot open"),
    ("rtsp://127.0.0.1:9/nothing", "rtsp://127.0.0.1:9/nothing: cannot open"),
    ("/nonexistent/clip.mp4", "/nonexistent/clip.mp4: no such video file"),
])
def test_source_that_fails_ends_with_one_line(tiny, tmp_path, capsys, source, expect):
    rc, err = run_camera(capsys, "--source", source, "--model", tiny["edge"]["onnx"], "--headless", "--out", str(tmp_path))
    assert rc == 1
    ours = [l for l in err if l.startswith("error:")]
    assert len(ours) == 1 and expect in ours[0], err
    assert not any("Traceback" in l for l in err)


def test_video_deleted_mid_run_ends_cleanly(tiny, video, tmp_path):
    clip = tmp_path / "clip.mp4"
    shutil.copy(video, clip)
    out = tmp_path / "cam"
    proc = subprocess.Popen([sys.executable, "-m", "runtime.camera", "--source", str(clip), "--model", tiny["edge"]["onnx"],
                             "--headless", "--out", str(out)], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (out / "frames.jsonl").exists() and (out / "frames.jsonl").stat().st_size > 0:
            os.remove(clip)
            break
        time.sleep(0.05)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "end of video after" in err.strip().splitlines()[-2]  # then the "wrote ..." line
    assert (out / "camera.mkv").exists() and not (out / "camera.part.mkv").exists()
    assert len(read_jsonl(out / "frames.jsonl")) >= 1


def test_latest_frame_reader_drops_frames_for_a_slow_consumer(video):
    src = camera.FrameSource(video, latest_only=True)
    seen = []
    try:
        while (got := src.read()) is not None:
            seen.append(got[0])
            time.sleep(0.02)  # a slow model
    finally:
        src.close()
    assert seen == sorted(set(seen)) and seen[-1] <= FRAMES - 1
    assert len(seen) + src.dropped == seen[-1] + 1  # each frame was either processed or dropped
    assert src.reason.endswith(f"end of video after {FRAMES} frames")


def test_usage_errors(capsys):
    assert camera.main(["--headless"]) == 2
    assert "--headless needs --out" in capsys.readouterr().err
    if not camera.has_gui():
        assert camera.main(["--source", "0"]) == 2
        assert "no GUI" in capsys.readouterr().err


@pytest.mark.parametrize("sig", ["TERM", "KILL"])
def test_partial_video_stays_decodable_after_a_kill(tiny, tmp_path_factory, tmp_path, sig):
    """SIGTERM closes the video like Ctrl-C; after SIGKILL camera.part.mkv still decodes (Matroska),
    and the next run keeps it as camera.killed.mkv."""
    import signal

    clip = str(tmp_path_factory.getbasetemp() / "long_face.mp4")
    if not os.path.exists(clip):
        make_face_video(clip, 400)
    out = tmp_path / "cam"
    cmd = [sys.executable, "-m", "runtime.camera", "--source", clip, "--model", tiny["edge"]["onnx"],
           "--headless", "--out", str(out), "--threads", "1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if (out / "frames.jsonl").exists() and open(out / "frames.jsonl").read().count("\n") >= 60:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the video ended before the kill"
    proc.send_signal(getattr(signal, "SIG" + sig))
    _, err = proc.communicate(timeout=120)
    video = out / ("camera.mkv" if sig == "TERM" else "camera.part.mkv")
    if sig == "TERM":
        assert proc.returncode == 0 and "interrupted after" in err and not (out / "camera.part.mkv").exists()
    cap = cv2.VideoCapture(str(video))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n >= 24, f"{video.name}: {n} decodable frames"
    if sig == "KILL":
        r = subprocess.run(cmd + ["--max-frames", "2"], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0 and (out / "camera.killed.mkv").exists() and (out / "camera.mkv").exists()
