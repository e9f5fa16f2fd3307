"""Byte formulas checked against the real libraries' tensors on the CPU (bitsandbytes quantizes NF4 with
the same shapes and dtypes there: shared/notes/qlora-memory-internals.md section 8)."""

import pytest

torch = pytest.importorskip("torch")
bnb = pytest.importorskip("bitsandbytes")

from planner.memory.optimizer import optimizer_memory  # noqa: E402
from planner.memory.weights import linear4bit_bytes, linear8bit_bytes  # noqa: E402


def _quant_state_bytes(qs) -> int:
    total = qs.absmax.numel() * qs.absmax.element_size() + qs.code.numel() * qs.code.element_size()
    if qs.nested:
        total += qs.offset.numel() * qs.offset.element_size()
        total += qs.state2.absmax.numel() * qs.state2.absmax.element_size()
        total += qs.state2.code.numel() * qs.state2.code.element_size()
    return total


@pytest.mark.parametrize("out_features,in_features", [(4096, 4096), (1024, 4096), (14336, 4096), (11, 7), (128, 64)])
@pytest.mark.parametrize("double_quant", [True, False])
@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
def test_linear4bit_bytes_equal_real_quant_state(out_features, in_features, double_quant, quant_type):
    layer = bnb.nn.Linear4bit(
        in_features, out_features, bias=False, compute_dtype=torch.bfloat16,
        compress_statistics=double_quant, quant_type=quant_type,
    ).to(torch.bfloat16)
    layer = layer.to("cpu")  # quantizes
    weight = layer.weight
    assert weight.quant_state is not None
    real = weight.data.numel() * weight.data.element_size() + _quant_state_bytes(weight.quant_state)
    assert linear4bit_bytes(out_features * in_features, double_quant) == real


def test_int8_bytes_equal_real_int8params():
    layer = bnb.nn.Linear8bitLt(256, 512, bias=False, has_fp16_weights=False)
    layer.weight.data = layer.weight.data.to(torch.float16)
    weight = layer.to(torch.device("cpu")).weight  # quantizes to int8 + SCB
    assert weight.dtype == torch.int8
    real = weight.numel() * weight.element_size() + weight.SCB.numel() * weight.SCB.element_size()
    assert linear8bit_bytes(256, 512) == real


def _bnb_state_bytes(optimizer) -> int:
    total = 0
    for state in optimizer.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor):
                total += value.numel() * value.element_size()
    return total


LORA_SHAPES = [(64, 4096), (4096, 64), (8, 256), (16, 200), (8, 4096), (1024, 8)]


@pytest.mark.parametrize("optim,cls", [
    ("paged_adamw_8bit", "PagedAdamW8bit"), ("adamw_8bit", "AdamW8bit"), ("paged_adamw_32bit", "PagedAdamW32bit"),
])
def test_bnb_optimizer_state_bytes_equal_real_state(optim, cls):
    params = [torch.nn.Parameter(torch.randn(rows, cols)) for rows, cols in LORA_SHAPES]
    opt = getattr(bnb.optim, cls)(params, lr=1e-3)
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()
    real = _bnb_state_bytes(opt)
    # qmap tables are shared by all parameters (2 x 256 fp32) and belong to no tensor's state budget
    qmaps = sum(
        v.numel() * v.element_size() for s in opt.state.values() for k, v in s.items() if k.startswith("qmap")
    )
    predicted = optimizer_memory(optim, [(r, c, 1) for r, c in LORA_SHAPES], 4)
    assert predicted.device + predicted.paged == real - qmaps


def test_torch_adamw_state_and_foreach_temporary():
    params = [torch.nn.Parameter(torch.randn(rows, cols)) for rows, cols in LORA_SHAPES]
    opt = torch.optim.AdamW(params, lr=1e-3)
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()
    real = sum(v.numel() * v.element_size() for s in opt.state.values() for k, v in s.items() if k != "step")
    assert optimizer_memory("adamw_torch", [(r, c, 1) for r, c in LORA_SHAPES], 4).device == real
