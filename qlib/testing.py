"""Torch's side of every comparison: reference calls and assertions shared by qlib's tests and the book.

Each ``torch_*`` function builds the real torch module (or op) from integer codes and returns
its output codes, so that a test or a chapter can put ``qlib.linear(...)`` beside
``torch_linear(...)`` with the same arguments. ``assert_same_ints`` and ``assert_same_bits`` say
where two results first differ, and count what they compared in ``COMPARED``.

Explained on the book's API page (``book/api.md``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from collections import Counter
from types import TracebackType
from typing import cast

import torch

# Elements compared by assert_same_ints and assert_same_bits in this process (the tests print the total).
COMPARED: Counter[str] = Counter()

# The environment that makes torch's CPU kernels run as on a CPU with AVX2 and no AVX-512 (set before
# torch starts): FBGEMM, oneDNN, MKL and ATen's own vectorized kernels each read one of these.
AVX2_KERNELS = {
    "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "ATEN_CPU_CAPABILITY": "avx2",
}


def assert_same_ints(ours: torch.Tensor, theirs: torch.Tensor, context: str = "") -> None:
    """Integer tensors equal in dtype, shape and every value; else an error naming the first difference.

    >>> assert_same_ints(torch.tensor([1, 2]), torch.tensor([1, 2]))
    """
    assert ours.dtype == theirs.dtype, f"dtype {ours.dtype} != {theirs.dtype} {context}"
    assert ours.shape == theirs.shape, f"shape {ours.shape} != {theirs.shape} {context}"
    diff = (ours.long() != theirs.long()).nonzero()
    COMPARED["elements"] += ours.numel()
    if len(diff):
        i = tuple(diff[0].tolist())
        raise AssertionError(
            f"{len(diff)} of {ours.numel()} codes differ; first at {i}: qlib {ours[i].item()} "
            f"torch {theirs[i].item()} {context}"
        )


def assert_same_bits(ours: torch.Tensor, theirs: torch.Tensor, context: str = "") -> None:
    """float32 tensors equal bit for bit (so -0.0 != 0.0, and NaN == NaN of the same payload).

    >>> assert_same_bits(torch.tensor([0.5]), torch.tensor([0.5]))
    """
    assert ours.dtype == theirs.dtype == torch.float32, f"{ours.dtype} / {theirs.dtype} {context}"
    assert ours.shape == theirs.shape, f"shape {ours.shape} != {theirs.shape} {context}"
    a, b = ours.contiguous().view(torch.int32), theirs.contiguous().view(torch.int32)
    diff = (a != b).nonzero()
    COMPARED["elements"] += ours.numel()
    if len(diff):
        i = tuple(diff[0].tolist())
        raise AssertionError(
            f"{len(diff)} of {ours.numel()} floats differ; first at {i}: qlib {ours[i].item()!r} "
            f"torch {theirs[i].item()!r} {context}"
        )


def quantized_tensor(codes: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """torch's per-tensor quantized tensor holding integer ``codes`` (uint8: quint8, int8: qint8, int32: qint32).

    >>> quantized_tensor(torch.tensor([3], dtype=torch.uint8), 0.5, 1).dequantize()
    tensor([1.])
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch 2.14 deprecates the quantized dtypes
        return torch._make_per_tensor_quantized_tensor(codes.contiguous(), scale, zero_point)


def quantized_weight(codes: torch.Tensor, scale: float | torch.Tensor, zero_point: int | torch.Tensor) -> torch.Tensor:
    """torch's quantized weight from int8 codes: per output channel (axis 0) when ``scale`` is a tensor.

    >>> quantized_weight(torch.tensor([[2]], dtype=torch.int8), torch.tensor([0.5]), torch.tensor([0])).qscheme()
    torch.per_channel_affine
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if isinstance(scale, torch.Tensor):  # per channel: the zero points are a tensor too
            zero_points = cast(torch.Tensor, zero_point)
            return torch._make_per_channel_quantized_tensor(codes, scale.double(), zero_points.long(), 0)
        return torch._make_per_tensor_quantized_tensor(codes, scale, cast(int, zero_point))


class _Engine:
    """``with _Engine("fbgemm"):`` sets torch's quantized engine (weights are packed for it), then restores it."""

    def __init__(self, engine: str) -> None:
        self.engine = engine

    def __enter__(self) -> None:
        self.before = torch.backends.quantized.engine
        torch.backends.quantized.engine = self.engine
        self.warnings = warnings.catch_warnings()
        self.warnings.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.warnings.__exit__(exc_type, exc, traceback)
        torch.backends.quantized.engine = self.before


def torch_linear(
    x: torch.Tensor,
    x_scale: float,
    x_zero_point: int,
    weight: torch.Tensor,
    weight_scale: float | torch.Tensor,
    weight_zero_point: int | torch.Tensor,
    bias: torch.Tensor | None,
    scale: float,
    zero_point: int,
    relu: bool = False,
    engine: str = "x86",
) -> torch.Tensor:
    """``int_repr()`` of torch's quantized Linear (``relu``: LinearReLU), its weight packed on ``engine``.

    The arguments are :func:`qlib.linear`'s.

    >>> x = torch.tensor([[130, 140]], dtype=torch.uint8)
    >>> w = torch.tensor([[10, -20], [30, 40]], dtype=torch.int8)
    >>> torch_linear(x, 0.1, 128, w, 0.05, 0, torch.tensor([0.5, -0.5]), 0.2, 100)
    tensor([[ 97, 111]], dtype=torch.uint8)
    """
    from torch.ao.nn.intrinsic.quantized import LinearReLU
    from torch.ao.nn.quantized import Linear

    with _Engine(engine):
        n, k = weight.shape
        module = (LinearReLU if relu else Linear)(k, n)
        module.set_weight_bias(quantized_weight(weight, weight_scale, weight_zero_point), bias)
        module.scale, module.zero_point = scale, zero_point
        return module(quantized_tensor(x, x_scale, x_zero_point)).int_repr()


def torch_conv2d(
    x: torch.Tensor,
    x_scale: float,
    x_zero_point: int,
    weight: torch.Tensor,
    weight_scale: float | torch.Tensor,
    weight_zero_point: int | torch.Tensor,
    bias: torch.Tensor | None,
    scale: float,
    zero_point: int,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    relu: bool = False,
    engine: str = "x86",
) -> torch.Tensor:
    """``int_repr()`` of torch's quantized Conv2d (``relu``: ConvReLU2d), its weight packed on ``engine``.

    The arguments are :func:`qlib.conv2d`'s.

    >>> x = torch.tensor([[[[130, 140], [120, 255]]]], dtype=torch.uint8)
    >>> w = torch.tensor([[[[10, -20], [30, 40]]]], dtype=torch.int8)
    >>> torch_conv2d(x, 0.1, 128, w, 0.05, 3, torch.tensor([0.5]), 0.2, 100, engine="fbgemm")
    tensor([[[[208]]]], dtype=torch.uint8)
    """
    from torch.ao.nn.intrinsic.quantized import ConvReLU2d
    from torch.ao.nn.quantized import Conv2d

    with _Engine(engine):
        out_channels, in_per_group, kh, kw = weight.shape
        module = (ConvReLU2d if relu else Conv2d)(
            in_per_group * groups, out_channels, (kh, kw), stride, padding, dilation, groups, bias is not None
        )
        module.set_weight_bias(quantized_weight(weight, weight_scale, weight_zero_point), bias)
        module.scale, module.zero_point = scale, zero_point
        return module(quantized_tensor(x, x_scale, x_zero_point)).int_repr()


def torch_add(
    a: torch.Tensor,
    a_scale: float,
    a_zero_point: int,
    b: torch.Tensor,
    b_scale: float,
    b_zero_point: int,
    scale: float,
    zero_point: int,
    relu: bool = False,
) -> torch.Tensor:
    """``int_repr()`` of ``torch.ops.quantized.add`` (``relu``: ``add_relu``) on tensors with codes ``a``, ``b``.

    >>> one = torch.tensor([1], dtype=torch.uint8)
    >>> torch_add(one, 0.5, 0, one, 1.0, 0, 0.5, 0)
    tensor([3], dtype=torch.uint8)
    """
    op = torch.ops.quantized.add_relu if relu else torch.ops.quantized.add
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return op(
            quantized_tensor(a, a_scale, a_zero_point), quantized_tensor(b, b_scale, b_zero_point), scale, zero_point
        ).int_repr()


def torch_linear_dynamic(
    x: torch.Tensor,
    weight: torch.Tensor,
    weight_scale: float | torch.Tensor,
    weight_zero_point: int | torch.Tensor,
    bias: torch.Tensor | None,
    reduce_range: bool = True,
    relu: bool = False,
) -> torch.Tensor:
    """The float32 output of torch's dynamically quantized Linear (``relu``: LinearReLU) on float ``x``.

    ``reduce_range`` is the module's default (True); False calls the op with it off.

    >>> w = torch.tensor([[64, -64]], dtype=torch.int8)
    >>> torch_linear_dynamic(torch.tensor([[1.0, 0.5]]), w, 1 / 64, 0, None)
    tensor([[0.4961]])
    """
    from torch.ao.nn.intrinsic.quantized.dynamic import LinearReLU
    from torch.ao.nn.quantized.dynamic import Linear

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        n, k = weight.shape
        module = (LinearReLU if relu else Linear)(k, n)
        module.set_weight_bias(quantized_weight(weight, weight_scale, weight_zero_point), bias)
        if reduce_range:
            return module(x)
        op = torch.ops.quantized.linear_relu_dynamic if relu else torch.ops.quantized.linear_dynamic
        return op(x, module._packed_params._packed_params, False)


def capture(model: torch.nn.Module, x: torch.Tensor) -> dict[str, list[object]]:
    """Every submodule's outputs on ``x`` in torch, by module path, one entry per call.

    >>> outputs = capture(torch.nn.Sequential(torch.nn.ReLU()), torch.tensor([-1.0, 2.0]))
    >>> outputs["0"]
    [tensor([0., 2.])]
    """
    out: dict[str, list[object]] = {}
    hooks = [
        module.register_forward_hook(lambda m, i, o, name=name: out.setdefault(name, []).append(o))
        for name, module in model.named_modules()
        if name
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return out


def run_with_kernels(code: str, kernels: dict[str, str], timeout: float = 600) -> str:
    """Run Python ``code`` in a fresh interpreter with the environment variables ``kernels`` set; return what it printed.

    The variables that choose torch's CPU kernels (``AVX2_KERNELS`` names them) are read once, when torch
    starts, so a process can only run under other kernels from its beginning. An error in ``code`` raises
    ``RuntimeError`` with its output.

    >>> run_with_kernels("import os; print(os.environ['ONEDNN_MAX_CPU_ISA'])", {"ONEDNN_MAX_CPU_ISA": "AVX2"}).strip()
    'AVX2'
    """
    env = {**os.environ, **kernels, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=timeout)
    if done.returncode != 0:
        settings = " ".join(f"{name}={value}" for name, value in kernels.items())
        raise RuntimeError(f"the code failed under {settings}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done.stdout


def run_with_avx2_kernels(code: str, timeout: float = 600) -> str:
    """Run Python ``code`` in a fresh interpreter whose torch runs its AVX2 kernels; return what it printed.

    On a CPU with AVX-512 this shows what a CPU with AVX2 only computes (FBGEMM's saturating pairs,
    ATen's 256-bit vectors); on an AVX2-only CPU it changes nothing. An error in ``code`` raises
    ``RuntimeError`` with its output.

    >>> run_with_avx2_kernels("import torch; print(torch.backends.cpu.get_cpu_capability())").strip()
    'AVX2'
    """
    return run_with_kernels(code, AVX2_KERNELS, timeout)
