"""Shared fixtures: the bundled sample photo, one real FaceAnalyzer, multipie30 (skips when absent)."""
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
SAMPLES = os.path.join(ROOT, "samples")
MULTIPIE30 = os.path.join(os.environ.get("FRONTALIZE_DATA", os.path.join(ROOT, "..", "shared", "data")), "multipie30")
needs_multipie30 = pytest.mark.skipif(not os.path.isdir(MULTIPIE30), reason="../shared/data/multipie30 absent")


@pytest.fixture(scope="session")
def grace() -> np.ndarray:
    """samples/grace_hopper.jpg as RGB uint8 (600x512, one frontal face of ~215 px)."""
    from runtime.image_io import load_image

    return load_image(os.path.join(SAMPLES, "grace_hopper.jpg")).rgb


@pytest.fixture(scope="session")
def analyzer():
    """A real FaceAnalyzer (the default detectors and the bundled pose network), loaded once."""
    from runtime.detect import FaceAnalyzer

    return FaceAnalyzer(threads=1)


@pytest.fixture(scope="session")
def multipie30() -> str:
    if not os.path.isdir(MULTIPIE30):
        pytest.skip("../shared/data/multipie30 absent")
    return MULTIPIE30


@pytest.fixture(scope="session")
def odd_images(tmp_path_factory) -> dict:
    """name -> path of the bad and odd inputs of tests/odd_images.py (EXPECT says what each gives)."""
    import odd_images as oi

    return oi.write_all(str(tmp_path_factory.mktemp("odd")))


class SmallDisk:
    """A real size-limited tmpfs (a disk that fills up) for the full-disk tests."""

    def __init__(self, where: str):
        self.path, self.mounted = where, False

    def mount(self, size: int) -> str:
        """Mount ``size`` bytes at ``self.path``; skips the test where root cannot mount a tmpfs."""
        import shutil
        import subprocess

        if os.geteuid() != 0 or not shutil.which("mount"):
            pytest.skip("needs root to mount a size-limited tmpfs (a real full disk)")
        os.makedirs(self.path, exist_ok=True)
        if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", self.path], capture_output=True).returncode:
            pytest.skip("cannot mount a tmpfs here (container without the permission)")
        self.mounted = True
        return self.path

    def resize(self, size: int) -> None:
        """'Free space': the same files on a larger disk."""
        import subprocess

        subprocess.run(["mount", "-o", f"remount,size={size}", self.path], check=True)


@pytest.fixture
def small_disk(tmp_path):
    disk = SmallDisk(str(tmp_path / "disk"))
    yield disk
    if disk.mounted:
        import subprocess

        subprocess.run(["umount", "-l", disk.path], capture_output=True)
