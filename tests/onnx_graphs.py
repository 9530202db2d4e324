"""One-node ONNX models run in ONNX Runtime: the reference side of tests/test_onnx_runtime.py.

Imports numpy, onnx and onnxruntime only, never torch or qlib. ``QEMU_SCRIPT`` runs models built
here in another interpreter (under ``qemu-x86_64 -cpu Haswell``) with numpy and onnxruntime alone.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ELEM = {
    np.dtype("uint8"): TensorProto.UINT8,
    np.dtype("int8"): TensorProto.INT8,
    np.dtype("int16"): TensorProto.INT16,
    np.dtype("int32"): TensorProto.INT32,
    np.dtype("float32"): TensorProto.FLOAT,
}
_SESSIONS: dict[bytes, ort.InferenceSession] = {}

# Reads a pickled list of (model bytes, feed) from argv[1], writes ORT's outputs to argv[2].
QEMU_SCRIPT = """
import pickle, sys
import onnxruntime as ort
cases = pickle.load(open(sys.argv[1], "rb"))
outs = []
for model, feed in cases:
    s = ort.InferenceSession(model, ort.SessionOptions(), providers=["CPUExecutionProvider"])
    outs.append(s.run(None, feed)[0])
pickle.dump(outs, open(sys.argv[2], "wb"))
"""


def model(
    op: str, inputs: list, out_type: str, attrs: dict | None = None, domain: str = "", opset: int = 21
) -> tuple[bytes, dict]:
    """A serialized one-``op`` model and its feed.

    ``inputs`` lists ``(name, array)``: an array wrapped by ``const`` becomes an initializer,
    ``None`` an absent optional input; the others are graph inputs, fed at run time.
    """
    names, graph_inputs, inits, feed = [], [], [], {}
    for name, a in inputs:
        if a is None:
            names.append("")
            continue
        names.append(name)
        if isinstance(a, tuple):
            inits.append(numpy_helper.from_array(np.asarray(a[1]), name))
        else:
            arr = np.asarray(a)
            feed[name] = arr
            graph_inputs.append(helper.make_tensor_value_info(name, ELEM[arr.dtype], [None] * arr.ndim))
    node = helper.make_node(op, names, ["y"], domain=domain, **(attrs or {}))
    out = helper.make_tensor_value_info("y", ELEM[np.dtype(out_type)], None)
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    proto = helper.make_model(helper.make_graph([node], "one", graph_inputs, [out], inits), opset_imports=opsets)
    proto.ir_version = 10
    return proto.SerializeToString(), feed


def run(op: str, inputs: list, out_type: str, attrs: dict | None = None, domain: str = "", opset: int = 21):
    """ORT's output of one ``op`` node on ``inputs`` (default SessionOptions, CPU provider).

    Sessions are cached by their serialized model, so graphs without initializers are built once.
    """
    data, feed = model(op, inputs, out_type, attrs, domain, opset)
    if data not in _SESSIONS:
        if len(_SESSIONS) > 256:
            _SESSIONS.clear()
        _SESSIONS[data] = ort.InferenceSession(data, ort.SessionOptions(), providers=["CPUExecutionProvider"])
    return _SESSIONS[data].run(None, feed)[0]


def const(a) -> tuple:
    """Mark an input as an initializer (ORT prepacks a constant B in its GEMMs)."""
    return ("const", np.asarray(a))
