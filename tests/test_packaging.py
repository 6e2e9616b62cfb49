"""Packaging (issue 11): a runtime-only base install, the GPU requirements list, the wheel's model
files, and (slow) an install into a fresh venv used from another folder."""
import os
import subprocess
import sys
import zipfile

import pytest

from model_fixtures import ROOT, SAMPLE

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = None


def project():
    if tomllib is None:
        pytest.skip("tomllib needs Python 3.11")
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]


def name(req: str) -> str:
    return req.split(";")[0].split("[")[0].split("=")[0].split("<")[0].split(">")[0].strip().lower()


def test_base_install_is_the_runtime_only():
    p = project()
    base = {name(r) for r in p["dependencies"]}
    assert base == {"numpy", "opencv-python-headless", "onnxruntime", "ai-edge-litert", "pillow", "pi-heif", "tqdm"}
    train = {name(r) for r in p["optional-dependencies"]["train"]}
    assert {"tensorflow-cpu", "matplotlib", "dlib-bin", "face-recognition-models"} <= train
    assert "gpu" not in p["optional-dependencies"]  # an extra cannot replace onnxruntime
    assert p["requires-python"] == ">=3.10"


def test_gpu_requirements_follow_the_base_list():
    p = project()
    with open(os.path.join(ROOT, "requirements-gpu.txt")) as f:
        gpu = [l.strip() for l in f if l.strip() and not l.startswith("#")]
    assert sorted(r.replace("onnxruntime-gpu", "onnxruntime") for r in gpu) == sorted(p["dependencies"])


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                        ROOT], capture_output=True, text=True, timeout=600, cwd=str(out))
    if r.returncode:
        pytest.skip(f"cannot build a wheel here: {r.stderr.strip().splitlines()[-1:]}")
    return next(str(p) for p in out.glob("frontalize-*.whl"))


def test_wheel_holds_the_model_files(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in ("posenet.onnx", "face_detection_short_range.tflite", "face_detection_full_range.tflite",
              "face_detection_back.tflite", "mtcnn_pnet.tflite", "mtcnn_rnet.tflite", "mtcnn_onet.tflite", "README.md",
              "tddfa_mb05.onnx", "face_geometry.npz"):  # the last two: the default (geometric) generator
        assert f"runtime/assets/{f}" in names, f
    if os.path.exists(os.path.join(ROOT, "runtime", "assets", "frontalizer.onnx")):
        assert "runtime/assets/frontalizer.onnx" in names


def python310():
    """A Python 3.10 interpreter (JetPack 6's version): pyenv's, or python3.10 on PATH."""
    import glob
    import shutil

    found = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.10.*/bin/python3.10")))
    return found[-1] if found else shutil.which("python3.10")


@pytest.mark.slow
@pytest.mark.parametrize("python", ["current", "3.10"])
def test_fresh_venv_install_runs_from_another_folder(wheel, tmp_path, python):
    """pip install of the wheel into a new venv (pip's cache: no download when warm), then the
    CLI and the API from a folder outside the checkout; also with Python 3.10 (JetPack 6)."""
    from model_fixtures import ensure_tiny_models

    interpreter = sys.executable if python == "current" else python310()
    if interpreter is None:
        pytest.skip("no Python 3.10 interpreter here (pyenv install 3.10)")
    tiny = ensure_tiny_models(str(tmp_path.parent / "tiny_models"))
    venv = tmp_path / "venv"
    subprocess.run([interpreter, "-m", "venv", str(venv)], check=True, timeout=300)
    py, cli = venv / "bin" / "python", venv / "bin" / "frontalize"
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", wheel], capture_output=True, text=True, timeout=900)
    if r.returncode:
        pytest.skip(f"pip install failed (offline?): {r.stderr.strip().splitlines()[-1:]}")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = subprocess.run([str(cli), SAMPLE, "--model", tiny["edge"]["onnx"], "--out", "out", "--json"], cwd=elsewhere,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert '"face": 0' in r.stdout and (elsewhere / "out" / "grace_hopper_face0.png").exists()
    code = (f"from runtime import Frontalizer; fr = Frontalizer({tiny['edge']['onnx']!r}); "
            f"print(len(fr({SAMPLE!r})), fr.engine.providers)")
    r = subprocess.run([str(py), "-c", code], cwd=elsewhere, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.startswith("1 "), r.stderr[-2000:]
    listed = subprocess.run([str(py), "-m", "pip", "list"], capture_output=True, text=True).stdout.lower()
    assert "onnxruntime " in listed and "onnxruntime-gpu" not in listed and "tensorflow" not in listed


def test_check_aarch64_script_and_its_parity_check(tmp_path):
    """make check-aarch64 (tools/check_aarch64.sh, too slow for this suite): the script parses, the
    target runs it, and its parity check passes a matching run and fails one with a face missing."""
    import json

    import numpy as np

    assert subprocess.run(["bash", "-n", os.path.join(ROOT, "tools", "check_aarch64.sh")]).returncode == 0
    dry = subprocess.run(["make", "-n", "check-aarch64"], cwd=ROOT, capture_output=True, text=True)
    assert dry.returncode == 0 and "tools/check_aarch64.sh" in dry.stdout
    probe = os.path.join(ROOT, "tools", "aarch64_probe.py")
    x86 = str(tmp_path / "x86.npz")
    r = subprocess.run([sys.executable, probe, "run", os.path.join(ROOT, "samples"), x86, "--repeats", "1"],
                       capture_output=True, text=True, cwd=str(tmp_path), timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]

    def copy(path, **change):
        z = dict(np.load(x86))
        info = json.loads(str(z["info"]))
        info.update(machine="aarch64", **change)
        np.savez(path, **{**z, "info": json.dumps(info)})
        return path

    same = copy(str(tmp_path / "arm.npz"))
    ok = subprocess.run([sys.executable, probe, "compare", x86, same], capture_output=True, text=True)
    assert ok.returncode == 0 and "faces found: x86 7, aarch64 7" in ok.stdout, ok.stdout
    faces = json.loads(str(np.load(x86)["info"]))["faces"]
    faces["astronaut.jpg"] = []
    bad = subprocess.run([sys.executable, probe, "compare", x86, copy(str(tmp_path / "bad.npz"), faces=faces)],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "astronaut.jpg: 1 face(s) on x86, 0 on aarch64" in bad.stdout, bad.stdout
