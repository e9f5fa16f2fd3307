"""The real transformers model at full size, from ``config.json`` alone: random weights quantized straight
to NF4 on the GPU one Linear at a time, so no checkpoint and no full 16-bit copy are needed (a 70B model
loads on an 80 GB card).

It follows ``PreTrainedModel.from_pretrained(dir, quantization_config=BitsAndBytesConfig(...),
device_map={"": 0})`` step by step (transformers 5.17-5.23 ``modeling_utils.py``), with the checkpoint
read replaced by random numbers:

1. ``quantizers.auto.get_hf_quantizer`` builds the ``Bnb4BitHfQuantizer`` and puts the
   ``BitsAndBytesConfig`` on the config; ``dtype`` is ``"auto"``: ``config.dtype``.
2. The model class is instantiated on the ``meta`` device with ``dtype`` as torch's default (the
   context ``from_pretrained`` builds in, ``get_init_context``); ``hf_quantizer.preprocess_model`` swaps every
   ``nn.Linear`` for ``bnb.nn.Linear4bit`` through ``replace_with_bnb_linear`` with transformers' own skip
   list (``get_keys_to_not_convert``: lm_head, tied and last modules) and sets ``is_quantized`` /
   ``quantization_method``.
3. ``caching_allocator_warmup`` reserves the model's bytes in one block, as ``_load_pretrained_model`` does.
4. Every parameter is materialized on the device in module order: a ``Params4bit`` from a random tensor in
   the model dtype, quantized by ``.to(device)`` exactly as ``integrations/bitsandbytes.py:Bnb4bitQuantize``
   does with a checkpoint tensor; everything else through the model's own ``_init_weights`` (norms to 1,
   rotary ``inv_freq`` recomputed). Tied parameters stay one Parameter.
5. ``model.hf_quantizer`` is set and ``hf_quantizer.postprocess_model`` runs (``config.quantization_config``,
   ``is_loaded_in_4bit``, ``_is_quantized``), then ``model.eval()``, so peft and the Trainer see the model
   they see after ``from_pretrained``.

``planner.measure.equality`` checks on the GPU that ``torch.cuda.memory_allocated`` after this equals the
value after ``from_pretrained`` of a saved random checkpoint.
"""

from __future__ import annotations

import time
from pathlib import Path

from planner.errors import QPlanError
from planner.inputs.settings import TrainSettings


def bnb_config(settings: TrainSettings, quant_storage=None):
    """The ``BitsAndBytesConfig`` of the settings (``None`` for a 16-bit LoRA run); ``quant_storage`` is
    ``bnb_4bit_quant_storage`` (FSDP-QLoRA stores the packed 4-bit bytes as bfloat16 so FSDP can shard them)."""
    import torch
    from transformers import BitsAndBytesConfig

    if settings.quant == "none":
        return None
    if settings.quant not in ("nf4", "fp4") or settings.full_finetune:
        raise QPlanError(f"measuring supports 4-bit (nf4/fp4) or 16-bit LoRA, not quant={settings.quant} full={settings.full_finetune}")
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=settings.quant,
        bnb_4bit_use_double_quant=settings.double_quant,
        bnb_4bit_compute_dtype=getattr(torch, settings.compute_dtype_name),
        bnb_4bit_quant_storage=quant_storage or torch.uint8,
    )


def load_config(config_dir: str | Path, attn: str):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(config_dir))
    config._attn_implementation = attn  # what from_pretrained(attn_implementation=...) does
    return config


def model_dtype(config):
    """``dtype="auto"``: the config's dtype; configs that do not say take bfloat16 (the Hub checkpoints of
    the catalogue models without it are bf16)."""
    import torch

    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    return dtype if dtype in (torch.bfloat16, torch.float16, torch.float32) else torch.bfloat16


def build_model(config_dir: str | Path, settings: TrainSettings, device: str = "cuda", *, dtype=None,
                quant_storage=None, materialize: bool = True, log=None):
    """The model ``from_pretrained`` would give for this config with the settings' quantization, random weights
    (``dtype``: the ``dtype=`` argument, default the config's; ``quant_storage``: see :func:`bnb_config`;
    ``materialize=False`` leaves it on the ``meta`` device, to be made real later, e.g. by
    :func:`planner.measure.fsdp.stage_on_cpu`)."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.modeling_utils import local_torch_dtype
    from transformers.quantizers.auto import get_hf_quantizer

    config = load_config(config_dir, settings.attn)
    dtype = dtype or model_dtype(config)
    target = torch.device("cuda", torch.cuda.current_device()) if device == "cuda" else torch.device(device)
    device_map = {"": target.index if target.type == "cuda" else "cpu"}
    hf_quantizer, config, device_map = get_hf_quantizer(config, bnb_config(settings, quant_storage), device_map, True, {})
    config.dtype = dtype

    with torch.device("meta"), local_torch_dtype(dtype):  # from_pretrained's init context: new Linear4bit biases in dtype
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        if hf_quantizer is not None:
            hf_quantizer.preprocess_model(model=model, dtype=dtype, device_map=device_map, checkpoint_files=None, use_kernels=False)
    if getattr(model, "_keep_in_fp32_modules", None) or getattr(model, "_keep_in_fp32_modules_strict", None):
        raise QPlanError(f"{type(model).__name__} keeps modules in fp32 at load; the random builder does not model that")
    if materialize:
        if target.type == "cuda":
            _warmup_allocator(model, device_map, hf_quantizer)
        materialize_all(model, target, dtype, log=log)
    if hf_quantizer is not None:
        model.hf_quantizer = hf_quantizer
        hf_quantizer.postprocess_model(model)
    model.eval()
    return model


def _warmup_allocator(model, device_map, hf_quantizer) -> None:
    try:
        from transformers.integrations.accelerate import expand_device_map
        from transformers.modeling_utils import caching_allocator_warmup
    except ImportError:  # a transformers without it does not warm up either
        return
    caching_allocator_warmup(model, expand_device_map(device_map, list(model.state_dict().keys())), hf_quantizer)


def materialize_all(model, device, dtype, *, log=None, then=None) -> None:
    """Replace every meta parameter/buffer with a real one on ``device``, module by module; ``then(module)``
    runs on each module right after it is built (FSDP staging moves it to the CPU)."""
    materialize = materializer(model, device, dtype)
    started, layers = time.perf_counter(), 0
    for name, module in model.named_modules():
        materialize(module)
        if then:
            then(module)
        if log and name.count(".") == 2 and name.split(".")[-2] == "layers":
            layers += 1
            if layers in (1, 10) or layers % 20 == 0:
                log(f"layer {layers} built, {time.perf_counter() - started:.1f} s")
    left = [n for n, p in list(model.named_parameters()) + list(model.named_buffers()) if p.device.type == "meta"]
    if left:
        raise RuntimeError(f"left on meta after materializing: {left[:5]}")


def materializer(model, device, dtype, quantize=None):
    """A function that makes one module's own meta parameters and buffers real on ``device``: 4-bit weights
    from random numbers in ``dtype`` quantized by ``Params4bit.to`` as a checkpoint tensor would be (or by
    ``quantize(value, meta_param, module)``: the trace's fake-GPU quantization), the rest through the model's
    ``_init_weights``. Tied parameters stay one Parameter."""
    import torch

    try:
        import bitsandbytes as bnb

        params4bit = bnb.nn.Params4bit
    except ImportError:
        params4bit = ()
    base = getattr(model, "get_base_model", lambda: model)()
    std = getattr(base.config, "initializer_range", None) or 0.02
    done: dict[int, torch.nn.Parameter] = {}

    @torch.no_grad()
    def materialize(module) -> None:
        new_params = False
        for key, param in list(module.named_parameters(recurse=False)):
            if id(param) in done:  # tied: the same Parameter as one already built
                module._parameters[key] = done[id(param)]
                continue
            if param.device.type != "meta":
                continue
            if params4bit and isinstance(param, params4bit):
                value = torch.empty(param.shape, dtype=dtype, device=device).normal_(0.0, std)
                real = (quantize(value, param, module) if quantize else
                        params4bit(value, requires_grad=False, **param.__dict__).to(device))
                del value
                module._is_hf_initialized = True
            else:
                real = torch.nn.Parameter(torch.empty_like(param, device=device), requires_grad=param.requires_grad)
                new_params = True
                if params4bit and isinstance(module, torch.nn.Linear):  # bias of a Linear4bit
                    real.zero_()
            module._parameters[key] = real
            done[id(param)] = real
        for key, buffer in list(module.named_buffers(recurse=False)):
            if buffer is not None and buffer.device.type == "meta":
                module._buffers[key] = torch.empty_like(buffer, device=device)
                new_params = True
        if new_params and not isinstance(module, _linear4bit_types()):
            base._init_weights(module)

    return materialize


def _linear4bit_types() -> tuple:
    try:
        import bitsandbytes as bnb

        return (bnb.nn.Linear4bit,)
    except ImportError:
        return ()
