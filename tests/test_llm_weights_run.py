"""qlib.run and qlib.compare on models after torchao 0.18's quantize_ (each CPU config), against torch.

Expected values are torch's: the quantized model run in torch, each Linear's output taken by a forward hook.
qlib.run must give every Linear's output bit for bit (qlib's own integers feed the next layer, torch's float
ops run between them), and so the model's output; qlib.compare must find every Linear exact. The models: a
gated MLP of Linear layers and elementwise ops, and (where transformers is installed) a tiny LlamaForCausalLM
built offline, which also goes through transformers' save_pretrained and from_pretrained.
"""

from __future__ import annotations

import copy
import logging
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from emulated import run_on_haswell
from hypothesis import given, settings
from hypothesis import strategies as st
from inputs import examples
from test_llm_weights import (
    BF16,
    F32,
    KINDS,
    activations,
    assert_same_floats,
    int4_cpu,
    int8_dynamic,
    int8_dynamic_intx,
    int8_weight_only,
    intx_weight_only,
    values,
)

import qlib
from qlib.llm_weights import int4_weight_cpu, int8_weight, intx_weight
from qlib.testing import assert_same_ints

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    ao = pytest.importorskip("torchao.quantization")
logging.getLogger("torchao").setLevel(logging.ERROR)

# name -> (config for a group size, whether the group size may be 256: the int4 CPU weight takes 32 to 128)
CONFIGS = {
    "Int8WeightOnlyConfig()": (lambda g: int8_weight_only(None), True),
    "Int8WeightOnlyConfig(PerGroup)": (int8_weight_only, True),
    "Int8DynamicActivationInt8WeightConfig()": (int8_dynamic, True),
    "IntxWeightOnlyConfig(int4, PerGroup)": (intx_weight_only, True),
    "Int8DynamicActivationIntxWeightConfig(int4, PerGroup)": (int8_dynamic_intx, True),
    "PrototypeInt4WeightOnlyConfig": (int4_cpu, False),
}


class GatedMLP(torch.nn.Module):
    """Linear layers and elementwise ops between them, as a language model's MLP."""

    def __init__(self, k: int, hidden: int, n: int, bias: bool, dtype: torch.dtype) -> None:
        super().__init__()
        self.gate = torch.nn.Linear(k, hidden, bias=bias, dtype=dtype)
        self.up = torch.nn.Linear(k, hidden, bias=bias, dtype=dtype)
        self.down = torch.nn.Linear(hidden, n, bias=bias, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x)) * 0.5 + x[..., : self.down.out_features]


def linear_outputs(model: torch.nn.Module, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], object]:
    """torch's output of every quantized Linear of ``model`` on ``x``, by module path, and the model's output."""
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        m.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o))
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and type(m.weight).__module__.startswith("torchao.")
    ]
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return seen, out


def check_run_and_compare(float_model: torch.nn.Module, quantized: torch.nn.Module, x: torch.Tensor) -> None:
    theirs, out = linear_outputs(quantized, x)
    result = qlib.run(quantized, x)
    assert list(result.activations) == list(theirs), "run's steps are not the Linears, by module path, in order"
    for name, step in result.activations.items():
        assert step.op == "Linear" and step.scale is None
        assert_same_floats(step.codes, theirs[name], f"run: {name}")
    if isinstance(out, torch.Tensor):  # (transformers returns a ModelOutput: its logits are lm_head's step)
        assert_same_floats(result.output.codes, out, "run: the model's output")
    report = qlib.compare(float_model, quantized, x)
    assert [layer.name for layer in report.layers] == list(theirs) and not report.unmatched
    for layer in report.layers:
        assert layer.exact and layer.mismatches == 0 and layer.numel == theirs[layer.name].numel(), layer
        assert_same_floats(layer.torch_codes, theirs[layer.name], f"compare: {layer.name}")
        assert not math.isnan(layer.sqnr_db)


@pytest.mark.cpu_kind  # torch's integers here follow the CPU kind (int4 packing, _int_mm)
@settings(max_examples=examples(150), deadline=None)
@given(
    name=st.sampled_from(list(CONFIGS)),
    group=st.sampled_from([32, 64, 128, 256]),
    blocks=st.sampled_from([1, 2]),  # K = group or 2 * group
    n=st.sampled_from([16, 32]),
    m=st.sampled_from([1, 3, 5]),
    three_d=st.booleans(),
    bias=st.booleans(),
    dtype=st.sampled_from([F32, BF16]),
    kind=st.sampled_from(KINDS),
    seed=st.integers(0, 2**31),
)
def test_run_and_compare_follow_torch_on_a_quantized_mlp(name, group, blocks, n, m, three_d, bias, dtype, kind, seed):
    make, takes_256 = CONFIGS[name]
    if group == 256 and not takes_256:
        group = 128
    k = hidden = group * blocks
    model = GatedMLP(k, hidden, n, bias, dtype).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for i, layer in enumerate((model.gate, model.up, model.down)):
            layer.weight.copy_(values(tuple(layer.weight.shape), group, dtype, seed + i, "normal"))
            if bias:
                layer.bias.copy_(torch.randn(layer.out_features, generator=gen))
    quantized = copy.deepcopy(model)
    ao.quantize_(quantized, make(group))
    x = activations(m, k, dtype, seed + 7, kind)
    check_run_and_compare(model, quantized, x.reshape(1, m, k) if three_d else x)


@pytest.mark.cpu_kind  # torch's integers here follow the CPU kind (int4 packing, _int_mm)
def test_run_computes_the_dynamic_int8_layers_for_either_cpu_kind():
    """pairs_saturate=True is oneDNN held below VNNI on a VNNI CPU: the first layer's output is linear_int8_dynamic's there."""
    model = GatedMLP(64, 64, 16, True, F32).eval()
    quantized = copy.deepcopy(model)
    ao.quantize_(quantized, int8_dynamic())
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(0)) * 30
    w = quantized.gate.weight
    for saturate in (False, True):
        step = qlib.run(quantized, x, pairs_saturate=saturate).activations["gate"]
        expected = qlib.linear_int8_dynamic(x, w.qdata, w.scale, quantized.gate.bias, pairs_saturate=saturate)
        assert_same_floats(step.codes, expected)


def test_a_torchao_weight_qlib_does_not_model_is_refused():
    model = torch.nn.Sequential(torch.nn.Embedding(32, 64), torch.nn.Linear(64, 16)).eval()
    quantized = copy.deepcopy(model)
    ao.quantize_(quantized, intx_weight_only(32), filter_fn=lambda m, fqn: isinstance(m, torch.nn.Embedding))
    with pytest.raises(ValueError, match=r"does not model embedding on torchao's IntxUnpackedToInt8Tensor.*in 0"):
        qlib.run(quantized, torch.tensor([[1, 2, 3]]))
    float8 = copy.deepcopy(model[1])
    ao.quantize_(float8, ao.Float8WeightOnlyConfig())
    with pytest.raises(ValueError, match="does not model linear on torchao's Float8Tensor"):
        qlib.run(float8, torch.randn(2, 64))


def test_compare_refuses_models_in_the_wrong_order_or_of_another_shape():
    model = GatedMLP(64, 64, 16, False, F32).eval()
    quantized = copy.deepcopy(model)
    ao.quantize_(quantized, int8_weight_only(None))
    x = torch.randn(2, 64)
    with pytest.raises(ValueError, match="first argument must be the float model"):
        qlib.compare(quantized, model, x)
    with pytest.raises(ValueError, match=r"float model's gate has \(32, 64\).*\(64, 64\)"):
        qlib.compare(GatedMLP(64, 32, 16, False, F32).eval(), quantized, x)
    with pytest.raises(ValueError, match="this is a float model.*quantize_"):
        qlib.run(model, x)


# --- transformers: a tiny Llama built offline, quantized, saved and loaded ----------------------------------


@pytest.fixture(scope="module")
def tiny_llama():
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    config = transformers.LlamaConfig(
        vocab_size=512,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention: k_proj and v_proj have 128 rows
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    return transformers, transformers.LlamaForCausalLM(config).eval()


@pytest.mark.cpu_kind  # torch's integers here follow the CPU kind (int4 packing, _int_mm)
@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("dtype", [F32, BF16])
def test_run_and_compare_follow_torch_on_a_tiny_llama(tiny_llama, name, dtype):
    _, model = tiny_llama
    model = copy.deepcopy(model).to(dtype)
    quantized = copy.deepcopy(model)
    ao.quantize_(quantized, CONFIGS[name][0](64))
    ids = torch.randint(0, 512, (2, 9), generator=torch.Generator().manual_seed(1))
    check_run_and_compare(model, quantized, ids)


@pytest.mark.parametrize("name", [name for name in CONFIGS if not name.startswith("Prototype")])
def test_save_pretrained_and_from_pretrained_keep_the_codes(tiny_llama, tmp_path, name):
    """quantize at from_pretrained (TorchAoConfig), save_pretrained to safetensors, load: qlib's codes and scales."""
    transformers, model = tiny_llama
    group = 64
    model.save_pretrained(tmp_path / "float")
    config = transformers.TorchAoConfig(quant_type=CONFIGS[name][0](group))
    quantized = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "float", quantization_config=config)
    quantized.save_pretrained(tmp_path / "quantized")
    assert (tmp_path / "quantized" / "model.safetensors").exists()
    loaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "quantized")
    floats = dict(model.named_modules())
    for path, module in loaded.named_modules():
        if path == "lm_head":  # transformers' TorchAoConfig leaves the head in float (modules_to_not_convert)
            assert torch.equal(module.weight, model.lm_head.weight)
        elif isinstance(module, torch.nn.Linear):
            weight = floats[path].weight.detach()
            if name.startswith("Int8WeightOnlyConfig(PerGroup"):
                ours = int8_weight(weight, group)
            elif "Intx" in name:
                ours = intx_weight(weight, group)
            else:
                ours = int8_weight(weight)
            assert_same_ints(ours[0], module.weight.qdata, path)
            assert_same_floats(ours[1], module.weight.scale, path)
            assert_same_ints(ours[2], module.weight.zero_point, path)
    ids = torch.randint(0, 512, (1, 7), generator=torch.Generator().manual_seed(2))
    check_run_and_compare(model, loaded, ids)


def test_save_pretrained_refuses_the_int4_cpu_weight_and_from_pretrained_quantizes_it(tiny_llama, tmp_path):
    """torchao's safetensors helpers do not know Int4OpaqueTensor; the fix is to save the float model and
    quantize where it runs, at from_pretrained."""
    transformers, model = tiny_llama
    model.save_pretrained(tmp_path / "float")
    config = transformers.TorchAoConfig(quant_type=int4_cpu(128))
    quantized = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "float", quantization_config=config)
    with pytest.raises(ValueError, match="Unsupported tensor type.*Int4OpaqueTensor"):
        quantized.save_pretrained(tmp_path / "int4")
    down = quantized.model.layers[1].mlp.down_proj.weight
    qdata, scale_and_zero = int4_weight_cpu(model.model.layers[1].mlp.down_proj.weight.detach(), 128)
    assert_same_ints(qdata, down.qdata)
    assert_same_floats(scale_and_zero, down.scale_and_zero)


# --- an AVX2-only CPU, emulated: qemu-x86_64 -cpu Haswell hides AVX-512 and VNNI from torch and oneDNN ----------

# Only torch and qlib under emulation (torchao's import alone would double the emulated time): torch's own
# _int_mm, which torchao's dynamic int8 Linear calls, and qlib's default for that CPU.
QEMU_SCRIPT = """
import pickle, sys
import torch
import qlib
x, qdata, scale, bias, a, b = pickle.loads(open(sys.argv[1], "rb").read())
product = torch._int_mm(a, b)
default = qlib.linear_int8_dynamic(x, qdata, scale, bias)
open(sys.argv[2], "wb").write(pickle.dumps((torch.cpu._is_vnni_supported(), product, default)))
"""


def test_int_mm_is_exact_on_an_emulated_avx2_cpu(tmp_path):
    """torch's _int_mm calls oneDNN only on AVX512-VNNI CPUs; elsewhere its own loop adds the products exactly.
    So on an AVX2-only CPU the dynamic int8 Linears are the exact product's, and qlib's default follows."""
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64)).eval()
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(3)) * 30  # large codes: pairs would saturate
    ao.quantize_(model, int8_dynamic())
    weight, bias = model[0].weight, model[0].bias
    a = torch.randint(100, 128, (32, 64), dtype=torch.int8)  # every pair of products past int16
    b = torch.randint(100, 128, (64, 16), dtype=torch.int8)
    vnni, product, default = run_on_haswell(QEMU_SCRIPT, (x, weight.qdata, weight.scale, bias, a, b), tmp_path)
    assert not vnni, "qemu's Haswell should hide VNNI"
    assert torch.equal(product, a.int() @ b.int()), "torch's _int_mm under qemu is not the exact product"
    exact = qlib.linear_int8_dynamic(x, weight.qdata, weight.scale, bias, pairs_saturate=False)
    saturated = qlib.linear_int8_dynamic(x, weight.qdata, weight.scale, bias, pairs_saturate=True)
    assert not torch.equal(saturated, exact), "these codes should tell saturated pairs apart"
    assert_same_floats(default, exact, "qlib's default under qemu")
