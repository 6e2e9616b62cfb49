"""Frontalization runtime: face cropping and ONNX/TFLite inference, no TensorFlow needed."""
import os as _os

# Library chatter a user cannot act on: OpenCV's [WARN]/[INFO] lines, TensorFlow's C++ INFO and
# WARNING lines (errors still print). Set before cv2/TensorFlow read them; a caller's value wins.
_os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
