"""Frontalization runtime: face cropping and ONNX/TFLite inference, no TensorFlow needed.

    from runtime import Frontalizer
    fr = Frontalizer()
    faces = fr("photo.jpg")   # [FaceResult(.frontal, .crop, .box, .yaw, .detector, .score)]
"""
import os as _os

# Library chatter a user cannot act on: OpenCV's [WARN]/[INFO] lines, TensorFlow's C++ INFO and
# WARNING lines (errors still print). Set before cv2/TensorFlow read them; a caller's value wins.
_os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__all__ = ["Frontalizer", "FaceResult", "FrameResult", "DEFAULT_MODEL"]


def __getattr__(name):  # lazy: ``import runtime`` stays cheap, numpy/cv2 load on first use
    if name in __all__:
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'runtime' has no attribute {name!r}")
