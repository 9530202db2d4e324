"""PyTorch's ``HistogramObserver`` (torch 2.13 and 2.14 run the same code),
step by step: build a histogram of everything observed, then search it for
the range whose quantization has the smallest L2 error, and turn that range
into scale and zero point.

Explained in the book chapter "The histogram observer" (``book/07_histogram``).
Source: ``torch/ao/quantization/observer.py``, class ``HistogramObserver``
(methods ``reset_histogram``, ``forward``, ``_combine_histograms``,
``_upscale_histogram``, ``_compute_quantization_error``, ``_get_norm`` and
``_non_linear_param_search``) in torch 2.13 and 2.14; that code dates from PR 129387
(June 2024), which dropped the old downsampling merge and set the upsample rate
to 16. The search is a port of caffe2's
``NormMinimization::NonlinearQuantizationParamsSearch``.

The steps, each a pure function you can call or copy:

1. :func:`~qlib.histogram.first_histogram`: ``torch.histc`` with ``bins`` equal bins over the
   first batch's exact ``[min, max]``.
2. :func:`~qlib.histogram.add_batch`: a later batch widens the range to the union of old and
   new; the batch is binned over the union, and the old histogram is moved onto
   the new bins by :func:`~qlib.histogram.upscale_histogram` (each old bin split into 16
   sub-bins whose centres are dropped into the new bins).
3. :func:`~qlib.histogram.search_range`: walk inwards from both ends of the cumulative histogram
   in steps of 1e-5 of the total mass, always on the side that moves fewer bins,
   scoring each new candidate range with :func:`~qlib.histogram.quantization_error`; stop as
   soon as the error rises.
4. ``qlib.choose_qparams`` turns the chosen range into ``(scale, zero_point)``
   exactly as ``MinMaxObserver`` would.

Every float operation is the one torch performs, in the same order and the same
precision (float32 tensors, Python floats where torch uses them), so the
histogram, the chosen range and the qparams are equal to torch's bit for bit.
"""

from __future__ import annotations

import bisect
import math
import warnings

import torch

from qlib.numerics import float32
from qlib.observers import PER_TENSOR_QSCHEMES, check_observer_args, default_qparams, torch_shaped_qparams

UPSAMPLE_RATE = 16  # torch 2.13, 2.14: a fixed attribute (it was a constructor argument defaulting to 128 in 1.x)
STEP = 1e-5  # the search moves a quantile bound by this fraction of the total mass per step


def first_histogram(
    x: torch.Tensor,
    bins: int = 2048,
    legacy: bool = False,
    extrema: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Histogram of the first batch: ``(histogram, min_val, max_val)``.

    ``torch.histc`` puts ``bins`` equal bins on ``[min(x), max(x)]`` (torch
    2.13, ``HistogramObserver.reset_histogram``). ``legacy=True`` bins over
    ``[int(min(x)), int(max(x))]`` instead, as PyTorch 1.13 did (see
    :class:`HistogramObserver`): values outside that integer range are dropped,
    but ``min_val``/``max_val`` still hold the true extremes, so the bins are
    later read as if they spanned ``[min, max]``. ``x`` must be finite;
    ``extrema``, if given, is ``torch.aminmax(x)`` already computed.

    Chapter: "The histogram observer" (book/07_histogram).

    >>> h, lo, hi = first_histogram(torch.tensor([0.0, 1.0, 1.0, 4.0]), bins=4)
    >>> h, lo, hi
    (tensor([1., 2., 0., 1.]), tensor(0.), tensor(4.))
    """
    min_val, max_val = torch.aminmax(x.detach()) if extrema is None else extrema
    if legacy:
        lo, hi = int(min_val), int(max_val)  # truncation toward zero: -0.7 -> 0, 1.57 -> 1
        if not -(2**63) <= lo <= hi < 2**63:
            raise ValueError(f"legacy binning over [int(min), int(max)] = [{lo}, {hi}] needs both ends within int64")
        histogram = torch.histc(x, bins, min=lo, max=hi)
    else:
        histogram = torch.histc(x, bins, min=min_val.item(), max=max_val.item())
    return histogram, min_val, max_val


def upscale_histogram(
    histogram: torch.Tensor,
    orig_min: torch.Tensor,
    orig_max: torch.Tensor,
    new_min: torch.Tensor,
    new_max: torch.Tensor,
    upsample_rate: int = UPSAMPLE_RATE,
) -> torch.Tensor:
    """Move a histogram on ``[orig_min, orig_max]`` onto the same number of bins on ``[new_min, new_max]``.

    Each bin is split into ``upsample_rate`` equal sub-bins holding an equal
    share of its count; each sub-bin's count goes whole into the new bin that
    contains the sub-bin's centre (torch 2.13 ``_upscale_histogram``). The new
    range must contain the old one.

    Chapter: "The histogram observer" (book/07_histogram).

    >>> upscale_histogram(torch.tensor([4.0, 0.0]), torch.tensor(0.0), torch.tensor(2.0),
    ...                   torch.tensor(0.0), torch.tensor(4.0), upsample_rate=2)
    tensor([4., 0.])
    """
    bins = histogram.numel()
    sub_counts = histogram.repeat_interleave(upsample_rate) / upsample_rate
    sub_width = (orig_max - orig_min) / (bins * upsample_rate)
    sub_centres = torch.linspace(orig_min, orig_max, bins * upsample_rate + 1)[:-1] + 0.5 * sub_width
    new_edges = torch.linspace(new_min, new_max, bins + 1)
    new_bin = torch.bucketize(sub_centres, new_edges, right=True) - 1
    # rounding can put a centre just outside the new range: keep it in the end bins
    new_bin = new_bin.clamp(0, bins - 1)
    return torch.bincount(new_bin, weights=sub_counts, minlength=bins)


def add_batch(
    histogram: torch.Tensor,
    min_val: torch.Tensor,
    max_val: torch.Tensor,
    x: torch.Tensor,
    upsample_rate: int = UPSAMPLE_RATE,
    extrema: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Add a later batch ``x`` to a histogram: returns ``(histogram, min_val, max_val)``.

    The range becomes the union of the old range and the batch's; the batch is
    binned over it with ``torch.histc``. If the range did not change, the two
    histograms are added; if the old range was a single value, its whole count
    goes to that value's bin; otherwise the old histogram is moved onto the new
    bins with :func:`~qlib.histogram.upscale_histogram` (torch 2.13 ``forward`` and
    ``_combine_histograms``). ``x`` must be finite; ``extrema``, if given,
    is ``torch.aminmax(x)`` already computed.

    Chapter: "The histogram observer" (book/07_histogram).

    >>> h, lo, hi = first_histogram(torch.tensor([0.0, 1.0]), bins=2)
    >>> add_batch(h, lo, hi, torch.tensor([3.0]), upsample_rate=2)
    (tensor([2., 1.]), tensor(0.), tensor(3.))
    """
    bins = histogram.numel()
    x_min, x_max = torch.aminmax(x.detach()) if extrema is None else extrema
    new_min = torch.min(min_val, x_min)
    new_max = torch.max(max_val, x_max)
    batch = torch.histc(x, bins, min=new_min.item(), max=new_max.item())
    if new_min == min_val and new_max == max_val:
        return histogram + batch, min_val, max_val
    if min_val == max_val:
        # the old histogram is a single value repeated: re-bin that value
        old = torch.histc(min_val, bins, min=new_min.item(), max=new_max.item()) * torch.sum(histogram)
    else:
        old = upscale_histogram(histogram, min_val, max_val, new_min, new_max, upsample_rate)
    return batch + old, new_min, new_max


def _l2(delta_begin: torch.Tensor, delta_end: torch.Tensor, density: torch.Tensor) -> torch.Tensor:
    """density * integral of t**2 from delta_begin to delta_end (torch's ``_get_norm``)."""
    return density * ((delta_end * delta_end * delta_end - delta_begin * delta_begin * delta_begin) / 3)


def quantization_error(
    histogram: torch.Tensor, bin_width: float, start_bin: int, end_bin: int, dst_nbins: int = 256
) -> float:
    """Estimated L2 error of quantizing the histogram's values with the range of bins ``start_bin..end_bin``.

    The candidate range is cut into ``dst_nbins`` equal buckets (``2**bits``
    of the dtype: 256 for 8 bits, even with ``reduce_range``). Each histogram
    bin's count is taken as spread evenly over the bin, and every value is
    rounded to the centre of its bucket; values outside the range fall into the
    end buckets, which is how clipping error counts. ``bin_width`` is the
    histogram's bin width as a Python float, ``(max - min) / bins`` computed
    from the float32 ends (torch 2.13 ``_compute_quantization_error``).

    Chapter: "The histogram observer" (book/07_histogram).

    >>> quantization_error(torch.tensor([1.0, 1.0]), 1.0, 0, 1, dst_nbins=2)
    0.1666666716337204
    """
    bins = histogram.numel()
    dst_bin_width = bin_width * (end_bin - start_bin + 1) / dst_nbins
    if dst_bin_width == 0.0:
        return 0.0
    half = dst_bin_width / 2

    # where each source bin begins and ends, measured from the start of the range
    src_begin = (torch.arange(bins) - start_bin) * bin_width
    src_end = src_begin + bin_width
    # the bucket each end falls in (the end buckets take everything beyond the range)
    dst_of_begin = torch.clamp(torch.div(src_begin, dst_bin_width, rounding_mode="floor"), 0, dst_nbins - 1)
    dst_of_end = torch.clamp(torch.div(src_end, dst_bin_width, rounding_mode="floor"), 0, dst_nbins - 1)
    density = histogram / bin_width

    norm = torch.zeros(bins)
    # from the bin's begin to the end of its first bucket
    norm += _l2(src_begin - (dst_of_begin + 0.5) * dst_bin_width, torch.tensor(half), density)
    # whole buckets in between
    norm += (dst_of_end - dst_of_begin - 1) * _l2(torch.tensor(-half), torch.tensor(half), density)
    # from the start of its last bucket to the bin's end
    norm += _l2(torch.tensor(-half), src_end - (dst_of_end * dst_bin_width + half), density)
    return norm.sum().item()


def search_range(
    histogram: torch.Tensor, min_val: torch.Tensor, max_val: torch.Tensor, dst_nbins: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(new_min, new_max)`` torch's ``_non_linear_param_search`` chooses from a histogram on ``[min_val, max_val]``.

    Starting from the full range, each step raises the lower quantile bound
    alpha or lowers the upper one beta by 1e-5 of the total count, finds the
    bins those quantiles fall in, and moves whichever end moves further
    (ties move the upper end). A candidate that changes the bins is scored
    with :func:`~qlib.histogram.quantization_error`; the search stops at the first candidate
    whose error is larger than the best so far, and returns the edges of the
    best one. ``new_min``/``new_max`` are float32 0-dim tensors.

    Torch walks the cumulative histogram one bin at a time; this finds the same
    bins by bisection, which gives the same answer because a cumulative sum of
    non-negative counts never decreases. Like torch, the quantile thresholds
    ``alpha * total`` are rounded to float32 before the comparison.

    Chapter: "The histogram observer" (book/07_histogram).

    >>> h = torch.tensor([1.0, 5, 20, 50, 20, 5, 1, 0, 0, 1])   # a lone count in the top bin
    >>> search_range(h, torch.tensor(0.0), torch.tensor(10.0))
    (tensor(0.), tensor(9.))
    """
    bins = histogram.numel()
    bin_width = (max_val - min_val) / bins  # float32, for the returned edges
    if bin_width == 0:
        # zero-width bins: every candidate gives the same edges (torch reaches them after a long, flat search)
        return min_val + bin_width * 0, min_val + bin_width * bins
    bin_width_py = (max_val.item() - min_val.item()) / bins  # Python float, for the error estimate
    total = torch.sum(histogram).item()
    cumulative = torch.cumsum(histogram, dim=0).tolist()
    if any(a > b for a, b in zip(cumulative, cumulative[1:], strict=False)):
        raise ValueError("histogram must not contain negative counts (its cumulative sum decreases)")

    alpha, beta = 0.0, 1.0
    start_bin, end_bin = 0, bins - 1
    norm_min = math.inf
    while alpha < beta:
        next_alpha = alpha + STEP
        next_beta = beta - STEP
        # left: first bin in [start_bin, end_bin) whose cumulative count reaches next_alpha of the total, else end_bin
        left = bisect.bisect_left(cumulative, float32(next_alpha * total), start_bin, end_bin)
        # right: last bin in (start_bin, end_bin] whose cumulative count is within next_beta of the total, else start_bin
        right = bisect.bisect_right(cumulative, float32(next_beta * total), start_bin, end_bin + 1) - 1
        right = max(start_bin, right)

        next_start, next_end = start_bin, end_bin
        if left - start_bin > end_bin - right:
            next_start, alpha = left, next_alpha
        else:
            next_end, beta = right, next_beta
        if next_start == start_bin and next_end == end_bin:
            continue

        norm = quantization_error(histogram, bin_width_py, next_start, next_end, dst_nbins)
        if norm > norm_min:
            break
        norm_min = norm
        start_bin, end_bin = next_start, next_end

    return min_val + bin_width * start_bin, min_val + bin_width * (end_bin + 1)


class HistogramObserver:
    """Readable twin of ``torch.ao.quantization.observer.HistogramObserver`` (torch 2.13 and 2.14).

    ``obs(x)`` records float32 batch ``x`` in a histogram of ``bins`` bins and
    returns ``x``; ``calculate_qparams()`` searches the histogram for the range
    with the smallest estimated L2 quantization error and returns
    ``(scale, zero_point)`` for it. After any stream of batches ``histogram``,
    ``min_val``, ``max_val`` and the qparams equal torch's bit for bit. The
    arithmetic of the steps lives in the functions of this module; the qparams
    come from ``qlib.qparams.choose_qparams`` (the same arithmetic as
    ``MinMaxObserver``). Like torch, ``scale`` has shape ``(1,)`` and
    ``zero_point`` is int32 for ``per_tensor_affine`` and int64 for
    ``per_tensor_symmetric``.

    Edge cases, as torch 2.13 and 2.14 where it is well defined:

    * an empty batch changes nothing;
    * ±inf values are dropped with a warning (a batch of only ±inf changes
      nothing);
    * a batch of equal values gets a histogram on a zero-width range, and
      ``calculate_qparams`` treats that range like ``MinMaxObserver``;
    * before any data ``calculate_qparams`` warns and returns torch's default
      ``(tensor([1.]), tensor([0]))``.

    Where torch is not well defined qlib raises: a batch with NaN (torch
    raises from ``histc`` after storing NaN as the range), a range whose
    scale overflows float32 (torch returns inf), and
    ``per_tensor_symmetric`` with ``reduce_range`` on quint8/uint8 with the
    default range (torch returns zero point 128, outside ``[0, 127]``).
    Input other than float32 is refused (torch bins float64 input in float64
    against float32 state); so are ``reduce_range`` on a dtype wider than 8
    bits (torch ignores it) and dtypes qlib.ranges does not know (uint16,
    float8).

    ``legacy=True`` reproduces the first-batch histogram of PyTorch 1.13 (and,
    by the dates of the PRs, of releases from about 1.7 on),
    ``torch.histc(x, bins, min=int(min_val),
    max=int(max_val))``: values outside the truncated integer range are lost,
    and the rest are read as if the bins spanned the true ``[min, max]``.
    What is known, and how surely:

    * certain: torch 1.5.0's ``torch/quantization/observer.py`` (an installed
      copy, ``version.py`` 1.5.0) bins the first batch over the float
      ``min_val``/``max_val``; later copies of the torch.ao-era code have the
      ``int(...)`` cast there, and ``int(combined_min)``/``int(combined_max)``
      for later batches too, beside the old ``_adjust_min_max`` downsampling
      merge (PR 29790); 2.13 and 2.14 have no cast (PR 129387 rewrote the class);
    * measured (``history/`` in the book's repository, every release with a
      Python 3.11 wheel): torch 1.13.1 bins the forum's first batch over
      ``[int(min), int(max)]`` (5 of its 16 values counted); 2.0.1 and every
      later release bin all 16;
    * read in issue 83672 (Aug 2022, a maintainer relaying a forum report):
      PR 45630 (Oct 2020) added the cast by mistake; PR 83755 tried to remove
      it and failed CI; PR 90355 (Dec 2022, after 1.13.0) is the fix that
      reached 2.0. Releases before 1.13 were not measured: the dates suggest
      the cast from 1.7 or 1.8 on.

    The reproduction is exact where it can be checked: on the forum thread's
    16 values with ``reduce_range=True`` it gives the thread's scale
    0.01696838 and zero point 34 (and with them torch's quantize gives every
    code and value the thread printed), where 2.13 and 2.14 give 0.0180064 and 40.
    Later batches of those releases went through the old merge, which qlib
    does not reproduce, so a legacy observer refuses a second batch (and the
    old reset of a histogram whose ``min == max`` does not arise).

    Chapter: "The histogram observer" (book/07_histogram).

    >>> obs = HistogramObserver(reduce_range=True)
    >>> _ = obs(torch.tensor([-0.71688455, 0.05846110, 1.57104063]))
    >>> obs.calculate_qparams()
    (tensor([0.0180]), tensor([40], dtype=torch.int32))
    """

    def __init__(
        self,
        bins: int = 2048,
        dtype: torch.dtype = torch.quint8,
        qscheme: torch.qscheme = torch.per_tensor_affine,
        reduce_range: bool = False,
        quant_min: int | None = None,
        quant_max: int | None = None,
        eps: float = torch.finfo(torch.float32).eps,
        legacy: bool = False,
    ) -> None:
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
            raise ValueError(f"bins must be a positive int; got {bins!r}")
        if qscheme not in PER_TENSOR_QSCHEMES:
            raise ValueError(
                f"qscheme must be torch.per_tensor_affine or torch.per_tensor_symmetric for HistogramObserver; got {qscheme!r}"
            )
        if not isinstance(legacy, bool):
            raise TypeError(f"legacy must be True or False; got {legacy!r}")
        self.quant_min, self.quant_max = check_observer_args(dtype, qscheme, reduce_range, quant_min, quant_max, eps)
        self.bins = bins
        self.dtype = dtype
        self.qscheme = qscheme
        self.reduce_range = reduce_range
        self.eps = eps
        self.legacy = legacy
        self.custom_range = (quant_min, quant_max)
        self.dst_nbins = 2 ** torch.iinfo(dtype).bits
        self.upsample_rate = UPSAMPLE_RATE
        self.histogram = torch.zeros(bins)
        self.min_val = torch.tensor(math.inf)
        self.max_val = torch.tensor(-math.inf)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Record batch ``x`` in the histogram; return ``x`` unchanged."""
        if not isinstance(x, torch.Tensor) or x.is_quantized or x.dtype != torch.float32:
            got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
            raise TypeError(f"x must be a float32 tensor; got {got}. Convert with x.float() first")
        if x.numel() == 0:
            return x
        values = x.detach()
        x_min, x_max = torch.aminmax(values)
        if torch.isnan(x_min) or torch.isnan(x_max):
            raise ValueError(
                f"x contains {int(torch.isnan(values).sum())} NaN value(s); a histogram has no bin for NaN "
                "(torch 2.13 stores NaN as the range, then torch.histc raises)"
            )
        if x_min == -math.inf or x_max == math.inf:
            warnings.warn("torch.inf detected in input tensor, ignoring input", stacklevel=2)
            values = values[values.abs() != math.inf]
            if values.numel() == 0:
                return x
            x_min, x_max = torch.aminmax(values)
        if self.min_val == math.inf or self.max_val == -math.inf:
            self.histogram, self.min_val, self.max_val = first_histogram(
                values, self.bins, self.legacy, extrema=(x_min, x_max)
            )
        elif self.legacy:
            raise ValueError(
                "legacy=True reproduces only the first batch of PyTorch 1.13, which merged later "
                "batches with a different algorithm (downsampling, PR 29790) that qlib does not reproduce"
            )
        else:
            self.histogram, self.min_val, self.max_val = add_batch(
                self.histogram, self.min_val, self.max_val, values, self.upsample_rate, extrema=(x_min, x_max)
            )
        return x

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scale, zero_point)`` for the range :func:`~qlib.histogram.search_range` picks from the histogram."""
        if self.min_val == math.inf and self.max_val == -math.inf:
            return default_qparams()
        if torch.isinf(self.max_val - self.min_val):
            raise ValueError(
                f"the observed range [{self.min_val.item()}, {self.max_val.item()}] is too wide: its width overflows "
                "float32, so the histogram's bin width is inf (torch 2.13 returns scale nan)"
            )
        new_min, new_max = search_range(self.histogram, self.min_val, self.max_val, self.dst_nbins)
        return torch_shaped_qparams(self, new_min, new_max)
