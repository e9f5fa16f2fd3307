"""The model of a ``config.json`` on the fake GPU, loaded the way the GPU harness loads it
(``planner/measure/build.py``: random weights quantized straight to NF4, one Linear at a time).

1. transformers builds the model class on ``meta`` and its ``Bnb4BitHfQuantizer`` swaps every
   ``nn.Linear`` for ``bnb.nn.Linear4bit`` (``quantizers/auto.py:get_hf_quantizer``,
   ``preprocess_model``), exactly as the harness does.
2. ``caching_allocator_warmup`` (``transformers/modeling_utils.py``) runs for real: its one model-sized
   request and free are the first events of the stream.
3. Each module's parameters become fake CUDA tensors in module order. A 4-bit weight is a random tensor
   in the model dtype quantized by bitsandbytes' own ``functional.quantize_4bit`` (what
   ``Params4bit._quantize`` calls; its fake kernels give the packed bytes, absmax, code, offset and nested
   state of the CUDA kernels); the rest go through the model's ``_init_weights``.

The one departure: a ``Params4bit`` cannot wrap a FakeTensor (``Tensor._make_subclass`` refuses a tensor
already bound to another Python class), so the quantized weight is a plain fake ``Parameter`` carrying
``Params4bit``'s attributes (``quant_state``, ``blocksize``, ``quant_type``, ``bnb_quantized``, ...), which is
all ``Linear4bit.forward`` and peft read. Its storage and shapes are the real ones.
"""

from __future__ import annotations

from planner.measure.build import bnb_config, materializer, model_dtype
from planner.inputs.settings import TrainSettings
from planner.trace.errors import TraceUnavailable


def hf_config(config: dict, settings: TrainSettings):
    """The ``PretrainedConfig`` of a ``config.json`` dict, with the settings' attention implementation."""
    from transformers import AutoConfig

    fields = dict(config)
    model_type = fields.pop("model_type", None)
    if model_type is None:
        raise TraceUnavailable("config.json has no model_type")
    try:
        hf = AutoConfig.for_model(model_type, **fields)
    except (KeyError, ValueError) as error:
        raise TraceUnavailable(f"transformers cannot build a {model_type!r} config ({error})") from None
    hf._attn_implementation = settings.attn
    return hf


def meta_model(config: dict, settings: TrainSettings):
    """The model on ``meta`` after ``preprocess_model`` (step 1), its dtype and its quantizer."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.modeling_utils import local_torch_dtype
    from transformers.quantizers.auto import get_hf_quantizer

    hf = hf_config(config, settings)
    dtype = model_dtype(hf)
    hf_quantizer, hf, device_map = get_hf_quantizer(hf, bnb_config(settings), {"": 0}, True, {})
    hf.dtype = dtype
    with torch.device("meta"), local_torch_dtype(dtype):
        model = AutoModelForCausalLM.from_config(hf, dtype=dtype)
        if hf_quantizer is not None:
            hf_quantizer.preprocess_model(model=model, dtype=dtype, device_map=device_map, checkpoint_files=None, use_kernels=False)
    if getattr(model, "_keep_in_fp32_modules", None) or getattr(model, "_keep_in_fp32_modules_strict", None):
        raise TraceUnavailable(f"{type(model).__name__} keeps modules in fp32 at load; the trace does not model that")
    return model, dtype, hf_quantizer, device_map


def load_on_fake_gpu(model, dtype, hf_quantizer, device_map) -> None:
    """Steps 2 and 3, under the recorder and FakeTensorMode; then ``postprocess_model`` and ``eval()`` as
    ``from_pretrained`` ends."""
    import torch
    from transformers.integrations.accelerate import expand_device_map
    from transformers.modeling_utils import caching_allocator_warmup

    caching_allocator_warmup(model, expand_device_map(device_map, list(model.state_dict().keys())), hf_quantizer)
    device = torch.device("cuda", 0)
    materialize = materializer(model, device, dtype, quantize=_quantized)
    for module in model.modules():
        materialize(module)
    left = [n for n, p in list(model.named_parameters()) + list(model.named_buffers()) if p.device.type == "meta"]
    if left:
        raise TraceUnavailable(f"left on meta after loading: {left[:3]}")
    if hf_quantizer is not None:
        model.hf_quantizer = hf_quantizer
        hf_quantizer.postprocess_model(model)
    model.eval()


def _quantized(value, meta_param, module):
    """``Params4bit(value, **meta_param.__dict__).to("cuda")`` (``bitsandbytes/nn/modules.py:Params4bit._quantize``)
    as a fake Parameter with Params4bit's attributes."""
    import bitsandbytes as bnb
    import torch

    w = value.contiguous()
    w_4bit, quant_state = bnb.functional.quantize_4bit(
        w,
        blocksize=meta_param.blocksize,
        compress_statistics=meta_param.compress_statistics,
        quant_type=meta_param.quant_type,
        quant_storage=meta_param.quant_storage,
    )
    param = torch.nn.Parameter(w_4bit, requires_grad=False)
    for name, attr in vars(meta_param).items():
        setattr(param, name, attr)
    param.quant_state, param.bnb_quantized, param.module = quant_state, True, module
    module.quant_state = quant_state
    return param
