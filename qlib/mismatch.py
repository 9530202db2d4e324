"""Explain, element by element, why hand-computed quantized integers differ from PyTorch's.

Explained in the book chapter "Debugging a mismatch" (``book/08_debugging``).

``explain(x, manual, reference, ...)`` takes the float input, the reader's own
integers and PyTorch's, and names one cause for every element where the two
integers differ. A cause is never guessed from the size or sign of the
difference: each one is a hypothesis about the reader's arithmetic, and it is
accepted only when recomputing ``x`` under it gives the reader's integer *and*
recomputing under PyTorch's arithmetic (``qlib.quantize``, for the installed
torch release or the one named by ``release``) gives PyTorch's.

The reader's arithmetic is modelled as PyTorch's with some of three choices
made differently: the zero point added on the other side of the rounding, a
division ``x / scale`` instead of the multiplication ``x * (1/scale)``, and the
scale used in float64 instead of float32. That gives eight candidate
computations (PyTorch's own is one of them), each producing an *unclamped*
value. The causes, in order of precedence:

==========================  ===============================================================
cause                       accepted when
==========================  ===============================================================
``clamp_low``               the reader's value is below qmin, equals the unclamped value of
                            one of the eight computations, and PyTorch's value is qmin
``clamp_high``              the same above qmax, PyTorch's value is qmax
``wraparound``              the reader's value is such an unclamped value outside
                            [qmin, qmax] cast without a clamp to the storage dtype (``-5``
                            becomes ``251`` in uint8; for 4- and 2-bit dtypes also kept to
                            the low 4 or 2 bits), and PyTorch saturated it
``zero_point_order``        some computation reproduces the reader's value, and the same
                            computation with only the zero point moved back to PyTorch's
                            side of the rounding reproduces PyTorch's value
``division_vs_reciprocal``  the same, switching ``x / scale`` back to ``x * (1/scale)``
``scale_precision``         the same, switching the float64 scale back to float32
``unexplained``             nothing above reproduces both integers (shown, never hidden)
==========================  ===============================================================

Several causes can reproduce the same pair: a value just past qmax may be
both a missing clamp and, recomputed with the zero point on the other side,
an order difference. Each row then lists every cause that reproduces it
(``Row.hypotheses``, in the order above) and names the first one as its
``cause``. That is a rule, not a diagnosis: the order runs from the coarsest
mistake to the finest, which is also the order in which a reader should fix
them (a value outside the range is wrong whatever the rounding; the zero
point's place is a choice of formula; division against reciprocal and float64
against float32 are choices of floating-point operation and precision that
matter only within a few ulps of a tie).

Every cause needs PyTorch's value to be what qlib recomputes for the given
scale, zero point and dtype. Where it is not (a wrong scale, say), the element
is ``unexplained`` and the report says at how many elements the reference
disagrees with the recomputation.

PyTorch's own arithmetic depends on the release: torch 2.14 adds the zero
point after rounding on every path, torch 2.13 before (except for 4- and 2-bit
dtypes), so the same hand computation has different causes on the two.

``kernel`` says which of PyTorch's quantize ops produced ``reference``:
``"aten"`` (the default) is ``torch.quantize_per_tensor`` /
``quantize_per_channel`` and the quantized modules of eager mode, whose
arithmetic is the release's; ``"pt2e"`` is the op ``convert_pt2e`` writes,
``torch.ops.quantized_decomposed.quantize_per_tensor`` (or
``quantize_per_channel``, with float32 scales), and ``"affine"`` is torchao's
``quantize_affine``, as ``quantize_`` calls it. Both add the zero point after
rounding in every release and clamp to ``[quant_min, quant_max]`` (keywords,
default: the dtype's range), so a reader's value past a narrower range is
``clamp_low`` or ``clamp_high`` even where the dtype could hold it. The PT2E
per-tensor op also takes its reciprocal in float64, ``float32(1 / double(scale))``;
for it ``scale_precision`` names both other choices: arithmetic in float64, and
the float32 reciprocal ``1.0f / float32(scale)`` of the ATen kernels (for a
float32 scale the two reciprocals are almost always equal: see ``qlib.pt2e_ops``). ``wraparound`` stays about the
storage dtype's range: a value inside it is not wrapped by a cast.

One difference has no name in the vocabulary: torch 2.13's 8-bit per-tensor
kernel rounds ``x * (1/scale) + zero_point`` once (a fused multiply-add), while
the textbook float32 formula rounds twice. That computation counts as one more
unclamped value for the clamp and wraparound causes, and an ``unexplained`` row
that it reproduces says so in its proof.
"""

from __future__ import annotations

import html
import itertools
import textwrap
from collections import Counter
from dataclasses import dataclass, field, replace

import torch

from qlib import checks
from qlib.numerics import float32_reciprocal, fma_float32
from qlib.pt2e_ops import quantize_pt2e, reciprocal
from qlib.quant import SUB_BYTE, quantize
from qlib.ranges import CODE_DTYPES, DTYPE_RANGES
from qlib.releases import torch_release
from qlib.torchao_primitives import quant_range, quantize_affine

CAUSES: tuple[str, ...] = (
    "clamp_low",
    "clamp_high",
    "wraparound",
    "zero_point_order",
    "division_vs_reciprocal",
    "scale_precision",
    "unexplained",
)

# The three choices a hand computation can make differently from PyTorch's, in
# order of precedence, and the cause each one names.
CHOICES: dict[str, str] = {
    "order": "zero_point_order",
    "division": "division_vs_reciprocal",
    "float64": "scale_precision",
}
# Every combination of those choices, simplest first; () is PyTorch's own arithmetic.
VARIANTS: list[tuple[str, ...]] = [c for n in range(4) for c in itertools.combinations(CHOICES, n)]
# For the 8-bit per-tensor kernel, which rounds x * inv + zp once (FMA), also the textbook
# float32 computation with two roundings. No cause names that difference: it can only prove a
# clamp or wraparound (as one more unclamped value) or be shown as a hint in an unexplained row.
UNFUSED = ("unfused",)
# For the PT2E per-tensor op, whose reciprocal is float32(1 / double(scale)), also the ATen kernels'
# 1.0f / float32(scale): a reader who copied torch.quantize_per_tensor. It names scale_precision.
ATEN_RECIPROCAL = ("aten_reciprocal",)

# How an out-of-range value wraps when cast without a clamp: (name, modulus, lowest value).
WRAPS: dict[torch.dtype, list[tuple[str, int, int]]] = {
    torch.quint8: [("uint8", 256, 0)],
    torch.uint8: [("uint8", 256, 0)],
    torch.qint8: [("int8", 256, -128)],
    torch.int8: [("int8", 256, -128)],
    torch.qint32: [("int32", 2**32, -(2**31))],
    torch.int32: [("int32", 2**32, -(2**31))],
    torch.quint4x2: [("uint8", 256, 0), ("4 bits", 16, 0)],
    torch.quint2x4: [("uint8", 256, 0), ("2 bits", 4, 0)],
}
MANUAL_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
MANUAL_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
SHOWN_ROWS = 50  # rows printed by str() and the HTML table; Report.rows holds all
# The quantize ops explain can take as the reference's, and what each is called in a report.
KERNELS: dict[str, str] = {
    "aten": "torch",
    "pt2e": "the PT2E op (quantized_decomposed)",
    "affine": "torchao's quantize_affine",
}
# The plain dtypes the PT2E op and quantize_affine produce (as their quantized twins are named).
KERNEL_DTYPES = (torch.uint8, torch.int8, torch.int32)
WIDTH = 100  # characters per line of str(report): a laptop's page


@dataclass(frozen=True)
class Row:
    """One element where the reader's integer differs from PyTorch's.

    ``cause`` is the first of ``hypotheses``, every cause that reproduces both
    integers, in order of precedence (``("unexplained",)`` when none does).
    ``unclamped`` is the value before any clamp under ``manual_rule`` (under
    ``reference_rule`` for ``unexplained``); ``manual_input`` and
    ``reference_input`` are the numbers each rule rounds; ``recomputed`` is
    PyTorch's integer as qlib recomputes it (equal to ``reference`` unless the
    scale, zero point or dtype are not the ones PyTorch used); ``proof`` shows
    the numbers that prove ``cause``.

    Chapter: "Debugging a mismatch" (book/08_debugging).

    >>> x = torch.tensor([-0.1])
    >>> row = explain(x, torch.tensor([-6]), torch.tensor([0], dtype=torch.uint8), 0.0169, 0, torch.quint8).rows[0]
    >>> row.cause, row.hypotheses, row.unclamped, row.recomputed
    ('clamp_low', ('clamp_low',), -6, 0)
    """

    index: tuple[int, ...]
    x: float
    manual: int
    reference: int
    cause: str
    scale: float
    zero_point: int
    unclamped: int | float
    recomputed: int
    manual_rule: str | None
    manual_input: float | None
    reference_rule: str
    reference_input: float
    proof: str
    hypotheses: tuple[str, ...] = ()


@dataclass
class Report:
    """What ``explain`` found.

    Fields: ``rows``, one :class:`Row` per differing element, in index order;
    ``counts``, cause -> number of rows naming it (a ``Counter``: absent causes
    count 0); ``numel``, the number of elements compared; ``setting``, the
    release, dtype, scale and zero point (or axis) in words;
    ``reference_not_recomputed``, the number of elements where ``reference``
    differs from qlib's recomputation of torch's arithmetic (0 unless the scale,
    zero point or dtype passed are not the ones torch used); ``release``, the
    torch release whose arithmetic was assumed; ``kernel``, the op
    (``"aten"``, ``"pt2e"`` or ``"affine"``).

    ``str(report)`` is a plain-text table at most 100 characters wide, each
    row's proof wrapped beneath it; in a notebook the report shows as an HTML
    table. Only the first 50 rows are printed; ``rows`` holds all.

    Chapter: "Debugging a mismatch" (book/08_debugging).

    >>> x = torch.tensor([-0.1, 0.5])
    >>> report = explain(x, torch.tensor([-6, 29]), torch.quantize_per_tensor(x, 0.0169, 0, torch.quint8))
    >>> report.counts["clamp_low"], report.rows[0].index
    (1, (0,))
    """

    rows: list[Row]
    counts: Counter = field(default_factory=Counter)
    numel: int = 0
    setting: str = ""
    reference_not_recomputed: int = 0
    release: str = ""
    kernel: str = "aten"

    def _summary(self) -> list[str]:
        if not self.rows:
            everything = "the only element" if self.numel == 1 else f"all {self.numel:,} elements"
            lines = [f"manual and reference agree at {everything}: nothing differs.", f"({self.setting})"]
        else:
            counts = ", ".join(f"{self.counts[c]:,} {c}" for c in CAUSES if self.counts[c])
            if self.numel == 1:
                differ = "the only element differs"
            else:
                differ = (
                    f"{len(self.rows):,} of {self.numel:,} elements {'differs' if len(self.rows) == 1 else 'differ'}"
                )
            lines = [f"{differ}: {counts}.", f"({self.setting})"]
            several = sum(len(row.hypotheses) > 1 for row in self.rows)
            if several:
                lines.append(
                    f"{_count(several, 'row')} {'has' if several == 1 else 'have'} more than one explanation; "
                    "each names the first in order of precedence (all are in its .hypotheses)."
                )
        if self.reference_not_recomputed:
            source = (
                f"torch {self.release}'s" if self.kernel == "aten" else f"{KERNELS.get(self.kernel, self.kernel)}'s"
            )
            lines.append(
                f"Warning: reference differs at {_count(self.reference_not_recomputed, 'element')} from "
                f"{source} arithmetic recomputed with this scale, zero_point and dtype; check that they "
                "are the ones PyTorch used."
            )
        return lines

    def _table(self) -> tuple[list[str], list[list[str]]]:
        head = ["index", "x", "manual", "reference", "cause"]
        body = [
            [_index(r.index), f"{r.x:.9g}", str(r.manual), str(r.reference), r.cause] for r in self.rows[:SHOWN_ROWS]
        ]
        return head, body

    def _more(self) -> str | None:
        hidden = len(self.rows) - SHOWN_ROWS
        return f"... {_count(hidden, 'more row')} in .rows" if hidden > 0 else None

    def __str__(self) -> str:
        """The summary, then each row with its proof wrapped beneath it, in at most WIDTH characters."""
        lines = [wrapped for line in self._summary() for wrapped in textwrap.wrap(line, WIDTH)]
        if self.rows:
            head, body = self._table()
            widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]
            lines.append("")
            lines.append("  ".join(cell.ljust(w) for cell, w in zip(head, widths, strict=True)).rstrip())
            for row, cells in zip(self.rows, body, strict=False):
                lines.append("  ".join(cell.ljust(w) for cell, w in zip(cells, widths, strict=True)).rstrip())
                lines.extend(textwrap.wrap(row.proof, WIDTH, initial_indent="    ", subsequent_indent="    "))
            if more := self._more():
                lines.append(more)
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        """The same as an HTML table, the proof in a full-width row under each element, so it wraps."""
        parts = [f"<p>{html.escape(line)}</p>" for line in self._summary()]
        if self.rows:
            head, body = self._table()
            parts.append('<table class="qlib-report">')
            parts.append("<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr></thead>")
            parts.append("<tbody>")
            for row, cells in zip(self.rows, body, strict=False):
                parts.append("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in cells) + "</tr>")
                parts.append(f'<tr class="proof"><td colspan="{len(head)}">{html.escape(row.proof)}</td></tr>')
            parts.append("</tbody></table>")
            if more := self._more():
                parts.append(f"<p>{html.escape(more)}</p>")
        return "\n".join(parts)


def _count(n: int, noun: str) -> str:
    """``1 row``, ``2 rows``, ``1,234 elements``."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def _index(index: tuple[int, ...]) -> str:
    return "(" + ", ".join(map(str, index)) + ")"


def explain(
    x: torch.Tensor,
    manual: torch.Tensor,
    reference: torch.Tensor,
    scale: float | torch.Tensor | None = None,
    zero_point: int | torch.Tensor | None = None,
    dtype: torch.dtype | None = None,
    axis: int | None = None,
    *,
    release: str | None = None,
    kernel: str = "aten",
    quant_min: int | None = None,
    quant_max: int | None = None,
) -> Report:
    """Name, for every element where ``manual`` differs from ``reference``, the cause of the difference.

    ``x`` is the float32 input; ``manual`` the reader's integers (an integer
    tensor, or a float tensor of whole numbers, unclamped or wrapped as they
    computed them); ``reference`` PyTorch's result: a quantized tensor, or an
    integer tensor of codes such as its ``int_repr()`` (one code per element,
    also for 4- and 2-bit dtypes). ``scale`` and ``zero_point`` are numbers, or
    1-d tensors with one value per slice along ``axis`` for per-channel
    quantization; with a quantized ``reference`` they, ``dtype`` and ``axis``
    default to the reference's own. ``release`` (``"2.13"``, ``"2.14"``; None:
    the installed torch) is the release whose arithmetic produced
    ``reference``. ``kernel="pt2e"`` takes ``reference`` from the PT2E op
    (``convert_pt2e``'s ``quantize_per_tensor``/``quantize_per_channel``) and
    ``kernel="affine"`` from torchao's ``quantize_affine``, both clamping to
    ``[quant_min, quant_max]`` (default: the dtype's range) and with plain
    ``dtype`` (``torch.uint8``, ``int8``, ``int32``); their per-channel scales
    must be float32, as those ops keep them. The module docstring lists the causes and their precedence;
    the report's ``counts`` maps cause to number of elements and its ``rows``
    give index, x, both integers, the cause and the proving numbers.

    Chapter: "Debugging a mismatch" (book/08_debugging).

    >>> x = torch.tensor([-0.1, 0.5, 0.25])
    >>> manual = torch.round(x / 0.5) + 1  # no clamp, zero point after rounding
    >>> reference = torch.tensor([1, 2, 2], dtype=torch.uint8)  # torch.quantize_per_tensor(x, 0.5, 1, torch.quint8)
    >>> report = explain(x, manual, reference, 0.5, 1, torch.quint8, release="2.13")
    >>> dict(report.counts)
    {'zero_point_order': 1}
    >>> report.rows[0].proof
    'rint(x * (1/scale)) + zp in float32: rint(0.5) + 1 = 1; torch: rint(fma(x, 1/scale, zp)) in float32: rint(1.5) = 2'
    >>> x = torch.tensor([-0.1, 0.5, 0.4])
    >>> pt2e = torch.tensor([0, 127, 127], dtype=torch.uint8)  # a quantizer's quant_max=127 (reduce_range)
    >>> dict(explain(x, torch.tensor([0, 201, 161]), pt2e, 0.0025, 1, torch.uint8, kernel="pt2e", quant_max=127).counts)
    {'clamp_high': 2}
    """
    checks.float32_tensor(x, "x")
    checks.no_nan(x, "x")
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {', '.join(map(repr, KERNELS))}; got {kernel!r}")
    manual = _manual_values(manual, x.shape)
    reference, scale, zero_point, dtype, axis = _reference_values(reference, x.shape, scale, zero_point, dtype, axis)
    release = torch_release(release)
    lo, hi = DTYPE_RANGES[dtype]
    qmin, qmax = _clamp_range(kernel, dtype, quant_min, quant_max)
    # also checks scale, zero_point and axis
    recomputed = _recompute(x, scale, zero_point, dtype, axis, release, kernel, qmin, qmax)

    clamp = f"codes {qmin}..{qmax}" if (qmin, qmax) == (lo, hi) else f"clamped to {qmin}..{qmax}"
    # Python numbers per tensor, tensors per channel
    s: float | torch.Tensor
    z: int | torch.Tensor
    if axis is None:
        s, z = checks.scale_value(scale), checks.zero_point_value(zero_point, lo, hi)
        setting = f"{_name(dtype)}, scale {s!r}, zero point {z}, {clamp}"
        s_all, z_all = torch.full(x.shape, s, dtype=torch.float64), torch.full(x.shape, z, dtype=torch.int64)
    else:
        axis = checks.axis_value(axis, x.dim())
        s = checks.channel_scales(scale, x.shape[axis], axis)
        z = checks.channel_zero_points(zero_point, x.shape[axis], axis, lo, hi)
        setting = f"{_name(dtype)}, per channel along axis {axis}, {clamp}"
        shape = checks.channel_shape(x.dim(), axis)
        s_all, z_all = s.view(shape).expand(x.shape), z.view(shape).expand(x.shape)

    differ = manual != reference
    idx = differ.nonzero()
    m, r, t = manual[differ], reference[differ], recomputed[differ]
    xs, ss, zs = x[differ], s_all[differ], z_all[differ]
    if kernel == "pt2e" and axis is None:
        path = "pt2e"  # the reciprocal in float64, the zero point after rounding
    elif kernel != "aten" or release != "2.13" or dtype in SUB_BYTE:
        path = "after"
    else:
        path = "fma" if axis is None and hi - lo == 255 else "two_roundings"
    computations = (
        VARIANTS + [UNFUSED] if path == "fma" else VARIANTS + [ATEN_RECIPROCAL] if path == "pt2e" else VARIANTS
    )
    arith = {v: _arithmetic(xs, s if axis is None else ss, z if axis is None else zs, v, path) for v in computations}
    found, hypotheses = _decide(m, r, t, arith, dtype, qmin, qmax)

    rows = []
    for k in range(len(m)):
        cause, variant, other, wrap = found[k]
        row = _row(k, idx, xs, m, r, t, ss, zs, arith, cause, variant, other, wrap, path, qmin, qmax)
        rows.append(replace(row, hypotheses=hypotheses[k]))
    counts = Counter({c: n for c in CAUSES if (n := sum(row.cause == c for row in rows))})
    not_recomputed = int((reference != recomputed).sum())
    source = f"torch {release}" if kernel == "aten" else f"{KERNELS[kernel]}, torch 2.13 and 2.14 alike"
    return Report(rows, counts, x.numel(), f"{source}, {setting}", not_recomputed, release, kernel)


def _clamp_range(kernel: str, dtype: torch.dtype, quant_min: object, quant_max: object) -> tuple[int, int]:
    """Where ``kernel`` clamps: the dtype's range for ATen, ``[quant_min, quant_max]`` for the PT2E op and quantize_affine."""
    if kernel == "aten":
        if quant_min is not None or quant_max is not None:
            raise ValueError(
                "quant_min and quant_max apply to kernel='pt2e' or 'affine': torch.quantize_per_tensor clamps to the "
                "dtype's range"
            )
        return DTYPE_RANGES[dtype]
    if dtype not in KERNEL_DTYPES:
        allowed = ", ".join(str(d) for d in KERNEL_DTYPES)
        raise TypeError(f"kernel={kernel!r} produces plain dtypes: dtype must be one of {allowed}; got {dtype}")
    return quant_range(dtype, quant_min, quant_max)


def _recompute(
    x: torch.Tensor,
    scale: float | torch.Tensor,
    zero_point: int | torch.Tensor,
    dtype: torch.dtype,
    axis: int | None,
    release: str,
    kernel: str,
    qmin: int,
    qmax: int,
) -> torch.Tensor:
    """PyTorch's codes for ``x`` under ``kernel``'s arithmetic, as int64."""
    if kernel == "aten":
        return quantize(x, scale, zero_point, dtype, axis, release=release).long()
    if axis is not None and (not isinstance(scale, torch.Tensor) or scale.dtype != torch.float32):
        got = scale.dtype if isinstance(scale, torch.Tensor) else type(scale).__name__
        raise TypeError(
            f"kernel={kernel!r} per channel needs float32 scales, as convert_pt2e and quantize_ keep them; got {got}"
        )
    if kernel == "pt2e":
        return quantize_pt2e(x, scale, zero_point, qmin, qmax, dtype, axis).long()
    if axis is None:
        s = torch.tensor([checks.scale_value(scale)], dtype=torch.float32)
        z = torch.tensor([checks.zero_point_value(zero_point, *DTYPE_RANGES[dtype])])
        return quantize_affine(x, tuple(x.shape), s, z, dtype, qmin, qmax).long()
    axis = checks.axis_value(axis, x.dim())
    block = tuple(1 if i == axis else size for i, size in enumerate(x.shape))
    checks.channel_zero_points(zero_point, x.shape[axis], axis, *DTYPE_RANGES[dtype])
    assert isinstance(scale, torch.Tensor) and isinstance(zero_point, torch.Tensor)  # both checked above
    return quantize_affine(x, block, scale, zero_point, dtype, qmin, qmax).long()


def _name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _manual_values(manual: object, shape: torch.Size) -> torch.Tensor:
    """The reader's integers as int64, after checking that they are whole numbers of the right shape."""
    if not isinstance(manual, torch.Tensor) or manual.is_quantized or manual.dtype not in MANUAL_DTYPES + MANUAL_FLOATS:
        got = manual.dtype if isinstance(manual, torch.Tensor) else type(manual).__name__
        raise TypeError(
            "manual must be a tensor of your integers: an integer tensor (uint8, int8, int16, int32, int64) "
            f"or a float tensor of whole numbers; got {got}"
        )
    if manual.shape != shape:
        raise ValueError(f"manual must have the shape of x, {tuple(shape)}; got shape {tuple(manual.shape)}")
    if manual.dtype in MANUAL_DTYPES:
        return manual.long()
    values = manual.double()
    bad = ~(torch.isfinite(values) & (values == values.round()) & (values.abs() < 2.0**62))
    if bad.any():
        first = tuple(bad.nonzero()[0].tolist())
        raise ValueError(
            f"manual must hold whole numbers (round them the way you did by hand); {int(bad.sum())} element(s) "
            f"are not, the first at index {first} is {values[first].item()!r}"
        )
    return values.long()


def _reference_values(
    reference: object,
    shape: torch.Size,
    scale: float | torch.Tensor | None,
    zero_point: int | torch.Tensor | None,
    dtype: torch.dtype | None,
    axis: int | None,
) -> tuple[torch.Tensor, float | torch.Tensor, int | torch.Tensor, torch.dtype, int | None]:
    """PyTorch's codes as int64, with scale, zero point, dtype and axis filled in from a quantized reference."""
    if isinstance(reference, torch.Tensor) and reference.is_quantized:
        reference, scale, zero_point, dtype, axis = _read_quantized(reference, scale, zero_point, dtype, axis)
    elif isinstance(reference, torch.Tensor) and (reference.is_floating_point() or reference.is_complex()):
        raise TypeError(
            f"reference must be PyTorch's integers: a quantized tensor or its int_repr(); got a {reference.dtype} "
            "tensor (the dequantized output?)"
        )
    else:
        reference = checks.integer_tensor(reference, "reference")
        for name, value in (("scale", scale), ("zero_point", zero_point), ("dtype", dtype)):
            if value is None:
                raise ValueError(
                    f"{name} is required when reference is an integer tensor ({reference.dtype}); got None. "
                    "Pass it, or pass the quantized tensor itself as reference"
                )
        assert scale is not None and zero_point is not None  # the loop above raised otherwise
    if not isinstance(dtype, torch.dtype) or dtype not in CODE_DTYPES:
        allowed = ", ".join(str(d) for d in CODE_DTYPES)
        raise TypeError(f"dtype must be one of {allowed}; got {dtype!r}")
    if reference.shape != shape:
        hint = ""
        if dtype in SUB_BYTE:
            hint = " (int_repr() of a 4- or 2-bit tensor is packed: pass the quantized tensor itself, or one code per element)"
        raise ValueError(
            f"reference must have the shape of x, {tuple(shape)}; got shape {tuple(reference.shape)}{hint}"
        )
    codes = reference.long()
    qmin, qmax = DTYPE_RANGES[dtype]
    outside = (codes < qmin) | (codes > qmax)
    if outside.any():
        first = tuple(outside.nonzero()[0].tolist())
        raise ValueError(
            f"reference must hold codes in [{qmin}, {qmax}] for dtype {dtype}; {int(outside.sum())} element(s) do "
            f"not, the first at index {first} is {int(codes[first])}"
        )
    return codes, scale, zero_point, dtype, axis


def _read_quantized(
    q: torch.Tensor, scale: object, zero_point: object, dtype: object, axis: object
) -> tuple[torch.Tensor, float | torch.Tensor, int | torch.Tensor, torch.dtype, int | None]:
    """Codes and parameters of a quantized tensor; given parameters must agree with its own."""
    scheme = q.qscheme()
    own_scale: float | torch.Tensor
    own_zero_point: int | torch.Tensor
    own_axis: int | None
    if scheme == torch.per_tensor_affine:
        own_scale, own_zero_point, own_axis = q.q_scale(), q.q_zero_point(), None
    elif scheme == torch.per_channel_affine:
        own_scale, own_zero_point = q.q_per_channel_scales(), q.q_per_channel_zero_points()
        own_axis = q.q_per_channel_axis()
        if isinstance(axis, int) and not isinstance(axis, bool) and -q.dim() <= axis < 0:
            axis += q.dim()
    else:
        raise TypeError(f"reference must be quantized per_tensor_affine or per_channel_affine; got {scheme}")
    given = {"scale": scale, "zero_point": zero_point, "dtype": dtype, "axis": axis}
    own = {"scale": own_scale, "zero_point": own_zero_point, "dtype": q.dtype, "axis": own_axis}
    for name, value in given.items():
        if value is None:
            continue
        if isinstance(value, torch.Tensor) and value.numel() == 1 and not isinstance(own[name], torch.Tensor):
            value = value.item()
        if isinstance(value, torch.Tensor) and isinstance(theirs := own[name], torch.Tensor):
            same = value.shape == theirs.shape and torch.equal(value.double(), theirs.double())
        elif isinstance(value, torch.Tensor) or isinstance(own[name], torch.Tensor):
            same = False
        else:
            same = value == own[name]
        if not same:
            raise ValueError(
                f"{name}={value!r} disagrees with the quantized reference's own {name} {own[name]!r}; "
                f"omit {name} to use the reference's"
            )
    codes = q.int_repr()
    if q.dtype in SUB_BYTE:  # int_repr() packs 8 // bits codes per byte, lowest bits first
        bits = 4 if q.dtype == torch.quint4x2 else 2
        parts = [(codes >> (bits * i)) & ((1 << bits) - 1) for i in range(8 // bits)]
        codes = torch.stack(parts, dim=-1).reshape(-1)[: q.numel()].reshape(q.shape)
    return codes, own_scale, own_zero_point, q.dtype, own_axis


def _arithmetic(
    x: torch.Tensor,
    scale: float | torch.Tensor,
    zero_point: int | torch.Tensor,
    variant: tuple[str, ...],
    path: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The number rounded and the unclamped integer (both float64) under PyTorch's arithmetic changed by ``variant``.

    ``path`` is PyTorch's kernel: "fma" (8-bit per tensor: ``rint(fma(x, inv, zp))``),
    "two_roundings" (qint32 and per channel: ``rint(f32(f32(x * inv) + zp))``),
    "after" (4- and 2-bit, torch 2.14, torchao: ``rint(f32(x * inv)) + zp``) or "pt2e" (the
    PT2E per-tensor op: "after" with ``inv = f32(1 / double(scale))``; its ``ATEN_RECIPROCAL``
    variant is the ATen kernels' ``inv = 1.0f / f32(scale)``).
    """
    before = (path not in ("after", "pt2e")) != ("order" in variant)
    if path == "pt2e" and "float64" not in variant and "division" not in variant:
        assert isinstance(scale, float)  # the pt2e path is per tensor: scale is checks.scale_value's float
        t = x * (
            float32_reciprocal(scale) if variant == ATEN_RECIPROCAL else reciprocal(scale)
        )  # float32 times a float32 factor
        rounded = (t + zero_point if before else t).double()
        unclamped = rounded.round() if before else rounded.round() + zero_point
        return rounded, unclamped
    if "float64" in variant:
        s64 = scale if isinstance(scale, float) else scale.double()
        t = x.double() / s64 if "division" in variant else x.double() * (1.0 / s64)
        rounded = t + zero_point if before else t
    else:
        s32 = torch.tensor(scale, dtype=torch.float32) if isinstance(scale, float) else scale.float()
        inv = torch.tensor(1.0) / s32  # 1.0f / (float)scale, as in PyTorch's kernels
        t = x / s32 if "division" in variant else x * inv
        if before and path == "fma" and "division" not in variant and variant != UNFUSED:
            rounded = fma_float32(x, inv.item(), zero_point)
        elif before:
            rounded = t + (zero_point if isinstance(zero_point, int) else zero_point.float())
        else:
            rounded = t
    rounded = rounded.double()
    unclamped = rounded.round() if before else rounded.round() + zero_point
    return rounded, unclamped


def _decide(
    m: torch.Tensor, r: torch.Tensor, t: torch.Tensor, arith: dict, dtype: torch.dtype, qmin: int, qmax: int
) -> tuple[list[tuple], list[tuple[str, ...]]]:
    """For each differing element: (cause, variant, other variant, wrap) of the first cause in
    precedence order that reproduces it, and every cause that does. PyTorch clamps to
    ``[qmin, qmax]``; a cast wraps only values outside ``dtype``'s own range."""
    lo, hi = DTYPE_RANGES[dtype]
    n = len(m)
    found: list[tuple | None] = [None] * n
    causes: list[list[str]] = [[] for _ in range(n)]
    reproduced = r == t  # no cause can be proven where PyTorch's value is not reproduced
    open_ = reproduced.clone()
    mf, rf = m.double(), r.double()

    def claim(hit: torch.Tensor, result: tuple) -> None:
        for k in (hit & reproduced).nonzero().flatten().tolist():
            if result[0] not in causes[k]:
                causes[k].append(result[0])
        for k in (hit & open_).nonzero().flatten().tolist():
            found[k] = result
        open_[hit] = False

    for cause, below in (("clamp_low", True), ("clamp_high", False)):
        end = qmin if below else qmax
        beyond = (mf < qmin) if below else (mf > qmax)
        for v in arith:
            claim(beyond & (r == end) & (arith[v][1] == mf), (cause, v, (), None))

    for v in arith:
        u = arith[v][1]
        outside = torch.isfinite(u) & (u.abs() < 2.0**62) & ((u < lo) | (u > hi))
        saturated = torch.where(u < qmin, torch.tensor(qmin, dtype=torch.float64), float(qmax))
        ints = torch.where(outside, u, 0.0).long()
        for wrap in WRAPS[dtype]:
            _, modulus, low = wrap
            wrapped = (ints - low).remainder(modulus) + low
            claim(outside & (wrapped == m) & (rf == saturated), ("wraparound", v, (), wrap))

    def value(v: tuple[str, ...]) -> torch.Tensor:
        return t.double() if not v else arith[v][1].clamp(qmin, qmax)

    for choice, cause in CHOICES.items():
        for v in VARIANTS:
            if choice in v:
                other = tuple(c for c in v if c != choice)
                claim((value(v) == mf) & (value(other) == rf), (cause, v, other, None))
    if ATEN_RECIPROCAL in arith:
        claim((value(ATEN_RECIPROCAL) == mf) & (value(()) == rf), ("scale_precision", ATEN_RECIPROCAL, (), None))

    first = [f if f is not None else ("unexplained", None, (), None) for f in found]
    return first, [tuple(c) if c else ("unexplained",) for c in causes]


def _rule(variant: tuple[str, ...] | None, path: str) -> str:
    """The formula of a variant of PyTorch's arithmetic, in words."""
    variant = variant or ()
    before = (path not in ("after", "pt2e")) != ("order" in variant)
    core = "x / scale" if "division" in variant else "x * (1/scale)"
    if path == "pt2e" and "float64" not in variant and "division" not in variant:
        formula = f"rint({core} + zp)" if before else f"rint({core}) + zp"
        where = "float32, as torch.quantize_per_tensor" if variant == ATEN_RECIPROCAL else "float64 (PT2E)"
        return f"{formula} in float32, 1/scale in {where}"
    precision = "float64" if "float64" in variant else "float32"
    if before and path == "fma" and variant == ():
        formula = "rint(fma(x, 1/scale, zp))"
    elif variant == UNFUSED:
        return "rint(x * (1/scale) + zp) in float32 without FMA (two roundings)"
    elif before:
        formula = f"rint({core} + zp)"
    else:
        formula = f"rint({core}) + zp"
    return f"{formula} in {precision}"


def _number(value: float) -> int | float:
    return int(value) if abs(value) < 2.0**63 else value


def _row(
    k: int,
    idx: torch.Tensor,
    xs: torch.Tensor,
    m: torch.Tensor,
    r: torch.Tensor,
    t: torch.Tensor,
    ss: torch.Tensor,
    zs: torch.Tensor,
    arith: dict[tuple[str, ...], tuple[torch.Tensor, torch.Tensor]],
    cause: str,
    variant: tuple[str, ...] | None,
    other: tuple[str, ...],
    wrap: tuple[str, int, int] | None,
    path: str,
    qmin: int,
    qmax: int,
) -> Row:
    """The report's record of differing element ``k``, with the numbers that prove its cause."""
    before = {v: (path not in ("after", "pt2e")) != ("order" in v) for v in arith}
    mk, rk, tk, zk = int(m[k]), int(r[k]), int(t[k]), int(zs[k])

    def shown(v: tuple[str, ...]) -> str:
        rounded, unclamped = arith[v][0][k].item(), arith[v][1][k].item()
        text = f"rint({rounded!r})" + ("" if before[v] else f" + {zk}") + f" = {_number(unclamped)}"
        if unclamped < qmin or unclamped > qmax:
            text += f", clamped to {tk if v == () else min(max(_number(unclamped), qmin), qmax)}"
        return text

    torch_rule = _rule((), path)
    torch_input = arith[()][0][k].item()
    if cause == "unexplained":
        unclamped = _number(arith[()][1][k].item())
        proof = f"no cause reproduces both; torch: {torch_rule}: {shown(())}"
        if tk != rk:
            proof += f"; that is {tk}, not reference {rk}: are scale, zero_point and dtype the ones torch used?"
        if UNFUSED in arith and tk == rk:
            unfused = arith[UNFUSED][1][k].item()
            # a hint only where the fused multiply-add is what separates the two integers
            if mk in (unfused, min(max(unfused, qmin), qmax)) and min(max(unfused, qmin), qmax) != tk:
                proof += f"; manual is {_rule(UNFUSED, path)}: {shown(UNFUSED)}"
        manual_rule, manual_input = None, None
        reference_rule, reference_input = torch_rule, torch_input
    elif cause in ("clamp_low", "clamp_high", "wraparound"):
        assert variant is not None  # only "unexplained" comes without one
        unclamped = _number(arith[variant][1][k].item())
        manual_rule, manual_input = _rule(variant, path) + ", no clamp", arith[variant][0][k].item()
        reference_rule, reference_input = torch_rule + f", clamped to [{qmin}, {qmax}]", torch_input
        if cause == "clamp_low":
            proof = f"unclamped {unclamped} < qmin {qmin}; torch clamps to {qmin}"
        elif cause == "clamp_high":
            proof = f"unclamped {unclamped} > qmax {qmax}; torch clamps to {qmax}"
        else:
            assert wrap is not None  # every "wraparound" names its wrap
            name, modulus, _ = wrap
            proof = f"unclamped {unclamped} cast to {name} without clamp wraps (mod {modulus}) to {mk}; torch clamps to {rk}"
    else:
        assert variant is not None  # only "unexplained" comes without one
        unclamped = _number(arith[variant][1][k].item())
        manual_rule, manual_input = _rule(variant, path), arith[variant][0][k].item()
        reference_rule, reference_input = _rule(other, path), arith[other][0][k].item()
        label = "torch" if not other else "with only that changed back"
        proof = f"{manual_rule}: {shown(variant)}; {label}: {reference_rule}: {shown(other)}"
    return Row(
        index=tuple(idx[k].tolist()),
        x=xs[k].item(),
        manual=mk,
        reference=rk,
        cause=cause,
        scale=ss[k].item(),
        zero_point=zk,
        unclamped=unclamped,
        recomputed=tk,
        manual_rule=manual_rule,
        manual_input=manual_input,
        reference_rule=reference_rule,
        reference_input=reference_input,
        proof=proof,
    )
