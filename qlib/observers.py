"""Min/max observers, readable twins of PyTorch's ``MinMaxObserver``,
``MovingAverageMinMaxObserver``, ``PerChannelMinMaxObserver`` and
``MovingAveragePerChannelMinMaxObserver``.

An observer watches batches go by, keeps a running minimum and maximum (per
tensor, or per channel along ``ch_axis``), and turns them into ``(scale,
zero_point)`` on request. The running statistic is one of two pure functions:

* :func:`~qlib.observers.batch_min_max` then ``torch.min``/``torch.max`` with the running
  values: the range of everything seen;
* :func:`~qlib.observers.moving_average`: ``running + c * (batch - running)``, an
  exponential moving average of each batch's min and max.

The qparams arithmetic is ``qlib.qparams.choose_qparams`` (affine and
symmetric, bit-exact with torch's ``_calculate_qparams``) and, for
``per_channel_affine_float_qparams``, :func:`~qlib.observers.float_qparams` below.

Explained in the book chapter "Observers" (``book/06_observers``). Source:
``torch/ao/quantization/observer.py`` (torch 2.13 and 2.14: the same code), ``forward`` and
``calculate_qparams`` of the four classes and
``UniformQuantizationObserverBase._calculate_qparams``;
``torch/ao/quantization/utils.py``, ``check_min_max_valid``.
"""

from __future__ import annotations

import math
import warnings

import torch

from qlib.qparams import choose_qparams, observer_range
from qlib.ranges import OBSERVER_DTYPES

PER_TENSOR_QSCHEMES = (torch.per_tensor_affine, torch.per_tensor_symmetric)
PER_CHANNEL_QSCHEMES = (torch.per_channel_affine, torch.per_channel_symmetric, torch.per_channel_affine_float_qparams)
SYMMETRIC_QSCHEMES = (torch.per_tensor_symmetric, torch.per_channel_symmetric)
FLOAT32_EPS = torch.finfo(torch.float32).eps


def batch_min_max(x: torch.Tensor, ch_axis: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimum and maximum of a batch, as float32: 0-dim tensors, or 1-d (one per channel along ``ch_axis``).

    As torch's observers do it (2.13 and 2.14 alike): ``x`` is converted to float32 first, and
    per channel the channel axis is swapped with axis 0 and the rest flattened
    (so even the sign of a zero minimum matches torch).

    Chapter: "Observers" (book/06_observers).

    >>> batch_min_max(torch.tensor([[1.0, -2.0], [3.0, 4.0]]))
    (tensor(-2.), tensor(4.))
    >>> batch_min_max(torch.tensor([[1.0, -2.0], [3.0, 4.0]]), ch_axis=1)
    (tensor([ 1., -2.]), tensor([3., 4.]))
    """
    x = x.detach().to(torch.float32)
    if ch_axis is None:
        min_val, max_val = torch.aminmax(x)
    else:
        order = list(range(x.dim()))
        order[0], order[ch_axis] = order[ch_axis], order[0]
        rows = torch.flatten(x.permute(order), start_dim=1)
        min_val, max_val = torch.aminmax(rows, dim=1)
    return min_val, max_val


def moving_average(running: torch.Tensor, batch: torch.Tensor, averaging_constant: float) -> torch.Tensor:
    """``running + averaging_constant * (batch - running)`` in float32, as torch's moving-average observers update.

    Chapter: "Observers" (book/06_observers).

    >>> moving_average(torch.tensor(0.0), torch.tensor(1.0), 0.01)
    tensor(0.0100)
    """
    return running + averaging_constant * (batch - running)


def float_qparams(
    min_val: torch.Tensor, max_val: torch.Tensor, qmin: int, qmax: int, eps: float = FLOAT32_EPS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(scale, zero_point)`` for ``torch.per_channel_affine_float_qparams``.

    ``scale = (max - min) / (qmax - qmin)``, replaced by 1.0 where it is not
    above ``eps``; ``zero_point = -min / scale`` stays a float, so that
    ``round(x / scale + zero_point)`` is ``round((x - min) / scale)``. Unlike
    the other qschemes, the range is not widened to include 0. All float32
    (``UniformQuantizationObserverBase._calculate_qparams``, torch 2.13 and 2.14).

    Chapter: "Observers" (book/06_observers).

    >>> float_qparams(torch.tensor([1.0, 2.0]), torch.tensor([3.55, 2.0]), 0, 255)
    (tensor([0.0100, 1.0000]), tensor([-100.,   -2.]))
    """
    if (min_val > max_val).any():
        i = int((min_val > max_val).nonzero()[0, 0])
        raise ValueError(
            f"min_val must not exceed max_val; at channel {i}: {min_val[i].item()} > {max_val[i].item()} "
            "(torch's observers fail an assertion here)"
        )
    scale = (max_val - min_val) / float(qmax - qmin)
    scale = torch.where(scale > torch.tensor(eps, dtype=torch.float32), scale, torch.ones_like(scale))
    return scale, -1 * min_val / scale


class MinMaxObserver:
    """Running min/max of everything observed; twin of ``torch.ao.quantization.observer.MinMaxObserver``.

    Arguments as torch's: ``dtype``, ``qscheme`` (``per_tensor_affine`` or
    ``per_tensor_symmetric``), ``reduce_range``, ``quant_min``/``quant_max``,
    ``eps``. ``obs(x)`` updates ``min_val``/``max_val`` (float32 0-dim, +inf
    and -inf before any data) and returns ``x``; ``calculate_qparams()``
    returns ``(scale, zero_point)`` from ``qlib.qparams.choose_qparams``, with
    torch's shapes and dtypes: scale float32 of shape ``(1,)``, zero point
    int32 for affine and int64 for symmetric qschemes.

    Edge cases: an empty batch changes nothing; before any data
    ``calculate_qparams`` warns and returns torch's ``(tensor([1.]),
    tensor([0]))``; a batch of equal values is an ordinary range. A batch with
    NaN or ±inf raises ValueError and leaves the state alone: torch records it
    and then returns scale nan or inf. Settings torch accepts but cannot use
    raise too (see ``qlib.qparams.observer_range`` and the messages).

    Chapter: "Observers" (book/06_observers).

    >>> obs = MinMaxObserver()
    >>> _ = obs(torch.tensor([-1.0, 2.0]))
    >>> obs.min_val, obs.max_val
    (tensor(-1.), tensor(2.))
    >>> obs.calculate_qparams()
    (tensor([0.0118]), tensor([85], dtype=torch.int32))
    """

    qschemes: tuple[torch.qscheme, ...] = PER_TENSOR_QSCHEMES

    def __init__(
        self,
        dtype: torch.dtype = torch.quint8,
        qscheme: torch.qscheme = torch.per_tensor_affine,
        reduce_range: bool = False,
        quant_min: int | None = None,
        quant_max: int | None = None,
        eps: float = FLOAT32_EPS,
    ) -> None:
        if qscheme not in self.qschemes:
            allowed = ", ".join(str(q) for q in self.qschemes)
            raise ValueError(f"qscheme must be one of {allowed} for {type(self).__name__}; got {qscheme!r}")
        if qscheme in SYMMETRIC_QSCHEMES and reduce_range and dtype == torch.quint8:
            raise ValueError(
                f"{type(self).__name__} cannot use reduce_range with a symmetric qscheme on torch.quint8 "
                "(torch raises NotImplementedError too)"
            )
        self.quant_min, self.quant_max = check_observer_args(dtype, qscheme, reduce_range, quant_min, quant_max, eps)
        self.dtype = dtype
        self.qscheme = qscheme
        self.reduce_range = reduce_range
        self.eps = eps
        self.custom_range = (quant_min, quant_max)
        self.reset_min_max_vals()

    def reset_min_max_vals(self) -> None:
        """Forget everything observed."""
        self.min_val = torch.tensor(math.inf)
        self.max_val = torch.tensor(-math.inf)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Update the running range with batch ``x``; return ``x`` unchanged."""
        check_batch(x)
        if x.numel() == 0:
            return x
        batch_min, batch_max = batch_min_max(x)
        check_finite(batch_min, batch_max, x)
        self.min_val, self.max_val = self._update(batch_min, batch_max)
        return x

    def _update(self, batch_min: torch.Tensor, batch_max: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.min(batch_min, self.min_val), torch.max(batch_max, self.max_val)

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scale, zero_point)`` for the observed range."""
        if self.min_val == math.inf and self.max_val == -math.inf:
            return default_qparams()
        return torch_shaped_qparams(self, self.min_val, self.max_val)


class MovingAverageMinMaxObserver(MinMaxObserver):
    """Moving average of each batch's min and max; twin of torch's ``MovingAverageMinMaxObserver``.

    The first batch sets ``min_val``/``max_val``; each later one moves them by
    :func:`~qlib.observers.moving_average` with ``averaging_constant`` (default 0.01, a
    number in [0, 1]). Everything else as :class:`MinMaxObserver`. The two
    averages are rounded separately, so they can cross (``min_val >
    max_val`` by an ulp, say after a one-value batch with
    ``averaging_constant=1``); torch's ``calculate_qparams`` then fails an
    assertion, and qlib's raises ValueError.

    Chapter: "Observers" (book/06_observers).

    >>> obs = MovingAverageMinMaxObserver(averaging_constant=0.5)
    >>> _ = obs(torch.tensor([0.0, 2.0])); _ = obs(torch.tensor([-2.0, 4.0]))
    >>> obs.min_val, obs.max_val
    (tensor(-1.), tensor(3.))
    """

    def __init__(self, averaging_constant: float = 0.01, **kwargs) -> None:
        self.averaging_constant = check_averaging_constant(averaging_constant)
        super().__init__(**kwargs)

    def _update(self, batch_min: torch.Tensor, batch_max: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.min_val == math.inf and self.max_val == -math.inf:
            return batch_min, batch_max
        c = self.averaging_constant
        return moving_average(self.min_val, batch_min, c), moving_average(self.max_val, batch_max, c)


class PerChannelMinMaxObserver(MinMaxObserver):
    """Running min/max per channel along ``ch_axis``; twin of torch's ``PerChannelMinMaxObserver``.

    ``qscheme`` is ``per_channel_affine`` (default), ``per_channel_symmetric``
    or ``per_channel_affine_float_qparams`` (see :func:`~qlib.observers.float_qparams`).
    ``min_val``/``max_val`` are 1-d float32, empty before any data. Batches
    need at least 2 dimensions (torch fails on fewer) and, after the first,
    the same number of channels (torch would broadcast a 1-channel batch
    over all channels).

    Chapter: "Observers" (book/06_observers).

    >>> obs = PerChannelMinMaxObserver(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    >>> _ = obs(torch.tensor([[1.0, -2.0], [0.5, 0.25]]))
    >>> obs.calculate_qparams()
    (tensor([0.0157, 0.0039]), tensor([0, 0]))
    """

    qschemes = PER_CHANNEL_QSCHEMES

    def __init__(self, ch_axis: int = 0, **kwargs) -> None:
        if isinstance(ch_axis, bool) or not isinstance(ch_axis, int):
            raise TypeError(f"ch_axis must be an int; got {ch_axis!r}")
        self.ch_axis = ch_axis
        kwargs.setdefault("qscheme", torch.per_channel_affine)
        super().__init__(**kwargs)

    def reset_min_max_vals(self) -> None:
        """Forget everything observed."""
        self.min_val = torch.tensor([])
        self.max_val = torch.tensor([])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Update the running per-channel range with batch ``x``; return ``x`` unchanged."""
        check_batch(x)
        if x.numel() == 0:
            return x
        if x.dim() < 2 or not -x.dim() <= self.ch_axis < x.dim():
            raise ValueError(
                f"per-channel observers need a batch of at least 2 dimensions with ch_axis={self.ch_axis} "
                f"among them; got shape {tuple(x.shape)}"
            )
        batch_min, batch_max = batch_min_max(x, self.ch_axis % x.dim())
        if self.min_val.numel() and batch_min.shape != self.min_val.shape:
            raise ValueError(
                f"this observer has seen {self.min_val.numel()} channels along ch_axis={self.ch_axis}; "
                f"got a batch with {batch_min.numel()} (shape {tuple(x.shape)})"
            )
        check_finite(batch_min, batch_max, x)
        self.min_val, self.max_val = self._update(batch_min, batch_max)
        return x

    def _update(self, batch_min: torch.Tensor, batch_max: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.min_val.numel() == 0:
            return batch_min, batch_max
        return torch.min(batch_min, self.min_val), torch.max(batch_max, self.max_val)

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel ``(scale, zero_point)``."""
        if self.min_val.numel() == 0:
            return default_qparams()
        if self.qscheme == torch.per_channel_affine_float_qparams:
            return float_qparams(self.min_val, self.max_val, self.quant_min, self.quant_max, self.eps)
        return torch_shaped_qparams(self, self.min_val, self.max_val)


class MovingAveragePerChannelMinMaxObserver(PerChannelMinMaxObserver):
    """Per-channel moving average of min and max; twin of torch's ``MovingAveragePerChannelMinMaxObserver``.

    As :class:`PerChannelMinMaxObserver`, but each later batch moves the
    per-channel ``min_val``/``max_val`` by :func:`~qlib.observers.moving_average`.

    Chapter: "Observers" (book/06_observers).

    >>> obs = MovingAveragePerChannelMinMaxObserver(averaging_constant=0.5)
    >>> _ = obs(torch.tensor([[0.0, 2.0]])); _ = obs(torch.tensor([[2.0, 4.0]]))
    >>> obs.min_val, obs.max_val
    (tensor([1.]), tensor([3.]))
    """

    def __init__(self, averaging_constant: float = 0.01, ch_axis: int = 0, **kwargs) -> None:
        self.averaging_constant = check_averaging_constant(averaging_constant)
        super().__init__(ch_axis=ch_axis, **kwargs)

    def _update(self, batch_min: torch.Tensor, batch_max: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.min_val.numel() == 0:
            return batch_min, batch_max
        c = self.averaging_constant
        return moving_average(self.min_val, batch_min, c), moving_average(self.max_val, batch_max, c)


# --- argument checks and torch's return conventions, shared with qlib.histogram ---


def check_observer_args(
    dtype: torch.dtype,
    qscheme: torch.qscheme,
    reduce_range: bool,
    quant_min: int | None,
    quant_max: int | None,
    eps: float,
) -> tuple[int, int]:
    """Validate torch-style observer arguments; return the ``(qmin, qmax)`` the observer computes with."""
    if dtype not in OBSERVER_DTYPES:
        allowed = ", ".join(str(d) for d in OBSERVER_DTYPES)
        raise TypeError(f"dtype must be one of {allowed}; got {dtype!r}")
    if not isinstance(reduce_range, bool):
        raise TypeError(f"reduce_range must be True or False; got {reduce_range!r}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a finite positive number; got {eps!r}")
    qmin, qmax = observer_range(dtype, reduce_range, quant_min, quant_max)
    if qscheme in SYMMETRIC_QSCHEMES and dtype in (torch.quint8, torch.uint8) and quant_min is None and reduce_range:
        raise ValueError(
            f"qscheme={qscheme} with reduce_range=True on {dtype} is not usable: the symmetric zero point is "
            "128 but reduce_range limits codes to [0, 127] (torch's HistogramObserver, and its min/max "
            "observers on torch.uint8, return zero point 128 anyway). Use torch.qint8 or drop reduce_range"
        )
    return qmin, qmax


def check_averaging_constant(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"averaging_constant must be a number in [0, 1]; got {value!r}")
    return value


def check_batch(x: object) -> None:
    allowed = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
    if not isinstance(x, torch.Tensor) or x.is_quantized or x.dtype not in allowed:
        got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"x must be a floating-point tensor (float16, bfloat16, float32 or float64); got {got}")


def check_finite(batch_min: torch.Tensor, batch_max: torch.Tensor, x: torch.Tensor) -> None:
    """Raise if the batch held NaN or ±inf (after conversion to float32): torch's observers would record them."""
    if torch.isfinite(batch_min).all() and torch.isfinite(batch_max).all():
        return
    values = x.detach().to(torch.float32)
    nan, inf = int(torch.isnan(values).sum()), int(torch.isinf(values).sum())
    raise ValueError(
        f"x contains {nan} NaN and {inf} infinite value(s) (in float32). torch would record them as the "
        "range and then return scale nan or inf from calculate_qparams; remove them before observing"
    )


def default_qparams() -> tuple[torch.Tensor, torch.Tensor]:
    """torch's answer before any data: warn, then ``(tensor([1.]), tensor([0]))``."""
    warnings.warn(
        "must run observer before calling calculate_qparams: no data observed yet, so returning "
        "torch's default scale 1.0 and zero point 0",
        UserWarning,
        stacklevel=3,
    )
    return torch.tensor([1.0]), torch.tensor([0])


def torch_shaped_qparams(obs, min_val: torch.Tensor, max_val: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``choose_qparams`` with an observer's settings, shaped and typed as torch's observers return them."""
    symmetric = obs.qscheme in SYMMETRIC_QSCHEMES
    quant_min, quant_max = obs.custom_range
    scale, zero_point = choose_qparams(
        min_val, max_val, obs.dtype, symmetric, obs.reduce_range, quant_min, quant_max, obs.eps
    )
    if scale.dim() == 0:
        scale, zero_point = scale.reshape(1), zero_point.reshape(1)
    # torch: affine zero points come out of `.to(torch.int)`; symmetric ones stay int64
    return scale, zero_point if symmetric else zero_point.to(torch.int32)
