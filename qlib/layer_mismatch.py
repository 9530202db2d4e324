"""Explain, element by element, why hand-computed outputs of a quantized Linear, Conv2d or add differ from PyTorch's.

Explained in the book chapter "A whole model, integer by integer" (``book/10_model``).

``explain_layer(layer, x, manual)`` takes a converted eager module, its quantized input and the
reader's own output integers (a hand computation in float64, numpy, C...), runs the layer in
torch for its codes (or takes them as ``reference``), and names one cause for every output
element where the two differ. As for ``qlib.explain`` (``qlib.mismatch``), a cause is never
guessed from the size or sign of a difference: each is a hypothesis about the reader's
arithmetic, accepted only when recomputing the element under it gives the reader's integer
*and* recomputing under torch's arithmetic (qlib's model: ``qlib.linear``, ``qlib.conv2d``,
``qlib.add``) gives torch's.

The reader's arithmetic is modelled as torch's with some choices made differently (every
combination of them is one candidate computation; torch's own is the empty one):

- *pairs*: an exact int32 sum where torch's kernel adds each pair of u8·s8 products in
  saturating int16 (FBGEMM's ``vpmaddubsw``, on CPUs without AVX512-VNNI, and its depthwise
  convolution on every CPU), or pairs saturated where torch sums exactly;
- *bias*: on FBGEMM, the bias rounded to an int32 and added to the accumulator before
  requantization, ``round(bias / (x_scale * w_scale))``: either as qnnpack's ``QuantizeBias``
  (``quantize_per_tensor`` to qint32, float32) or as ``round(bias / ats)`` in float32, where
  FBGEMM adds the float32 bias during requantization (``requantizeOutputProcessingAvx2`` in
  https://github.com/pytorch/FBGEMM/blob/bbcbb6dd1d43122fde5ef294097d646f5b3cbe2a/src/QuantUtilsAvx2.cc);
  on a qnnpack Linear, which rounds the bias to int32 first
  (https://github.com/pytorch/pytorch/blob/v2.14.1/aten/src/ATen/native/quantized/cpu/qlinear.cpp),
  the float bias added as FBGEMM adds it;
- *path* (add): one of torch's two paths for every element, the vector body's arithmetic or the
  scalar tail's, where torch computes some elements with each (``qlib.quantized_add.vector_lanes``
  says which is which);
- *order*: the zero point added before rounding, ``rint(v * mult + zp)``, where torch adds it
  after, ``rint(v * mult) + zp``; for add, before or after on every element, where torch 2.13's
  scalar tail adds it before and its vector body after;
- *precision*: float64 throughout with the float64 scales, ``rint((raw * x_scale * w_scale +
  bias) / scale) + zp`` (add: ``rint((a_scale * (a - a_zp) + b_scale * (b - b_zp)) / scale) +
  zp``); or float32 arithmetic with the multiplier ``x_scale * w_scale / scale``, ``ats`` and the
  bias's reciprocal computed from the float64 scales and narrowed once. (FBGEMM's reciprocal
  ``float32(1 / double(ats))`` always equals ``1.0f / ats``: a float64 quotient of float32 values
  rounded again to float32 is the correctly rounded float32 quotient, 53 >= 2 * 24 + 2 bits, so
  computing it in float32 is no difference at all);
- *fma*: the per-tensor bias ``bias * rcp + raw`` rounded twice where torch fuses it into one
  FMA (FBGEMM's GEMM), or once where torch rounds twice (its depthwise convolution on torch
  2.14, see ``qlib.quantized_conv``); for add, the vector body's dequantization
  ``fma(scale, q, -scale * zp)`` rounded twice.

Each candidate gives an *unclamped* integer. The reader may also have clamped otherwise: not at
all, to the dtype's range where a ReLU clamps at the zero point, or to the observer's narrower
range ``quant_range`` (default ``qrange(dtype, reduce_range=True)``: 0..127 for quint8, as the
``x86`` and ``fbgemm`` qconfigs' observers compute scale and zero point for). The causes, in
order of precedence:

=======================  ==================================================================
cause                    accepted when
=======================  ==================================================================
``clamp_low``            a candidate, clamped as the reader may have, gives the reader's
                         value, which is below torch's lowest code, and clamped as torch
                         clamps gives torch's value
``clamp_high``           the same above torch's highest code
``wraparound``           a candidate's value outside the dtype's range, cast without a clamp
                         (``-5`` becomes ``251`` in uint8), gives the reader's value, and
                         clamped as torch clamps, torch's
``clamp_range``          the same as ``clamp_low`` with the reader's value inside torch's
                         range, at an end of the observer's range
``pair_saturation``      a candidate with *pairs* gives the reader's value and the same
                         candidate with torch's sums instead gives torch's
``int32_bias``           the same for *bias*
``vector_vs_scalar``     the same for *path*
``zero_point_order``     the same for *order*
``scale_precision``      the same for *precision*
``fused_multiply_add``   the same for *fma*
``unexplained``          nothing above reproduces both integers (shown, never hidden)
=======================  ==================================================================

Near a tie any small change of arithmetic moves a code, so one row alone rarely tells which
change the reader made: a float64 rounding, an int32 bias and the zero point's side can all
reproduce it. But the reader computed every element the same way. So the candidates that prove
the most rows are taken as the reader's computation, and a row they prove lists only the causes
they prove; other rows list every cause that reproduces them. Either way the row lists its causes
in the order above (``LayerRow.hypotheses``) and names the first as its ``cause``: a rule, not a
diagnosis, that runs from the coarsest difference to the finest, the order in which to fix them.

A row that no single cause reproduces may need two at once: a float64 reader without a clamp on
a layer whose pairs saturate differs there by the clamp *and* by the sum. When a candidate,
clamped (or not) as the reader may have, gives the reader's value and qlib's model of torch
gives torch's, the row names the coarsest of the differences that each move the reader's value
and keeps the others in ``LayerRow.also``. Only a row nothing reproduces is ``unexplained``; its
proof shows torch's numbers. A float64 hand computation that sums or multiplies in another order
than the formula above can differ from it within a few float64 ulps of a tie: such rows are
``unexplained`` too. Every cause needs torch's value to be what qlib recomputes from the layer
and ``x``; where it is not (a wrong input scale, say), the row is ``unexplained`` and the report
says at how many elements the reference disagrees.

Layers: ``torch.ao.nn.quantized.Linear`` and ``Conv2d`` (and ``LinearReLU``, ``ConvReLU2d``) whose
weights FBGEMM packed (the ``x86`` and ``fbgemm`` engines), a Linear packed by qnnpack, and
``quantized::add`` through ``QFunctional`` (``qf``, ``qf.add`` or ``qf.add_relu``). A Conv2d or
Linear packed by oneDNN (the ``x86`` engine's convolutions on Linux CPUs with AVX512-VNNI, the
``onednn`` engine) is explained where oneDNN's kernel sums exactly (the VNNI and AMX kernels; those
of other CPUs saturate pairs and are refused): torch's side is then ``qlib.onednn``'s float32
requantization, which adds the zero point *before* rounding, so a reader's ``rint(v) + zp`` is the
*order* choice there, with *bias* (an int32 bias) and *precision* (float64). Torch's
side is qlib's model of each: ``qlib.linear`` (``PackedLinearWeight::apply_impl`` in ``qlinear.cpp``
above), ``qlib.conv2d`` (``PackedConvWeight<2>::apply_impl`` in
https://github.com/pytorch/pytorch/blob/v2.14.1/aten/src/ATen/native/quantized/cpu/qconv.cpp) and
``qlib.add`` (``qadd_kernel`` in
https://github.com/pytorch/pytorch/blob/v2.14.1/aten/src/ATen/native/quantized/cpu/kernels/QuantizedOpKernels.cpp).
"""

from __future__ import annotations

import html
import itertools
import math
import textwrap
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.ao.nn.intrinsic.quantized as nniq
import torch.ao.nn.quantized as nnq

from qlib import checks
from qlib.dequant import per_tensor_values
from qlib.numerics import INT16_MAX, INT16_MIN, float32, float32_reciprocal, fma_float32, wrap_int32
from qlib.onednn import (
    OnednnArithmetic,
    onednn_conv_arithmetic,
    onednn_dst_scale,
    onednn_isa_for,
    onednn_linear_arithmetic,
    onednn_linear_kernel,
    onednn_linear_weight_scales,
    onednn_src_scale,
)
from qlib.quantized_add import VECTOR_WIDTHS, add, vector_lanes
from qlib.quantized_conv import conv2d, conv2d_kernel
from qlib.quantized_linear import bias_int32, linear, pairs_saturate_here, weight_of, weight_qparams
from qlib.ranges import CODE_DTYPES, DTYPE_RANGES, qrange
from qlib.registry import packed_backend, quantized
from qlib.releases import torch_release

LAYER_CAUSES: tuple[str, ...] = (
    "clamp_low",
    "clamp_high",
    "wraparound",
    "clamp_range",
    "pair_saturation",
    "int32_bias",
    "vector_vs_scalar",
    "zero_point_order",
    "scale_precision",
    "fused_multiply_add",
    "unexplained",
)
# Each choice a reader can make otherwise than torch, and the cause it names (several choices can
# name one cause: they are alternatives, and a computation makes at most one of them).
LAYER_CHOICES: dict[str, str] = {
    "pairs": "pair_saturation",
    "bias_quantize": "int32_bias",  # FBGEMM layer: the bias as QuantizeBias rounds it to int32
    "bias_divide": "int32_bias",  # FBGEMM layer: round(bias / ats) in float32
    "bias_float": "int32_bias",  # qnnpack layer: the float bias, added as FBGEMM adds it
    "all_vector": "vector_vs_scalar",  # add: the vector body's arithmetic on every element
    "all_scalar": "vector_vs_scalar",  # add: the scalar tail's on every element
    "zp_before": "zero_point_order",  # the zero point added before rounding, on every element
    "zp_after": "zero_point_order",  # add in torch 2.13 and oneDNN layers: after rounding, on every element
    "float64": "scale_precision",
    "multiplier64": "scale_precision",
    "fma": "fused_multiply_add",
}
LAYER_SHOWN_ROWS = 50  # rows printed by str() and the HTML table; LayerReport.rows holds all
LAYER_WIDTH = 100  # characters per line of str(report)
DOT_PIECE = 2**22  # products per piece when summing the differing elements' rows
# How an out-of-range value wraps when cast without a clamp: (name, modulus, lowest value).
CAST_WRAPS: dict[torch.dtype, tuple[str, int, int]] = {
    torch.quint8: ("uint8", 256, 0),
    torch.qint8: ("int8", 256, -128),
    torch.qint32: ("int32", 2**32, -(2**31)),
}

Variant = tuple[str, ...]


@dataclass(frozen=True)
class LayerRow:
    """One output element where the reader's integer differs from torch's.

    ``index`` is the element's index in the layer's output; ``cause`` the first of
    ``hypotheses``, every cause that reproduces both integers, in order of precedence
    (``("unexplained",)`` when none does); ``recomputed`` torch's integer as qlib recomputes it
    (equal to ``reference`` unless ``x`` or the layer are not what torch ran); ``unclamped`` the
    value before any clamp under ``manual_rule`` (under ``reference_rule`` for ``unexplained``);
    ``proof`` the numbers that prove ``cause``; ``also`` the causes a row needs together with
    ``cause`` when no single one reproduces it (empty otherwise).

    Chapter: "A whole model, integer by integer" (book/10_model).

    >>> qf = torch.ao.nn.quantized.QFunctional()
    >>> qf.scale = 0.025  # the output's; zero point 0
    >>> a = torch.quantize_per_tensor(torch.tensor([1.0, -3.0]), 0.5, 0, torch.qint8)
    >>> row = explain_layer(qf, (a, a), torch.tensor([80, -240])).rows[0]  # (a + a) / 0.025, no clamp
    >>> row.index, row.cause, row.unclamped, row.recomputed
    ((1,), 'clamp_low', -240, -128)
    """

    index: tuple[int, ...]
    manual: int
    reference: int
    cause: str
    hypotheses: tuple[str, ...]
    recomputed: int
    unclamped: int | float
    manual_rule: str | None
    reference_rule: str
    proof: str
    also: tuple[str, ...] = ()


@dataclass
class LayerReport:
    """What ``explain_layer`` found.

    Fields: ``rows``, one :class:`LayerRow` per differing output element, in index order;
    ``counts``, cause -> number of rows naming it (a ``Counter``: absent causes count 0);
    ``numel``, the number of output elements compared; ``setting``, the layer, its backend and
    output parameters in words; ``reference_not_recomputed``, the number of elements where the
    reference differs from qlib's recomputation of torch's arithmetic (0 unless ``x`` or the
    layer are not what torch ran); ``release``, the torch release assumed; ``layer``,
    ``"Linear"``, ``"Conv2d"`` or ``"add"``.

    ``str(report)`` is a plain-text table at most 100 characters wide, each row's proof wrapped
    beneath it; in a notebook the report shows as an HTML table. Only the first 50 rows are
    printed; ``rows`` holds all.

    Chapter: "A whole model, integer by integer" (book/10_model).

    >>> qf = torch.ao.nn.quantized.QFunctional()
    >>> qf.scale = 0.025
    >>> a = torch.quantize_per_tensor(torch.tensor([1.0, -3.0]), 0.5, 0, torch.qint8)
    >>> report = explain_layer(qf, (a, a), torch.tensor([80, -240]))
    >>> dict(report.counts), report.numel
    ({'clamp_low': 1}, 2)
    """

    rows: list[LayerRow]
    counts: Counter = field(default_factory=Counter)
    numel: int = 0
    setting: str = ""
    reference_not_recomputed: int = 0
    release: str = ""
    layer: str = ""

    def summary_lines(self) -> list[str]:
        """The lines above the table: what differs, the setting, and any warning."""
        if not self.rows:
            everything = "the only element" if self.numel == 1 else f"all {self.numel:,} elements"
            lines = [f"manual and reference agree at {everything}: nothing differs.", f"({self.setting})"]
        else:
            counts = ", ".join(f"{self.counts[c]:,} {c}" for c in LAYER_CAUSES if self.counts[c])
            if self.numel == 1:
                differ = "the only element differs"
            else:
                verb = "differs" if len(self.rows) == 1 else "differ"
                differ = f"{len(self.rows):,} of {self.numel:,} elements {verb}"
            lines = [f"{differ}: {counts}.", f"({self.setting})"]
            several = sum(len(row.hypotheses) > 1 for row in self.rows)
            if several:
                lines.append(
                    f"{plural(several, 'row')} {'has' if several == 1 else 'have'} more than one explanation; "
                    "each names the first in order of precedence (all are in its .hypotheses)."
                )
            joint = sum(bool(row.also) for row in self.rows)
            if joint:
                lines.append(
                    f"{plural(joint, 'row')} {'needs' if joint == 1 else 'need'} two or more causes together; "
                    "each names the first in order of precedence (the others are in its .also)."
                )
        if self.reference_not_recomputed:
            lines.append(
                f"Warning: reference differs at {plural(self.reference_not_recomputed, 'element')} from torch "
                f"{self.release}'s arithmetic recomputed from this layer and input; check that they are the ones "
                "torch ran (the input's scale and zero point, the layer's weights, scale and zero point)."
            )
        return lines

    def table(self) -> tuple[list[str], list[list[str]]]:
        """The table's header and its shown rows, as text."""
        head = ["index", "manual", "reference", "cause"]
        shown = self.rows[:LAYER_SHOWN_ROWS]
        body = [["(" + ", ".join(map(str, r.index)) + ")", str(r.manual), str(r.reference), r.cause] for r in shown]
        return head, body

    def more(self) -> str | None:
        """The line that says how many rows are not printed, if any."""
        hidden = len(self.rows) - LAYER_SHOWN_ROWS
        return f"... {plural(hidden, 'more row')} in .rows" if hidden > 0 else None

    def __str__(self) -> str:
        lines = [part for line in self.summary_lines() for part in textwrap.wrap(line, LAYER_WIDTH)]
        if self.rows:
            head, body = self.table()
            widths = [max(len(cells[i]) for cells in [head, *body]) for i in range(len(head))]
            lines += ["", "  ".join(cell.ljust(w) for cell, w in zip(head, widths, strict=True)).rstrip()]
            for row, cells in zip(self.rows, body, strict=False):
                lines.append("  ".join(cell.ljust(w) for cell, w in zip(cells, widths, strict=True)).rstrip())
                lines += textwrap.wrap(row.proof, LAYER_WIDTH, initial_indent="    ", subsequent_indent="    ")
            if more := self.more():
                lines.append(more)
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        parts = [f"<p>{html.escape(line)}</p>" for line in self.summary_lines()]
        if self.rows:
            head, body = self.table()
            parts.append('<table class="qlib-report">')
            parts.append("<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr></thead><tbody>")
            for row, cells in zip(self.rows, body, strict=False):
                parts.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
                parts.append(f'<tr class="proof"><td colspan="{len(head)}">{html.escape(row.proof)}</td></tr>')
            parts.append("</tbody></table>")
            if more := self.more():
                parts.append(f"<p>{html.escape(more)}</p>")
        return "\n".join(parts)


def plural(n: int, noun: str) -> str:
    """``1 row``, ``2 rows``, ``1,234 elements``.

    >>> plural(1, "row"), plural(1234, "element")
    ('1 row', '1,234 elements')
    """
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


# --- the arithmetic of the differing elements, under every candidate ---------------------------


@dataclass
class Candidate:
    """One candidate computation of the differing elements (float64 tensors, one value each):
    ``pre`` the number before the last multiplication (the accumulator with bias, or add's sum),
    ``rounded`` the number rounded, ``unclamped`` the integer before any clamp, ``before`` whether
    the zero point was added before rounding."""

    pre: torch.Tensor
    rounded: torch.Tensor
    unclamped: torch.Tensor
    before: torch.Tensor


class GemmElements:
    """The differing output elements of a Linear or Conv2d: their int32 sums, both ways, and the
    layer's parameters, enough to recompute each under every candidate arithmetic."""

    def __init__(
        self,
        raw: torch.Tensor,
        raw_other: torch.Tensor,
        channel: torch.Tensor,
        x_scale: float,
        weight_scale: torch.Tensor,
        bias: torch.Tensor | None,
        scale: float,
        zero_point: int,
        per_channel: bool,
        engine: str,
        fused: bool,
        saturates: bool,
        release: str,
    ) -> None:
        self.raw, self.raw_other = raw, raw_other  # torch's int32 sums (wrapped) and those of the other kind
        self.sx, self.s, self.z = x_scale, scale, zero_point
        self.sw64 = weight_scale.double()[channel]
        self.sw32 = weight_scale.float()[channel]
        self.per_channel, self.engine, self.fused, self.saturates = per_channel, engine, fused, saturates
        self.bias = None if bias is None else bias[channel]
        self.bias_quantized = None
        if bias is not None:
            try:  # QuantizeBias refuses scales beyond float32's range: that candidate is then left out
                self.bias_quantized = bias_int32(bias, x_scale, weight_scale.double(), per_channel, release)[channel]
            except ValueError:
                self.bias_quantized = None
        bias_choices = ("bias_float",) if engine == "qnnpack" else ("bias_quantize", "bias_divide")
        self.dims: list[tuple[str, ...]] = [("pairs",), bias_choices, ("zp_before",)]
        self.dims += [("float64", "multiplier64"), ("fma",)]

    def int_bias(self, v: Variant) -> bool:
        """Whether computation ``v`` adds the bias as an int32 (qnnpack's way) rather than in float."""
        return self.bias is not None and (self.engine == "qnnpack") != any(c.startswith("bias_") for c in v)

    def effective(self, choice: str, v: Variant) -> bool:
        """Whether ``choice`` changes anything in computation ``v`` (not: an FMA with no float bias)."""
        float_tensor_bias = self.bias is not None and not self.per_channel and not self.int_bias(v)
        if choice.startswith("bias_"):
            if self.bias is None:
                return False
            if choice in ("bias_quantize", "bias_divide") and self.bias_quantized is None and "float64" not in v:
                return False
            return not (choice == "bias_divide" and "float64" in v)  # float64 rounds the bias one way only
        if choice == "fma":
            return float_tensor_bias and "float64" not in v
        return True

    def compute(self, v: Variant) -> Candidate:
        raw = self.raw_other if "pairs" in v else self.raw
        z = self.z
        before = "zp_before" in v
        int_bias = self.int_bias(v)
        if "float64" in v:
            ats64 = self.sx * self.sw64
            y = raw.double() * ats64
            if self.bias is not None and int_bias:
                y = (raw.double() + torch.round(self.bias.double() / ats64)) * ats64
            elif self.bias is not None:
                y = y + self.bias.double()
            q = y / self.s
            pre, rounded = y, (q + z if before else q)
        else:
            f32 = torch.float32
            if "multiplier64" in v:
                product = self.sx * self.sw64
                ats, mult, rcp = product.float(), (product / self.s).float(), (1.0 / product).float()
            else:
                ats = torch.tensor(self.sx, dtype=f32) * self.sw32
                if self.engine == "qnnpack":  # a float32 reciprocal of the scale, then a product
                    mult = ats * (1 / torch.tensor(self.s, dtype=f32))
                else:
                    mult = ats / torch.tensor(self.s, dtype=f32)
                rcp = (1.0 / ats.double()).float()
            if self.bias is None:
                acc = raw.float()
            elif int_bias:
                acc = wrap_int32(raw + self.int32_bias(v, ats)).float()
            elif self.per_channel:
                acc = raw.float() + self.bias / ats
            elif self.fused != ("fma" in v):
                acc = fma_float32(self.bias, rcp, raw.float())
            else:
                acc = raw.float() + self.bias * rcp
            p = acc * mult
            pre, rounded = acc.double(), (p + z if before else p).double()
        unclamped = rounded.round() if before else rounded.round() + z
        return Candidate(pre, rounded, unclamped, torch.full(raw.shape, before))

    def int32_bias(self, v: Variant, ats: torch.Tensor) -> torch.Tensor:
        """The int32 bias of float32 computation ``v`` (int64, one value per element)."""
        assert self.bias is not None
        if "bias_divide" in v:
            return torch.round(self.bias / ats).clamp(-(2.0**31), 2.0**31 - 1).long()
        assert self.bias_quantized is not None  # effective() leaves such candidates out
        return self.bias_quantized

    def rule(self, v: Variant, k: int, sums: bool = True) -> str:
        """Computation ``v`` in words (``sums``: say how it sums the products)."""
        parts = []
        if sums:
            parts.append("saturating int16 pairs" if self.saturates != ("pairs" in v) else "exact int32 sum")
        float64 = "float64" in v
        if self.bias is not None:
            if self.int_bias(v):
                if float64:
                    parts.append("int32 bias round(bias / (x_scale * w_scale))")
                elif "bias_divide" in v:
                    parts.append("int32 bias round(bias / ats)")
                else:
                    parts.append("int32 bias (QuantizeBias)")
            elif float64:
                parts.append("float bias")
            elif self.per_channel:
                parts.append("bias / ats added")
            else:
                parts.append("bias * rcp + v in one FMA" if self.fused != ("fma" in v) else "bias * rcp added")
        if float64:
            parts.append("float64")
        elif "multiplier64" in v:
            parts.append("float32 with multiplier and rcp from float64")
        else:
            parts.append("float32")
        parts.append("zp before rounding" if "zp_before" in v else "zp after rounding")
        return ", ".join(parts)

    def note(self, cause: str, k: int) -> str:
        """The numbers a proof of ``cause`` starts with."""
        if cause == "pair_saturation":
            saturated, exact = (self.raw, self.raw_other) if self.saturates else (self.raw_other, self.raw)
            return f"sum {int(saturated[k])} in saturating int16 pairs, {int(exact[k])} exact; "
        if cause == "int32_bias" and self.bias is not None:
            bias = self.bias[k].item()
            rounded = "" if self.bias_quantized is None else f" = {int(self.bias_quantized[k])} in int32"
            return f"bias {bias!r}{rounded}; "
        return ""

    def pre_name(self, v: Variant) -> str:
        return "y" if "float64" in v else "v"


class OnednnElements:
    """The differing output elements of a Linear or Conv2d that torch runs on oneDNN: their exact int32 sums
    ``sum (x - x_zero_point) * w`` and the layer's parameters, for the float32 requantization ``qlib.onednn``
    describes (kernels whose pairs never saturate and that take the zero point off in int32)."""

    def __init__(
        self,
        raw: torch.Tensor,
        channel: torch.Tensor,
        x_scale: float,
        weight_scale: torch.Tensor,
        onednn_weight_scale: torch.Tensor,
        bias: torch.Tensor | None,
        scale: float,
        zero_point: int,
        arithmetic: OnednnArithmetic,
        kernel: str,
    ) -> None:
        self.raw, self.sx, self.s, self.z = raw, x_scale, scale, zero_point
        self.sw64 = weight_scale.double()[channel]
        self.sw32 = onednn_weight_scale[channel]  # as oneDNN multiplies by it
        self.bias = None if bias is None else bias[channel]
        self.arithmetic, self.kernel = arithmetic, kernel
        self.saturates, self.fused = False, False
        # oneDNN adds the zero point before rounding: a reader's choice is to add it after
        self.dims: list[tuple[str, ...]] = [("bias_divide",), ("zp_after",), ("float64",)]

    def effective(self, choice: str, v: Variant) -> bool:
        if choice == "bias_divide":
            return self.bias is not None
        return True

    def compute(self, v: Variant) -> Candidate:
        before = "zp_after" not in v
        z = self.z
        raw = self.raw
        if "float64" in v:
            ats64 = self.sx * self.sw64
            if self.bias is not None and "bias_divide" in v:
                y = (raw.double() + torch.round(self.bias.double() / ats64)) * ats64
            else:
                y = raw.double() * ats64 + (0.0 if self.bias is None else self.bias.double())
            q = y / self.s
            pre, rounded = y, (q + z if before else q)
        else:
            sx = torch.tensor(onednn_src_scale(self.sx))
            if self.bias is not None and "bias_divide" in v:
                ats = (sx * self.sw32).double()
                raw = wrap_int32(raw + torch.round(self.bias.double() / ats).clamp(-(2.0**31), 2.0**31 - 1).long())
            acc = raw.float()
            separate = self.arithmetic.scales == "separate"
            w = (acc * sx) * self.sw32 if separate else acc * (sx * self.sw32)
            if self.bias is not None and "bias_divide" not in v:
                w = w + self.bias
            dst = onednn_dst_scale(self.s)
            p = w / dst if self.arithmetic.dst == "divide" else w * float32_reciprocal(dst)
            pre, rounded = w.double(), (p + float32(z) if before else p).double()
        unclamped = rounded.round() if before else rounded.round() + z
        return Candidate(pre, rounded, unclamped, torch.full(raw.shape, before))

    def rule(self, v: Variant, k: int, sums: bool = True) -> str:
        parts = ["exact int32 sum"] if sums else []
        float64 = "float64" in v
        if self.bias is not None:
            if "bias_divide" in v:
                parts.append("int32 bias round(bias / (x_scale * w_scale))")
            else:
                parts.append("float bias")
        if float64:
            parts.append("float64")
        else:
            order = "acc * (sx * sw)" if self.arithmetic.scales == "combined" else "(acc * sx) * sw"
            last = "/ D" if self.arithmetic.dst == "divide" else "* (1 / D)"
            parts.append(f"float32 {order} {last}")
        parts.append("zp after rounding" if "zp_after" in v else "zp before rounding")
        return ", ".join(parts)

    def note(self, cause: str, k: int) -> str:
        if cause == "int32_bias" and self.bias is not None:
            return f"bias {self.bias[k].item()!r}; "
        return ""

    def pre_name(self, v: Variant) -> str:
        return "y" if "float64" in v else "v"


class AddElements:
    """The differing output elements of ``quantized::add``: both inputs' codes, the path torch
    computes each on, and the three scales and zero points."""

    def __init__(
        self,
        a: torch.Tensor,
        b: torch.Tensor,
        in_body: torch.Tensor,
        params: tuple[float, int, float, int, float, int],
        dtype: torch.dtype,
        release: str,
    ) -> None:
        self.a, self.b, self.in_body = a, b, in_body
        self.sa, self.za, self.sb, self.zb, self.s, self.z = params
        self.dtype, self.release = dtype, release
        # a reader applies one formula to every element: the choices are absolute, torch's vary per element
        self.dims: list[tuple[str, ...]] = [("all_vector", "all_scalar"), ("zp_before", "zp_after")]
        self.dims += [("float64",), ("fma",)]

    def effective(self, choice: str, v: Variant) -> bool:
        if choice in ("all_vector", "all_scalar", "fma") and "float64" in v:
            return False  # float64 has one formula for every element
        rest = tuple(c for c in v if c != choice)
        if choice in ("all_vector", "all_scalar"):
            return bool((self.body(v) != self.body(rest)).any())
        if choice in ("zp_before", "zp_after"):
            return bool((self.zero_point_first(v) != self.zero_point_first(rest)).any())
        if choice == "fma":
            return bool(self.body(v).any())
        return True

    def body(self, v: Variant) -> torch.Tensor:
        """Per element: whether computation ``v`` takes the vector body's arithmetic."""
        if "all_vector" in v or "all_scalar" in v:
            return torch.full_like(self.in_body, "all_vector" in v)
        return self.in_body

    def zero_point_first(self, v: Variant) -> torch.Tensor:
        """Per element: whether computation ``v`` adds the zero point before rounding."""
        if "zp_before" in v or "zp_after" in v:
            return torch.full_like(self.in_body, "zp_before" in v)
        # torch 2.13's scalar Quantize adds it first; ATen's QuantizeAvx2 (8-bit vector body) after
        scalar = ~self.body(v) | (self.dtype == torch.qint32)
        return scalar & (self.release == "2.13")

    def compute(self, v: Variant) -> Candidate:
        before = self.zero_point_first(v)
        z = self.z
        if "float64" in v:
            c = self.sa * (self.a.double() - self.za) + self.sb * (self.b.double() - self.zb)
            q = c / self.s
            rounded = torch.where(before, q + z, q)
        else:
            parts = []
            for codes, s, zp in ((self.a, self.sa, self.za), (self.b, self.sb, self.zb)):
                s32 = float32(s)
                premultiplied = (torch.tensor(s32) * -torch.tensor(float(zp))).item()  # float32(scale * -zp)
                if "fma" in v:
                    body = codes.float() * s32 + premultiplied
                else:
                    body = fma_float32(codes.float(), s32, premultiplied)
                parts.append(torch.where(self.body(v), body, per_tensor_values(codes, s32, zp)))
            c = parts[0] + parts[1]
            p = c * float32_reciprocal(self.s)
            rounded = torch.where(before, p + z, p)
        pre, rounded = c.double(), rounded.double()
        unclamped = torch.where(before, rounded.round(), rounded.round() + z)
        return Candidate(pre, rounded, unclamped, before)

    def rule(self, v: Variant, k: int, sums: bool = True) -> str:
        first = bool(self.zero_point_first(v)[k])
        zp = "zp before rounding" if first else "zp after rounding"
        if "float64" in v:
            return f"float64, {zp}"
        if bool(self.body(v)[k]):
            dequantize = "dequantized in two roundings" if "fma" in v else "dequantized by FMA"
            return f"vector body, {dequantize}, float32, {zp}"
        return f"scalar tail, float32, {zp}"

    def note(self, cause: str, k: int) -> str:
        return f"a {int(self.a[k])}, b {int(self.b[k])}; "

    def pre_name(self, v: Variant) -> str:
        return "c"


Elements = GemmElements | OnednnElements | AddElements


def candidates(elements: Elements) -> dict[Variant, Candidate]:
    """Every candidate computation in which each choice changes something, simplest first."""
    variants = []
    for picks in itertools.product(*[(None, *alternatives) for alternatives in elements.dims]):
        v = tuple(p for p in picks if p is not None)
        if all(elements.effective(c, v) for c in v):
            variants.append(v)
    return {v: elements.compute(v) for v in sorted(variants, key=len)}


def reduced(elements: Elements, v: Variant, choice: str) -> Variant:
    """``v`` without ``choice``, and without the choices that then change nothing."""
    rest = tuple(c for c in v if c != choice)
    return tuple(c for c in rest if elements.effective(c, rest))


# --- the decision, element by element ------------------------------------------------------------


@dataclass(frozen=True)
class Clamp:
    """How the reader may have clamped: to ``low..high`` (infinite: open), after a ReLU at ``floor`` if any."""

    name: str
    low: float
    high: float
    floor: float | None = None

    def apply(self, u: torch.Tensor) -> torch.Tensor:
        return (u if self.floor is None else u.clamp(min=self.floor)).clamp(self.low, self.high)

    def words(self) -> str:
        relu = "" if self.floor is None else f"ReLU at {number(self.floor)}, then "
        return f"{relu}{self.name} {number(self.low)}..{number(self.high)}"


def decide(
    elements: Elements,
    arith: dict[Variant, Candidate],
    m: torch.Tensor,
    r: torch.Tensor,
    t: torch.Tensor,
    torch_range: tuple[int, int],
    clamps: list[Clamp],
    wrap: tuple[str, int, int],
    dtype_range: tuple[int, int],
) -> tuple[list[tuple], list[tuple[str, ...]]]:
    """For each differing element: ``(cause, variant, other variant, detail)`` of the cause it names, and the
    causes it lists, in order of precedence (module docstring: the reader's computation first)."""
    lo, hi = torch_range
    n = len(m)
    reproduced = r == t  # no cause can be proven where torch's value is not qlib's
    mf, rf = m.double(), r.double()
    proofs: list[tuple[tuple, torch.Tensor]] = []  # (cause, variant, other, detail) and its rows, in precedence

    def claim(hit: torch.Tensor, result: tuple) -> None:
        hit = hit & reproduced
        if hit.any():
            proofs.append((result, hit))

    def value(v: Variant) -> torch.Tensor:
        return t.double() if not v else arith[v].unclamped.clamp(lo, hi)

    clamped = [
        (clamp, v, (clamp.apply(arith[v].unclamped) == mf) & (value(v) == rf) & (mf != rf))
        for clamp in clamps
        for v in arith
    ]
    for cause, side in (("clamp_low", mf < lo), ("clamp_high", mf > hi)):
        for clamp, v, hit in clamped:
            claim(hit & side, (cause, v, (), clamp))
    qmin, qmax = dtype_range
    _, modulus, low = wrap
    for v in arith:
        u = arith[v].unclamped
        outside = torch.isfinite(u) & (u.abs() < 2.0**62) & ((u < qmin) | (u > qmax))
        wrapped = (torch.where(outside, u, 0.0).long() - low).remainder(modulus) + low
        claim(outside & (wrapped == m) & (value(v) == rf), ("wraparound", v, (), wrap))
    inside = (mf >= lo) & (mf <= hi)
    for clamp, v, hit in clamped:
        claim(hit & inside, ("clamp_range", v, (), clamp))
    for cause in LAYER_CAUSES:
        for choice in (c for c, named in LAYER_CHOICES.items() if named == cause):
            for v in arith:
                other = reduced(elements, v, choice)
                if choice in v and other in arith:
                    claim((value(v) == mf) & (value(other) == rf), (cause, v, other, None))

    # The reader computed every element one way: the candidates that prove the most rows are theirs.
    rows_of: dict[Variant, torch.Tensor] = {}
    for (_, v, _, _), hit in proofs:
        rows_of[v] = rows_of[v] | hit if v in rows_of else hit
    support = {v: int(hit.sum()) for v, hit in rows_of.items()}
    best = {v for v in support if support[v] == max(support.values())}
    by_best = torch.zeros(n, dtype=torch.bool)
    for v in best:
        by_best |= rows_of[v]
    found: list[tuple | None] = [None] * n
    causes: list[list[str]] = [[] for _ in range(n)]
    for result, hit in proofs:
        if result[1] not in best:
            hit = hit & ~by_best  # a row the reader's computation proves lists only its causes
        for k in hit.nonzero().flatten().tolist():
            if found[k] is None:
                found[k] = (*result, ())
            if result[0] not in causes[k]:
                causes[k].append(result[0])

    # A row no single cause reproduces may need two differences at once (no clamp and saturated pairs, say): a
    # candidate (the reader's first) finished as the reader may have gives their value, torch's arithmetic its.
    def finished(v: Variant, finish: Clamp | tuple | None) -> torch.Tensor:
        u = arith[v].unclamped
        if finish is None:
            return value(v)
        if isinstance(finish, Clamp):
            return finish.apply(u)
        outside = torch.isfinite(u) & (u.abs() < 2.0**62) & ((u < qmin) | (u > qmax))
        return torch.where(outside, (torch.where(outside, u, 0.0).long() - low).remainder(modulus) + low, u)

    def joint(k: int, v: Variant, finish: Clamp | tuple | None) -> tuple:
        """The differences of computation ``v`` finished by ``finish`` that each move the reader's value at ``k``."""
        mk = float(mf[k])
        finish_cause = None
        if finish is not None and float(value(v)[k]) != mk:
            wrapped = not isinstance(finish, Clamp)
            finish_cause = "wraparound" if wrapped else "clamp_low" if mk < lo else "clamp_high" if mk > hi else None
            finish_cause = finish_cause or "clamp_range"
        named = [finish_cause] if finish_cause else []
        for c in v:
            w = reduced(elements, v, c)
            if w not in arith or float(finished(w, finish)[k]) != mk:
                named.append(LAYER_CHOICES[c])
        if len(set(named)) < 2:  # no one difference alone matters: all of them together do
            named = ([finish_cause] if finish_cause else []) + [LAYER_CHOICES[c] for c in v]
        ordered = sorted(set(named), key=LAYER_CAUSES.index)
        return (ordered[0], v, (), finish, tuple(ordered[1:]))

    left = torch.tensor([f is None for f in found], dtype=torch.bool) & reproduced
    if left.any():
        order = [v for v in arith if v in best] + [v for v in arith if v not in best]
        for v in order:
            for finish in [None, *clamps, wrap]:
                hit = left & (finished(v, finish) == mf)
                for k in hit.nonzero().flatten().tolist():
                    found[k] = joint(k, v, finish)
                    causes[k] = [found[k][0]]
                left &= ~hit
    first = [f if f is not None else ("unexplained", None, (), None, ()) for f in found]
    return first, [tuple(c) if c else ("unexplained",) for c in causes]


def number(value: float) -> int | float:
    """An integer-valued float as an int (a Python int for the report), else the float.

    >>> number(3.0), number(float("inf"))
    (3, inf)
    """
    return int(value) if math.isfinite(value) and abs(value) < 2.0**63 else value


def proof_row(
    k: int,
    index: tuple[int, ...],
    elements: Elements,
    arith: dict[Variant, Candidate],
    m: torch.Tensor,
    r: torch.Tensor,
    t: torch.Tensor,
    decision: tuple,
    hypotheses: tuple[str, ...],
    torch_range: tuple[int, int],
) -> LayerRow:
    """The report's record of differing element ``k``, with the numbers that prove its cause."""
    cause, variant, other, detail, also = decision
    lo, hi = torch_range
    mk, rk, tk = int(m[k]), int(r[k]), int(t[k])
    z = elements.z

    def shown(v: Variant, clamped: bool = True) -> str:
        c = arith[v]
        pre, rounded, unclamped = c.pre[k].item(), c.rounded[k].item(), number(c.unclamped[k].item())
        text = f"{elements.pre_name(v)} = {pre!r}, rint({rounded!r})" + ("" if c.before[k] else f" + {z}")
        text += f" = {unclamped}"
        if clamped and not lo <= unclamped <= hi:
            text += f", clamped to {tk if v == () else min(max(unclamped, lo), hi)}"
        return text

    # the sums are named where they differ (the rest of a proof does not depend on the CPU)
    sums = cause == "unexplained" or "pair_saturation" in (cause, *also)
    torch_rule = elements.rule((), k, sums)
    finish = ""  # how the reader clamped, if otherwise than torch
    if isinstance(detail, Clamp):
        finish = f", clamped: {detail.words()}"
    elif isinstance(detail, tuple):
        finish = f", cast to {detail[0]} without clamp"
    if cause == "unexplained":
        unclamped = number(arith[()].unclamped[k].item())
        proof = f"no cause reproduces both; torch: {torch_rule}: {shown(())}"
        if tk != rk:
            proof += f"; that is {tk}, not reference {rk}: is the input (its scale, zero point) the one torch ran?"
    elif also:
        unclamped = number(arith[variant].unclamped[k].item())
        notes = "".join(
            elements.note(c, k) for c in dict.fromkeys((cause, *also)) if c in ("pair_saturation", "int32_bias")
        )
        proof = f"{' and '.join((cause, *also))} together: {notes or elements.note('', k)}manual: "
        proof += f"{elements.rule(variant, k, sums)}{finish}: {shown(variant, False)}, so {mk}; torch: {torch_rule}: "
        proof += shown(())
    elif cause in ("clamp_low", "clamp_high", "wraparound", "clamp_range"):
        unclamped = number(arith[variant].unclamped[k].item())
        if cause == "wraparound":
            name, modulus, _ = detail
            reader = f"unclamped {unclamped} cast to {name} without clamp wraps (mod {modulus}) to {mk}"
        elif detail.name == "no clamp":
            reader = f"unclamped {unclamped} {'<' if mk < lo else '>'} {lo if mk < lo else hi} (no clamp)"
        else:
            reader = f"unclamped {unclamped} clamped: {detail.words()}: {mk}"
        proof = f"{reader}; torch clamps to {lo}..{hi}: {rk}; manual: {elements.rule(variant, k, sums)}: "
        proof += shown(variant, False)
    else:
        unclamped = number(arith[variant].unclamped[k].item())
        label = "torch" if not other else "with only that changed back"
        proof = elements.note(cause, k) + f"{elements.rule(variant, k, sums)}: {shown(variant)}; {label}: "
        proof += f"{elements.rule(other, k, sums)}: {shown(other)}"
    return LayerRow(
        index=index,
        manual=mk,
        reference=rk,
        cause=cause,
        hypotheses=hypotheses,
        recomputed=tk,
        unclamped=unclamped,
        manual_rule=None if variant is None else elements.rule(variant, k) + finish,
        reference_rule=f"{elements.rule((), k)}, clamped to {lo}..{hi}",
        proof=proof,
        also=also,
    )


# --- reading the layer and its input ----------------------------------------------------------


def layer_input(x: object, name: str, dtypes: tuple[torch.dtype, ...]) -> tuple[torch.Tensor, float, int]:
    """``(codes, scale, zero point)`` of a per-tensor quantized tensor or of such a triple.

    >>> layer_input((torch.tensor([3], dtype=torch.uint8), 0.5, 1), "x", (torch.quint8,))
    (tensor([3], dtype=torch.uint8), 0.5, 1)
    """
    if isinstance(x, torch.Tensor) and x.is_quantized:
        if x.qscheme() != torch.per_tensor_affine or x.dtype not in dtypes:
            raise TypeError(
                f"{name} must be quantized per tensor ({', '.join(map(str, dtypes))}); got {x.dtype}, {x.qscheme()}"
            )
        return x.int_repr(), x.q_scale(), x.q_zero_point()
    if isinstance(x, tuple) and len(x) == 3 and isinstance(x[0], torch.Tensor) and not x[0].is_quantized:
        codes, scale, zero_point = x
        storage = [CODE_DTYPES[d] for d in dtypes]
        if codes.dtype not in storage:
            raise TypeError(f"{name}'s codes must be {' or '.join(map(str, storage))}; got {codes.dtype}")
        lo, hi = DTYPE_RANGES[dtypes[storage.index(codes.dtype)]]
        return codes, checks.scale_value(scale, f"{name}'s scale"), checks.zero_point_value(zero_point, lo, hi, name)
    raise TypeError(
        f"{name} must be a quantized tensor or a tuple (codes, scale, zero_point) of its int_repr() and qparams; "
        f"got {type(x).__name__}"
    )


def output_codes(
    values: object, name: str, shape: torch.Size, dtype: torch.dtype, scale: float, zero_point: int, reference: bool
) -> torch.Tensor:
    """The reader's (or torch's, ``reference``) integers as int64, after checking them."""
    if not isinstance(values, torch.Tensor) and hasattr(values, "__array__"):
        values = torch.as_tensor(values)  # a numpy array
    if not isinstance(values, torch.Tensor):
        raise TypeError(f"{name} must be a tensor of integers; got {type(values).__name__}")
    if values.is_quantized:
        if not reference:
            raise TypeError("manual must be your integers, not a quantized tensor")
        if values.qscheme() != torch.per_tensor_affine or values.dtype != dtype:
            raise ValueError(f"reference must be quantized per tensor as {dtype}; got {values.dtype}")
        if (values.q_scale(), values.q_zero_point()) != (scale, zero_point):
            raise ValueError(
                f"reference has scale {values.q_scale()!r} and zero point {values.q_zero_point()}, the layer "
                f"{scale!r} and {zero_point}: it is not this layer's output"
            )
        values = values.int_repr()
    if values.shape != shape:
        raise ValueError(f"{name} must have the output's shape {tuple(shape)}; got {tuple(values.shape)}")
    if values.dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64):
        codes = values.long()
    elif values.is_floating_point() and not reference:
        v = values.double()
        bad = ~(torch.isfinite(v) & (v == v.round()) & (v.abs() < 2.0**62))
        if bad.any():
            first = tuple(bad.nonzero()[0].tolist())
            raise ValueError(
                f"manual must hold whole numbers (round them the way you did by hand); {int(bad.sum())} element(s) "
                f"are not, the first at index {first} is {v[first].item()!r}"
            )
        codes = v.long()
    else:
        allowed = "an integer tensor (or a float tensor of whole numbers)" if not reference else "an integer tensor"
        raise TypeError(f"{name} must be {allowed}; got {values.dtype}")
    if reference:
        qmin, qmax = DTYPE_RANGES[dtype]
        if ((codes < qmin) | (codes > qmax)).any():
            raise ValueError(f"reference must hold codes in {qmin}..{qmax}")
    return codes


def row_sums(
    rows_of: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], count: int, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(exact, saturated, codes)`` sums over ``count`` elements: ``rows_of(indices)`` gives each element's
    uint8 input row and int8 weight row ``[len(indices), k]``. ``exact`` is ``sum x * w``, ``saturated``
    the same with each pair ``(2i, 2i + 1)`` clamped to int16 (``vpmaddubsw``), ``codes`` is ``sum x``."""
    exact = torch.zeros(count, dtype=torch.int64)
    saturated, codes = exact.clone(), exact.clone()
    piece = max(1, DOT_PIECE // max(1, k + k % 2))
    for start in range(0, count, piece):
        indices = torch.arange(start, min(count, start + piece))
        xs, ws = rows_of(indices)
        products = xs.long() * ws.long()
        exact[indices] = products.sum(1)
        codes[indices] = xs.long().sum(1)
        pairs = torch.nn.functional.pad(products, (0, k % 2)).view(len(indices), -1, 2).sum(2)
        saturated[indices] = pairs.clamp(INT16_MIN, INT16_MAX).sum(1)
    return exact, saturated, codes


def explain_layer(
    layer: Any,
    x: Any,
    manual: Any,
    reference: Any = None,
    *,
    release: str | None = None,
    pairs_saturate: bool | None = None,
    quant_range: tuple[int, int] | None = None,
) -> LayerReport:
    """Name, for every output element where ``manual`` differs from torch's, the cause of the difference.

    ``layer`` is a converted eager module: ``torch.ao.nn.quantized.Linear`` or ``Conv2d`` (or
    ``torch.ao.nn.intrinsic.quantized.LinearReLU``, ``ConvReLU2d``), its weight packed by FBGEMM
    (the ``x86`` and ``fbgemm`` engines; a Linear also by qnnpack) or by oneDNN (where its kernels
    sum exactly: see the module docstring), or, for ``quantized::add``, a
    ``torch.ao.nn.quantized.QFunctional`` (its ``add``; pass ``qf.add_relu`` for ``add_relu``).
    ``x`` is the layer's quantized input (for add, a pair of them), or ``(codes, scale,
    zero_point)`` of it; for add, the codes' strides are the layout torch iterates in. ``manual``
    is the reader's output integers: an integer tensor or array, or a float one of whole numbers,
    unclamped or wrapped as computed. ``reference`` is torch's output, quantized or its
    ``int_repr()``; None runs ``layer`` on ``x`` in torch. ``release`` (None: the installed
    torch) and ``pairs_saturate`` (None: this CPU; True: a CPU without AVX512-VNNI) say whose
    arithmetic produced ``reference``, as for ``qlib.linear`` and ``qlib.conv2d``.
    ``quant_range`` is the range the observer chose the output's scale and zero point for,
    ``clamp_range``'s hypothesis (None: ``qrange(dtype, reduce_range=True)``, 0..127 for quint8).

    The module docstring lists the causes, how each is decided and their precedence; the
    report's ``counts`` maps cause to number of elements and its ``rows`` give index, both
    integers, the cause, every cause that fits and the proving numbers.

    Chapter: "A whole model, integer by integer" (book/10_model).

    >>> fc = torch.ao.nn.quantized.Linear(2, 1)  # packed by FBGEMM, as the x86 engine packs a Linear
    >>> w = torch.quantize_per_tensor(torch.tensor([[0.5, -1.0]]), 0.5, 0, torch.qint8)  # codes 1, -2
    >>> fc.set_weight_bias(w, torch.tensor([0.3]))
    >>> fc.scale, fc.zero_point = 0.5, 0
    >>> x = torch.quantize_per_tensor(torch.tensor([[0.5, 0.25]]), 0.25, 0, torch.quint8)  # codes 2, 1
    >>> fc(x).int_repr()  # (0.25 * 0.5 * (2 * 1 + 1 * -2) + 0.3) / 0.5 = 0.6
    tensor([[1]], dtype=torch.uint8)
    >>> report = explain_layer(fc, x, torch.tensor([[0]]))  # the bias rounded first: 0.3 / 0.125 = 2.4 to 2
    >>> report.rows[0].cause, report.rows[0].hypotheses
    ('int32_bias', ('int32_bias',))
    >>> report.rows[0].proof
    'bias 0.30000001192092896 = 2 in int32; int32 bias (QuantizeBias), float32, zp after rounding: v = 2.0, \
rint(0.5) + 0 = 0; torch: bias * rcp + v in one FMA, float32, zp after rounding: v = 2.4000000953674316, \
rint(0.6000000238418579) + 0 = 1'
    """
    release = torch_release(release)
    kind, relu, module = layer_kind(layer)
    if kind == "add":
        if pairs_saturate is not None:
            raise ValueError("pairs_saturate is about Linear and Conv2d; quantized::add sums no pairs: leave it None")
        return explain_add(module, x, manual, reference, relu, release, quant_range)
    return explain_gemm(kind, relu, module, x, manual, reference, release, pairs_saturate, quant_range)


def layer_kind(layer: Any) -> tuple[str, bool, Any]:
    """``("Linear" | "Conv2d" | "add", relu, module)`` of what ``explain_layer`` was given."""
    if isinstance(layer, nnq.dynamic.Linear):
        raise TypeError("a dynamic Linear outputs floats, not codes: there is nothing to explain in integers")
    if isinstance(layer, nnq.Linear):
        return "Linear", isinstance(layer, nniq.LinearReLU), layer
    if isinstance(layer, nnq.Conv2d):
        return "Conv2d", isinstance(layer, nniq.ConvReLU2d), layer
    if isinstance(layer, nnq.QFunctional):
        return "add", False, layer
    owner = getattr(layer, "__self__", None)
    if isinstance(owner, nnq.QFunctional) and getattr(layer, "__name__", "") in ("add", "add_relu"):
        return "add", layer.__name__ == "add_relu", owner
    raise TypeError(
        "layer must be a converted torch.ao.nn.quantized.Linear or Conv2d (or their intrinsic ReLU twins), or a "
        f"QFunctional (or its add / add_relu) for quantized::add; got {type(layer).__name__}"
    )


def clamp_ranges(
    dtype: torch.dtype, torch_range: tuple[int, int], relu_floor: int | None, quant_range: tuple[int, int] | None
) -> list[Clamp]:
    """The ranges the reader may have clamped to, other than torch's own."""
    qmin, qmax = DTYPE_RANGES[dtype]
    ranges = [Clamp("no clamp", -math.inf, math.inf)]
    if relu_floor is not None:
        ranges.append(Clamp("the dtype's range", qmin, qmax))
    if quant_range is None and dtype != torch.qint32:
        quant_range = qrange(dtype, reduce_range=True)
    if quant_range is not None:
        if not isinstance(quant_range, (tuple, list)) or len(quant_range) != 2:
            raise TypeError(f"quant_range must be a pair (quant_min, quant_max) or None; got {quant_range!r}")
        low, high = checks.int_range(quant_range[0], quant_range[1], qmin, qmax, of=f" for {dtype}")
        ranges.append(Clamp("the observer's range", low, high))
        if relu_floor is not None:
            ranges.append(Clamp("the observer's range", low, high, relu_floor))
    return [c for c in ranges if c.floor is not None or (c.low, c.high) != torch_range]


def finish(
    elements: Elements,
    idx: torch.Tensor,
    m: torch.Tensor,
    r: torch.Tensor,
    t: torch.Tensor,
    torch_range: tuple[int, int],
    dtype: torch.dtype,
    clamps: list[Clamp],
    numel: int,
    not_recomputed: int,
    setting: str,
    release: str,
    kind: str,
) -> LayerReport:
    """Decide every differing element and put the report together."""
    arith = candidates(elements)
    found, hypotheses = decide(elements, arith, m, r, t, torch_range, clamps, CAST_WRAPS[dtype], DTYPE_RANGES[dtype])
    rows = [
        proof_row(k, tuple(idx[k].tolist()), elements, arith, m, r, t, found[k], hypotheses[k], torch_range)
        for k in range(len(m))
    ]
    counts = Counter({c: n for c in LAYER_CAUSES if (n := sum(row.cause == c for row in rows))})
    return LayerReport(rows, counts, numel, setting, not_recomputed, release, kind)


def explain_gemm(
    kind: str,
    relu: bool,
    module: Any,
    x: Any,
    manual: Any,
    reference: Any,
    release: str,
    pairs_saturate: bool | None,
    quant_range: tuple[int, int] | None,
) -> LayerReport:
    """``explain_layer`` for a Linear or a Conv2d."""
    packed = module._packed_params._packed_params if kind == "Linear" else module._packed_params
    backend = packed_backend(packed)
    if kind == "Conv2d" and backend not in ("fbgemm", "onednn"):
        raise ValueError(
            f"this Conv2d's weight was packed for {backend} (torch runs it there whatever the engine is now): "
            "explain_layer explains convolutions packed for FBGEMM or oneDNN (the x86, fbgemm and onednn engines)"
        )
    if kind == "Conv2d" and (packed.transpose() or getattr(module, "padding_mode", "zeros") != "zeros"):
        raise ValueError("explain_layer explains Conv2d with zero padding, not transposed or other padding modes")
    codes, sx, zx = layer_input(x, "x", (torch.quint8,))
    weight, weight_scale, weight_zero_point, bias = weight_of(packed)
    n_out = weight.shape[0]
    per_channel, sw64, zw = weight_qparams(weight_scale, weight_zero_point, n_out)
    s, z = float(module.scale), int(module.zero_point)
    common = (codes, sx, zx, weight, weight_scale, weight_zero_point, bias, s, z)
    onednn: tuple[str, OnednnArithmetic] | None = None
    if kind == "Linear" and backend == "onednn":
        name = onednn_linear_kernel(onednn_isa_for(None, pairs_saturate))
        onednn = (name, onednn_linear_arithmetic(name))
    elif backend == "onednn":
        pair = lambda t: (int(t[0]), int(t[1]))  # noqa: E731
        size, kernel_size = pair(codes.shape[2:]), pair(weight.shape[2:])
        shape = (int(codes.shape[1]), n_out, kernel_size, pair(packed.stride()), pair(packed.padding()))
        layer = (*shape, pair(packed.dilation()), int(packed.groups()))
        name = conv2d_kernel(
            *layer, True, engine="onednn", pairs_saturate=pairs_saturate, input_size=size, batch=codes.shape[0]
        ).removeprefix("oneDNN ")
        onednn = (name, onednn_conv_arithmetic(name, *layer, size))
    if onednn is not None and (onednn[1].pairs != "none" or onednn[1].compensation != "int"):
        raise ValueError(
            f"torch runs this {kind} on oneDNN's {onednn[0]} kernel, whose "
            + ("pairs of products saturate" if onednn[1].pairs != "none" else "zero-point compensation is in float32")
            + ": explain_layer explains oneDNN's kernels with exact int32 sums only (those of CPUs with VNNI: "
            "pairs_saturate=False)"
        )
    if kind == "Linear":
        engine = backend if backend in ("qnnpack", "onednn") else "x86"
        t = linear(*common, relu, pairs_saturate=pairs_saturate, release=release, engine=engine).long()
        saturates = backend == "fbgemm" and (pairs_saturate_here() if pairs_saturate is None else pairs_saturate)
        fused = True
        k = weight.shape[1]
        rows = codes.reshape(-1, k)

        def locate(flat: torch.Tensor) -> tuple[Callable, torch.Tensor]:
            m_idx, channel = flat // n_out, flat % n_out
            return (lambda i: (rows[m_idx[i]], weight[channel[i]])), channel

    else:
        stride, padding = tuple(packed.stride()), tuple(packed.padding())
        dilation, groups = tuple(packed.dilation()), packed.groups()
        t = conv2d(
            *common, stride, padding, dilation, groups, relu, pairs_saturate=pairs_saturate, engine=backend,
            release=release,
        ).long()  # fmt: skip
        _, in_g, kh, kw = weight.shape
        symmetric = bool((zw == 0).all())
        conv = (codes.shape[1], n_out, (kh, kw), stride, padding, dilation, groups, symmetric)
        kernel = conv2d_kernel(*conv, engine="fbgemm", pairs_saturate=pairs_saturate)
        vnni = torch.cpu._is_vnni_supported() if pairs_saturate is None else not pairs_saturate
        gemm = pairs_saturate_here() if pairs_saturate is None else pairs_saturate
        saturates = onednn is None and {"depthwise": True, "groupwise": not vnni}.get(kernel, gemm)
        fused = per_channel or not (kernel == "depthwise" and release == "2.14")
        k = in_g * kh * kw
        n, c, h, w = codes.shape
        padded = torch.full((n, c, h + 2 * padding[0], w + 2 * padding[1]), zx, dtype=torch.uint8)
        padded[:, :, padding[0] : padding[0] + h, padding[1] : padding[1] + w] = codes  # the padding holds zx
        columns = torch.nn.functional.unfold(padded.float(), (kh, kw), dilation=dilation, stride=stride)
        w_rows = weight.permute(0, 2, 3, 1).reshape(n_out, k)  # (kh, kw, c), as FBGEMM lays out K
        per_group = n_out // groups

        def locate(flat: torch.Tensor) -> tuple[Callable, torch.Tensor]:
            n_i, rest = flat // t[0].numel(), flat % t[0].numel()
            channel, position = rest // t[0, 0].numel(), rest % t[0, 0].numel()
            start = (channel // per_group) * k

            def rows_of(i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                span = start[i, None] + torch.arange(k)
                cols = columns[n_i[i, None], span, position[i, None]]  # [elements, (c, kh, kw)]
                cols = cols.view(len(i), in_g, kh * kw).transpose(1, 2).reshape(len(i), k)
                return cols, w_rows[channel[i]]

            return rows_of, channel

    m = output_codes(manual, "manual", t.shape, torch.quint8, s, z, False)
    if reference is None:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # torch 2.14 deprecates the quantized dtypes
            reference = module(quantized(codes, sx, zx, torch.quint8))
    r = output_codes(reference, "reference", t.shape, torch.quint8, s, z, True)
    differ = m != r
    idx = differ.nonzero()
    rows_of, channel = locate(differ.flatten().nonzero().flatten())
    exact, saturated, x_sums = row_sums(rows_of, len(idx), k)
    column_sums = weight.long().reshape(n_out, -1).sum(1) - zw * k
    corrections = zx * column_sums[channel] + x_sums * zw[channel]
    raw, raw_other = (saturated, exact) if saturates else (exact, saturated)
    raw, raw_other = wrap_int32(raw - corrections).long(), wrap_int32(raw_other - corrections).long()
    elements: GemmElements | OnednnElements
    if onednn is None:
        elements = GemmElements(
            raw, raw_other, channel, sx, sw64, bias, s, z, per_channel, backend, fused, saturates, release
        )
    else:
        sw = onednn_linear_weight_scales(sw64, per_channel) if kind == "Linear" else sw64.float()
        elements = OnednnElements(raw, channel, sx, sw64, sw, bias, s, z, onednn[1], onednn[0])
        backend = f"oneDNN ({onednn[0]})"
    torch_range = (z if relu else 0, 255)
    clamps = clamp_ranges(torch.quint8, torch_range, z if relu else None, quant_range)
    sums = "sums in saturating int16 pairs" if saturates else "exact int32 sums"
    setting = (
        f"torch {release}, {kind}{'ReLU' if relu else ''} packed by {backend}, {'per-channel' if per_channel else 'per-tensor'} "
        f"weights, {sums}, output scale {s!r}, zero point {z}, codes {torch_range[0]}..{torch_range[1]}"
    )
    not_recomputed = int((r != t).sum())
    return finish(
        elements, idx, m[differ], r[differ], t[differ], torch_range, torch.quint8, clamps, t.numel(),
        not_recomputed, setting, release, kind,
    )  # fmt: skip


def explain_add(
    qf: Any, x: Any, manual: Any, reference: Any, relu: bool, release: str, quant_range: tuple[int, int] | None
) -> LayerReport:
    """``explain_layer`` for ``quantized::add`` (``add_relu``)."""
    if not isinstance(x, (tuple, list)) or len(x) != 2:
        raise TypeError("for add, x must be a pair (a, b) of quantized tensors (or of (codes, scale, zero_point))")
    dtypes = (torch.quint8, torch.qint8, torch.qint32)
    (a, sa, za), (b, sb, zb) = layer_input(x[0], "a", dtypes), layer_input(x[1], "b", dtypes)
    s, z = float(qf.scale), int(qf.zero_point)
    t = add(a, sa, za, b, sb, zb, s, z, relu, release=release).long()
    dtype = {torch.uint8: torch.quint8, torch.int8: torch.qint8, torch.int32: torch.qint32}[a.dtype]
    m = output_codes(manual, "manual", t.shape, dtype, s, z, False)
    if reference is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            qa, qb = quantized(a, sa, za, dtype), quantized(b, sb, zb, dtype)
            reference = qf.add_relu(qa, qb) if relu else qf.add(qa, qb)
    r = output_codes(reference, "reference", t.shape, dtype, s, z, True)
    in_body = vector_lanes(a, b, VECTOR_WIDTHS[dtype], torch.get_num_threads())
    differ = m != r
    idx = differ.nonzero()
    shape = t.shape
    elements = AddElements(
        a.expand(shape)[differ], b.expand(shape)[differ], in_body[differ], (sa, za, sb, zb, s, z), dtype, release
    )
    qmin, qmax = DTYPE_RANGES[dtype]
    torch_range = (z if relu else qmin, qmax)
    clamps = clamp_ranges(dtype, torch_range, z if relu else None, quant_range)
    body = int(in_body.sum())
    setting = (
        f"torch {release}, quantized::{'add_relu' if relu else 'add'}, {str(dtype).replace('torch.', '')}, output "
        f"scale {s!r}, zero point {z}, codes {torch_range[0]}..{torch_range[1]}; {plural(body, 'element')} in the "
        f"vector body, {t.numel() - body:,} in the scalar tail"
    )
    not_recomputed = int((r != t).sum())
    return finish(
        elements, idx, m[differ], r[differ], t[differ], torch_range, dtype, clamps, t.numel(), not_recomputed,
        setting, release, "add",
    )  # fmt: skip
