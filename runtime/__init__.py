"""Frontalization runtime: face cropping and ONNX/TFLite inference, no TensorFlow needed."""
