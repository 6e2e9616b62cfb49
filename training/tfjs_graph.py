"""TF.js graph models (``model.json`` + ``.bin`` shards) as differentiable TensorFlow functions.

A TF.js graph model is a TensorFlow GraphDef written as JSON (``modelTopology``) whose Const
nodes carry no values: the values sit in the binary shards, in the order of ``weightsManifest``
(float32 or int32; float16 / uint8 / uint16 when the converter quantized them). This module
parses the GraphDef (``google.protobuf.json_format.ParseDict``), reads the weights (dequantized
to float32) and *interprets* the graph with plain TensorFlow ops, node by node, from the inputs to
the requested outputs. Fused ops of the converter and of grappler (``_FusedConv2D``,
``FusedDepthwiseConv2dNative``, ``_FusedMatMul``) are unfolded into their primitive ops, so every
op has a registered gradient and the function works eagerly, inside ``tf.function`` and under
``tf.GradientTape``. Only the ops the models here use are implemented; any other raises
``NotImplementedError`` naming it (at load time).

``load_graph_model(path)`` -> ``GraphModel``; ``model(x)`` returns the default output
(``model(x, outputs=[...])`` any named ones).
"""
from __future__ import annotations

import json
import os

import numpy as np

_NP = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}
_QNP = {"float16": np.float16, "uint8": np.uint8, "uint16": np.uint16}


def read_weights(model_json: dict, folder: str) -> dict[str, np.ndarray]:
    """name -> array for every entry of the weights manifest (quantized entries dequantized)."""
    out = {}
    for group in model_json["weightsManifest"]:
        buf = b"".join(open(os.path.join(folder, p), "rb").read() for p in group["paths"])
        off = 0
        for w in group["weights"]:
            shape = [int(s) for s in w["shape"]]
            n = int(np.prod(shape)) if shape else 1
            q = w.get("quantization")
            if q:
                qdt = np.dtype(_QNP[q["dtype"]])
                raw = np.frombuffer(buf, qdt, n, off)
                off += n * qdt.itemsize
                if q["dtype"] == "float16":
                    v = raw.astype(np.float32)
                else:  # affine: value = q * scale + min
                    v = (raw.astype(np.float32) * np.float32(q["scale"]) + np.float32(q["min"])).astype(np.float32)
                v = v.astype(_NP[w["dtype"]])
            else:
                dt = np.dtype(_NP[w["dtype"]])
                v = np.frombuffer(buf, dt, n, off).copy()
                off += n * dt.itemsize
            out[w["name"]] = v.reshape(shape)
        if off != len(buf):
            raise ValueError(f"{folder}: weight shards hold {len(buf)} bytes, the manifest describes {off}")
    return out


def _s(node, key, default=None):
    a = node.attr.get(key) if key in node.attr else None
    return default if a is None else a.s.decode()


def _ints(node, key, default=None):
    return list(node.attr[key].list.i) if key in node.attr and node.attr[key].list.i else default


def _padding(node):
    pad = _s(node, "padding", "VALID")
    if pad == "EXPLICIT":
        p = _ints(node, "explicit_paddings")
        return [[p[i], p[i + 1]] for i in range(0, len(p), 2)]
    return pad


def _check_nhwc(node):
    fmt = _s(node, "data_format", "NHWC")
    if fmt != "NHWC":
        raise NotImplementedError(f"{node.name}: data_format {fmt}")


def _fused_tail(tf, node, y, args):
    """Apply the fused ops list of a fused node (BiasAdd then an activation)."""
    ops = [s.decode() for s in node.attr["fused_ops"].list.s] if "fused_ops" in node.attr else []
    rest = list(args)
    for op in ops:
        if op == "BiasAdd":
            y = tf.nn.bias_add(y, rest.pop(0))
        elif op == "Relu":
            y = tf.nn.relu(y)
        elif op == "Relu6":
            y = tf.nn.relu6(y)
        elif op == "Elu":
            y = tf.nn.elu(y)
        elif op == "Sigmoid":
            y = tf.sigmoid(y)
        elif op == "Tanh":
            y = tf.tanh(y)
        elif op == "LeakyRelu":
            y = tf.nn.leaky_relu(y, alpha=node.attr["leakyrelu_alpha"].f)
        elif op == "Prelu":
            alpha = rest.pop(0)
            y = tf.nn.relu(y) + alpha * tf.minimum(y, 0.0)
        else:
            raise NotImplementedError(f"{node.name}: fused op {op}")
    return y


def _conv(tf, node, x, w):
    _check_nhwc(node)
    return tf.nn.conv2d(x, w, strides=_ints(node, "strides", [1, 1, 1, 1]), padding=_padding(node),
                        dilations=_ints(node, "dilations", [1, 1, 1, 1]))


def _depthwise(tf, node, x, w):
    _check_nhwc(node)
    strides = _ints(node, "strides", [1, 1, 1, 1])
    pad = _padding(node)
    if not isinstance(pad, str):
        x, pad = tf.pad(x, pad), "VALID"
    return tf.nn.depthwise_conv2d(x, w, strides=strides, padding=pad, dilations=_ints(node, "dilations", [1, 1, 1, 1])[1:3])


def _matmul(tf, node, a, b):
    return tf.linalg.matmul(a, b, transpose_a=node.attr["transpose_a"].b if "transpose_a" in node.attr else False,
                            transpose_b=node.attr["transpose_b"].b if "transpose_b" in node.attr else False)


def _keep(node):
    for k in ("keep_dims", "keepDims"):
        if k in node.attr:
            return node.attr[k].b
    return False


# op -> f(tf, node, inputs) -> tensor
OPS = {
    "Identity": lambda tf, n, i: tf.identity(i[0]),
    "Add": lambda tf, n, i: i[0] + i[1],
    "AddV2": lambda tf, n, i: i[0] + i[1],
    "AddN": lambda tf, n, i: tf.add_n(i),
    "Sub": lambda tf, n, i: i[0] - i[1],
    "Mul": lambda tf, n, i: i[0] * i[1],
    "RealDiv": lambda tf, n, i: i[0] / i[1],
    "Minimum": lambda tf, n, i: tf.minimum(i[0], i[1]),
    "Maximum": lambda tf, n, i: tf.maximum(i[0], i[1]),
    "Abs": lambda tf, n, i: tf.abs(i[0]),
    "Square": lambda tf, n, i: tf.square(i[0]),
    "Sqrt": lambda tf, n, i: tf.sqrt(i[0]),
    "Rsqrt": lambda tf, n, i: tf.math.rsqrt(i[0]),
    "Relu": lambda tf, n, i: tf.nn.relu(i[0]),
    "Relu6": lambda tf, n, i: tf.nn.relu6(i[0]),
    "Sigmoid": lambda tf, n, i: tf.sigmoid(i[0]),
    "Tanh": lambda tf, n, i: tf.tanh(i[0]),
    "Softmax": lambda tf, n, i: tf.nn.softmax(i[0], axis=-1),
    "Prelu": lambda tf, n, i: tf.nn.relu(i[0]) + i[1] * tf.minimum(i[0], 0.0),
    "BiasAdd": lambda tf, n, i: tf.nn.bias_add(i[0], i[1]),
    "Mean": lambda tf, n, i: tf.reduce_mean(i[0], axis=i[1], keepdims=_keep(n)),
    "Sum": lambda tf, n, i: tf.reduce_sum(i[0], axis=i[1], keepdims=_keep(n)),
    "Reshape": lambda tf, n, i: tf.reshape(i[0], i[1]),
    "Squeeze": lambda tf, n, i: tf.squeeze(i[0], axis=_ints(n, "squeeze_dims") or None),
    "Pad": lambda tf, n, i: tf.pad(i[0], i[1]),
    "ConcatV2": lambda tf, n, i: tf.concat(i[:-1], axis=i[-1]),
    "Conv2D": lambda tf, n, i: _conv(tf, n, i[0], i[1]),
    "DepthwiseConv2dNative": lambda tf, n, i: _depthwise(tf, n, i[0], i[1]),
    "MatMul": lambda tf, n, i: _matmul(tf, n, i[0], i[1]),
    "_FusedConv2D": lambda tf, n, i: _fused_tail(tf, n, _conv(tf, n, i[0], i[1]), i[2:]),
    "FusedDepthwiseConv2dNative": lambda tf, n, i: _fused_tail(tf, n, _depthwise(tf, n, i[0], i[1]), i[2:]),
    "_FusedMatMul": lambda tf, n, i: _fused_tail(tf, n, _matmul(tf, n, i[0], i[1]), i[2:]),
}


def _repair_prelu(graph_def) -> list[str]:
    """Undo a converter fusion that turns PReLU into ReLU; returns the names of the repaired nodes.

    A PReLU written as ``relu(y) + alpha * (y - |y|)`` (slim/TF1 style) after a conv: the TF.js
    converter fused the ``Relu`` into the conv (``fused_ops: [BiasAdd, Relu]``) although ``Abs``
    and ``Sub`` read the same conv output, so they see relu(y) and the negative branch vanishes
    (y - |y| = 0). Here such a node loses its fused Relu again, and its consumers other than
    ``Abs``/``Sub`` read a new ``Relu`` node instead.
    """
    consumers: dict[str, list] = {}
    for n in graph_def.node:
        for i in n.input:
            consumers.setdefault(i.split(":")[0].lstrip("^"), []).append(n)
    fixed = []
    for n in list(graph_def.node):
        if n.op not in ("_FusedConv2D", "FusedDepthwiseConv2dNative") or "fused_ops" not in n.attr:
            continue
        ops = [s.decode() for s in n.attr["fused_ops"].list.s]
        users = consumers.get(n.name, [])
        if ops[-1:] != ["Relu"] or not any(u.op == "Abs" for u in users):
            continue
        del n.attr["fused_ops"].list.s[-1]
        relu = graph_def.node.add(name=n.name + "/restored_relu", op="Relu", input=[n.name])
        relu.attr["T"].type = 1  # DT_FLOAT
        for u in users:
            if u.op not in ("Abs", "Sub"):
                u.input[:] = [relu.name if i == n.name else i for i in u.input]
        fixed.append(n.name)
    return fixed


class GraphModel:
    """A TF.js graph model interpreted with TensorFlow ops (see the module doc)."""

    def __init__(self, path: str, repair_prelu: bool = False):
        from google.protobuf import json_format
        from tensorflow.core.framework import graph_pb2

        self.path = path
        with open(path) as f:
            self.spec = json.load(f)
        topo = dict(self.spec["modelTopology"])
        topo.pop("library", None)
        self.graph_def = json_format.ParseDict({"node": topo["node"], "versions": topo.get("versions", {})},
                                               graph_pb2.GraphDef())
        self.weights = read_weights(self.spec, os.path.dirname(os.path.abspath(path)))
        self.repaired = _repair_prelu(self.graph_def) if repair_prelu else []
        self.nodes = {n.name: n for n in self.graph_def.node}
        self.inputs = [n.name for n in self.graph_def.node if n.op == "Placeholder"]
        if len(self.inputs) != 1:
            raise NotImplementedError(f"{path}: {len(self.inputs)} inputs (one is supported)")
        p = self.nodes[self.inputs[0]]
        self.input_shape = tuple(int(d.size) for d in p.attr["shape"].shape.dim)
        consumed = {self._split(i)[0] for n in self.graph_def.node for i in n.input}
        self.sinks = [n.name for n in self.graph_def.node if n.name not in consumed and n.op != "Const"]
        unknown = sorted({n.op for n in self.graph_def.node if n.op not in OPS and n.op not in ("Const", "Placeholder")})
        if unknown:
            raise NotImplementedError(f"{path}: unsupported ops {unknown}")
        missing = [n.name for n in self.graph_def.node if n.op == "Const" and n.name not in self.weights]
        if missing:
            raise ValueError(f"{path}: Const nodes without weights: {missing[:5]}")
        self._consts = None

    @staticmethod
    def _split(name: str) -> tuple[str, int]:
        name = name.lstrip("^")
        base, _, idx = name.partition(":")
        return base, int(idx) if idx else 0

    def constants(self):
        import tensorflow as tf

        if self._consts is None:
            with tf.init_scope():  # eager tensors, captured by any tf.function that calls the model
                self._consts = {k: tf.constant(v) for k, v in self.weights.items()}
        return self._consts

    def __call__(self, x, outputs: list[str] | str | None = None):
        """Run the graph on ``x`` (a float tensor of the input shape). ``outputs``: node name(s);
        default: the single sink node, or the first one when there are several."""
        import tensorflow as tf

        single = outputs is None or isinstance(outputs, str)
        names = [outputs or self.sinks[0]] if single else list(outputs)
        consts = self.constants()
        values: dict[str, object] = {self.inputs[0]: tf.convert_to_tensor(x, tf.float32)}

        def value(name):
            base, idx = self._split(name)
            if idx:
                raise NotImplementedError(f"{name}: multi-output ops")
            stack = [base]
            while stack:  # iterative post-order: graphs are deep
                cur = stack[-1]
                if cur in values:
                    stack.pop()
                    continue
                node = self.nodes[cur]
                if node.op == "Const":
                    values[cur] = consts[cur]
                    stack.pop()
                    continue
                deps = [self._split(i)[0] for i in node.input if not i.startswith("^")]
                todo = [d for d in deps if d not in values]
                if todo:
                    stack.extend(todo)
                    continue
                values[cur] = OPS[node.op](tf, node, [values[d] for d in deps])
                stack.pop()
            return values[base]

        res = [value(n) for n in names]
        return res[0] if single else res


def load_graph_model(path: str, repair_prelu: bool = False) -> GraphModel:
    return GraphModel(path, repair_prelu)
