"""The ``frontalize`` CLI on real images with a real tiny exported model; bad inputs are skipped."""
import csv
import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from model_fixtures import ROOT, SAMPLE, ensure_tiny_models
from runtime import frontalize


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    return ensure_tiny_models(str(tmp_path_factory.getbasetemp() / "tiny_models"))


@pytest.fixture
def inputs(tmp_path):
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    shutil.copy(SAMPLE, d / "grace.jpg")
    shutil.copy(SAMPLE, d / "sub" / "grace.jpg")  # same stem, other folder: distinct output name
    (d / "bad.jpg").write_bytes(b"this is not a jpeg")
    (d / "empty.png").write_bytes(b"")
    data = open(SAMPLE, "rb").read()
    (d / "truncated.jpg").write_bytes(data[: len(data) // 3])
    cv2.imwrite(str(d / "sub" / "blank.png"), np.full((240, 320, 3), 128, np.uint8))
    (d / "notes.txt").write_text("not an image, not picked up from a folder")
    return d


def test_folder_with_bad_files_reports_and_skips(tiny, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    rc = frontalize.main([str(inputs), str(tmp_path / "missing.jpg"), str(tmp_path / "none_*.png"),
                          "--model", tiny["edge"]["onnx"], "--out", str(out), "--sheet", "--threads", "1"])
    err = capsys.readouterr().err
    assert rc == 0
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    by_file = {os.path.relpath(r["file"], inputs) if r["file"].startswith(str(inputs)) else r["file"]: r for r in rows}
    assert by_file["grace.jpg"]["status"] == "ok" and by_file["sub/grace.jpg"]["status"] == "ok"
    assert by_file["bad.jpg"]["status"] == "error" and "not an image" in by_file["bad.jpg"]["error"]
    assert "empty file" in by_file["empty.png"]["error"]
    assert "truncated JPEG" in by_file["truncated.jpg"]["error"]
    assert by_file["sub/blank.png"]["status"] == "no_face"
    assert "no such file" in by_file[str(tmp_path / "missing.jpg")]["error"]
    assert "no file matches" in by_file[str(tmp_path / "none_*.png")]["error"]
    assert not any("notes.txt" in r["file"] for r in rows)
    for name in ("bad.jpg", "empty.png", "truncated.jpg", "blank.png", "missing.jpg"):
        assert any(l.startswith("skip:") and name in l for l in err.splitlines()), name
    assert "Traceback" not in err
    # outputs: frontal faces and sheets, distinct names for the two grace.jpg
    ok = [r for r in rows if r["status"] == "ok"]
    assert sorted(os.path.basename(r["output"]) for r in ok) == ["grace_face0.png", "sub__grace_face0.png"]
    front = cv2.imread(ok[0]["output"])
    assert front.shape == (128, 128, 3)
    sheet = cv2.imread(ok[0]["sheet"])
    assert sheet.shape[0] == 256 and sheet.shape[1] > 256 * 2
    box = [float(v) for v in ok[0]["box"].split()]
    assert 100 < box[0] < 250 and box[2] - box[0] > 150  # grace's face, in file pixels
    assert -30 < float(ok[0]["yaw"]) < 30 and ok[0]["detector"].startswith("bf-")
    with open(out / "results.json") as f:
        summary = json.load(f)["summary"]
    assert summary["ok_files"] == 2 and summary["no_face"] == 1 and summary["errors"] == 5


def test_frontal_output_is_the_models_prediction(tiny, tmp_path):
    """The written face equals the engine's output on the analyzer's crop (same framing)."""
    from runtime.image_io import load_image
    from runtime.pipeline import Frontalizer

    rc = frontalize.main([SAMPLE, "--model", tiny["edge"]["tflite-fp32"], "--out", str(tmp_path)])
    assert rc == 0
    fr = Frontalizer(tiny["edge"]["tflite-fp32"])
    faces, _ = fr.faces(load_image(SAMPLE).rgb)
    want = fr.frontalize(faces)[0]
    got = cv2.cvtColor(cv2.imread(str(tmp_path / "grace_hopper_face0.png")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(got, want)


def test_resume_skips_done_files(tiny, tmp_path, capsys):
    args = [SAMPLE, "--model", tiny["edge"]["onnx"], "--out", str(tmp_path)]
    assert frontalize.main(args) == 0
    out = tmp_path / "grace_hopper_face0.png"
    mtime = out.stat().st_mtime_ns
    assert frontalize.main(args + ["--resume"]) == 0
    assert out.stat().st_mtime_ns == mtime
    with open(tmp_path / "results.json") as f:
        assert [r["status"] for r in json.load(f)["results"]] == ["ok"]


def test_exit_codes(tiny, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"junk")
    assert frontalize.main([str(bad), "--model", tiny["edge"]["onnx"], "--out", str(tmp_path / "o1")]) == 1
    assert frontalize.main([str(tmp_path / "nothing"), "--out", str(tmp_path / "o2")]) == 1
    assert frontalize.main([SAMPLE, "--model", str(tmp_path / "missing.onnx"), "--out", str(tmp_path / "o3")]) == 2
    err = capsys.readouterr().err
    assert "error: " in err and "missing.onnx: no such model file" in err


def test_console_entry_point_runs_as_module(tiny, tmp_path):
    r = subprocess.run([sys.executable, "-m", "runtime.frontalize", SAMPLE, "--model", tiny["edge"]["tflite-int8"],
                        "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "grace_hopper_face0.png").exists() and (tmp_path / "results.csv").exists()


# --- reliability (issue 12) ---------------------------------------------------------------

def test_hostile_names_and_shapes_do_not_end_the_batch(tiny, tmp_path, capsys):
    d = tmp_path / "in"
    d.mkdir()
    data = open(SAMPLE, "rb").read()
    cv2.imwrite(str(d / "tall.png"), np.full((65000, 1, 3), 128, np.uint8))
    cv2.imwrite(str(d / "wide.jpg"), np.full((5, 50000, 3), 128, np.uint8))
    cv2.imwrite(str(d / "thin.png"), np.full((50000, 5, 3), 128, np.uint8))
    long_name = "L" * 240 + ".jpg"  # 244 bytes
    (d / long_name).write_bytes(data)
    bad_utf8 = os.path.join(os.fsencode(d), b"bad\xffname.jpg")
    with open(bad_utf8, "wb") as f:
        f.write(data)
    (d / "new\nline.jpg").write_bytes(data[:500])
    (d / "motion.jpg").write_bytes(data + b"\0" * 100 + b"ftypmp42" * 500)
    from PIL import Image

    Image.open(SAMPLE).save(d / "anim.gif")
    os.mkfifo(d / "fifo.jpg")
    out = tmp_path / "out"
    rc = frontalize.main([str(d), "--model", tiny["edge"]["onnx"], "--out", str(out), "--threads", "1", "--sheet"])
    err = capsys.readouterr().err
    assert rc == 0 and "Traceback" not in err
    with open(out / "results.csv", encoding="utf-8", newline="") as f:  # valid UTF-8 for the csv module
        rows = list(csv.DictReader(f))
    by = {os.path.basename(r["file"]): r for r in rows}
    assert len(by) == 9
    # the undecodable byte as a backslash escape, as `ls -b` shows it
    assert by[long_name]["status"] == "ok" and by["bad\\xffname.jpg"]["status"] == "ok"
    assert by["motion.jpg"]["status"] == "ok" and by["anim.gif"]["status"] == "ok"
    assert {by[n]["status"] for n in ("tall.png", "wide.jpg", "thin.png")} <= {"no_face", "error"}
    assert "FIFO" in by["fifo.jpg"]["error"] and "truncated JPEG" in by["new\nline.jpg"]["error"]
    with open(out / "results.json") as f:
        assert len(json.load(f)["results"]) == 9
    skips = [l for l in err.replace("\r", "\n").splitlines() if l.startswith("skip:")]
    assert any("new\\nline.jpg: truncated JPEG" in l for l in skips)
    assert all(len(os.fsencode(p)) <= 255 for p in os.listdir(out))
    assert not [p for p in os.listdir(out) if ".tmp" in p or p == frontalize.JOURNAL]


def test_an_unexpected_error_is_a_row_and_exit_3(tiny, tmp_path, capsys, monkeypatch):
    real = frontalize.process_file

    def flaky(fr, path, *a):
        if "boom" in path:
            raise RuntimeError("detector exploded")
        return real(fr, path, *a)

    monkeypatch.setattr(frontalize, "process_file", flaky)
    shutil.copy(SAMPLE, tmp_path / "boom.jpg")
    rc = frontalize.main([str(tmp_path / "boom.jpg"), SAMPLE, "--model", tiny["edge"]["onnx"],
                          "--out", str(tmp_path / "o")])
    assert rc == frontalize.EXIT_INTERNAL == 3
    with open(tmp_path / "o" / "results.json") as f:
        rows = json.load(f)["results"]
    assert [r["status"] for r in rows] == ["error", "ok"] and "internal error (RuntimeError" in rows[0]["error"]


def _wait_journal(path, lines, proc, timeout=240):
    import time

    t0 = time.time()
    while time.time() - t0 < timeout and proc.poll() is None:
        if os.path.exists(path) and open(path, "rb").read().count(b"\n") >= lines:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("sig", ["KILL", "TERM"])
def test_killed_run_resumes_from_the_journal(tiny, tmp_path, sig):
    import signal

    d = tmp_path / "in"
    d.mkdir()
    for i in range(12):
        shutil.copy(SAMPLE, d / f"g{i:02d}.jpg")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "runtime.frontalize", str(d), "--model", tiny["edge"]["onnx"], "--out", str(out),
           "--threads", "1", "--detector", "fast", "--resume"]
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert _wait_journal(out / frontalize.JOURNAL, 3, p), p.communicate()[1][-2000:]
    p.send_signal(getattr(signal, "SIG" + sig))
    p.communicate(timeout=60)
    (out / ".g99_face0.png.tmp999999999").write_bytes(b"left by a killed writer")
    done = {f: os.stat(out / f).st_mtime_ns for f in os.listdir(out) if f.endswith("_face0.png")}
    assert len(done) >= 3
    if sig == "TERM":  # handled like Ctrl-C: what was done is in results.json already
        assert p.returncode == 0
        with open(out / "results.json") as f:
            assert len(json.load(f)["results"]) >= 3
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    with open(out / "results.json") as f:
        rows = json.load(f)["results"]
    assert len(rows) == 12 and all(x["status"] == "ok" for x in rows)
    assert all(os.stat(out / f).st_mtime_ns == t for f, t in done.items())  # kept, not redone
    assert not [f for f in os.listdir(out) if ".tmp" in f or f == frontalize.JOURNAL]


def test_a_crash_outside_the_file_loop_exits_3_in_one_line(tiny, tmp_path, capsys, monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(frontalize, "write_results", broken)
    rc = frontalize.main([SAMPLE, "--model", tiny["edge"]["onnx"], "--out", str(tmp_path)])
    err = [l for l in capsys.readouterr().err.replace("\r", "\n").splitlines() if l.startswith("error:")]
    assert rc == 3 and err == ["error: internal error (RuntimeError: disk on fire)"]
    assert (tmp_path / frontalize.JOURNAL).exists()  # what was done is still on disk for --resume


# --- sources (issue 11): video files, folders, globs, streams; --json lines ------------------

def test_video_source_gives_per_frame_rows_and_json_lines(tiny, tmp_path, capsys):
    from model_fixtures import make_face_video

    video = make_face_video(str(tmp_path / "clip.mp4"), 10)
    out = tmp_path / "out"
    rc = frontalize.main(["--source", video, SAMPLE, "--vid-stride", "4", "--json", "--model", tiny["edge"]["onnx"],
                          "--out", str(out), "--threads", "1"])
    cap = capsys.readouterr()
    assert rc == 0
    lines = [json.loads(l) for l in cap.out.splitlines()]
    assert [(l["file"], l["frame"]) for l in lines] == [(SAMPLE, None), (video, 0), (video, 4), (video, 8)]
    assert all(l["face"] == 0 and len(l["box"]) == 4 and os.path.exists(l["output"]) for l in lines)
    assert os.path.basename(lines[2]["output"]) == "clip_f000004_face0.png"
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["frame"] for r in rows] == ["", "0", "4", "8"] and all(r["status"] == "ok" for r in rows)
    rc = frontalize.main([video, "--max-frames", "2", "--model", tiny["edge"]["onnx"], "--out", str(tmp_path / "o2")])
    assert rc == 0
    with open(tmp_path / "o2" / "results.json") as f:
        assert [r["frame"] for r in json.load(f)["results"]] == [0, 1]


def test_folder_and_glob_sources(tiny, tmp_path, capsys):
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(SAMPLE, d / "a.jpg")
    shutil.copy(SAMPLE, tmp_path / "g1.jpg")
    shutil.copy(SAMPLE, tmp_path / "g2.jpg")
    rc = frontalize.main([str(d), "--source", str(tmp_path / "g*.jpg"), "--json", "--model", tiny["edge"]["onnx"],
                          "--out", str(tmp_path / "out")])
    lines = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
    assert rc == 0 and [os.path.basename(l["file"]) for l in lines] == ["a.jpg", "g1.jpg", "g2.jpg"]


@pytest.mark.parametrize("source, expect", [("rtsp://127.0.0.1:9/none", "rtsp://127.0.0.1:9/none: cannot open"),
                                            ("http://127.0.0.1:9/stream.mjpg", "http://127.0.0.1:9/stream.mjpg: cannot open"),
                                            ("9", "camera 9: cannot open")])
def test_a_source_that_cannot_be_opened_is_one_clear_line(tiny, tmp_path, capsys, source, expect):
    rc = frontalize.main(["--source", source, "--model", tiny["edge"]["onnx"], "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 1
    lines = [l for l in err.splitlines() if l.strip()]
    assert any(l.startswith("skip: ") and expect in l for l in lines), err
    assert "Traceback" not in err and not any("@ 0x" in l for l in lines), err  # no FFmpeg chatter


def _sample_copies(folder, n: int):
    """``folder`` made, with n copies of the sample photo: p0.jpg ... p{n-1}.jpg."""
    folder.mkdir()
    for k in range(n):
        shutil.copy(SAMPLE, folder / f"p{k}.jpg")
    return folder


def _listing(d) -> set[str]:
    return {os.path.join(d, f) for f in os.listdir(d)}


def test_full_disk_stops_at_once_and_resume_finishes(tiny, tmp_path, capsys, small_disk):
    src = _sample_copies(tmp_path / "in", 6)
    # bytes one file's outputs take (frontal + sheet), measured on an ordinary folder
    probe = tmp_path / "probe"
    assert frontalize.main([str(src / "p0.jpg"), "--sheet", "--model", tiny["edge"]["onnx"], "--out", str(probe)]) == 0
    per_file = sum(os.path.getsize(probe / f) for f in os.listdir(probe) if f.endswith(".png"))
    size = frontalize.reserve_bytes(6) + int(2.5 * per_file) + 8192
    disk = small_disk.mount(size)
    out = os.path.join(disk, "out")
    args = [str(src), "--sheet", "--model", tiny["edge"]["onnx"], "--out", out]
    capsys.readouterr()
    assert frontalize.main(args) == frontalize.EXIT_OUTPUT_LOST
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "no space left on device" in err[0] and "stopped after 2 of 6" in err[0], err
    assert err[0].startswith(f"error: {out}/") and "--resume" in err[0]
    with open(os.path.join(out, "results.csv"), encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["ok", "ok"]
    listed = {r["output"] for r in rows} | {r["sheet"] for r in rows}
    extra = _listing(out) - listed - {os.path.join(out, n) for n in ("results.csv", "results.json", frontalize.JOURNAL)}
    assert not extra, extra  # no half-written or unlisted file, no temp file, the reserve given back
    done = {p: os.stat(p).st_mtime_ns for p in listed}
    small_disk.resize(size + 8 * per_file)
    assert frontalize.main(args + ["--resume"]) == 0
    with open(os.path.join(out, "results.csv"), encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert sorted(os.path.basename(r["file"]) for r in rows) == [f"p{k}.jpg" for k in range(6)]
    assert all(r["status"] == "ok" and os.path.exists(r["output"]) and os.path.exists(r["sheet"]) for r in rows)
    assert {p: os.stat(p).st_mtime_ns for p in done} == done  # nothing redone


def test_output_folder_vanishing_stops_the_run_and_is_not_recreated(tiny, tmp_path, capsys, monkeypatch):
    src = _sample_copies(tmp_path / "in", 4)
    out = tmp_path / "out"
    real = frontalize.process_file
    seen = []

    def unplugged(fr, path, *a):  # the stick is pulled after the second file
        seen.append(path)
        if len(seen) == 3:
            shutil.rmtree(out)
        return real(fr, path, *a)

    monkeypatch.setattr(frontalize, "process_file", unplugged)
    assert frontalize.main([str(src), "--model", tiny["edge"]["onnx"], "--out", str(out)]) == frontalize.EXIT_OUTPUT_LOST
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "output folder vanished" in err[0] and "stopped after 2 of 4" in err[0], err
    assert not out.exists() and len(seen) == 3


def test_iphone_heic_photo_is_frontalized(tiny, tmp_path):
    heic = os.path.join(os.path.dirname(__file__), "data", "profile_woman_orient6.heic")  # stored sideways
    assert frontalize.main([heic, "--sheet", "--model", tiny["edge"]["onnx"], "--out", str(tmp_path)]) == 0
    with open(tmp_path / "results.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["ok"] and float(rows[0]["yaw"]) < -60  # upright, read as a profile
    assert cv2.imread(rows[0]["sheet"]).shape[0] == 256
