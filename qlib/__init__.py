"""qlib: PyTorch's affine quantization arithmetic, reproduced bit for bit in
short, readable functions. The companion library of the book in ``book/``.

Import name ``qlib``; distribution name ``affine-qlib`` (``qlib`` on PyPI and
Microsoft's ``pyqlib`` are different projects).

The modules stand in layers. A module imports from its own layer and the
layers below it, never from a layer above, and never a private (``_``) name
of another module; ``tests/test_layers.py`` holds them to this map::

    0 floor       numerics ranges checks releases registry prose
    1 primitives  quant dequant qparams fake_quant pt2e_ops torchao_primitives onnx_qdq
    2 observers   observers histogram qat
    3 operators   elementwise_kernels onednn quantized_linear quantized_conv quantized_add dynamic activations pooling functional batchnorm llm_weights onnx_runtime onnx_conv onnx_pool onnx_float_pool onnx_reduce onnx_sgemm onnx_tables xnnpack
    4 tools       xnnpack_graph integer_model xnnpack_compare onnx_model mismatch layer_mismatch probing testing standalone

floor: float32 rounding, the fused multiply-add, integer bounds, dtype ranges,
argument checks, the torch release, counts in words. primitives: one tensor to codes and back.
observers: from data to scale and zero point, and QAT's fake quantization.
operators: quantized layers on codes. Every module that reproduces a torch op
registers it in ``registry``, the table ``run`` and ``compare`` dispatch through. tools: whole models, explanations,
probes, test helpers and one-file copies.
"""

from qlib.activations import clamp, hardsigmoid, hardswish, relu, sigmoid
from qlib.batchnorm import batch_norm2d
from qlib.dequant import dequantize
from qlib.dynamic import choose_qparams_dynamic, linear_dynamic
from qlib.fake_quant import fake_quantize
from qlib.functional import add_scalar, cat, mul, mul_scalar
from qlib.histogram import HistogramObserver
from qlib.integer_model import Activation, Comparison, LayerComparison, Run, compare, run
from qlib.layer_mismatch import explain_layer
from qlib.llm_weights import (
    dequantize_activation_per_token,
    dequantize_per_group,
    int4_weight_cpu,
    int8_weight,
    intx_weight,
    linear_int4_cpu,
    linear_int8_dynamic,
    linear_int8_weight_only,
    linear_intx,
    pack_int4_for_cpu,
    quantize_int4_tinygemm,
    quantize_per_group,
)
from qlib.mismatch import Report, Row, explain
from qlib.numerics import float32_reciprocal, fma_float32
from qlib.observers import (
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    PerChannelMinMaxObserver,
)
from qlib.onnx_conv import conv_integer, qlinear_add, qlinear_conv
from qlib.onnx_pool import qlinear_average_pool, qlinear_global_average_pool
from qlib.onnx_qdq import dequantize_linear, quantize_linear
from qlib.onnx_runtime import matmul_integer, ort_pairs_saturate_here, qgemm, qlinear_matmul
from qlib.onnx_tables import qlinear_concat, qlinear_sigmoid
from qlib.pooling import adaptive_avg_pool2d, avg_pool2d, max_pool2d, mean
from qlib.probing import Probe, probe
from qlib.pt2e_ops import dequantize_pt2e, quantize_pt2e
from qlib.qat import (
    FakeQuantize,
    choose_qparams_fused,
    cpu_contracts_fma,
    fake_quantize_learnable,
    fake_quantize_mask,
    fake_quantize_ste,
)
from qlib.qparams import choose_qparams, observer_range
from qlib.quant import quantize
from qlib.quantized_add import add
from qlib.quantized_conv import conv2d, conv2d_kernel
from qlib.quantized_linear import linear, pairs_saturate_here
from qlib.ranges import qrange
from qlib.releases import SUPPORTED_RELEASES, torch_release
from qlib.torchao_primitives import choose_qparams_affine, dequantize_affine, quantize_affine
from qlib.xnnpack import (
    xnnpack_add,
    xnnpack_bias,
    xnnpack_conv2d,
    xnnpack_dequantize,
    xnnpack_linear,
    xnnpack_max_pool2d,
    xnnpack_mean,
    xnnpack_quantize,
)
from qlib.xnnpack_compare import compare_xnnpack, explain_xnnpack

__all__ = [
    # 0 floor
    "SUPPORTED_RELEASES",
    "float32_reciprocal",
    "fma_float32",
    "qrange",
    "torch_release",
    # 1 primitives
    "choose_qparams",
    "choose_qparams_affine",
    "dequantize",
    "dequantize_affine",
    "dequantize_linear",
    "dequantize_pt2e",
    "fake_quantize",
    "observer_range",
    "quantize",
    "quantize_affine",
    "quantize_linear",
    "quantize_pt2e",
    # 2 observers
    "FakeQuantize",
    "HistogramObserver",
    "MinMaxObserver",
    "MovingAverageMinMaxObserver",
    "MovingAveragePerChannelMinMaxObserver",
    "PerChannelMinMaxObserver",
    "choose_qparams_fused",
    "cpu_contracts_fma",
    "fake_quantize_learnable",
    "fake_quantize_mask",
    "fake_quantize_ste",
    # 3 operators
    "adaptive_avg_pool2d",
    "add",
    "add_scalar",
    "avg_pool2d",
    "batch_norm2d",
    "cat",
    "choose_qparams_dynamic",
    "clamp",
    "conv2d",
    "conv_integer",
    "conv2d_kernel",
    "dequantize_activation_per_token",
    "dequantize_per_group",
    "hardsigmoid",
    "hardswish",
    "int4_weight_cpu",
    "int8_weight",
    "intx_weight",
    "linear",
    "linear_dynamic",
    "linear_int4_cpu",
    "linear_int8_dynamic",
    "linear_int8_weight_only",
    "linear_intx",
    "matmul_integer",
    "max_pool2d",
    "mean",
    "mul",
    "mul_scalar",
    "ort_pairs_saturate_here",
    "pack_int4_for_cpu",
    "pairs_saturate_here",
    "qgemm",
    "qlinear_add",
    "qlinear_average_pool",
    "qlinear_concat",
    "qlinear_conv",
    "qlinear_global_average_pool",
    "qlinear_matmul",
    "qlinear_sigmoid",
    "quantize_int4_tinygemm",
    "quantize_per_group",
    "relu",
    "sigmoid",
    "xnnpack_add",
    "xnnpack_bias",
    "xnnpack_conv2d",
    "xnnpack_dequantize",
    "xnnpack_linear",
    "xnnpack_max_pool2d",
    "xnnpack_mean",
    "xnnpack_quantize",
    # 4 tools
    "Activation",
    "Comparison",
    "LayerComparison",
    "Probe",
    "Report",
    "Row",
    "Run",
    "compare",
    "compare_xnnpack",
    "explain",
    "explain_layer",
    "explain_xnnpack",
    "probe",
    "run",
]
__version__ = "0.2.0"
