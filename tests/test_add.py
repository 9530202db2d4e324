"""qlib.add against torch.ops.quantized.add and add_relu: vector body and scalar tail, layouts, threads, both releases.

torch computes some elements of a quantized addition with its vector body and the others with its
scalar tail, which round differently; the inputs here are built so that many elements round one
way on one path and the other way on the other (exact ties at the output scale, near ties a few
ulps away, pairs chosen where the two paths disagree), so that a wrong split fails.
"""

from __future__ import annotations

import math
import warnings

import inputs
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.ao.nn.quantized import QFunctional

import qlib.quantized_add as qa
from qlib.numerics import float32 as f32
from qlib.releases import torch_release
from qlib.testing import assert_same_ints
from qlib.testing import quantized_tensor as quantized

# torch's integers here depend on the CPU kind: make unit-avx2 runs these again under the AVX2 kernels
pytestmark = pytest.mark.cpu_kind

QUANTIZED = {torch.uint8: torch.quint8, torch.int8: torch.qint8, torch.int32: torch.qint32}
# codes drawn for each dtype (qint32: a band around 0; its extremes have a test of their own)
DRAWN = {torch.uint8: (0, 255), torch.int8: (-128, 127), torch.int32: (-3000, 3000)}
F32 = torch.float32


def torch_add(a, sa, za, b, sb, zb, s, z, relu, view_a=None, view_b=None):
    """int_repr() of quantized::add (add_relu) on the quantized tensors with codes a, b, each seen through a view."""
    qa_, qb_ = quantized(a, sa, za), quantized(b, sb, zb)
    if view_a is not None:
        qa_ = view_a(qa_)
    if view_b is not None:
        qb_ = view_b(qb_)
    op = torch.ops.quantized.add_relu if relu else torch.ops.quantized.add
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return op(qa_, qb_, s, z).int_repr()


def nudge(value, steps):
    """A float32 value moved ``steps`` ulps."""
    return inputs.nudge(torch.tensor([value], dtype=F32), torch.tensor([steps])).item()


def parameters(dtype, kind, gen):
    """Scales and zero points; "ties" and "near ties" put many sums at or near k + 0.5 output steps."""
    lo, hi = DRAWN[dtype]
    qlo, qhi = max(lo, -128), min(hi, 255)

    def uniform(a, b):
        return f32(float(torch.empty(1).uniform_(a, b, generator=gen)))

    def integer(a, b):
        return int(torch.randint(a, b + 1, (1,), generator=gen))

    if kind == "ties":  # powers of two: exact arithmetic, ties exactly at k + 0.5
        sa = 2.0 ** integer(-8, 2)
        sb, s = sa * 2 ** integer(0, 1), 2 * sa
    elif kind == "near ties":  # the output scale twice the input scale, give or take a few ulps
        sa = uniform(1e-3, 0.2)
        sb = sa if integer(0, 1) else uniform(1e-3, 0.2)
        s = nudge(2 * sa, integer(-3, 3))
    else:
        sa, sb, s = uniform(1e-3, 0.2), uniform(1e-3, 0.2), uniform(1e-3, 0.5)
    za, zb = integer(qlo, qhi), integer(qlo, qhi)
    z = integer(qlo, qhi) | 1  # odd output zero points: where torch 2.13's tail moves ties
    return sa, za, sb, zb, s, z


def codes(dtype, n, kind, seed):
    """``a``, ``b`` (``n`` codes each) and their parameters; half the elements, where possible, are
    pairs on which torch's vector body and scalar tail give different codes (by qlib's model)."""
    gen = torch.Generator().manual_seed(seed)
    lo, hi = DRAWN[dtype]
    params = parameters(dtype, kind, gen)
    pool = 4096
    a = torch.randint(lo, hi + 1, (pool,), generator=gen).to(dtype)
    b = torch.randint(lo, hi + 1, (pool,), generator=gen).to(dtype)
    body = qa.add(a, *params[:2], b, *params[2:], threads=1)  # 4096 contiguous elements: all vector body
    tail = qa.add(a, *params[:2], b, *params[2:], vector_width=2**30)  # no piece fills a vector: all tail
    split = (body != tail).nonzero().flatten()
    take = torch.randint(0, pool, (n,), generator=gen)
    if kind != "random" and len(split):
        chosen = split[torch.randint(0, len(split), (n,), generator=gen)]
        take = torch.where(torch.rand(n, generator=gen) < 0.5, chosen, take)
    return a[take], b[take], params


lengths = st.one_of(
    st.integers(1, 200),
    st.builds(lambda k, d: max(1, 32 * k + d), st.integers(1, 8), st.integers(-3, 3)),
)


@settings(max_examples=settings().max_examples // 2)  # a few thousand elements an example
@given(
    dtype=st.sampled_from([torch.uint8, torch.uint8, torch.int8, torch.int32]),
    length=lengths,
    rows=st.sampled_from([1, 1, 2, 3]),
    planes=st.sampled_from([1, 1, 2]),
    kind=st.sampled_from(["random", "ties", "near ties"]),
    relu=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_add_matches_torch(dtype, length, rows, planes, kind, relu, seed):
    shape = tuple(d for d in (planes, rows) if d > 1) + (length,)
    a, b, p = codes(dtype, math.prod(shape), kind, seed)
    a, b = a.view(shape), b.view(shape)
    expected = torch_add(a, *p[:2], b, *p[2:], relu)
    assert_same_ints(qa.add(a, *p[:2], b, *p[2:], relu), expected, f"{kind} {shape} params={p} relu={relu}")


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int32])
@pytest.mark.parametrize("n", [2**16 + 5, 3 * 2**15 + 17])
def test_large_tensors_follow_the_thread_count(threads, dtype, n):
    """Above 32768 elements torch cuts the work into one chunk per thread, each with its own tail."""
    a, b, p = codes(dtype, n, "near ties", n + threads)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        expected = torch_add(a, *p[:2], b, *p[2:], n % 2 == 0)
        ours = qa.add(a, *p[:2], b, *p[2:], n % 2 == 0)
    finally:
        torch.set_num_threads(before)
    assert_same_ints(ours, expected, f"{threads} thread(s) params={p}")
    assert_same_ints(qa.add(a, *p[:2], b, *p[2:], n % 2 == 0, threads=threads), expected, "explicit threads")


def view_strategy(ndim):
    """A random view to apply alike to codes and quantized tensors: permute, step, narrow, channels-last."""
    kinds = ["none", "permute", "step", "narrow"] + (["channels_last"] if ndim in (4, 5) else [])
    return st.tuples(
        st.sampled_from(kinds), st.permutations(range(ndim)), st.integers(0, ndim - 1), st.sampled_from([2, 3])
    )


def apply(view, t):
    kind, perm, dim, step = view
    if kind == "permute":
        return t.permute(perm)
    if kind == "step":
        index = [slice(None)] * t.dim()
        index[dim] = slice(None, None, step)
        return t[tuple(index)]
    if kind == "narrow" and t.shape[dim] > 1:
        return t.narrow(dim, 1, t.shape[dim] - 1)
    if kind == "channels_last":
        return t.contiguous(memory_format=torch.channels_last if t.dim() == 4 else torch.channels_last_3d)
    return t


@st.composite
def layouts(draw):
    ndim = draw(st.integers(1, 5))
    shape = draw(st.lists(st.sampled_from([1, 2, 3, 5, 31, 33, 64, 65, 70]), min_size=ndim, max_size=ndim))
    while math.prod(shape) > 6000:
        shape[shape.index(max(shape))] = 3
    view_a = draw(view_strategy(ndim))
    view_b = view_a if draw(st.booleans()) else draw(view_strategy(ndim))
    broadcast = draw(st.sampled_from(["none", "none", "b size-1 dim", "b fewer dims", "a size-1 dim"]))
    return shape, view_a, view_b, broadcast, draw(st.integers(0, ndim - 1))


@settings(max_examples=settings().max_examples // 4)
@given(
    layout=layouts(),
    dtype=st.sampled_from([torch.uint8, torch.int8, torch.int32]),
    relu=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_layouts_and_broadcasting_match_torch(layout, dtype, relu, seed):
    """Strided, permuted, channels-last and broadcast inputs: torch walks each row with its own tail."""
    shape, view_a, view_b, broadcast, dim = layout
    a0, b0, p = codes(dtype, math.prod(shape), "near ties", seed)
    a0, b0 = a0.view(shape), b0.view(shape)

    def along_a(t):
        t = apply(view_a, t)
        return t.narrow(dim, 0, 1) if broadcast == "a size-1 dim" else t

    def along_b(t):
        t = apply(view_b, t)
        if broadcast == "b size-1 dim":
            return t.narrow(dim, 0, 1)
        return t[0] if broadcast == "b fewer dims" and t.dim() > 1 else t

    a, b = along_a(a0), along_b(b0)
    try:
        torch.broadcast_shapes(a.shape, b.shape)
    except RuntimeError:
        with pytest.raises(ValueError, match="broadcast"):
            qa.add(a, *p[:2], b, *p[2:], relu)
        return
    expected = torch_add(a0, *p[:2], b0, *p[2:], relu, along_a, along_b)
    ours = qa.add(a, *p[:2], b, *p[2:], relu)
    assert_same_ints(ours, expected, f"a {tuple(a.shape)}@{a.stride()} b {tuple(b.shape)}@{b.stride()} {layout}")


def test_float_functional_adds_as_quantized_add():
    """QFunctional (FloatFunctional after conversion) calls quantized::add and add_relu."""
    a, b, (sa, za, sb, zb, s, z) = codes(torch.uint8, 150, "near ties", 7)
    qf = QFunctional()
    qf.scale, qf.zero_point = s, z
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        added = qf.add(quantized(a, sa, za), quantized(b, sb, zb)).int_repr()
        added_relu = qf.add_relu(quantized(a, sa, za), quantized(b, sb, zb)).int_repr()
    assert_same_ints(qa.add(a, sa, za, b, sb, zb, s, z), added)
    assert_same_ints(qa.add(a, sa, za, b, sb, zb, s, z, relu=True), added_relu)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int32])
def test_extremes_match_torch(dtype):
    """Scales near float32's limit (sums of ±inf, NaN from inf - inf), extreme codes and zero points."""
    gen = torch.Generator().manual_seed(5)
    info = torch.iinfo(dtype)
    lo, hi = info.min, info.max
    ends = [lo, hi, lo + 1, hi - 1, 0, 1] + ([2**24 + 1, -(2**24) - 1] if dtype == torch.int32 else [])
    scales = [8e37, 3e37, 1e36, 3e-38, 1e-30, 1e30, 0.1, 1.0]
    zero_points = [lo, hi, 0, 1, 127] + ([128] if hi > 127 else [-1])
    for case in range(120):
        n = (64, 70, 130, 200)[case % 4]
        pick = torch.rand(2, n, generator=gen) < 0.6
        ends_t = torch.tensor(ends)[torch.randint(0, len(ends), (2, n), generator=gen)]
        drawn = torch.randint(max(lo, -1000), min(hi, 1000) + 1, (2, n), generator=gen)
        a, b = torch.where(pick, ends_t, drawn).to(dtype)
        sa, sb, s = (scales[int(i)] for i in torch.randint(0, len(scales), (3,), generator=gen))
        za, zb, z = (zero_points[int(i)] for i in torch.randint(0, len(zero_points), (3,), generator=gen))
        expected = torch_add(a, sa, za, b, sb, zb, s, z, case % 2 == 0)
        assert_same_ints(qa.add(a, sa, za, b, sb, zb, s, z, case % 2 == 0), expected, f"{sa, za, sb, zb, s, z}")


def test_a_row_of_ties_rounds_two_ways_in_torch_2_13():
    """70 elements, each 0.5 + 0 at output scale 1 and zero point 1: 64 in the vector body, 6 in the tail."""
    ties = torch.full((70,), 1, dtype=torch.uint8)
    args = (ties, 0.5, 0, ties, 1.0, 1, 1.0, 1)
    old, new = qa.add(*args, release="2.13"), qa.add(*args, release="2.14")
    assert old[:64].tolist() == [1] * 64 and old[64:].tolist() == [2] * 6  # rint(0.5) + 1; rint(0.5 + 1)
    assert new.tolist() == [1] * 70
    assert_same_ints(old if torch_release() == "2.13" else new, torch_add(*args, relu=False))


def test_torch_2_14_is_position_dependent_too():
    """0.1 * (1 - 3) + 0.1 * (6 - 3) is half the output scale 0.2: the two dequantizations round it apart."""
    a, b = torch.full((70,), 1, dtype=torch.uint8), torch.full((70,), 6, dtype=torch.uint8)
    for release in ("2.13", "2.14"):
        assert qa.add(a, 0.1, 3, b, 0.1, 3, 0.2, 0, release=release).tolist() == [0] * 64 + [1] * 6
    assert_same_ints(qa.add(a, 0.1, 3, b, 0.1, 3, 0.2, 0), torch_add(a, 0.1, 3, b, 0.1, 3, 0.2, 0, False))


def test_the_measurements_rule_out_the_alternatives():
    """On the same inputs qlib matches torch and each plausible alternative does not.

    The AVX512 kernel's width (64 per vector: torch runs the AVX2 kernel on AVX512 CPUs), the scalar
    tail's arithmetic everywhere (as if torch did not vectorize), the other release's tail, and the
    other thread count for large tensors each give other codes, in torch 2.13 and in 2.14.
    """
    other_release = "2.13" if torch_release() == "2.14" else "2.14"
    wrong = {"vector_width=64": 0, "all scalar tail": 0, f"release={other_release}": 0, "other thread count": 0}
    for seed in range(24):
        dtype = (torch.uint8, torch.int8, torch.int32)[seed % 3]
        n = (70, 130, 200, 250)[seed % 4]
        a, b, p = codes(dtype, n, ("ties", "near ties")[seed % 2], seed)
        expected = torch_add(a, *p[:2], b, *p[2:], seed % 5 == 0)
        assert_same_ints(qa.add(a, *p[:2], b, *p[2:], seed % 5 == 0), expected)
        for name, kwargs in (
            ("vector_width=64", {"vector_width": 64 if dtype != torch.int32 else 16}),
            ("all scalar tail", {"vector_width": 2**30}),
            (f"release={other_release}", {"release": other_release}),
        ):
            wrong[name] += int((qa.add(a, *p[:2], b, *p[2:], seed % 5 == 0, **kwargs) != expected).sum())
    a, b, p = codes(torch.uint8, 2**16 + 5, "near ties", 1)
    expected = torch_add(a, *p[:2], b, *p[2:], False)
    threads = torch.get_num_threads()
    assert_same_ints(qa.add(a, *p[:2], b, *p[2:]), expected)
    wrong["other thread count"] = int((qa.add(a, *p[:2], b, *p[2:], threads=1 if threads > 1 else 2) != expected).sum())
    assert all(count > 0 for count in wrong.values()), wrong


def test_torch_refuses_what_qlib_refuses():
    a8, b8 = torch.zeros(3, dtype=torch.uint8), torch.zeros(3, dtype=torch.int8)
    with pytest.raises(RuntimeError, match="same data type"):
        torch.ops.quantized.add(quantized(a8, 0.1, 0), quantized(b8, 0.1, 0), 0.1, 0)
    with pytest.raises(TypeError, match="one dtype"):
        qa.add(a8, 0.1, 0, b8, 0.1, 0, 0.1, 0)
    with pytest.raises(RuntimeError, match="must match"):
        torch.ops.quantized.add(quantized(a8, 0.1, 0), quantized(torch.zeros(4, dtype=torch.uint8), 0.1, 0), 0.1, 0)
    with pytest.raises(ValueError, match="broadcast"):
        qa.add(a8, 0.1, 0, torch.zeros(4, dtype=torch.uint8), 0.1, 0, 0.1, 0)


def test_empty_and_zero_dimensional_tensors():
    for shape in [(0,), (0, 3), ()]:
        a = torch.full(shape, 7, dtype=torch.uint8)
        assert_same_ints(qa.add(a, 0.1, 3, a, 0.2, 1, 0.3, 5), torch_add(a, 0.1, 3, a, 0.2, 1, 0.3, 5, False))


U8 = torch.zeros(4, dtype=torch.uint8)


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        (
            {"a": torch.zeros(4)},
            TypeError,
            r"a must be a tensor of integer codes: torch.uint8 \(quint8\).*got torch.float32",
        ),
        ({"b": torch.zeros(4, dtype=torch.int16)}, TypeError, "b must be a tensor of integer codes"),
        ({"a": quantized(U8, 0.1, 0)}, TypeError, r"a quantized tensor \(pass its .int_repr\(\)\)"),
        ({"b": [1, 2]}, TypeError, "got list"),
        ({"b": torch.zeros(4, dtype=torch.int8)}, TypeError, "a and b must hold codes of one dtype"),
        ({"b": torch.zeros(3, dtype=torch.uint8)}, ValueError, r"shapes that broadcast.*\(4,\) and \(3,\)"),
        ({"a_scale": 0.0}, ValueError, "a_scale must be a finite positive number"),
        ({"b_scale": float("nan")}, ValueError, "b_scale must be a finite positive number"),
        ({"scale": float("inf")}, ValueError, "scale must be a finite positive number"),
        ({"scale": -0.1}, ValueError, "scale must be a finite positive number"),
        ({"a_zero_point": 256}, ValueError, r"a_zero_point must lie in \[0, 255\]"),
        ({"b_zero_point": -1}, ValueError, r"b_zero_point must lie in \[0, 255\]"),
        ({"zero_point": 1.5}, ValueError, "zero_point must be a whole number"),
        ({"relu": 1}, TypeError, "relu must be True or False"),
        ({"release": "2.12"}, ValueError, "qlib reproduces torch 2.13 and 2.14"),
        ({"vector_width": 0}, ValueError, "vector_width must be a positive int or None; got 0"),
        ({"threads": 1.0}, ValueError, "threads must be a positive int or None; got 1.0"),
    ],
)
def test_bad_input(kwargs, error, pattern):
    args = {"a": U8, "a_scale": 0.1, "a_zero_point": 0, "b": U8, "b_scale": 0.1, "b_zero_point": 0}
    args |= {"scale": 0.1, "zero_point": 0, **kwargs}
    with pytest.raises(error, match=pattern):
        qa.add(**args)


def test_zero_points_are_checked_against_the_codes_dtype():
    with pytest.raises(ValueError, match=r"zero_point must lie in \[-128, 127\]"):
        qa.add(torch.zeros(2, dtype=torch.int8), 0.1, 0, torch.zeros(2, dtype=torch.int8), 0.1, 0, 0.1, 128)
    big = torch.zeros(2, dtype=torch.int32)
    assert_same_ints(
        qa.add(big, 0.1, 2**31 - 1, big, 0.1, -(2**31), 0.1, 7),
        torch_add(big, 0.1, 2**31 - 1, big, 0.1, -(2**31), 0.1, 7, False),
    )
