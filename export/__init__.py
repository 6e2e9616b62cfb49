"""Export a Keras generator to ONNX and TFLite, and check each export against Keras.

``python -m export MODEL.keras --formats onnx,tflite-fp32 --out DIR [--parity]``;
``export.convert.export_model(keras_path, formats, out_dir, calib_images)`` from Python.
"""
