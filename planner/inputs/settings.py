"""What a fine-tune is set up to do: the knobs users write in BitsAndBytesConfig, LoraConfig and
TrainingArguments, under short names. Defaults follow the seeds' QLoRA recipe: NF4 with double
quantization, bf16 compute, LoRA on every linear projection, paged 32-bit AdamW, gradient
checkpointing, SDPA attention, ``prepare_model_for_kbit_training`` and the Trainer's ``bf16=True``
(CUDA autocast)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Quant = Literal["nf4", "fp4", "int8", "none"]
Optim = Literal["paged_adamw_32bit", "paged_adamw_8bit", "adamw_torch", "adamw_8bit", "adafactor", "sgd"]
Attn = Literal["sdpa", "eager", "flash_attention_2"]
Dtype = Literal["bf16", "fp16"]
Strategy = Literal["fsdp", "zero3", "ddp", "device-map"]

ALLOC_CONF = "PYTORCH_CUDA_ALLOC_CONF"
EXPANDABLE = "expandable_segments:True"


def expandable_in(alloc_conf: str | None) -> bool:
    """Whether a ``PYTORCH_CUDA_ALLOC_CONF`` value turns on expandable segments (torch reads ``key:value``
    pairs separated by commas; the value is case-insensitive)."""
    pairs = (item.split(":", 1) for item in (alloc_conf or "").replace(" ", "").split(",") if ":" in item)
    return any(key == "expandable_segments" and value.lower() == "true" for key, value in pairs)


OPTIMIZERS: tuple[str, ...] = Optim.__args__  # type: ignore[attr-defined]
# TrainingArguments.optim name -> the optimizer qplan prices it as (transformers 5.23 trainer_optimizer.py:
# adamw_torch_fused is torch AdamW(fused=True), the same two float32 states as adamw_torch; adamw_8bit is an
# alias of adamw_bnb_8bit, bitsandbytes AdamW with optim_bits=8). Every other name is refused.
TRAINING_ARGS_OPTIM = {
    "adamw_torch": "adamw_torch", "adamw_torch_fused": "adamw_torch",
    "adamw_bnb_8bit": "adamw_8bit", "adamw_8bit": "adamw_8bit",
    "paged_adamw_32bit": "paged_adamw_32bit", "paged_adamw_8bit": "paged_adamw_8bit",
    "adafactor": "adafactor", "sgd": "sgd",
}
RANKS: tuple[int, ...] = (8, 16, 32, 64, 128, 256)


class TrainSettings(BaseModel):
    """One fully specified training setup. Every field has the meaning of its Hugging Face namesake."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    quant: Quant = Field("nf4", description="BitsAndBytesConfig: nf4/fp4 = load_in_4bit, int8 = load_in_8bit, none = 16-bit LoRA")
    full_finetune: bool = Field(False, description="train every weight in 16-bit instead of LoRA (for comparison)")
    double_quant: bool = Field(True, description="bnb_4bit_use_double_quant")
    compute_dtype: Dtype = Field("bf16", description="bnb_4bit_compute_dtype, and the Trainer's bf16/fp16 flag")
    rank: int = Field(64, ge=1, le=65536, description="LoraConfig.r")
    alpha: float | None = Field(None, description="LoraConfig.lora_alpha (no effect on memory)")
    targets: tuple[str, ...] = Field(("all-linear",), description="LoraConfig.target_modules")
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0, description="LoraConfig.lora_dropout")
    seq_len: int = Field(2048, ge=1, le=10_000_000, description="max_seq_length / max_length (packed, every sequence full)")
    batch: int = Field(1, ge=1, le=100_000, description="per_device_train_batch_size")
    grad_accum: int = Field(16, ge=1, le=1_000_000, description="gradient_accumulation_steps")
    optim: Optim = Field("paged_adamw_32bit", description="TrainingArguments.optim")
    gradient_checkpointing: bool = True
    attn: Attn = Field("sdpa", description="attn_implementation")
    prepare_kbit: bool = Field(True, description="peft.prepare_model_for_kbit_training was called (casts non-4-bit params to fp32)")
    autocast: bool = Field(True, description="forward runs under CUDA autocast (Trainer bf16=True / fp16=True)")
    adapter_fp32: bool = Field(True, description="get_peft_model(autocast_adapter_dtype=True): LoRA weights in float32; "
                               "false keeps them in the model dtype, as FSDP-QLoRA does")
    expandable_segments: bool = Field(False, description="the process runs with PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True "
                                      "(torch's caching allocator grows segments instead of adding new ones)")

    @field_validator("targets", mode="before")
    @classmethod
    def _split_targets(cls, value):
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",")]
        value = tuple(part for part in value if part)
        if not value:
            raise ValueError("target_modules is empty")
        return value

    @property
    def compute_dtype_name(self) -> str:
        """The torch dtype name of ``compute_dtype`` ("bfloat16" / "float16"), as configs spell dtypes."""
        return {"bf16": "bfloat16", "fp16": "float16"}[self.compute_dtype]

    @property
    def tokens(self) -> int:
        """Tokens in one micro-batch, ``T = batch * seq_len``."""
        return self.batch * self.seq_len

    @property
    def quantized(self) -> bool:
        return self.quant != "none" and not self.full_finetune


class Parallel(BaseModel):
    """How a run spreads over GPUs (``--gpus``, ``--strategy``, ``--cpu-offload``); formulas in
    ``planner/memory/parallel.py``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gpus: int = Field(1, ge=1, le=1024, description="GPUs of one host, one process each (device-map: one process)")
    strategy: Strategy = Field("fsdp", description="fsdp (FSDP-QLoRA) | zero3 (DeepSpeed ZeRO-3) | ddp | device-map")
    cpu_offload: bool = Field(False, description="fsdp: CPUOffload(offload_params=True); zero3: offload_param and "
                              "offload_optimizer to the CPU")

    @model_validator(mode="after")
    def _offload_is_sharded(self):
        if self.cpu_offload and (self.gpus < 2 or self.strategy not in ("fsdp", "zero3")):
            raise ValueError("CPU offload is an option of fsdp and zero3 on 2 or more GPUs")
        return self

    @property
    def sharded(self) -> bool:
        """FSDP or ZeRO-3 over several GPUs: trains the 16-bit FSDP-QLoRA recipe."""
        return self.gpus > 1 and self.strategy in ("fsdp", "zero3")

    @property
    def label(self) -> str:
        if self.gpus == 1:
            return "one GPU"
        names = {"fsdp": "FSDP-QLoRA", "zero3": "DeepSpeed ZeRO-3", "ddp": "DDP", "device-map": 'device_map="auto"'}
        return f"{self.gpus} GPUs, {names[self.strategy]}" + (" with CPU offload" if self.cpu_offload else "")
