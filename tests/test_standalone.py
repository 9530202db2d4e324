"""Each public qlib name, written as one file by `python -m qlib.standalone`, works without qlib.

For every public name: its file is imported in a fresh interpreter in which `import qlib` fails,
runs a batch of calls built by the property tests' input builders (near ties, values past the
range, infinities, extreme scales, bad arguments), and must give results equal bit for bit to
qlib's and raise the same errors with the same messages. The file's own docstring examples run
there too.
"""

from __future__ import annotations

import ast
import dataclasses
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from inputs import mixed_values, nudge

import qlib
from qlib.standalone import generate, main

ROOT = Path(__file__).resolve().parent.parent

# Runs in the fresh interpreter (and, with module = qlib, in this one): every operation's result,
# or its error, made comparable.
DRIVER = textwrap.dedent(
    r"""
    import dataclasses, doctest, pickle, sys, warnings
    import torch

    warnings.filterwarnings("ignore")


    def normal(value):
        if isinstance(value, torch.Tensor):
            return ("tensor", str(value.dtype), tuple(value.shape), value.detach().contiguous().view(-1).view(torch.uint8).tolist())
        if isinstance(value, (list, tuple)):
            return (type(value).__name__, [normal(v) for v in value])
        if isinstance(value, dict):
            return ("dict", sorted((repr(k), normal(v)) for k, v in value.items()))
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            fields = {f.name: normal(getattr(value, f.name)) for f in dataclasses.fields(value)}
            return (type(value).__name__, str(value), fields)
        if isinstance(value, (int, float, str, bool, type(None), torch.dtype)):
            return ("value", repr(value))
        return ("other", type(value).__name__, str(value))


    def small_model(seed, extra=False):
        import torch.ao.quantization as tq
        from torch import nn

        torch.manual_seed(seed)
        layers = [tq.QuantStub(), nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 4)]
        layers += [nn.Upsample(scale_factor=2)] if extra else []
        float_model = nn.Sequential(*layers, tq.DeQuantStub()).eval()
        float_model.qconfig = tq.get_default_qconfig("fbgemm")
        torch.backends.quantized.engine = "fbgemm"
        prepared = tq.prepare(float_model)
        prepared(torch.randn(8, 3, 6, 6))
        return float_model, tq.convert(prepared), torch.randn(2, 3, 6, 6)


    def small_pt2e(seed, spread):
        # a convert_pt2e-shaped graph, written by hand (no executorch here): a per-channel conv + ReLU, then a mean
        import torch.ao.quantization.fx._decomposed  # noqa: F401  (PT2E's q/dq ops)
        from torch import nn

        Q = torch.ops.quantized_decomposed
        gen = torch.Generator().manual_seed(seed)
        fixed = lambda t: nn.Parameter(t, requires_grad=False)  # noqa: E731

        class Graph(nn.Module):
            def __init__(self):
                super().__init__()
                self.w = fixed(torch.randint(-127, 128, (6, 3, 3, 3), generator=gen, dtype=torch.int8))
                self.s = fixed(torch.rand(6, generator=gen) * 0.01 + 1e-3)
                self.zp = fixed(torch.zeros(6, dtype=torch.int64))
                self.b = fixed(torch.randn(6, generator=gen))

            def forward(self, x):
                q = Q.quantize_per_tensor(x, 0.03, -3, -128, 127, torch.int8)
                d = Q.dequantize_per_tensor(q, 0.03, -3, -128, 127, torch.int8)
                w = Q.dequantize_per_channel(self.w, self.s, self.zp, 0, -127, 127, torch.int8)
                y = torch.relu(nn.functional.conv2d(d, w, self.b, 1, 1))
                q = Q.quantize_per_tensor(y, 0.0131, -128, -128, 127, torch.int8)
                d = Q.dequantize_per_tensor(q, 0.0131, -128, -128, 127, torch.int8)
                q = Q.quantize_per_tensor(torch.mean(d, [-1, -2], keepdim=True), 0.0057, -101, -128, 127, torch.int8)
                return Q.dequantize_per_tensor(q, 0.0057, -101, -128, 127, torch.int8)

        return torch.fx.symbolic_trace(Graph()), torch.randn(16, 3, 8, 8, generator=gen) * spread


    def run(module, operations):
        results = []
        for kind, name, args, kwargs, batches in operations:
            try:
                if kind == "call":
                    result = getattr(module, name)(*args, **kwargs)
                elif kind == "attr":
                    result = getattr(module, name)
                elif kind == "report":  # Report(rows, ...) with rows given as Row fields
                    rows, rest = [module.Row(**fields) for fields in args[0]], args[1:]
                    result = module.Report(rows, *rest)
                elif kind == "model":  # run or compare on a small converted model built from a seed
                    float_model, model, x = small_model(*args)
                    result = getattr(module, name)(*((float_model, model, x) if name == "compare" else (model, x)), **kwargs)
                elif kind == "pt2e":  # compare_xnnpack on a hand-written PT2E graph built from a seed
                    graph, x = small_pt2e(*args)
                    result = getattr(module, name)(graph, x, **kwargs)
                elif kind == "grad":  # the result and the gradients of every tensor argument that wants one
                    args = [a.clone().requires_grad_() if want else a for a, want in zip(args, batches[1])]
                    result = getattr(module, name)(*args, **kwargs)
                    result.backward(batches[0])
                    result = (result.detach(), [a.grad for a, want in zip(args, batches[1]) if want])
                elif kind == "fakequant":  # a FakeQuantize fed batches, switches flipped between them
                    observer = getattr(module, kwargs.pop("observer"))
                    fq = getattr(module, name)(observer, *args, **kwargs)
                    result = []
                    for x, observer_on, fake_quant_on in batches:
                        fq.enable_observer(observer_on)
                        fq.enable_fake_quant(fake_quant_on)
                        x = x.clone().requires_grad_()
                        y = fq(x)
                        y.backward(torch.ones_like(y))
                        result.append((y.detach(), x.grad, fq.scale, fq.zero_point, fq.min_val, fq.max_val))
                    result.append(fq.calculate_qparams())
                elif kind == "observe":
                    observer = getattr(module, name)(*args, **kwargs)
                    for batch in batches:
                        observer(batch)
                    state = {key: getattr(observer, key) for key in ("min_val", "max_val", "histogram") if hasattr(observer, key)}
                    result = (observer.calculate_qparams(), state)
                results.append(("ok", normal(result)))
            except Exception as error:
                results.append(("error", type(error).__name__, str(error)))
        return results


    if __name__ == "__main__":
        folder, operations_file, results_file = sys.argv[1:]
        sys.modules["qlib"] = None  # any import of qlib now fails
        sys.path.insert(0, folder)
        with open(operations_file, "rb") as f:
            jobs = pickle.load(f)  # module name -> operations
        out = {}
        for module_name, operations in jobs.items():
            module = __import__(module_name)
            failed, _ = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
            out[module_name] = {"doctest_failures": failed, "results": run(module, operations)}
        with open(results_file, "wb") as f:
            pickle.dump(out, f)
    """
)

F32, F64 = torch.float32, torch.float64
SCALES = [0.01696838, 0.0180064, 0.00214854861, 1.0, 2.0**-12, 1e-25, 1e25, 1 / 3, 0.1277553737]


def values(scale: float, seed: int, k_range: int = 300, extremes: bool = True) -> torch.Tensor:
    return mixed_values(scale, 200, k_range, seed, extremes)


def operations(name: str) -> list[tuple]:
    """The calls each public name is checked with: the property tests' kinds of input, and bad ones."""
    ops: list[tuple] = []

    def call(*args, **kwargs):
        ops.append(("call", name, args, kwargs, []))

    def observe(*batches, **kwargs):
        ops.append(("observe", name, (), kwargs, list(batches)))

    channel_x = torch.stack([values(s, 10 + c, extremes=False)[:120] for c, s in enumerate(SCALES[:4])])
    channel_scales = torch.tensor(SCALES[:4], dtype=F64)
    if name == "quantize":
        for i, scale in enumerate(SCALES):
            for dtype, zp in [(torch.quint8, 129), (torch.quint8, 200), (torch.qint8, -5), (torch.qint32, 1001)]:
                for release in (None, "2.13", "2.14"):
                    call(values(scale, i), scale, zp, dtype, release=release)
            call(values(scale, i, 20), scale, 5, torch.quint4x2)
        for release in ("2.13", "2.14"):
            call(channel_x, channel_scales, torch.tensor([0, 35, 129, 255]), torch.quint8, axis=0, release=release)
        call(torch.tensor([float("nan")]), 0.1, 0, torch.quint8)
        call(torch.tensor([1.0], dtype=F64), 0.1, 0, torch.quint8)
        call(torch.tensor([1.0]), 0.0, 0, torch.quint8)
        call(torch.tensor([1.0]), 0.1, 300, torch.quint8)
        call(torch.tensor([1.0]), 0.1, 0, torch.float16)
        call(torch.tensor([1.0]), 0.1, 0, torch.quint8, release="2.12")
    elif name == "dequantize":
        for i, scale in enumerate(SCALES):
            for dtype, zp in [(torch.quint8, 129), (torch.qint8, -5), (torch.qint32, 1001)]:
                codes = qlib.quantize(values(scale, i), scale, zp, dtype)
                call(codes, scale, zp)
        codes = qlib.quantize(channel_x, channel_scales, torch.tensor([0, 35, 129, 255]), torch.quint8, axis=0)
        call(codes, channel_scales, torch.tensor([0, 35, 129, 255]), axis=0)
        call(torch.tensor([1.0]), 0.1, 0)
        call(torch.tensor([1], dtype=torch.uint8), 0.1, 256)
    elif name == "fake_quantize":
        for i, scale in enumerate(SCALES):
            for lo, hi, zp in [(0, 255, 129), (0, 127, 40), (-128, 127, -5)]:
                call(values(scale, i), scale, zp, lo, hi)
        call(channel_x, channel_scales.float(), torch.tensor([0, 35, 129, 255], dtype=torch.int32), 0, 255, axis=0)
        call(torch.tensor([1.0]), 0.1, 0, 10, 5)
        call(torch.tensor([float("nan")]), 0.1, 0, 0, 255)
    elif name == "explain":
        for i, scale in enumerate(SCALES[:5]):
            x = values(scale, i, extremes=False)
            for manual in (torch.round(x / scale) + 129, torch.round(x.double() / scale + 129)):
                for release in ("2.13", "2.14"):
                    reference = qlib.quantize(x, scale, 129, torch.quint8, release=release)
                    call(x, manual, reference, scale, 129, torch.quint8, release=release)
        call(torch.tensor([0.5]), torch.tensor([1.5]), torch.tensor([1], dtype=torch.uint8), 0.1, 0, torch.quint8)
        call(torch.tensor([0.5]), torch.tensor([1]), torch.tensor([1.0]), 0.1, 0, torch.quint8)
    elif name == "explain_layer":
        ops.extend(explain_layer_operations())
    elif name in ("choose_qparams", "observer_range", "qrange"):
        if name == "choose_qparams":
            for lo, hi in [(-0.71688455, 1.57104063), (0.0, 0.0), (-257.0, 0.0), (1e-30, 2e-30), (-3e38, 3e38)]:
                for dtype in (torch.quint8, torch.qint8, torch.qint32):
                    call(lo, hi, dtype)
                    call(lo, hi, dtype, symmetric=True)
                    call(lo, hi, dtype, reduce_range=dtype != torch.qint32)
            call(torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 2.0]), torch.qint8, symmetric=True)
            call(1.0, -1.0)
            call(float("nan"), 1.0)
        elif name == "observer_range":
            call(torch.quint8, True)
            call(torch.qint8, True, quant_min=-15, quant_max=15)
            call(torch.qint8, quant_min=1, quant_max=15)
        else:
            for dtype in (torch.quint8, torch.qint8, torch.qint32, torch.quint4x2, torch.int16):
                call(dtype)
            call(torch.qint8, reduce_range=True)
            call(torch.qint32, reduce_range=True)
            call(torch.float32)
    elif name == "relu":
        call(torch.arange(256, dtype=torch.uint8), 128)
        call(torch.arange(-128, 128, dtype=torch.int8), -3)
        call(torch.tensor([1.0]), 0)
    elif name == "float32_reciprocal":
        for scale in SCALES:
            call(scale)
    elif name == "fma_float32":
        for i, scale in enumerate(SCALES[:5]):
            call(values(scale, i), qlib.float32_reciprocal(scale), 129)
    elif name == "torch_release":
        for release in (None, "2.13", "2.14.1+cpu", "2.15", 2.14):
            call(release)
    elif name == "probe":
        call(release_only=True)
    elif name in ("MinMaxObserver", "MovingAverageMinMaxObserver", "HistogramObserver"):
        gen = torch.Generator().manual_seed(1)
        batches = [torch.randn(1000, generator=gen) * k for k in (1.0, 3.0, 0.5)]
        observe(*batches)
        observe(*batches, reduce_range=True)
        observe(*batches, dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
        observe(torch.tensor([float("nan"), 1.0]))
        observe(dtype=torch.float16)
    elif name in ("PerChannelMinMaxObserver", "MovingAveragePerChannelMinMaxObserver"):
        gen = torch.Generator().manual_seed(2)
        batches = [torch.randn(4, 50, generator=gen) * k for k in (1.0, 2.0)]
        observe(*batches)
        observe(*batches, ch_axis=1, dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
        observe(*batches, ch_axis=5)
    elif name in ("Row", "Report", "Probe"):
        x = values(0.0180064, 3, extremes=False)
        report = qlib.explain(
            x,
            torch.round(x / 0.0180064) + 40,
            qlib.quantize(x, 0.0180064, 40, torch.quint8),
            0.0180064,
            40,
            torch.quint8,
        )
        if name == "Row":
            for row in report.rows[:5]:
                call(**{f.name: getattr(row, f.name) for f in dataclasses.fields(row)})
        elif name == "Report":
            rows = [{f.name: getattr(row, f.name) for f in dataclasses.fields(row)} for row in report.rows]
            ops.append(("report", name, (rows, report.counts, report.numel, report.setting, 0, report.release), {}, []))
            ops.append(("report", name, ([], report.counts, 7, "setting", 2, "2.14"), {}, []))
        else:
            found = qlib.probe(release_only=True)
            call(**{f.name: getattr(found, f.name) for f in dataclasses.fields(found)})
            call("2.15.0", "cuda", "aarch64", "DEFAULT", {"per tensor quint8": []})
    elif name in ("linear", "linear_dynamic"):
        gen = torch.Generator().manual_seed(3)
        for k, per_channel in ((1, False), (37, True), (600, False)):
            x8 = torch.randint(0, 256, (5, k), generator=gen, dtype=torch.uint8)
            w = torch.randint(-128, 128, (7, k), generator=gen).to(torch.int8)
            sw = torch.empty(7).uniform_(0.001, 0.02, generator=gen) if per_channel else 0.01
            zw = torch.zeros(7, dtype=torch.long) if per_channel else 0
            bias = torch.randn(7, generator=gen)
            for saturate in (True, False):
                if name == "linear":
                    call(x8, 0.02, 131, w, sw, zw, bias, 0.07, 77, k % 2 == 1, pairs_saturate=saturate)
                    engine = "qnnpack" if saturate else "fbgemm"
                    call(x8, 0.02, 131, w, sw, zw, bias, 0.07, 77, k % 2 == 0, engine=engine)
                    call(x8, 0.02, 131, w, sw, zw, bias, 0.07, 77, k % 2 == 0, engine="onednn", pairs_saturate=saturate)
                    isa = "avx512_core" if saturate else "amx"
                    call(x8, 0.02, 131, w, sw, zw, bias, 0.07, 77, k % 2 == 1, engine="onednn", isa=isa)
                else:
                    xf = torch.randn(5, k, generator=gen)
                    call(xf, w, sw, zw, bias, k % 2 == 0, True, pairs_saturate=saturate)
                    call(xf, w, sw, zw, None, True, False, pairs_saturate=saturate, release="2.13")
        if name == "linear":
            call(torch.zeros(2, 3), 0.1, 0, torch.zeros(4, 3, dtype=torch.int8), 0.1, 0, None, 0.1, 0)
            zeros, weight = torch.zeros(2, 3, dtype=torch.uint8), torch.zeros(4, 3, dtype=torch.int8)
            call(zeros, 0.1, 0, weight, 0.1, 0, None, 0.1, 0, engine="onednn")
            call(zeros, 0.1, 0, weight, 0.1, 2, None, 0.1, 0, engine="onednn")
            call(zeros, 0.1, 0, weight, 0.1, 0, None, 0.1, 0, engine="x86", isa="avx2")
            call(zeros, 0.1, 0, weight, 0.1, 0, None, 0.1, 0, engine="onednn", isa="AVX2")
            call(zeros, 0.1, 0, weight, 0.1, 0, None, 0.1, 0, pairs_saturate=False, engine="qnnpack")
            call(zeros, 1e-20, 0, weight, 1e-20, 0, None, 1.0, 0, engine="qnnpack")
        else:
            call(torch.tensor([[float("inf")]]), torch.zeros(1, 1, dtype=torch.int8), 0.1, 0, None)
    elif name in ("conv2d", "conv2d_kernel"):
        gen = torch.Generator().manual_seed(4)
        layers = [  # im2col, depthwise, groupwise, pointwise, and im2col with groups and dilation
            (6, 7, 1, (3, 3), 1, 1, 1),
            (16, 16, 16, (3, 3), 1, 1, 1),
            (16, 16, 4, (3, 3), 2, 1, 1),
            (9, 5, 1, (1, 1), 1, 0, 1),
            (6, 8, 2, (5, 5), 2, 2, 2),
        ]
        for c, n_out, groups, kernel, stride, padding, dilation in layers:
            if name == "conv2d_kernel":
                for saturate in (None, True, False):
                    for engine, symmetric in (("x86", True), ("fbgemm", False)):
                        args = (c, n_out, kernel, (stride, stride), (padding, padding), (dilation, dilation))
                        call(*args, groups, symmetric, engine=engine, pairs_saturate=saturate)
                continue
            x8 = torch.randint(0, 256, (2, c, 9, 8), generator=gen, dtype=torch.uint8)
            w = torch.randint(-128, 128, (n_out, c // groups, *kernel), generator=gen).to(torch.int8)
            sw = torch.empty(n_out).uniform_(0.001, 0.02, generator=gen)
            zw = torch.randint(-5, 6, (n_out,), generator=gen)
            bias = torch.randn(n_out, generator=gen)
            for saturate in (True, False):
                for release in ("2.13", "2.14"):
                    conv = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
                    call(
                        x8,
                        0.02,
                        131,
                        w,
                        sw,
                        zw,
                        bias,
                        0.07,
                        77,
                        **conv,
                        relu=saturate,
                        pairs_saturate=saturate,
                        engine="fbgemm",
                        release=release,
                    )
                    call(
                        x8,
                        0.02,
                        131,
                        w,
                        0.01,
                        3,
                        bias,
                        0.07,
                        77,
                        **conv,
                        pairs_saturate=saturate,
                        engine="x86",
                        release=release,
                    )
                    call(x8, 0.02, 131, w, 0.01, 0, bias, 0.07, 77, **conv, pairs_saturate=saturate, engine="x86")
        onednn_layers = [  # oneDNN's kernels: brgemm, strided 1x1, depthwise, small groups, ref, one input channel
            (6, 7, 1, (3, 3), 1, 1, 1),
            (9, 5, 1, (1, 1), 2, 0, 1),
            (16, 16, 16, (3, 3), 1, 1, 1),
            (16, 16, 4, (3, 3), 2, 1, 1),
            (8, 8, 2, (1, 1), 1, 0, 1),
            (6, 8, 2, (3, 3), 1, 1, 2),
            (1, 16, 1, (3, 3), 1, 1, 1),
        ]
        for c, n_out, groups, kernel, stride, padding, dilation in onednn_layers:
            conv = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
            x8 = torch.randint(0, 256, (2, c, 9, 8), generator=gen, dtype=torch.uint8)
            w = torch.randint(-128, 128, (n_out, c // groups, *kernel), generator=gen).to(torch.int8)
            sw = torch.empty(n_out).uniform_(0.001, 0.02, generator=gen)
            bias = torch.randn(n_out, generator=gen)
            for isa in (None, "avx512_core_vnni", "avx512_core", "avx2_vnni", "avx2", "sse41", "amx"):
                if name == "conv2d_kernel":
                    args = (c, n_out, kernel, (stride, stride), (padding, padding), (dilation, dilation), groups, True)
                    call(*args, engine="onednn", isa=isa, input_size=(9, 8), batch=2)
                    continue
                zeros = torch.zeros(n_out, dtype=torch.long)
                call(x8, 0.02, 131, w, sw, zeros, bias, 0.07, 77, **conv, relu=isa is None, engine="onednn", isa=isa)
            if name == "conv2d":
                call(x8, 0.02, 131, w, 0.01, 0, None, 0.07, 77, **conv, engine="onednn", pairs_saturate=True)
                call(x8, 0.02, 131, w, 0.01, 3, None, 0.07, 77, **conv, engine="onednn")
                call(x8, 0.02, 131, w, 0.01, 0, None, 0.07, 77, **conv, engine="fbgemm", isa="avx2")
        if name == "conv2d":
            zeros, weight = torch.zeros(1, 4, 5, 5, dtype=torch.uint8), torch.zeros(6, 2, 3, 3, dtype=torch.int8)
            call(zeros.float(), 0.1, 0, weight, 0.1, 0, None, 0.1, 0, groups=2, engine="fbgemm")
            call(zeros, 0.1, 0, weight, 0.1, 0, None, 0.1, 0, groups=3, engine="fbgemm")
            call(zeros, 0.1, 0, weight, 0.1, 0, None, 0.1, 0, groups=2, engine="qnnpack")
            call(zeros[:, :, :2, :2], 0.1, 0, weight, 0.1, 0, None, 0.1, 0, groups=2, engine="fbgemm")
            call(
                torch.zeros(1, 18, 6, 6, dtype=torch.uint8),
                0.1,
                0,
                torch.zeros(18, 2, 3, 3, dtype=torch.int8),
                0.1,
                1,
                None,
                0.1,
                0,
                padding=1,
                groups=9,
                pairs_saturate=False,
                engine="fbgemm",
            )
    elif name in ("run", "compare"):
        for saturate in (True, False):
            ops.append(("model", name, (5,), {"pairs_saturate": saturate}, []))
        ops.append(("model", name, (6, True), {}, []))  # an Upsample: not modelled
    elif name == "compare_xnnpack":
        for seed, spread in ((1, 1.0), (2, 4.0), (3, 0.3)):
            ops.append(("pt2e", name, (seed, spread), {}, []))
        ops.append(("pt2e", name, (4, 2.0), {"tie_within": 0.2}, []))
        ops.append(("pt2e", name, (4, 2.0), {"tie_within": 0.7}, []))
    elif name == "explain_xnnpack":
        gen = torch.Generator().manual_seed(31)
        x8 = torch.randint(-128, 128, (5, 33), generator=gen, dtype=torch.int8)
        w8 = torch.randint(-127, 128, (7, 33), generator=gen, dtype=torch.int8)
        img = torch.randint(-128, 128, (2, 4, 6, 5), generator=gen, dtype=torch.int8)
        kernel = torch.randint(-127, 128, (6, 4, 3, 3), generator=gen, dtype=torch.int8)
        scales, bias = torch.rand(7, generator=gen) * 0.01 + 1e-3, torch.randn(7, generator=gen)
        one = torch.tensor([[1]], dtype=torch.int8)
        call(one, 0.5, 0, one, 0.5, torch.tensor([0.3]), 1.0, 0, (0, 0))  # a tie the int32 bias moves across
        for index in ((0, 0), (4, 6), (2, -1)):
            call(x8, 0.02, -1, w8, scales, bias, 0.07, 9, index)
            call(x8, 0.02, 5, w8, 0.003, bias, 0.01, -128, index, output_min=0.0)
        call(img, 0.05, 3, kernel, scales[:6], bias[:6], 0.2, -7, (1, 5, 2, 3), padding=1)
        call(img, 0.05, 3, kernel, 0.01, None, 0.2, 1, (0, 0, 0, 0), stride=2, output_min=0.0, output_max=6.0)
        call(x8, 0.02, -1, w8, scales, bias, 0.07, 9, (5, 0))
        call(x8.float(), 0.02, -1, w8, scales, bias, 0.07, 9, (0, 0))
    elif name == "Activation":
        call("fc", "Linear", torch.tensor([3, 200], dtype=torch.uint8), 0.1, 7)
    elif name == "Run":
        call({})
    elif name in ("Comparison", "LayerComparison"):
        layer = qlib.LayerComparison("fc", "Linear", 31.7, 0.0115, False, 3, 20)
        call(*[getattr(layer, f.name) for f in dataclasses.fields(layer)]) if name == "LayerComparison" else call([])
    elif name == "choose_qparams_dynamic":
        for lo, hi in [(-1.0, 2.0), (0.0, 1e-3), (-1e-3, 0.0), (-1e-6, 2e-6), (0.0, 0.0), (-3e38, 3e38)]:
            call(lo, hi)
            call(lo, hi, True)
        call(1.0, -1.0)
    elif name == "add":
        gen = torch.Generator().manual_seed(4)
        for dtype, lo, hi, zp in (
            (torch.uint8, 0, 256, 129),
            (torch.int8, -128, 128, -5),
            (torch.int32, -3000, 3000, 1001),
        ):
            a = torch.randint(lo, hi, (3, 70), generator=gen).to(dtype)
            b = torch.randint(lo, hi, (3, 70), generator=gen).to(dtype)
            for release in (None, "2.13", "2.14"):
                call(a, 0.1, zp, b, 0.1, zp, 0.2, zp | 1, release=release)
            call(a, 0.1, zp, b[:, :1], 0.05, 0, 0.3, 1, True)  # b broadcast along rows
            call(a.t(), 0.1, zp, b.t(), 0.1, zp, 0.2, 1)  # strided rows: all scalar tail
        ties = torch.full((70,), 1, dtype=torch.uint8)
        call(ties, 0.5, 0, ties, 1.0, 1, 1.0, 1, release="2.13")
        call(ties, 0.5, 0, ties, 1.0, 1, 1.0, 1, release="2.13", vector_width=64)
        big = torch.randint(0, 256, (2**16 + 5,), generator=gen).to(torch.uint8)
        call(big, 0.1, 3, big, 0.1, 3, 0.2, 0, threads=2)
        call(ties * 255, 8e37, 0, ties * 0, 8e37, 255, 0.1, 128)  # inf - inf = NaN
        call(torch.zeros(3), 0.1, 0, torch.zeros(3), 0.1, 0, 0.1, 0)
        call(ties, 0.1, 0, ties.to(torch.int8), 0.1, 0, 0.1, 0)
        call(ties, 0.1, 0, ties[:3], 0.1, 0, 0.1, 0)
        call(ties, 0.1, 300, ties, 0.1, 0, 0.1, 0)
        call(ties, 0.1, 0, ties, 0.1, 0, 0.1, 0, vector_width=0)
    elif name in ("quantize_pt2e", "dequantize_pt2e"):
        for i, scale in enumerate(SCALES):
            for dtype, lo, hi, zp in [
                (torch.uint8, 0, 255, 129),
                (torch.uint8, 0, 127, 40),
                (torch.int8, -128, 127, -5),
                (torch.int32, -(2**31), 2**31 - 1, 1001),
            ]:
                codes = qlib.quantize_pt2e(values(scale, i), scale, zp, lo, hi, dtype)
                call(values(scale, i), scale, zp, lo, hi, dtype) if name == "quantize_pt2e" else call(codes, scale, zp)
        zps = torch.tensor([0, 35, 129, 255])
        for scales in (channel_scales, channel_scales.float()):
            if name == "quantize_pt2e":
                call(channel_x, scales, zps, 0, 255, torch.uint8, 0)
            else:
                call(qlib.quantize_pt2e(channel_x, scales, zps, 0, 255, torch.uint8, 0), scales, zps, 0)
                call(torch.zeros(4, 3, dtype=torch.int8), scales, None, 0)
        call(torch.tensor([float("nan")]), 0.1, 0, 0, 255, torch.uint8)
        call(torch.tensor([1.0]), 0.1, 0, 0, 255, torch.quint8)
        call(torch.tensor([1.0]), 0.1, 0, 10, 5, torch.uint8)
        call(torch.tensor([1], dtype=torch.uint8), 0.1, None)
    elif name in ("choose_qparams_affine", "quantize_affine", "dequantize_affine"):
        gen = torch.Generator().manual_seed(5)
        x = torch.randn(6, 40, generator=gen) * torch.tensor([1e-6, 0.1, 1.0, 3.0, 100.0, 1e4]).view(6, 1)
        x[0, :2] = torch.tensor([float("inf"), -float("inf")]) if name != "choose_qparams_affine" else x[0, :2]
        for dtype in (torch.uint8, torch.int8, torch.int32):
            for mapping in ("symmetric", "asymmetric"):
                for block, eps in (((1, 40), None), ((6, 40), 2**-12), ((2, 20), torch.finfo(F32).eps)):
                    scale, zp = qlib.choose_qparams_affine(x.nan_to_num(0.0), mapping, block, dtype, eps=eps)
                    codes = qlib.quantize_affine(x, block, scale, zp, dtype)
                    if name == "choose_qparams_affine":
                        call(x, mapping, block, dtype, eps=eps)
                        call(x, mapping, block, dtype, -100 if dtype == torch.int8 else None, None, eps, F32, dtype)
                    elif name == "quantize_affine":
                        call(x, block, scale, zp, dtype)
                        call(x, block, scale, zp, dtype, 0 if dtype == torch.uint8 else None, 100)
                    else:
                        call(codes, block, scale, zp, dtype)
                        call(codes, block, scale, None, dtype)
        call(torch.zeros(2, 3), "symmetric", (1, 3), torch.int8, eps=0.0)
        call(torch.zeros(2, 3), "maybe", (1, 3), torch.int8)
        call(torch.zeros(2, 3), (1, 2), torch.ones(2), torch.zeros(2), torch.int8)
        call(torch.zeros(2, 3, dtype=torch.int8), (1, 3), torch.ones(2), None, torch.uint8)
    elif name in ("fake_quantize_ste", "fake_quantize_mask", "fake_quantize_learnable"):
        for i, scale in enumerate(SCALES[:6]):
            x = values(scale, i)
            dy = torch.linspace(-2.0, 2.0, x.numel())
            for lo, hi, zp in [(0, 255, 129), (0, 127, 40), (-128, 127, -5)]:
                if name == "fake_quantize_mask":
                    call(x, scale, zp, lo, hi)
                elif name == "fake_quantize_ste":
                    ops.append(("grad", name, (x, scale, zp, lo, hi), {}, [dy, [True, False, False, False, False]]))
                else:
                    s, z = torch.tensor([scale]), torch.tensor([float(zp)])
                    for fma in (True, False):
                        kwargs = {"grad_factor": 0.5, "fma": fma}
                        ops.append(("grad", name, (x, s, z, lo, hi), kwargs, [dy, [True, True, True, False, False]]))
        zps = torch.tensor([0, 35, 129, 255], dtype=torch.int32)
        if name == "fake_quantize_mask":
            call(channel_x, channel_scales.float(), zps, 0, 255, 0)
        elif name == "fake_quantize_ste":
            args = (channel_x, channel_scales.float(), zps, 0, 255, 0)
            ops.append(("grad", name, args, {}, [torch.ones_like(channel_x), [True] + [False] * 5]))
        call(torch.tensor([1.0]), 0.1, 0, 10, 5)
        call(torch.tensor([float("nan")]), 0.1, 0, 0, 255)
    elif name == "choose_qparams_fused":
        for lo, hi in [(-0.71688455, 1.57104063), (0.0, 0.0), (1e-30, 2e-30), (-3e38, 3e38), (0.5, 2.0), (-3.0, -1.0)]:
            for qmin, qmax in ((0, 255), (0, 127), (-128, 127)):
                for symmetric in (False, True):
                    call(torch.tensor(lo), torch.tensor(hi), qmin, qmax, symmetric)
        call(torch.tensor([-1.0, 0.0, 2.0]), torch.tensor([1.0, 1e-7, 3.0]), -128, 127, True)
        call(torch.tensor(1.0), torch.tensor(-1.0), 0, 255)
    elif name == "cpu_contracts_fma":
        call()
    elif name == "FakeQuantize":
        gen = torch.Generator().manual_seed(6)
        steps = [
            (torch.randn(4, 30, generator=gen) * k, observer_on, fake_quant_on)
            for k, observer_on, fake_quant_on in ((1.0, True, True), (3.0, True, False), (0.5, False, True))
        ]
        steps.append((values(0.02, 7)[:240].view(4, -1), False, True))
        settings = [
            ("MovingAverageMinMaxObserver", (0, 255), {"fused": True, "reduce_range": True}),
            ("MovingAverageMinMaxObserver", (0, 255), {}),
            ("MinMaxObserver", (), {"dtype": torch.qint8, "qscheme": torch.per_tensor_symmetric}),
            ("HistogramObserver", (0, 127), {}),
            (
                "MovingAveragePerChannelMinMaxObserver",
                (-128, 127),
                {"fused": True, "dtype": torch.qint8, "qscheme": torch.per_channel_symmetric},
            ),
            ("PerChannelMinMaxObserver", (), {"ch_axis": 1, "qscheme": torch.per_channel_affine}),
        ]
        for observer, qrange_args, kwargs in settings:
            ops.append(("fakequant", name, qrange_args, {"observer": observer, **kwargs}, steps))
        ops.append(("fakequant", name, (), {"observer": "HistogramObserver", "fused": True}, steps))
    elif name == "pairs_saturate_here":
        call()
    elif name in OPERATOR_CALLS:
        ops.extend(("call", name, args, kwargs, []) for args, kwargs in OPERATOR_CALLS[name]())
    elif name == "SUPPORTED_RELEASES":
        ops.append(("attr", name, (), {}, []))
    else:
        raise AssertionError(f"no operations for qlib.{name}: add them to tests/test_standalone.py")
    return ops


def operator_codes(seed: int) -> list[tuple[torch.Tensor, int]]:
    """Codes in the layouts the operators' kernels choose by, each with a zero point: quint8 and qint8, contiguous,
    channels-last, a strided view, (N, C, 1, 1) and 3-d; ties and the ends of the range among them."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (2, 19, 7, 6), generator=gen).to(torch.uint8)
    x[0, :, 0] = 255
    x[1, :, 1] = 0
    signed = (x.int() - 128).to(torch.int8)
    return [
        (x, 129),
        (x.contiguous(memory_format=torch.channels_last), 3),
        (x.transpose(2, 3), 1),
        (x[:, :, :1, :1], 129),
        (x[0], 0),
        (signed.contiguous(memory_format=torch.channels_last), -3),
        (signed, 127),
    ]


def _pool_calls(name: str) -> list[tuple[tuple, dict]]:
    calls: list[tuple[tuple, dict]] = []
    for codes, zp in operator_codes(11):
        for release in ("2.13", "2.14"):
            if name == "max_pool2d":
                calls += [((codes, 3, 2, 1, 1, True), {}), ((codes, (2, 3), None, (1, 0), 2), {})]
            elif name == "avg_pool2d":
                for capability in ("AVX2", "AVX512"):
                    kwargs = {"release": release, "capability": capability}
                    calls += [((codes, 0.5, zp, 2), kwargs), ((codes, 0.1, zp, 3, 1, 1, True, False), kwargs)]
                    calls.append(((codes, 1 / 3, zp, (2, 3), 1, (1, 0), False, True, 5), kwargs))
            elif name == "adaptive_avg_pool2d":
                calls += [((codes, 0.5, zp, 1), {"release": release}), ((codes, 0.5, zp, (3, 2)), {"release": release})]
            else:
                for dim, keepdim in (((2, 3), False), ((-1,), True), (None, False), ((1,), False)):
                    if codes.dim() == 4 or dim != (2, 3):
                        calls.append(((codes, 0.5, zp, dim, keepdim), {"release": release}))
        if codes.dim() == 4 and codes.dtype == torch.uint8:
            qnnpack = {"engine": "qnnpack"}
            calls += {
                "max_pool2d": [((codes, 3, 1, 1), qnnpack), ((codes, 2, 1, 0, 2), qnnpack), ((codes, 1), qnnpack)],
                "avg_pool2d": [((codes, 0.0473, zp, (2, 3), 1, (1, 0)), qnnpack)],
                "adaptive_avg_pool2d": [((codes, 0.0473, zp, (1, 2)), qnnpack)],
                "mean": [((codes, 0.0473, zp, (2, 3), True), qnnpack)],
            }[name]
    bad = torch.zeros(1, 1, 4, 4)
    calls += (
        [((bad, 0.1, 0, 2), {}), ((bad.to(torch.uint8), 0.1, 300, 2), {})] if name != "max_pool2d" else [((bad, 2), {})]
    )
    return calls


def _activation_calls(name: str) -> list[tuple[tuple, dict]]:
    calls: list[tuple[tuple, dict]] = []
    ramp = torch.arange(256, dtype=torch.uint8).repeat(3)[:700]
    cases = operator_codes(12) + [
        (ramp, 1),
        (ramp[:672].view(1, 42, 4, 4).contiguous(memory_format=torch.channels_last), 3),
    ]
    for codes, zp in cases:
        for release in ("2.13", "2.14"):
            for scale in (0.5, 0.0173):
                kwargs = {"release": release}
                out_zp = 3 if codes.dtype == torch.uint8 else -5
                if name == "hardswish":
                    calls += [((codes, scale, zp, 0.011, out_zp), {**kwargs, "threads": 1})]
                    calls += [((codes, scale, zp, 0.5, out_zp), {**kwargs, "threads": 2})]
                elif name == "hardsigmoid":
                    calls.append(((codes, scale, zp), kwargs))
                elif name == "sigmoid":
                    calls += [((codes, scale, zp), kwargs), ((codes, scale, zp, 0.02, out_zp), kwargs)]
                else:
                    calls += [((codes, scale, zp, -0.75, 2.5), kwargs), ((codes, scale, zp, 0.0, 6.0), kwargs)]
                    calls += [
                        ((codes, scale, zp, None, 1.5 * scale), kwargs),
                        ((codes, scale, zp, 0.25 * scale), kwargs),
                    ]
        if codes.dtype == torch.uint8 and name in ("hardswish", "clamp", "sigmoid"):
            args = {
                "hardswish": (codes, 0.5, zp, 0.031, 9),
                "clamp": (codes, 0.5, zp, 0.0, 6.0),
                "sigmoid": (codes, 0.5, zp, 0.02, 0),
            }
            calls.append((args[name], {"engine": "qnnpack"}))
    calls += [((torch.zeros(3), 0.1, 0, 0.1, 0), {}), ((torch.zeros(3, dtype=torch.uint8), 0.1, 0), {})]
    return calls


def _functional_calls(name: str) -> list[tuple[tuple, dict]]:
    calls: list[tuple[tuple, dict]] = []
    cases = operator_codes(13)
    for (a, za), (b, zb) in zip(cases, cases[1:] + cases[:1], strict=True):
        for release in ("2.13", "2.14"):
            kwargs = {"release": release}
            if name == "mul" and a.dtype == b.dtype:
                calls.append(
                    ((a, 0.1, za, b, 0.05, zb, 0.2, 7 if a.dtype == torch.uint8 else -7, release == "2.13"), kwargs)
                )
                if a.dim() == 4:
                    calls.append(((a[:, :, :1, :1], 100.0, 0, a, 100.0, 0, 1e-3, 0), {"threads": 1}))
            elif name == "cat" and a.dtype == b.dtype and a.dim() == b.dim():
                if a.shape[2:] == b.shape[2:]:
                    for dim in (1, -3):
                        for relu in (False, True):
                            calls.append((([(a, 0.5, za), (b, 0.25, zb), (a, 1.0, 1)], dim, 1.0, 1, relu), kwargs))
                if a.shape == b.shape:
                    calls.append((([(a, 0.5, za), (b, 0.1, zb)], 0, 0.1, zb), kwargs))
            elif name in ("add_scalar", "mul_scalar"):
                for other in (0.5, 13.0, -100.0, 0.0, -0.7, 3):
                    calls.append(((a, 0.1, za, other, other == 13.0), kwargs))
    calls += [(([(torch.zeros(2), 0.1, 0)], 0, 0.1, 0), {}), (([], 0, 0.1, 0), {})] if name == "cat" else []
    calls += [((torch.zeros(2), 0.1, 0, 1.0), {}), ((torch.zeros(2, dtype=torch.uint8), 0.1, 0, "1"), {})]
    return calls


def _batch_norm_calls() -> list[tuple[tuple, dict]]:
    calls: list[tuple[tuple, dict]] = []
    gen = torch.Generator().manual_seed(14)
    stats = (torch.randn(19, generator=gen), torch.randn(19, generator=gen), torch.randn(19, generator=gen))
    var = torch.rand(19, generator=gen) * 3 + 1e-3
    for codes, zp in operator_codes(14):
        if codes.dim() == 4:
            for relu in (False, True):
                out_zp = 100 if codes.dtype == torch.uint8 else -5
                calls.append(((codes, 0.05, zp, *stats, var, 1e-5, 0.1, out_zp, relu), {"release": "2.14"}))
    calls.append(((codes[0], 0.05, zp, *stats, var, 1e-5, 0.1, 0), {}))
    calls.append(((codes, 0.05, zp, *stats, var[:3], 1e-5, 0.1, 0), {}))
    return calls


LLM_KINDS = ("normal", "positive", "equal", "zeros", "ties", "huge", "tiny")
LLM_WEIGHT_NAMES = (
    "quantize_per_group",
    "dequantize_per_group",
    "int8_weight",
    "intx_weight",
    "quantize_int4_tinygemm",
    "pack_int4_for_cpu",
    "int4_weight_cpu",
    "linear_int8_dynamic",
    "linear_int8_weight_only",
    "dequantize_activation_per_token",
    "linear_intx",
    "linear_int4_cpu",
)


def llm_values(n: int, k: int, group: int, dtype: torch.dtype, seed: int, kind: str, bits: int = 8) -> torch.Tensor:
    """An (n, k) weight or activation whose groups of ``group`` sit on torchao's edges, the kinds of
    tests/test_llm_weights.py: one sign, equal groups, zero groups, ties, magnitudes near float32's ends."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, k, generator=gen) * float(torch.empty(1).uniform_(-8, 4, generator=gen).exp())
    groups = x.view(n, k // group, group)
    if kind == "positive":
        x = x.abs() if seed % 2 else -x.abs()
    elif kind == "equal":
        groups.copy_(groups[..., :1].expand_as(groups))
        groups[0, 0] = 0.0
    elif kind == "zeros":
        groups.masked_fill_(torch.rand(n, k // group, 1, generator=gen) < 0.5, 0.0)
    elif kind == "ties":  # scale = step: j + 0.5 steps tie in torchao's rounding, j steps in tinygemm's
        step, half = 2.0 ** int(torch.randint(-12, 4, (1,), generator=gen)), (2**bits - 1) / 2
        j = torch.randint(-int(half), int(half), groups.shape, generator=gen).float()
        groups.copy_((j + 0.5 * (torch.rand(j.shape, generator=gen) < 0.5)) * step)
        groups[..., 0], groups[..., 1] = -half * step, half * step
    elif kind == "huge":
        x = torch.randn(n, k, generator=gen).sign() * torch.empty(n, k).uniform_(1e30, 3e38, generator=gen)
        x[0, 0] = 3.3e38 if dtype == torch.bfloat16 else 3.4e38
    elif kind == "tiny":
        x = torch.randn(n, k, generator=gen) * 1e-39
        x[0, :2] = torch.tensor([1e-45, -1e-45])
    if kind in ("normal", "ties"):
        x = nudge(x, torch.randint(-2, 3, x.shape, generator=gen) * (torch.rand(x.shape, generator=gen) < 0.2))
    return x.to(dtype)


def _llm_weight_calls(name: str) -> list[tuple[tuple, dict]]:
    """torchao's weights of every kind, group size (32 to 256; int4: 32 to 128), K = 1 to 3 groups, N from 1,
    float32 and bfloat16, on both int4 layouts (AVX512, AVX2); then arguments torchao or torch refuse."""
    calls: list[tuple[tuple, dict]] = []
    bf16 = torch.bfloat16
    for i, kind in enumerate(LLM_KINDS):
        for dtype in (F32, bf16):
            seed = 20 + 2 * i + (dtype == bf16)
            group, blocks, n, bits = (32, 64, 128, 256)[seed % 4], 1 + seed % 3, (1, 2, 5, 16)[i % 4], (8, 4, 2)[i % 3]
            k = group * blocks
            w = llm_values(n, k, group, dtype, seed, kind, bits)
            if name == "quantize_per_group":
                calls += [((w, group, bits, symmetric), {}) for symmetric in (True, False)]
                calls += [((w, None, bits), {}), ((w.reshape(1, n, k), group, 8, True, F32, 2**-23), {})]
            elif name == "dequantize_per_group":
                for symmetric, group_size in ((True, group), (False, group), (False, None)):
                    codes, scale, zero_point = qlib.quantize_per_group(w, group_size, bits, symmetric)
                    calls += [((codes, scale, zero_point, out), {}) for out in (F32, bf16)]
            elif name == "int8_weight":
                calls += [((w,), {}), ((w, group), {})]
            elif name == "intx_weight":
                calls += [((w, group, bits, symmetric), {}) for symmetric in (True, False)]
                calls.append(((w, None), {}))
            elif name == "dequantize_activation_per_token":
                x = w * 1e-30 if kind == "huge" else w
                calls += [((x,), {}), ((x.reshape(n, blocks, group),), {})]
            elif name in ("quantize_int4_tinygemm", "int4_weight_cpu", "pack_int4_for_cpu", "linear_int4_cpu"):
                group, n = (32, 64, 128)[seed % 3], (16, 48, 64, 80, 112)[i % 5]
                w = llm_values(n, group * blocks, group, dtype, seed, kind, 4)
                if name == "quantize_int4_tinygemm":
                    calls.append(((w, group), {}))
                elif name == "int4_weight_cpu":
                    calls += [((w, group, capability), {}) for capability in (None, "AVX2", "AVX512")]
                elif name == "pack_int4_for_cpu" and kind != "huge":
                    codes = qlib.quantize_int4_tinygemm(w, group)[0]
                    calls += [((codes, capability), {}) for capability in (None, "AVX2", "avx512")]
                elif name == "linear_int4_cpu":
                    w = llm_values(n, group * blocks, group, dtype, seed, "normal", 4)
                    x = llm_values(1 + i % 3, group * blocks, group, F32, seed + 1, kind)
                    x = (x * 1e-30 if kind == "huge" else x).to(dtype)
                    bias = torch.randn(n, generator=torch.Generator().manual_seed(seed)).to(dtype) if i % 2 else None
                    for capability in (None, "AVX2", "AVX512"):
                        qdata, scale_and_zero = qlib.int4_weight_cpu(w, group, capability)
                        calls.append(((x, qdata, scale_and_zero, group, bias, capability), {}))
            else:  # the Linears: a normal weight, activations of every kind (huge ones scaled into the matmul's range)
                w = llm_values(n, k, group, dtype, seed, "normal", 4 if name == "linear_intx" else 8)
                m = (1, 3, 4, 7)[i % 4]
                x = llm_values(m, k, k, F32, seed + 1, kind)
                x = (x * 1e-30 if kind == "huge" else x).to(dtype)
                x = x.reshape(1, m, k) if i % 2 else x
                bias = torch.randn(n, generator=torch.Generator().manual_seed(seed)).to(dtype) if seed % 2 else None
                if name == "linear_int8_dynamic":
                    qdata, scale, _ = qlib.int8_weight(w)
                    calls += [((x, qdata, scale, bias), {"pairs_saturate": s}) for s in (None, True, False)]
                elif name == "linear_int8_weight_only":
                    for group_size in (None, group):
                        calls.append(((x, *qlib.int8_weight(w, group_size), bias), {}))
                else:
                    qdata, scale, zero_point = qlib.intx_weight(w, group)
                    calls += [((x, qdata, scale, zero_point, bias, dynamic), {}) for dynamic in (False, True)]
    w = torch.randn(16, 96, generator=torch.Generator().manual_seed(21))
    nan, inf = w.clone(), w.clone()
    nan[1, 3], inf[2, 5] = float("nan"), float("-inf")
    codes, scale, zero_point = qlib.quantize_per_group(w, 32)
    qdata, scale_and_zero = qlib.int4_weight_cpu(w, 32)
    bad = {
        "quantize_per_group": [
            ((w.half(), 32), {}),
            ((w, 32, 9), {}),
            ((w, 32, True), {}),
            ((w, 0), {}),
            ((w, 64), {}),
            ((w, 32, 8, "yes"), {}),
            ((w, 32), {"scale_dtype": torch.float64}),
            ((torch.zeros(2, 0), None), {}),
            ((nan, 32), {}),
            ((inf, None), {}),
        ],
        "dequantize_per_group": [
            ((codes.float(), scale, zero_point, F32), {}),
            ((codes, scale[:5], zero_point, F32), {}),
            ((codes, scale, zero_point[:, :2], F32), {}),
            ((codes, scale, zero_point, torch.float16), {}),
        ],
        "int8_weight": [((w, 64), {}), ((nan,), {}), ((w.to(torch.int8),), {})],
        "intx_weight": [((w, 64), {}), ((inf, 32), {}), ((w, 32, 0), {})],
        "dequantize_activation_per_token": [((nan,), {}), ((w.double(),), {})],
        "quantize_int4_tinygemm": [
            ((w, 256), {}),
            ((w, 64), {}),
            ((w.flatten(), 32), {}),
            ((nan, 32), {}),
            ((torch.full((16, 32), 3e38) * torch.tensor([-1.0, 1.0]).repeat(16), 32), {}),
        ],
        "int4_weight_cpu": [((w[:8], 32), {}), ((w, 256), {}), ((w, 32, "NEON"), {})],
        "pack_int4_for_cpu": [
            ((torch.full((16, 2), 16, dtype=torch.int32),), {}),
            ((torch.zeros(16, 2, dtype=torch.int32), "NEON"), {}),
            ((torch.zeros(16, 2, dtype=torch.uint8),), {}),
            ((torch.zeros(8, 2, dtype=torch.int32),), {}),
            ((torch.zeros(16, 3, dtype=torch.int32),), {}),
        ],
        "linear_int4_cpu": [
            ((w[:2], qdata, scale_and_zero, 32), {}),
            ((w[:2].to(bf16), qdata, scale_and_zero, 32), {}),
            ((w[:2], qdata, scale_and_zero, 64), {}),
            ((w[:2], qdata, scale_and_zero, 32, None, "NEON"), {}),
        ],
        "linear_int8_dynamic": [
            ((w[:2, :32], *qlib.int8_weight(w)[:2]), {}),
            ((w[:2].half(), *qlib.int8_weight(w)[:2]), {}),
            ((w[:2], qlib.int8_weight(w)[0].float(), qlib.int8_weight(w)[1]), {}),
        ],
        "linear_int8_weight_only": [
            ((w[:2].double(), *qlib.int8_weight(w)), {}),
            ((w[:2], codes.int(), scale, zero_point), {}),
        ],
        "linear_intx": [
            ((w[:2], *qlib.intx_weight(w)), {"dynamic_activation": 1}),
            ((w[:2].half(), *qlib.intx_weight(w)), {}),
        ],
    }
    return calls + bad[name]


def _onnx_calls(name: str) -> list[tuple[tuple, dict]]:
    """ONNX Runtime's ops: ties, values past the range, NaN/inf and extreme scales for QuantizeLinear; full-range
    codes (pairs that saturate) and per-column weights for the products, on both CPU kinds; then bad arguments."""
    gen = torch.Generator().manual_seed(23)
    calls: list[tuple[tuple, dict]] = []
    x = torch.cat([torch.arange(-300, 300) * 0.5, torch.tensor([float("nan"), float("inf"), -float("inf"), 1e38])])
    channels = torch.randn(3, 40, generator=gen) * 50
    a8 = torch.randint(0, 256, (5, 33), generator=gen, dtype=torch.uint8)
    s8 = torch.randint(-128, 128, (5, 33), generator=gen, dtype=torch.int8)
    b8 = torch.randint(-128, 128, (33, 7), generator=gen, dtype=torch.int8)
    bu = torch.randint(0, 256, (33, 7), generator=gen, dtype=torch.uint8)
    col_s, col_z = torch.rand(7, generator=gen) * 0.01 + 1e-3, torch.zeros(7, dtype=torch.int8)
    if name == "quantize_linear":
        for scale, zp, dtype in (
            (1.0, 128, torch.uint8),
            (0.1, -3, torch.int8),
            (1e-30, 0, torch.int16),
            (3e30, 7, torch.uint8),
        ):
            calls.append(((x, scale, zp, dtype), {}))
        calls.append(
            ((channels, torch.tensor([0.1, 0.3, 2.0]), torch.tensor([0, 128, 255], dtype=torch.uint8)), {"axis": 0})
        )
        calls += [((x.double(), 0.1, 0), {}), ((x, 0.1, 300), {}), ((x, 0.1, 0, torch.int32), {}), ((x, 0.0, 0), {})]
    elif name == "dequantize_linear":
        calls += [
            ((a8, 0.1, 3), {}),
            ((s8, 1e-30, -128), {}),
            ((torch.tensor([2**31 - 1, -(2**31)], dtype=torch.int32), 0.5, -7), {}),
        ]
        calls.append(
            (
                (a8.T, torch.rand(33, generator=gen), torch.randint(0, 256, (33,), generator=gen, dtype=torch.uint8)),
                {"axis": 0},
            )
        )
        calls += [((a8.long(), 0.1, 0), {}), ((a8, -1.0, 0), {})]
    elif name == "ort_pairs_saturate_here":
        calls.append(((), {}))
    elif name == "matmul_integer":
        for saturate in (None, False, True):
            calls += [
                ((a8, b8, 131, 0), {"pairs_saturate": saturate}),
                ((a8, bu, 7, 250), {"pairs_saturate": saturate}),
            ]
            calls.append(((s8, b8, -5, torch.arange(7, dtype=torch.int8)), {"pairs_saturate": saturate}))
        calls += [((a8, b8[:5]), {}), ((a8.float(), b8), {})]
    elif name == "qlinear_matmul":
        for saturate in (None, False, True):
            calls.append(((a8, 0.02, 131, b8, 0.01, 0, 0.07, 77), {"pairs_saturate": saturate}))
            calls.append(((a8, 0.02, 131, b8, col_s, col_z, 0.5, 3), {"pairs_saturate": saturate}))
            calls.append(((s8, 0.02, -1, b8, 0.01, 0, 0.07, -9), {"pairs_saturate": saturate}))
        calls += [((a8, 0.02, 131, b8, 0.01, 0, 0.0, 77), {}), ((a8, 0.02, 300, b8, 0.01, 0, 0.07, 77), {})]
    elif name == "qgemm":
        c = torch.randint(-5000, 5000, (7,), generator=gen, dtype=torch.int32)
        for saturate in (None, True):
            calls.append(((a8, 0.02, 131, b8, 0.01, 0, c, 0.07, 77), {"pairs_saturate": saturate}))
            calls.append(
                (
                    (a8, 0.02, 131, b8.T.contiguous(), col_s, col_z),
                    {"trans_b": True, "alpha": 0.5, "pairs_saturate": saturate},
                )
            )
            calls.append(
                (
                    (a8.T.contiguous(), 0.02, 131, bu, 0.01, 200, None, 0.3, 0),
                    {"trans_a": True, "pairs_saturate": saturate},
                )
            )
        calls += [
            ((a8, 0.02, 131, b8, 0.01, 0, c.long(), 0.07, 77), {}),
            ((a8, 0.02, 131, b8, 0.01, 0, None, 0.07), {}),
        ]
    elif name in ("qlinear_conv", "conv_integer"):
        x = torch.randint(0, 256, (1, 6, 5, 5), generator=gen, dtype=torch.uint8)
        xs = (x.long() - 128).to(torch.int8)
        w = torch.randint(-128, 128, (4, 3, 3, 3), generator=gen, dtype=torch.int8)
        dw = torch.randint(-128, 128, (6, 1, 3, 3), generator=gen, dtype=torch.int8)
        bias = torch.randint(-5000, 5000, (4,), generator=gen, dtype=torch.int32)
        attrs = {"strides": [2, 1], "pads": [1, 0, 1, 2], "dilations": [1, 2], "group": 2}
        if name == "conv_integer":
            calls += [((x, w, 131, -3), attrs), ((xs, w.view(torch.uint8)[:, :, :2], -5, 200), {"group": 2})]
            calls += [((x[:, :, 0], dw[:, :, 0], 7, 0), {"group": 6, "pads": [2, 1]})]
            calls += [((x, w, 131, 0), {"group": 3}), ((x.float(), w), {})]
        else:
            for saturate in (None, False, True):
                calls.append(((x, 0.02, 131, w, 0.01, 0, 0.3, 77, bias), {**attrs, "pairs_saturate": saturate}))
                calls.append(((x, 0.02, 131, dw, col_s[:6], 0, 0.1, 7), {"group": 6, "pairs_saturate": saturate}))
                calls.append(((xs, 0.02, -1, w[:, :, :2], 0.01, 0, 0.07, -9), {"pairs_saturate": saturate}))
            calls.append(((x[:, :, 0], 0.02, 131, w[:, :, 0], 0.01, 0, 0.3, 77), {"group": 2, "pads": [1, 1]}))
            calls += [((xs, 0.02, 0, w.view(torch.uint8), 0.01, 0, 0.07, 0), {"group": 2})]
            calls += [((x, 0.02, 131, w, 0.01, torch.tensor([0, 1, 0, 0], dtype=torch.int8), 0.3, 77), {"group": 2})]
    elif name == "qlinear_add":
        a = torch.randint(0, 256, (2, 4, 3, 3), generator=gen, dtype=torch.uint8)
        calls += [
            ((a, 0.1, 3, a.flip(0), 0.1, 250, 0.2, 128), {}),
            ((a, 0.5, 0, a[:1, :, :1, :1], 0.25, 7, 1.0, 1), {}),
        ]
        calls += [((s8, 1.0, -3, s8[:1], 3e4, 0, 1e-9, 5), {}), ((s8, 0.3, 1, s8[0, 0], 0.1, -1, 0.4, 0), {})]
        calls += [((a, 0.1, 3, s8, 0.1, 0, 0.2, 0), {}), ((a, 0.1, 3, a[:, :2], 0.1, 0, 0.2, 0), {})]
    elif name == "qlinear_average_pool":
        a = torch.randint(0, 256, (2, 3, 5, 6), generator=gen, dtype=torch.uint8)
        calls += [
            ((a, 0.1, 3, 0.1, 7, [2, 2]), {"strides": [2, 2]}),
            ((a, 0.1, 3, 0.05, 128, [3, 3]), {"pads": [1] * 4}),
        ]
        calls += [((a, 0.1, 3, 0.2, 0, [3, 2]), {"pads": [1, 0, 1, 1], "count_include_pad": True, "ceil_mode": True})]
        calls += [((a, 0.1, 3, 1e-10, 0, [5, 6]), {}), ((s8.view(1, 5, 33), 0.3, -1, 0.1, 5, [4]), {"strides": [3]})]
        calls += [((a, 0.1, 300, 0.1, 0, [2, 2]), {}), ((a.float(), 0.1, 0, 0.1, 0, [2, 2]), {})]
    elif name == "qlinear_global_average_pool":
        a = torch.randint(0, 256, (2, 3, 5, 6), generator=gen, dtype=torch.uint8)
        calls += [((a, 0.1, 3, 0.1, 7), {}), ((s8.view(1, 5, 33), 0.3, -1, 0.01, 5), {}), ((a, 0.1, 3, 0.0, 7), {})]
    elif name == "qlinear_concat":
        a = torch.randint(0, 256, (2, 3, 4), generator=gen, dtype=torch.uint8)
        calls += [(([(a, 0.1, 3), (a[:, :1], 0.05, 128), (a[:, :2], 0.1, 3)], 0.1, 3, 1), {})]
        calls += [(([(s8, 0.3, -1), (s8[:2], 1e-8, 5)], 0.2, 0, -2), {}), (([(s8, 0.3, -1)], 0.2, 0, 0), {})]
        calls += [
            (([], 0.1, 0, 0), {}),
            (([(a, 0.1, 3), (s8, 0.1, 3)], 0.1, 3, 0), {}),
            (([(a, 0.1, 3)], 0.1, 3, 5), {}),
        ]
    elif name == "qlinear_sigmoid":
        a = torch.arange(0, 256, dtype=torch.int64).to(torch.uint8)
        calls += [((a, 0.05, 128, 1 / 256, 0), {}), ((a, 0.3, 7, 0.001, 3), {}), ((s8, 0.1, -3, 1 / 255, -128), {})]
        calls += [((a.float(), 0.1, 0, 0.1, 0), {}), ((a, 0.1, 300, 0.1, 0), {})]
    return calls


ONNX_NAMES = (
    "qlinear_sigmoid",
    "qlinear_concat",
    "qlinear_average_pool",
    "qlinear_global_average_pool",
    "qlinear_conv",
    "conv_integer",
    "qlinear_add",
    "quantize_linear",
    "dequantize_linear",
    "ort_pairs_saturate_here",
    "matmul_integer",
    "qlinear_matmul",
    "qgemm",
)


def _xnnpack_calls(name: str) -> list[tuple[tuple, dict]]:
    """XNNPACK's qs8 operators: ties, values past the range, infinities, per-tensor and per-channel weights, fused
    ReLU and clamp bounds, odd zero points; then bad arguments."""
    gen = torch.Generator().manual_seed(29)
    calls: list[tuple[tuple, dict]] = []
    s8 = torch.randint(-128, 128, (5, 33), generator=gen, dtype=torch.int8)
    w8 = torch.randint(-127, 128, (7, 33), generator=gen, dtype=torch.int8)
    img = torch.randint(-128, 128, (2, 4, 6, 5), generator=gen, dtype=torch.int8)
    kernel = torch.randint(-127, 128, (6, 4, 3, 3), generator=gen, dtype=torch.int8)
    depthwise = torch.randint(-127, 128, (4, 1, 3, 3), generator=gen, dtype=torch.int8)
    channel_scales = torch.rand(7, generator=gen) * 0.01 + 1e-3
    bias = torch.randn(7, generator=gen)
    if name == "xnnpack_quantize":
        for scale, zp in ((0.5, 0), (0.1, -3), (1e-30, 127), (3e30, -128)):
            calls.append(((mixed_values(scale, 200, 140, 3), scale, zp), {}))
        calls += [((torch.tensor([float("nan")]), 0.1, 0), {}), ((torch.zeros(2), 0.1, 200), {})]
    elif name == "xnnpack_dequantize":
        calls += [((s8, 0.1, 3), {}), ((s8, 1e-30, -128), {}), ((s8.to(torch.uint8), 0.1, 0), {})]
    elif name == "xnnpack_bias":
        ties = (torch.arange(-20, 20) + 0.5) * 2.0**-10
        calls += [((ties, 2.0**-4, 2.0**-6), {}), ((bias, 0.02, channel_scales), {}), ((bias * 1e9, 1e-5, 1e-5), {})]
        calls += [((ties.view(4, 10), 0.1, 0.1), {}), ((bias, 0.02, channel_scales[:3]), {})]
    elif name == "xnnpack_linear":
        for weight_scale, b in ((0.01, None), (channel_scales, bias), (0.003, bias)):
            calls.append(((s8, 0.02, -1, w8, weight_scale, b, 0.07, 9), {}))
            calls.append(((s8, 0.02, 5, w8, weight_scale, b, 0.01, -128), {"output_min": 0.0}))
            calls.append(((s8, 0.02, 5, w8, weight_scale, b, 0.05, 3), {"output_min": 0.0, "output_max": 6.0}))
        calls += [
            ((s8, 0.02, 0, w8[:, :5], 0.01, None, 0.07, 0), {}),
            ((s8.float(), 0.02, 0, w8, 0.01, None, 0.07, 0), {}),
        ]
    elif name == "xnnpack_conv2d":
        calls.append(((img, 0.05, 3, kernel, 0.01, bias[:6], 0.2, -7), {"padding": 1}))
        calls.append(((img, 0.05, 3, kernel, channel_scales[:6], None, 0.2, 1), {"stride": 2, "output_min": 0.0}))
        calls.append(((img, 0.05, -3, depthwise, 0.02, bias[:4], 0.1, 0), {"groups": 4, "dilation": 2, "padding": 2}))
        calls += [((img[0], 0.05, 3, kernel, 0.01, None, 0.2, 0), {}), ((img, 0.05, 3, kernel, 0.01, None, 0.0, 0), {})]
    elif name == "xnnpack_add":
        for sa, za, sb, zb, sy, zy in (
            (0.125, -5, 0.25, 7, 0.5, -9),
            (0.03, 1, 0.07, -2, 0.05, 11),
            (1.0, 0, 1.0, 0, 0.01, 0),
        ):
            calls.append(((img, sa, za, img.flip(0), sb, zb, sy, zy), {}))
            calls.append(((img, sa, za, img[:1], sb, zb, sy, zy), {"output_min": 0.0}))
        calls += [((img, 1.0, 0, img, 1.0, 0, 2.0**-12, 0), {}), ((img, 0.1, 0, img.float(), 0.1, 0, 0.1, 0), {})]
    elif name == "xnnpack_mean":
        for sx, zx, sy, zy in ((0.25, -1, 0.25, -1), (0.0966, -55, 0.0433, -106), (0.01, 3, 0.5, 0)):
            calls.append(((img, sx, zx, sy, zy), {}))
        calls += [((img[0], 0.1, 0, 0.1, 0), {}), ((img, 0.1, 0, -0.1, 0), {})]
    elif name == "xnnpack_max_pool2d":
        calls += [((img, 2), {}), ((img, 3, 2, 1), {}), ((img, (2, 3), (1, 2), 0, 1, True), {}), ((img[0], 2), {})]
    return calls


XNNPACK_NAMES = (
    "xnnpack_quantize",
    "xnnpack_dequantize",
    "xnnpack_bias",
    "xnnpack_linear",
    "xnnpack_conv2d",
    "xnnpack_add",
    "xnnpack_mean",
    "xnnpack_max_pool2d",
)


# The operators of the torchvision models and torchao's language-model weights: each name's calls, built when its
# file is checked
OPERATOR_CALLS = {
    **{
        name: (lambda name=name: _pool_calls(name))
        for name in ("max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "mean")
    },
    **{name: (lambda name=name: _activation_calls(name)) for name in ("hardswish", "hardsigmoid", "sigmoid", "clamp")},
    **{name: (lambda name=name: _functional_calls(name)) for name in ("mul", "cat", "add_scalar", "mul_scalar")},
    "batch_norm2d": _batch_norm_calls,
    **{name: (lambda name=name: _llm_weight_calls(name)) for name in LLM_WEIGHT_NAMES},
    **{name: (lambda name=name: _onnx_calls(name)) for name in ONNX_NAMES},
    **{name: (lambda name=name: _xnnpack_calls(name)) for name in XNNPACK_NAMES},
}


def explain_layer_operations() -> list[tuple]:
    """explain_layer on FBGEMM Linears and Conv2ds and on adds, with float64 hand computations (pickled to the
    fresh interpreter, which packs the weights again: for FBGEMM there, asymmetric weights keep oneDNN out)."""
    import warnings

    from torch.ao.nn.intrinsic.quantized import ConvReLU2d, LinearReLU
    from torch.ao.nn.quantized import Conv2d, Linear, QFunctional

    from qlib.testing import quantized_tensor, quantized_weight

    ops: list[tuple] = []

    def call(*args, **kwargs):
        ops.append(("call", "explain_layer", args, kwargs, []))

    gen = torch.Generator().manual_seed(8)
    before = torch.backends.quantized.engine
    torch.backends.quantized.engine = "fbgemm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for relu, per_channel in ((False, True), (True, False)):
            w = torch.randint(-128, 128, (7, 37), generator=gen).to(torch.int8)
            sw = torch.empty(7).uniform_(0.001, 0.02, generator=gen) if per_channel else 0.01
            layer = (LinearReLU if relu else Linear)(37, 7)
            layer.set_weight_bias(quantized_weight(w, sw, torch.full((7,), 2) if per_channel else 2), torch.randn(7))
            layer.scale, layer.zero_point = 0.3, 77
            codes = torch.randint(0, 256, (5, 37), generator=gen, dtype=torch.uint8)
            x = quantized_tensor(codes, 0.02, 131)
            weight = layer.weight()
            scales = weight.q_per_channel_scales() if per_channel else weight.q_scale()
            acc = (codes.double() - 131) @ (weight.int_repr().double() - 2).T
            hand = torch.round((acc * (0.02 * scales) + layer.bias().double()) / 0.3) + 77
            call(layer, x, hand)
            call(layer, x, hand.clamp(0, 127))
            call(layer, (codes, 0.022, 131), hand)  # a wrong input scale: unexplained rows
            wq, wsc, wzp, bias = qlib.quantized_linear.weight_of(layer._packed_params._packed_params)
            saturated = qlib.linear(codes, 0.02, 131, wq, wsc, wzp, bias, 0.3, 77, relu, pairs_saturate=True)
            call(layer, x, hand, saturated, pairs_saturate=True)
        for conv, groups in ((Conv2d(3, 5, 3, padding=1), 1), (ConvReLU2d(16, 16, 3, padding=1, groups=16), 16)):
            c, n_out = conv.in_channels, conv.out_channels
            w = torch.randint(-128, 128, (n_out, c // groups, 3, 3), generator=gen).to(torch.int8)
            conv.set_weight_bias(quantized_weight(w, 0.004, 3), torch.randn(n_out))
            conv.scale, conv.zero_point = 0.5, 100
            codes = torch.randint(0, 256, (2, c, 6, 5), generator=gen, dtype=torch.uint8)
            x = quantized_tensor(codes, 0.03, 120)
            weight = conv.weight()
            acc = torch.nn.functional.conv2d(
                codes.double() - 120, weight.int_repr().double() - 3, None, 1, 1, 1, groups
            )
            hand = torch.round((acc * (0.03 * weight.q_scale()) + conv.bias().double().view(1, -1, 1, 1)) / 0.5) + 100
            for release in ("2.13", "2.14"):
                reference = qlib.conv2d(
                    codes, 0.03, 120, weight.int_repr(), weight.q_scale(), 3, conv.bias(), 0.5, 100, padding=1,
                    groups=groups, relu=groups > 1, engine="fbgemm", release=release,
                )  # fmt: skip
                call(conv, x, hand, reference, release=release)
            call(conv, x, hand[:, :2])
    torch.backends.quantized.engine = before
    for storage, lo, hi, zp in (
        (torch.uint8, 0, 256, 129),
        (torch.int8, -128, 128, -5),
        (torch.int32, -3000, 3000, 1001),
    ):
        a = torch.randint(lo, hi, (3, 70), generator=gen).to(storage)
        b = torch.randint(lo, hi, (3, 70), generator=gen).to(storage)
        qf = QFunctional()
        qf.scale, qf.zero_point = 0.2, zp | 1
        qa, qb = quantized_tensor(a, 0.1, zp), quantized_tensor(b, 0.13, zp)
        hand = torch.round((0.1 * (a.double() - zp) + 0.13 * (b.double() - zp)) / 0.2) + (zp | 1)
        for release in ("2.13", "2.14"):
            reference = qlib.add(a, 0.1, zp, b, 0.13, zp, 0.2, zp | 1, release=release)
            call(qf, (qa, qb), hand, reference, release=release)
            reference = qlib.add(a, 0.1, zp, b, 0.13, zp, 0.2, zp | 1, True, release=release)
            call(qf.add_relu, ((a, 0.1, zp), (b, 0.13, zp)), hand, reference, release=release)
    call(qf, (qa, qb), hand, pairs_saturate=True)
    call(torch.nn.Linear(2, 2), qa, hand)
    return ops


def run_here(operations_list: list[tuple]) -> list:
    namespace: dict = {}
    exec(compile(DRIVER, "driver", "exec"), namespace)
    return namespace["run"](qlib, operations_list)


def module_name(name: str) -> str:
    return f"standalone_{name.lower()}"


@pytest.fixture(scope="module")
def standalone_results(tmp_path_factory):
    """Every public name's file, each imported and run in one fresh interpreter without qlib."""
    folder = tmp_path_factory.mktemp("standalone")
    jobs = {}
    for name in qlib.__all__:
        (folder / f"{module_name(name)}.py").write_text(generate([name]))
        jobs[module_name(name)] = operations(name)
    (folder / "operations.pickle").write_bytes(pickle.dumps(jobs))
    (folder / "driver.py").write_text(DRIVER)
    run = subprocess.run(
        [sys.executable, "driver.py", str(folder), "operations.pickle", "results.pickle"],
        capture_output=True,
        text=True,
        cwd=folder,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return folder, jobs, pickle.loads((folder / "results.pickle").read_bytes())


@pytest.mark.parametrize("name", qlib.__all__)
def test_standalone_file_equals_qlib_without_qlib(name, standalone_results):
    folder, jobs, results = standalone_results
    tree = ast.parse((folder / f"{module_name(name)}.py").read_text())
    # what the file imports at the top; Comparison.plot imports matplotlib when called, and only then
    imported = {alias.name.split(".")[0] for node in tree.body if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in tree.body if isinstance(node, ast.ImportFrom)}
    assert imported <= set(sys.stdlib_module_names) | {"torch", "__future__"}, imported
    anywhere = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    assert anywhere - imported <= {"matplotlib"}, anywhere - imported
    theirs = results[module_name(name)]
    assert theirs["doctest_failures"] == 0, "a docstring example fails in the standalone file"
    ops = jobs[module_name(name)]
    ours = run_here(ops)
    assert len(ours) == len(theirs["results"]) == len(ops)
    for op, a, b in zip(ops, ours, theirs["results"], strict=True):
        assert a == b, f"qlib.{name}{op[2]!r:.200} differs in its standalone file:\nqlib: {a!r:.500}\nfile: {b!r:.500}"
    assert any(r[0] == "ok" for r in ours)


def test_one_file_can_hold_every_public_name(tmp_path, capsys):
    assert main([*qlib.__all__, "-o", str(tmp_path / "everything.py")]) == 0
    text = (tmp_path / "everything.py").read_text()
    assert text.count("\ndef quantize(") == 1 and text.count("\nCHUNK = ") == 1
    header = text.split('"""')[1]
    assert f"qlib {qlib.__version__}" in header and "torch 2.13 and 2.14" in header and "MIT-0" in header


def test_the_command_line_refuses_an_unknown_name(capsys):
    with pytest.raises(SystemExit):
        main(["quantise"])
    assert "unknown name(s) ['quantise']: give one or more of qlib's public names" in capsys.readouterr().err


def test_the_repository_address_is_the_books():
    import yaml

    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    from qlib.standalone import REPOSITORY

    assert config["repository"]["url"].rstrip("/") == REPOSITORY
