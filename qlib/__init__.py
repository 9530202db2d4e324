"""qlib: PyTorch's affine quantization arithmetic, reproduced bit for bit in
short, readable functions. The companion library of the book in ``book/``.

Import name ``qlib``; distribution name ``affine-qlib`` (``qlib`` on PyPI and
Microsoft's ``pyqlib`` are different projects).
"""

from qlib.dequant import dequantize
from qlib.dynamic import choose_qparams_dynamic, linear_dynamic
from qlib.fake_quant import fake_quantize
from qlib.histogram import HistogramObserver
from qlib.integer_model import Activation, Comparison, LayerComparison, Run, compare, run
from qlib.mismatch import Report, Row, explain
from qlib.observers import (
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    PerChannelMinMaxObserver,
)
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
from qlib.quant import float32_reciprocal, fma_float32, quantize
from qlib.quantized_add import add
from qlib.quantized_conv import conv2d, conv2d_kernel
from qlib.quantized_linear import linear, pairs_saturate_here
from qlib.ranges import qrange
from qlib.releases import SUPPORTED_RELEASES, torch_release
from qlib.torchao_primitives import choose_qparams_affine, dequantize_affine, quantize_affine

__all__ = [
    "SUPPORTED_RELEASES",
    "Activation",
    "Comparison",
    "LayerComparison",
    "Run",
    "add",
    "HistogramObserver",
    "MinMaxObserver",
    "MovingAverageMinMaxObserver",
    "MovingAveragePerChannelMinMaxObserver",
    "PerChannelMinMaxObserver",
    "Probe",
    "Report",
    "Row",
    "choose_qparams",
    "compare",
    "choose_qparams_dynamic",
    "conv2d",
    "conv2d_kernel",
    "dequantize",
    "explain",
    "fake_quantize",
    "float32_reciprocal",
    "linear",
    "linear_dynamic",
    "fma_float32",
    "observer_range",
    "pairs_saturate_here",
    "probe",
    "qrange",
    "quantize",
    "run",
    "torch_release",
    "FakeQuantize",
    "choose_qparams_fused",
    "cpu_contracts_fma",
    "fake_quantize_learnable",
    "fake_quantize_mask",
    "fake_quantize_ste",
    "dequantize_pt2e",
    "quantize_pt2e",
    "choose_qparams_affine",
    "dequantize_affine",
    "quantize_affine",
]
__version__ = "0.2.0"
