"""qlib: PyTorch's affine quantization arithmetic, reproduced bit for bit in
short, readable functions. The companion library of the book in ``book/``.

Import name ``qlib``; distribution name ``affine-qlib`` (``qlib`` on PyPI and
Microsoft's ``pyqlib`` are different projects).
"""

from qlib.dequantize import dequantize
from qlib.explain import Report, explain
from qlib.fake_quantize import fake_quantize
from qlib.histogram import HistogramObserver
from qlib.observers import (
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    PerChannelMinMaxObserver,
)
from qlib.qparams import choose_qparams, observer_range
from qlib.quantize import quantize
from qlib.ranges import qrange

__all__ = [
    "HistogramObserver",
    "MinMaxObserver",
    "MovingAverageMinMaxObserver",
    "MovingAveragePerChannelMinMaxObserver",
    "PerChannelMinMaxObserver",
    "Report",
    "choose_qparams",
    "dequantize",
    "explain",
    "fake_quantize",
    "observer_range",
    "qrange",
    "quantize",
]
__version__ = "0.1.0"
