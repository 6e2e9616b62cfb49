"""One small interface over the inference engines: ``load_engine(path) -> Engine``.

- ``onnx``: onnxruntime, the execution providers asked for (``providers``, e.g. ``["cuda", "cpu"]``;
  default TensorRT, CUDA, CPU) less those the installed build does not list in
  ``ort.get_available_providers()`` (never requested, so a CPU-only machine prints no provider
  errors). TensorRT gets an engine cache (``trt_engine_cache_enable``, ``trt_engine_cache_path``:
  ``$FRONTALIZE_TRT_CACHE`` or ``~/.cache/frontalize/trt``) so only the first start builds engines.
  The file is opened once: the metadata is read from the same session.
- ``tflite``: LiteRT's ``Interpreter`` (XNNPACK, the default op resolver), ``threads`` threads;
  int8/uint8 input/output tensors are (de)quantized with the tensor's scale and zero point,
  and a dynamic batch dimension is resized to the batch given.
- ``keras``: the original Keras model (TensorFlow imported only here), for comparison.

Pre/post-processing follows the model's metadata (``runtime.model_meta``): input size, input
and output ranges, channel order. ``Engine.run`` takes RGB uint8 images (one HxWx3 or a batch
NxHxWx3; resized to the model's size when needed) or float32 already in the model's input
range, and returns RGB uint8 frontal faces (same batch shape). A CVAE also needs each face's
yaw (degrees): it is mapped to the nearest of ``meta["yaw_labels"]`` and fed as a one-hot.
"""
from __future__ import annotations

import os

import cv2
import numpy as np

from .errors import ModelError, first_line
from .model_meta import read_meta, require_regular_file

ENGINES = ("onnx", "tflite", "keras")
# Faces per generator call. Memory grows with the faces of one call (~20 MB each for the bundled model);
# per face, 1 to 16 faces a call run within the noise of each other and 32-64 are slower (measured:
# benchmarks/results/crowd_memory.md, --chunks), so a small chunk costs nothing.
CHUNK = 4
PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
PROVIDER_ALIASES = {"tensorrt": "TensorrtExecutionProvider", "trt": "TensorrtExecutionProvider",
                    "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider",
                    "coreml": "CoreMLExecutionProvider", "openvino": "OpenVINOExecutionProvider",
                    "dml": "DmlExecutionProvider", "rocm": "ROCMExecutionProvider"}


def provider_names(providers) -> list[str]:
    """``"cuda,cpu"`` / ``["tensorrt", "CPUExecutionProvider"]`` -> onnxruntime provider names."""
    if providers is None:
        return list(PROVIDER_ORDER)
    if isinstance(providers, str):
        providers = [p for p in providers.split(",") if p.strip()]
    return [PROVIDER_ALIASES.get(p.strip().lower(), p.strip()) for p in providers]


_USABLE: dict[str, bool] = {}
_GPU_LIBS = {"CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "tensorrt"}


def _cuda_device() -> bool:
    """A CUDA driver with at least one device (libcuda's cuInit / cuDeviceGetCount)."""
    import ctypes

    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    else:
        return False
    try:
        n = ctypes.c_int(0)
        return lib.cuInit(0) == 0 and lib.cuDeviceGetCount(ctypes.byref(n)) == 0 and n.value > 0
    except AttributeError:
        return False


def provider_usable(name: str) -> bool:
    """Whether a GPU provider that the onnxruntime build lists can work here: onnxruntime-gpu lists
    CUDA and TensorRT on any machine, and requesting them without a device or without the CUDA /
    TensorRT libraries prints a screen of errors before it falls back to the CPU. So: a CUDA device,
    and the provider's own library loads (its CUDA/cuDNN/TensorRT dependencies resolve)."""
    if name not in _GPU_LIBS:
        return True
    if name not in _USABLE:
        import ctypes

        import onnxruntime as ort

        ok = _cuda_device()
        capi = os.path.join(os.path.dirname(ort.__file__), "capi")
        lib = os.path.join(capi, f"libonnxruntime_providers_{_GPU_LIBS[name]}.so")
        if ok and os.path.exists(lib):
            try:
                ctypes.CDLL(os.path.join(capi, "libonnxruntime_providers_shared.so"), mode=ctypes.RTLD_GLOBAL)
                ctypes.CDLL(lib)
            except OSError:
                ok = False
        _USABLE[name] = ok
    return _USABLE[name]


def onnx_providers(providers=None, threads: int = 2) -> list:
    """The providers to request: the ones asked for that this onnxruntime build has and that can
    work here (``provider_usable``; CPU when none is left), TensorRT with its engine cache options.
    A provider asked for by name that cannot be used is named in one line on stderr."""
    import sys

    import onnxruntime as ort

    avail = ort.get_available_providers()
    asked = provider_names(providers)
    chosen = [p for p in asked if p in avail and provider_usable(p)] or ["CPUExecutionProvider"]
    dropped = [p for p in asked if p not in chosen and p != "CPUExecutionProvider"]
    if providers is not None and dropped:
        print(f"note: {', '.join(dropped)} not usable here (not in this onnxruntime build, no CUDA device or "
              f"missing CUDA/TensorRT libraries): using {', '.join(chosen)}", file=sys.stderr)
    out = []
    for p in chosen:
        if p == "TensorrtExecutionProvider":
            cache = os.environ.get("FRONTALIZE_TRT_CACHE") or os.path.join(
                os.path.expanduser("~"), ".cache", "frontalize", "trt")
            os.makedirs(cache, exist_ok=True)
            out.append((p, {"trt_engine_cache_enable": True, "trt_engine_cache_path": cache,
                            "trt_timing_cache_enable": True, "trt_timing_cache_path": cache,
                            "trt_fp16_enable": os.environ.get("FRONTALIZE_TRT_FP16", "1") == "1"}))
        else:
            out.append(p)
    return out


def onnx_session(path: str, threads: int = 2, providers=None):
    """One onnxruntime session (the only time the file is read)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3  # TensorRT/CUDA fallbacks warn loudly; errors still raise
    # No busy-waiting between runs: in the camera loop the spinning pool threads took the
    # cores from detection/landmarks/encoding (measured: CPU per image 11.8 -> 5.8 ms).
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(path, so, providers=onnx_providers(providers, threads))
    except Exception as e:
        raise ModelError(f"{path}: cannot load ONNX model ({first_line(e)})") from None


def engine_for(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    kind = {".onnx": "onnx", ".tflite": "tflite", ".keras": "keras", ".h5": "keras"}.get(ext)
    if kind is None:
        raise ModelError(f"{path}: unknown model type '{ext}' (expected .onnx, .tflite or .keras)")
    return kind


class Engine:
    """Base: metadata-driven pre/post-processing around ``infer`` (float in, float out)."""

    name = "?"
    needs_photo = False  # True: ``frontalize`` samples the photo itself (runtime.geometry), not the crop

    def __init__(self, path: str, meta: dict, threads: int):
        self.path, self.meta, self.threads = path, meta, threads
        self.size = int(meta.get("input_size", 128))
        self.yaw_labels = meta.get("yaw_labels") or None
        self.providers: list[str] = []

    @property
    def yaw_in_degrees(self) -> bool:
        """The geometric generator takes each face's yaw (degrees) as a (N, 1) input."""
        return self.meta.get("yaw_input") == "degrees"

    @property
    def needs_yaw(self) -> bool:
        return bool(self.yaw_labels) or self.yaw_in_degrees

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {os.path.basename(self.path)} {self.meta.get('model')} {self.providers}>"

    # -- metadata-driven conversions --
    def preprocess(self, images) -> np.ndarray:
        x = np.asarray(images)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"expected HxWx3 or NxHxWx3 images, got shape {x.shape}")
        if x.dtype != np.uint8:  # already normalized by the caller
            if x.shape[1:3] != (self.size, self.size):
                raise ValueError(f"float input must be {self.size}x{self.size}, got {x.shape[1:3]}")
            return np.ascontiguousarray(x, dtype=np.float32)
        if x.shape[1:3] != (self.size, self.size):
            x = np.stack([cv2.resize(im, (self.size, self.size), interpolation=cv2.INTER_AREA) for im in x])
        if self.meta.get("channel_order", "RGB").upper() == "BGR":
            x = x[..., ::-1]
        lo, hi = self.meta.get("input_range", [-1.0, 1.0])
        return (x.astype(np.float32) * ((hi - lo) / 255.0) + lo).astype(np.float32)

    def postprocess(self, y: np.ndarray) -> np.ndarray:
        lo, hi = self.meta.get("output_range", [-1.0, 1.0])
        y = (np.asarray(y, np.float32) - lo) * (255.0 / (hi - lo))
        y = np.clip(y + 0.5, 0, 255).astype(np.uint8)
        if self.meta.get("channel_order", "RGB").upper() == "BGR":
            y = y[..., ::-1]
        return np.ascontiguousarray(y)

    def yaw_onehot(self, yaw, n: int) -> np.ndarray:
        """The yaw input the model takes: (N, 1) degrees, or a one-hot over its yaw labels."""
        if yaw is None:
            raise ValueError(f"{self.meta.get('model')} model needs the face's yaw (degrees)")
        yaws = np.broadcast_to(np.asarray(yaw, np.float64).reshape(-1), (n,))
        if self.yaw_in_degrees:
            return np.nan_to_num(yaws, nan=0.0).astype(np.float32).reshape(n, 1)
        labels = np.asarray(self.yaw_labels, np.float64)
        idx = np.abs(np.nan_to_num(yaws, nan=0.0)[:, None] - labels[None]).argmin(1)
        return np.eye(len(labels), dtype=np.float32)[idx]

    def run(self, images, yaw=None) -> np.ndarray:
        """RGB uint8 (HxWx3 / NxHxWx3) or model-range float32 -> RGB uint8 frontal face(s).
        Raises ModelError when the model's output is not N x size x size x 3 or not finite."""
        single = np.ndim(images) == 3
        images = np.asarray(images)
        if single:
            images = images[None]
        n = len(images)
        yaws = None if yaw is None else np.broadcast_to(np.asarray(yaw, np.float64).reshape(-1), (n,))
        out = np.empty((n, self.size, self.size, 3), np.uint8)
        for i in range(0, n, CHUNK):  # bounded memory whatever the number of faces, in order
            x = self.preprocess(images[i:i + CHUNK])
            y = self.run_float(x, None if yaws is None else yaws[i:i + CHUNK])
            self.check_output(y, len(x))
            out[i:i + len(x)] = self.postprocess(y)
        return out[0] if single else out

    def frontalize(self, rgb: np.ndarray | None, faces: list) -> list[np.ndarray]:
        """One RGB uint8 frontal per ``runtime.detect.Face`` of the RGB image ``rgb`` (the pipeline's
        and camera loop's call). A learned generator reads only the faces' crops (``rgb`` may be None)."""
        if not faces:
            return []
        return list(self.run(np.stack([f.crop for f in faces]), yaw=[f.yaw for f in faces]))

    def check_output(self, y: np.ndarray, n: int) -> None:
        want = (n, self.size, self.size, 3)
        if tuple(np.shape(y)) != want:
            raise ModelError(f"{self.path}: model output has shape {tuple(np.shape(y))}, expected {want}")
        if not np.isfinite(y).all():
            raise ModelError(f"{self.path}: model output is not finite (NaN or Inf)")

    def self_check(self) -> None:
        """One inference on two generated faces (grey, noise) at load: a model whose output has the
        wrong shape or is not finite is refused before it touches a photo."""
        rng = np.random.default_rng(0)
        x = np.stack([np.full((self.size, self.size, 3), 128, np.uint8),
                      rng.integers(0, 256, (self.size, self.size, 3), dtype=np.uint8)])
        try:
            self.run(x, yaw=[0.0, 30.0] if self.needs_yaw else None)
        except ModelError as e:
            raise ModelError(f"{e} (self-check at load)") from None
        except Exception as e:
            raise ModelError(f"{self.path}: self-check inference failed ({first_line(e)})") from None

    def run_float(self, x: np.ndarray, yaw=None) -> np.ndarray:
        """Model-range float32 NHWC in -> model-range float32 out (no pre/post-processing)."""
        oh = self.yaw_onehot(yaw, len(x)) if self.needs_yaw else None
        return self.infer(x, oh)

    def infer(self, x: np.ndarray, yaw_onehot: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError


class OnnxEngine(Engine):
    name = "onnx"

    def __init__(self, path, meta, threads=2, providers=None, session=None):
        super().__init__(path, meta, threads)
        self.sess = session if session is not None else onnx_session(path, threads, providers)
        self.providers = self.sess.get_providers()
        ins = self.sess.get_inputs()
        self.image_in = next((i for i in ins if len(i.shape) == 4), None)
        if self.image_in is None:
            raise ModelError(f"{path}: no NHWC image input (inputs: {[i.name for i in ins]})")
        check_image_shape(path, self.image_in.shape, self.size)
        b = self.image_in.shape[0]
        self.batch = b if isinstance(b, int) and b > 0 else None  # fixed batch: run in chunks of it
        self.yaw_in = next((i for i in ins if len(i.shape) == 2), None)
        if self.needs_yaw and self.yaw_in is None:
            raise ModelError(f"{path}: metadata lists yaw labels but the model has no yaw input")
        self.np_type = np.float16 if self.image_in.type == "tensor(float16)" else np.float32
        self.out_name = self.sess.get_outputs()[0].name

    def infer(self, x, yaw_onehot):
        if self.batch and len(x) != self.batch:
            if len(x) % self.batch:
                raise ModelError(f"{self.path}: fixed batch {self.batch} does not divide {len(x)} faces")
            return np.concatenate([self.infer(x[i:i + self.batch], None if yaw_onehot is None
                                               else yaw_onehot[i:i + self.batch]) for i in range(0, len(x), self.batch)])
        feed = {self.image_in.name: x.astype(self.np_type, copy=False)}
        if self.yaw_in is not None:
            oh = yaw_onehot if yaw_onehot is not None else self.yaw_onehot(0.0, len(x))
            feed[self.yaw_in.name] = oh.astype(self.np_type, copy=False)
        return np.asarray(self.sess.run([self.out_name], feed)[0], np.float32)


class TFLiteEngine(Engine):
    name = "tflite"

    def __init__(self, path, meta, threads=2):
        super().__init__(path, meta, threads)
        from ai_edge_litert.interpreter import Interpreter

        try:
            self.interp = Interpreter(model_path=path, num_threads=threads)
            self.interp.allocate_tensors()
        except Exception as e:  # LiteRT raises ValueError/RuntimeError on bad files
            raise ModelError(f"{path}: cannot load TFLite model ({first_line(e)})") from None
        self.providers = [f"LiteRT/XNNPACK x{threads}"]
        ins = self.interp.get_input_details()
        self.image_in = next((d for d in ins if len(d["shape"]) == 4), None)
        if self.image_in is None:
            raise ModelError(f"{path}: no NHWC image input")
        self.yaw_in = next((d for d in ins if len(d["shape"]) == 2), None)
        if self.needs_yaw and self.yaw_in is None:
            raise ModelError(f"{path}: metadata lists yaw labels but the model has no yaw input")
        self.out = self.interp.get_output_details()[0]
        sig = self.image_in.get("shape_signature", self.image_in["shape"])
        check_image_shape(path, [int(v) if v > 0 else None for v in sig], self.size)
        self.dynamic_batch = int(sig[0]) == -1
        self.batch = int(self.image_in["shape"][0])

    @staticmethod
    def _quantize(x, d):
        if d["dtype"] in (np.int8, np.uint8, np.int16):
            scale, zp = d["quantization"]
            info = np.iinfo(d["dtype"])
            return np.clip(np.round(x / scale + zp), info.min, info.max).astype(d["dtype"])
        return x.astype(d["dtype"], copy=False)

    @staticmethod
    def _dequantize(y, d):
        if d["dtype"] in (np.int8, np.uint8, np.int16):
            scale, zp = d["quantization"]
            return (y.astype(np.float32) - zp) * scale
        return y.astype(np.float32, copy=False)

    def _resize(self, n):
        self.interp.resize_tensor_input(self.image_in["index"], [n, self.size, self.size, 3])
        if self.yaw_in is not None:
            self.interp.resize_tensor_input(self.yaw_in["index"], [n, int(self.yaw_in["shape"][1])])
        self.interp.allocate_tensors()
        self.batch = n

    def infer(self, x, yaw_onehot):
        n = len(x)
        if n != self.batch and not self.dynamic_batch:  # fixed batch (usually 1): one at a time
            return np.concatenate([self.infer(x[i:i + self.batch], None if yaw_onehot is None
                                               else yaw_onehot[i:i + self.batch]) for i in range(0, n, self.batch)])
        if n != self.batch:
            self._resize(n)
        self.interp.set_tensor(self.image_in["index"], self._quantize(x, self.image_in))
        if self.yaw_in is not None:
            oh = yaw_onehot if yaw_onehot is not None else self.yaw_onehot(0.0, n)
            self.interp.set_tensor(self.yaw_in["index"], self._quantize(oh, self.yaw_in))
        self.interp.invoke()
        return self._dequantize(self.interp.get_tensor(self.out["index"]), self.out)


class KerasEngine(Engine):
    """The original Keras generator (TensorFlow imported here only)."""

    name = "keras"

    def __init__(self, path, meta, threads=2, model=None):
        super().__init__(path, meta, threads)
        import tensorflow as tf

        try:  # before any op runs; raises if TF was already initialized in this process
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            pass
        import keras

        from . import keras_layers  # noqa: F401  registers the custom layers a saved generator holds

        if model is None:
            try:
                # safe_mode=False: CVAE files saved before FrontalLabel hold a Lambda (the frontal one-hot).
                model = keras.saving.load_model(path, compile=False, safe_mode=False)
            except Exception as e:
                raise ModelError(f"{path}: cannot load Keras model ({first_line(e)})") from None
        self.model = model
        self.providers = [f"TensorFlow {tf.__version__} CPU x{threads}"]
        self._call = tf.function(lambda *a: model(list(a) if len(a) > 1 else a[0], training=False),
                                 reduce_retracing=True)

    def infer(self, x, yaw_onehot):
        args = (x,) if yaw_onehot is None else (x, yaw_onehot)
        return np.asarray(self._call(*args), np.float32)


def check_image_shape(path: str, shape, size: int) -> None:
    """The graph's image input against the metadata: NHWC, 3 channels, ``size`` when fixed."""
    dims = [d if isinstance(d, int) and d > 0 else None for d in shape]
    if dims[-1] != 3:
        if dims[1] == 3:
            raise ModelError(f"{path}: the graph's image input is NCHW {list(shape)}; metadata and runtime expect NHWC")
        raise ModelError(f"{path}: the graph's image input {list(shape)} does not end with 3 channels (NHWC RGB)")
    for d in dims[1:3]:
        if d is not None and d != size:
            raise ModelError(f"{path}: metadata input_size {size} disagrees with the graph's image input {list(shape)}")


def load_engine(path: str, engine: str = "auto", threads: int = 2, self_check: bool = True, **kw) -> Engine:
    """Load a model file with the engine named (``auto``: by file extension); metadata validated
    against the graph, then one self-check inference (``Engine.self_check``). ``providers=``
    (ONNX only): see ``provider_names``. The geometric generator (no file): ``pipeline.load_generator``."""
    path = os.fspath(path)
    if not os.path.exists(path) and os.path.basename(path) == path:
        from .assets import asset

        path = asset(path)  # a bare file name that is not here: a model bundled in runtime/assets/
    require_regular_file(path, "model file")
    kind = engine_for(path) if engine == "auto" else engine
    if kind not in ENGINES:
        raise ModelError(f"unknown engine '{engine}' (choose from auto, {', '.join(ENGINES)})")
    session = None
    try:
        if kind == "onnx":  # one session: the metadata comes from it, the file is read once
            from .model_meta import meta_from_session

            session = onnx_session(path, threads, kw.pop("providers", None))
            meta = meta_from_session(session, path)
        else:
            kw.pop("providers", None)
            meta = read_meta(path)
    except (ValueError, OSError) as e:  # malformed sidecar JSON
        raise ModelError(f"{path}: unreadable metadata ({first_line(e)})") from None
    if meta.get("layout", "NHWC") != "NHWC":
        raise ModelError(f"{path}: layout {meta.get('layout')} not supported (NHWC only)")
    cls = {"onnx": OnnxEngine, "tflite": TFLiteEngine, "keras": KerasEngine}[kind]
    eng = cls(path, meta, threads, session=session, **kw) if session is not None else cls(path, meta, threads, **kw)
    if self_check:
        eng.self_check()
    return eng


def keras_engine_from_model(model, meta: dict, threads: int = 2, name: str = "<in-memory>") -> KerasEngine:
    """A Keras engine around an in-memory ``keras.Model`` (benchmarks: the seed's VGG U-Net)."""
    return KerasEngine(name, meta, threads, model=model)
