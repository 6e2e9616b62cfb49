"""training.prepare: a batch full of bad inputs completes, reports each one, and resumes."""
import json
import os
import shutil

import pytest

from odd_images import EXPECT
from runtime.image_io import load_image
from training.prepare import JOURNAL, main, prepare


@pytest.fixture(scope="module")
def batch(odd_images, tmp_path_factory):
    """SRC = every odd input (in a subfolder too) and the sample photo; first prepare run, 2 worker processes."""
    root = tmp_path_factory.mktemp("prep")
    src, dst = root / "src", root / "dst"
    for name, path in odd_images.items():
        os.makedirs(src / "odd", exist_ok=True)
        shutil.copy(path, src / "odd" / name)
    shutil.copy(os.path.join(os.path.dirname(__file__), "..", "samples", "grace_hopper.jpg"), src / "grace.jpg")
    (src / "notes.txt").write_text("not an image extension: ignored\n")
    rep = prepare(str(src), str(dst), scheme="multipie", workers=2, progress=False)
    return src, dst, rep


def test_batch_completes_and_lists_every_bad_file(batch):
    src, dst, rep = batch
    assert rep["images"] == len(EXPECT) + 1 and rep["run"]["other_files_ignored"] == 1
    failed = {os.path.basename(f["path"]): f for f in rep["failures"]}
    for name, (kind, what) in EXPECT.items():
        rel = os.path.join("odd", name)
        made = (dst / rel).exists()
        if kind == "error":
            assert not made and what in failed[name]["reason"]
            assert "\n" not in failed[name]["reason"]
        elif kind == "small":
            assert not made and failed[name]["kind"] in ("face too small", "no face")
        elif what == 0:
            assert not made and failed[name]["kind"] == "no face"
        else:
            assert made and name not in failed, failed.get(name)
            crop = load_image(dst / rel).rgb
            assert crop.shape == (128, 128, 3)
    assert {f["kind"] for f in rep["failures"]} >= {"unreadable", "truncated", "empty", "too large", "no face"}
    assert rep["failed"] == len(failed) == 6
    assert rep["faces"] == rep["images"] - rep["failed"]
    assert rep["several_faces"] == [{"path": os.path.join("odd", "two_faces.jpg"), "faces": 2}]


def test_reports_are_written(batch):
    src, dst, rep = batch
    on_disk = json.loads((dst / "prepare_report.json").read_text())
    assert on_disk["failures"] == rep["failures"] and on_disk["per_yaw"] == rep["per_yaw"]
    md = (dst / "prepare_report.md").read_text()
    for f in rep["failures"]:
        assert f"`{f['path']}`: {f['reason']}" in md
    assert (dst / "prepare_report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # nothing matches the multipie naming here: all "unlabelled", and no manifest
    assert [r["yaw"] for r in rep["per_yaw"]] == [None]
    assert rep["manifest"].startswith("not written")
    assert not [f for _, _, fs in os.walk(dst) for f in fs if ".tmp" in f]


def test_second_run_resumes_and_keeps_crops(batch):
    src, dst, first = batch
    crops = sorted(str(p) for p in dst.rglob("*") if p.is_file() and not p.name.startswith("prepare_"))
    stamp = {p: os.stat(p).st_mtime_ns for p in crops}
    rep = prepare(str(src), str(dst), scheme="multipie", workers=2, progress=False)
    assert rep["run"]["processed"] == 0 and rep["run"]["resumed"] == first["images"]
    assert {p: os.stat(p).st_mtime_ns for p in crops} == stamp
    for k in ("images", "faces", "failed", "failures", "several_faces", "per_yaw"):
        assert rep[k] == first[k], k


def test_resume_after_a_crash(batch, tmp_path):
    """A crop lost in a crash (temp file left, journal line cut) is redone; nothing else is."""
    src, dst0, first = batch
    dst = tmp_path / "dst"
    shutil.copytree(dst0, dst)
    lost = dst / "grace.jpg"
    lost.rename(dst / "grace.jpg.tmp4242")  # as if killed between write and rename
    with open(dst / JOURNAL, "a") as f:
        f.write('{"path": "grace.jpg", "ok": tr')  # as if killed mid-line
    rep = prepare(str(src), str(dst), workers=1, progress=False)
    assert rep["run"]["processed"] == 1 and lost.exists()
    assert not (dst / "grace.jpg.tmp4242").exists()
    assert rep["faces"] == first["faces"]
    # --retry-failed redoes only the failures
    rep = prepare(str(src), str(dst), workers=1, progress=False, retry_failed=True)
    assert rep["run"]["processed"] == first["failed"]


def test_per_yaw_report_and_manifest(tmp_path, grace, odd_images):
    """multipie naming: the yaw of each file goes to the report and the crops get a manifest."""
    from PIL import Image

    src = tmp_path / "src" / "044"
    src.mkdir(parents=True)
    Image.fromarray(grace).save(src / "044_01_01_051_07.jpg")  # frontal: a face
    Image.fromarray(grace[:, ::-1]).save(src / "044_01_01_050_07.jpg")  # +15: a face
    shutil.copy(odd_images["noise.png"], src / "044_01_01_110_07.png")  # -90: no face
    dst = tmp_path / "dst"
    assert main([str(tmp_path / "src"), str(dst), "--workers", "1", "--no-progress", "--size", "64"]) == 0
    rep = json.loads((dst / "prepare_report.json").read_text())
    assert rep["per_yaw"] == [{"yaw": -90, "images": 1, "faces": 0, "rate": 0.0},
                              {"yaw": 0, "images": 1, "faces": 1, "rate": 1.0},
                              {"yaw": 15, "images": 1, "faces": 1, "rate": 1.0}]
    assert load_image(dst / "044" / "044_01_01_051_07.jpg").rgb.shape == (64, 64, 3)
    m = json.loads((dst / "manifest.json").read_text())
    assert m["pairs"]["test"] == [{"x": os.path.join("044", "044_01_01_050_07.jpg"),
                                   "y": os.path.join("044", "044_01_01_051_07.jpg"), "id": "044", "yaw": 15}]
    assert m["unmatched_files"] == 0  # the report's chart is not counted as an image


def test_cli_errors(tmp_path, capsys):
    assert main([str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    assert "no such folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tmp_path), str(tmp_path / "out"), "--scheme", "generic"])  # needs --pattern


def test_dst_inside_src_is_not_walked_and_links_are_followed_once(tmp_path, grace):
    from PIL import Image

    (tmp_path / "real").mkdir()
    Image.fromarray(grace).save(tmp_path / "real" / "me.jpg")
    src = tmp_path / "src"
    src.mkdir()
    os.symlink(tmp_path / "real", src / "linked")  # a symlinked data folder is walked
    os.symlink(src, src / "loop")  # a link loop is not walked forever
    for _ in range(2):
        rep = prepare(str(src), str(src / "crops"), workers=1, progress=False, manifest=False)
        assert rep["images"] == 1 and rep["faces"] == 1
    assert (src / "crops" / "linked" / "me.jpg").exists() and not (src / "crops" / "crops").exists()


# --- reliability (issue 12) ---------------------------------------------------------------

def test_undecodable_and_long_names_get_reports(tmp_path, grace):
    from PIL import Image

    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(grace).save(os.path.join(os.fsencode(src), b"bad\xffname.jpg"), format="JPEG")
    Image.fromarray(grace).save(src / ("L" * 240 + ".jpg"))
    (src / "new\nline.png").write_bytes(b"junk")
    dst = tmp_path / "dst"
    for _ in range(2):  # the rerun too (it used to fail on every rerun)
        assert main([str(src), str(dst), "--workers", "1", "--no-progress", "--scheme", "generic",
                     "--pattern", r"(?P<id>x)(?P<yaw>0)", "--no-manifest"]) == 0
    rep = json.loads((dst / "prepare_report.json").read_text())
    assert rep["images"] == 3 and rep["faces"] == 2
    md = (dst / "prepare_report.md").read_text()
    assert "new\\nline.png" in md and "bad\\udcffname.jpg" not in md.splitlines()[0]
    assert (dst / "prepare_report.png").exists() and os.path.exists(os.path.join(os.fsencode(dst), b"bad\xffname.jpg"))


def _descendants(pid: int) -> set[int]:
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    kids = [int(k) for k in f.read().split()]
                out.update(kids)
                todo += kids
        except OSError:
            pass
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs Linux /proc")
def test_workers_die_when_the_parent_is_killed(tmp_path, grace):
    import signal
    import subprocess
    import sys
    import time

    from PIL import Image

    src = tmp_path / "src"
    src.mkdir()
    for i in range(40):
        Image.fromarray(grace).save(src / f"g{i:02d}.jpg")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = subprocess.Popen([sys.executable, "-m", "training.prepare", str(src), str(tmp_path / "dst"), "--workers", "2",
                          "--no-progress", "--no-manifest", "--detector", "fast"], cwd=root,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = tmp_path / "dst" / JOURNAL
    t0 = time.time()
    while time.time() - t0 < 240 and not (journal.exists() and journal.stat().st_size) and p.poll() is None:
        time.sleep(0.1)
    kids = _descendants(p.pid)
    assert p.poll() is None and len(kids) >= 2, "prepare finished before it could be killed"
    p.send_signal(signal.SIGKILL)
    p.wait()
    t0 = time.time()
    while time.time() - t0 < 20 and any(_alive(k) for k in kids):
        time.sleep(0.2)
    assert not [k for k in kids if _alive(k)], "workers / resource tracker outlived the parent"


def test_full_disk_stops_with_exit_4_and_the_rerun_finishes(tmp_path, capsys, small_disk):
    src = tmp_path / "src"
    src.mkdir()
    for k in range(6):
        shutil.copy(os.path.join(os.path.dirname(__file__), "..", "samples", "grace_hopper.jpg"), src / f"p{k}_0.jpg")
    probe = tmp_path / "probe"
    prepare(str(src), str(probe), scheme="generic", pattern=r"p(?P<id>\d)_(?P<yaw>\d+)", workers=1, progress=False, manifest=False)
    crop = os.path.getsize(probe / "p0_0.jpg")
    size = 4096 * (-(-int(2.5 * crop) // 4096) + 2)  # two crops, the journal's page and some slack
    dst = os.path.join(small_disk.mount(size), "dst")
    args = [str(src), dst, "--scheme", "generic", "--pattern", r"p(?P<id>\d)_(?P<yaw>\d+)", "--workers", "1",
            "--no-progress", "--no-manifest"]
    capsys.readouterr()
    assert main(args) == 4
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "no space left on device; stopped after" in err[0] and "of 6 images" in err[0], err
    made = sorted(f for f in os.listdir(dst) if f.endswith(".jpg"))
    assert 1 <= len(made) < 6 and not [f for f in os.listdir(dst) if ".tmp" in f]
    for f in made:
        load_image(os.path.join(dst, f))  # whole crops only
    before = {f: os.stat(os.path.join(dst, f)).st_mtime_ns for f in made}
    small_disk.resize(size + 16 * crop + 2**20)
    assert main(args) == 0
    assert sorted(f for f in os.listdir(dst) if f.endswith(".jpg")) == [f"p{k}_0.jpg" for k in range(6)]
    assert {f: os.stat(os.path.join(dst, f)).st_mtime_ns for f in made} == before  # nothing redone


def test_phone_photos_are_cropped_to_png(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(os.path.join(os.path.dirname(__file__), "data", "profile_woman_orient6.heic"), src / "woman_0.heic")
    rep = prepare(str(src), str(tmp_path / "dst"), scheme="generic", pattern=r"(?P<id>woman)_(?P<yaw>\d+)",
                  workers=1, progress=False, manifest=False)
    assert rep["faces"] == 1
    assert load_image(tmp_path / "dst" / "woman_0.heic.png").rgb.shape == (128, 128, 3)
