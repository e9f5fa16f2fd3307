"""A training config written with the names people already use, read into :class:`TrainSettings`.

Sections (YAML or JSON; every name is its Hugging Face namesake)::

    model: llama-2-70b              # catalogue alias, config.json path, model dir or hub id
    gpu: rtx4090                    # card name, size (24GB) or auto;  gpus: 1
    ecc: off                        # the card's ECC mode, where its memory depends on it (default on)
    quantization: {load_in_4bit, load_in_8bit, bnb_4bit_quant_type, bnb_4bit_use_double_quant,
                   bnb_4bit_compute_dtype}                                 # BitsAndBytesConfig
    lora: {r, lora_alpha, target_modules, lora_dropout, bias, task_type}   # peft LoraConfig
    training: {per_device_train_batch_size, gradient_accumulation_steps, optim, bf16, fp16,
               gradient_checkpointing, max_seq_length | max_length, packing}  # TrainingArguments / trl SFTConfig
    attn_implementation: sdpa       # from_pretrained(attn_implementation=...)
    prepare_model_for_kbit_training: true   # peft; default true when the model is quantized

A field left out takes the default of the library object it belongs to (what the run would do), except
``prepare_model_for_kbit_training``, which is a call and not an object field: the QLoRA recipe makes it,
so it defaults to true for a quantized model (and, as peft's ``use_gradient_checkpointing=True`` default
does, switches gradient checkpointing on). Every default taken is reported as a note.

Each section also accepts an explicit list of fields that do not change training memory (learning rate,
logging, saving...): they are read and ignored. Fields that change memory in ways qplan does not model
(DoRA, DeepSpeed, torch.compile...) are refused when set. Anything else is a typo: one line naming the
closest valid field, exit 2.
"""

from __future__ import annotations

import difflib
import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from planner.errors import QPlanError
from planner.files import read_text
from planner.inputs.settings import TRAINING_ARGS_OPTIM, TrainSettings

# ---- value normalization --------------------------------------------------------------------------

# bnb_4bit_compute_dtype / bf16-fp16 names -> TrainSettings.compute_dtype
COMPUTE_DTYPES = {"bfloat16": "bf16", "bf16": "bf16", "float16": "fp16", "fp16": "fp16", "half": "fp16"}

# transformers 5.23 training_args.py: default_optim is adamw_torch_fused with torch >= 2.8
DEFAULT_OPTIM = "adamw_torch_fused"


def plain(value: Any) -> Any:
    """Values of real HF objects as YAML would hold them: enums -> their value, ``torch.bfloat16`` ->
    ``"bfloat16"``, sets -> sorted lists."""
    if isinstance(value, enum.Enum):
        return value.value
    if type(value).__name__ == "dtype" and str(value).startswith("torch."):
        return str(value).removeprefix("torch.")
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return value


# ---- sections -------------------------------------------------------------------------------------


class Section(BaseModel):
    """One config section. ``IGNORED`` fields are accepted and have no effect on memory; ``UNMODELLED``
    fields change memory in ways qplan does not model and are refused unless left at an empty value."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)  # `r: true` is not r=1
    IGNORED: ClassVar[frozenset[str]] = frozenset()
    UNMODELLED: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def known(cls) -> set[str]:
        return set(cls.model_fields) | cls.IGNORED | cls.UNMODELLED


class Quantization(Section):
    """transformers ``BitsAndBytesConfig``; defaults are its defaults (``utils/quantization_config.py``)."""

    load_in_4bit: bool = False
    load_in_8bit: bool = False
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = "fp4"
    bnb_4bit_use_double_quant: bool = False
    bnb_4bit_compute_dtype: str | None = Field(None, description="None means float32 in BitsAndBytesConfig")

    IGNORED = frozenset({"quant_method", "llm_int8_threshold", "llm_int8_has_fp16_weight", "bnb_4bit_quant_storage"})
    UNMODELLED = frozenset({"llm_int8_skip_modules", "llm_int8_enable_fp32_cpu_offload"})

    @model_validator(mode="after")
    def _one_mode(self):
        if self.load_in_4bit and self.load_in_8bit:
            raise ValueError("load_in_4bit and load_in_8bit are both true; BitsAndBytesConfig allows one")
        return self


class Lora(Section):
    """peft ``LoraConfig``; defaults are its defaults (peft 0.21 ``tuners/lora/config.py``)."""

    r: int = Field(8, ge=1)
    lora_alpha: float = 8
    target_modules: str | list[str] | None = Field(None, description="None: peft's default for the model type")
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    bias: Literal["none"] = Field("none", description="'all' / 'lora_only' train biases: not modelled")
    task_type: Literal["CAUSAL_LM"] | None = None

    IGNORED = frozenset({
        "use_rslora", "init_lora_weights", "inference_mode", "fan_in_fan_out", "peft_type", "base_model_name_or_path",
        "revision", "layers_pattern", "auto_mapping",
    })
    UNMODELLED = frozenset({
        "use_dora", "modules_to_save", "layers_to_transform", "rank_pattern", "alpha_pattern", "exclude_modules",
        "lora_bias", "target_parameters", "use_qalora", "megatron_config", "trainable_token_indices",
    })


class Training(Section):
    """``TrainingArguments`` and trl's ``SFTConfig``; defaults are ``TrainingArguments``' (transformers 5.23)."""

    per_device_train_batch_size: int = Field(8, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    optim: str = DEFAULT_OPTIM
    bf16: bool = False
    fp16: bool = False
    gradient_checkpointing: bool | None = None
    activation_checkpointing: bool | None = Field(None, description="transformers 5.23's name for gradient_checkpointing")
    max_seq_length: int | None = Field(None, ge=1, description="trl SFTTrainer / SFTConfig (older trl)")
    max_length: int | None = Field(None, ge=1, description="trl SFTConfig (newer trl)")
    packing: bool = False
    padding_free: bool = False

    IGNORED = frozenset({
        "output_dir", "overwrite_output_dir", "run_name", "seed", "data_seed", "do_train", "do_eval",
        "learning_rate", "lr_scheduler_type", "lr_scheduler_kwargs", "warmup_ratio", "warmup_steps", "weight_decay",
        "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm", "optim_args", "num_train_epochs", "max_steps",
        "logging_dir", "logging_strategy", "logging_steps", "logging_first_step", "logging_nan_inf_filter",
        "save_strategy", "save_steps", "save_total_limit", "save_only_model", "save_safetensors",
        "eval_strategy", "evaluation_strategy", "eval_steps", "per_device_eval_batch_size", "eval_accumulation_steps",
        "load_best_model_at_end", "metric_for_best_model", "greater_is_better", "prediction_loss_only",
        "report_to", "disable_tqdm", "push_to_hub", "hub_model_id", "hub_strategy", "hub_private_repo",
        "group_by_length", "length_column_name", "remove_unused_columns", "label_names", "dataloader_num_workers",
        "dataloader_pin_memory", "dataloader_drop_last", "dataloader_persistent_workers", "dataloader_prefetch_factor",
        "resume_from_checkpoint", "ignore_data_skip", "tf32", "ddp_find_unused_parameters", "neftune_noise_alpha",
        "include_num_input_tokens_seen", "auto_find_batch_size", "gradient_checkpointing_kwargs",
        "activation_checkpointing_kwargs", "use_cpu", "local_rank", "fsdp_config",
        # trl SFTConfig
        "dataset_text_field", "dataset_kwargs", "dataset_num_proc", "dataset_batch_size", "completion_only_loss",
        "assistant_only_loss", "eos_token", "pad_token", "packing_strategy", "model_init_kwargs", "chat_template_path",
    })
    UNMODELLED = frozenset({"deepspeed", "fsdp", "torch_compile", "use_liger_kernel"})

    @model_validator(mode="after")
    def _consistent(self):
        if self.bf16 and self.fp16:
            raise ValueError("bf16 and fp16 are both true; TrainingArguments allows one")
        if self.max_seq_length and self.max_length and self.max_seq_length != self.max_length:
            raise ValueError(f"max_seq_length={self.max_seq_length} and max_length={self.max_length} disagree; keep one")
        return self

    @property
    def seq_len(self) -> int | None:
        return self.max_seq_length or self.max_length

    @property
    def checkpointing(self) -> bool | None:
        """``activation_checkpointing`` wins over its deprecated alias, as in ``TrainingArguments.__post_init__``."""
        return self.activation_checkpointing if self.activation_checkpointing is not None else self.gradient_checkpointing


class RunConfig(BaseModel):
    """The whole file."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    model: str
    gpu: str = "auto"
    ecc: Literal["on", "off"] | None = Field(None, description="ECC mode of a card whose memory depends on it")
    gpus: int = Field(1, ge=1, le=1024)
    quantization: Quantization | None = None
    lora: Lora | None = None
    training: Training = Training()
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    prepare_model_for_kbit_training: bool | None = None


SECTIONS: dict[str, type[Section]] = {"quantization": Quantization, "lora": Lora, "training": Training}


# ---- reading ------------------------------------------------------------------------------------------


# Names people write for a field under another tool's or an older library's spelling -> the field here.
ALIASES = {
    "lora_r": "r", "lora_rank": "r", "rank": "r", "alpha": "lora_alpha", "dropout": "lora_dropout",
    "target": "target_modules", "lora_target_modules": "target_modules",
    "per_device_batch_size": "per_device_train_batch_size", "batch_size": "per_device_train_batch_size",
    "micro_batch_size": "per_device_train_batch_size", "train_batch_size": "per_device_train_batch_size",
    "grad_accum": "gradient_accumulation_steps", "gradient_accumulation": "gradient_accumulation_steps",
    "seq_len": "max_seq_length", "sequence_len": "max_seq_length", "cutoff_len": "max_seq_length",
    "optimizer": "optim", "quant_type": "bnb_4bit_quant_type", "double_quant": "bnb_4bit_use_double_quant",
    "compute_dtype": "bnb_4bit_compute_dtype",
}


def _unknown(name: str, where: str, cls_fields: set[str], known: set[str]) -> QPlanError:
    """One line: the field meant (an alias, else the closest memory-relevant field), else the fields that
    matter for memory (never the whole list of accepted, ignored ones)."""
    meant = ALIASES.get(name)
    if meant not in known:
        close = difflib.get_close_matches(name, sorted(cls_fields), n=1, cutoff=0.6)
        meant = close[0] if close else None
    hint = f" (did you mean {meant}?)" if meant else f" (the fields that change memory: {', '.join(sorted(cls_fields))})"
    return QPlanError(f"unknown field {where}{name}{hint}")


def _check_section(name: str, cls: type[Section], data: Any) -> dict:
    """The fields that matter for memory, after refusing typos and unmodelled features."""
    if not isinstance(data, Mapping):
        raise QPlanError(f"{name} must be a mapping of field: value, got {type(data).__name__}")
    kept = {}
    for key, value in data.items():
        key = str(key)
        if key not in cls.known():
            raise _unknown(key, f"{name}.", set(cls.model_fields), cls.known())
        if key in cls.UNMODELLED and value not in (None, False, "", [], {}, ()):
            raise QPlanError(f"{name}.{key} changes memory in a way qplan does not model yet; remove it to check the rest")
        if key in cls.model_fields:
            kept[key] = plain(value)
    return kept


def parse_config(data: Any, source: str = "config", labels: Mapping[str, str] | None = None) -> RunConfig:
    """A parsed YAML/JSON mapping -> :class:`RunConfig`, or one clear :class:`QPlanError`. ``labels`` renames
    sections in messages (the Python API says ``training_args`` for ``training``)."""
    if not isinstance(data, Mapping):
        raise QPlanError(f"{source}: expected a mapping with model, quantization, lora, training (got {type(data).__name__})")
    label = {name: (labels or {}).get(name, name) for name in SECTIONS}
    top = set(RunConfig.model_fields)
    checked: dict[str, Any] = {}
    for key, value in data.items():
        key = str(key)
        if key not in top:
            raise _unknown(key, "", top, top)
        checked[key] = _check_section(label[key], SECTIONS[key], value) if key in SECTIONS and value is not None else value
    if isinstance(checked.get("gpu"), (int, float)) and not isinstance(checked["gpu"], bool):
        checked["gpu"] = str(checked["gpu"])  # `gpu: 24` -> resolve_gpu asks for a unit
    if isinstance(checked.get("ecc"), bool):
        checked["ecc"] = "on" if checked["ecc"] else "off"  # YAML 1.1 reads `ecc: off` as false
    try:
        return RunConfig(**checked)
    except ValidationError as err:
        first = err.errors()[0]
        loc = [label.get(str(part), str(part)) for part in first["loc"]]
        raise QPlanError(f"{source}: {'.'.join(loc) or 'config'}: {first['msg']}") from None


def load_config_file(path: str | Path) -> RunConfig:
    """Read a ``.yaml``/``.yml`` (pyyaml, imported here) or ``.json`` training config. Read only."""
    return parse_config(load_data(path), source=str(path))


def load_data(path: str | Path) -> Any:
    """The parsed YAML/JSON of a config file (any tool's), refusing duplicate keys and deep nesting. Read only."""
    path = Path(path)
    if path.suffix.lower() not in (".yaml", ".yml", ".json"):
        raise QPlanError(f"{path}: a config must be .yaml, .yml or .json")
    text = read_text(path, "config")
    try:
        data = _load_yaml(text, path) if path.suffix.lower() in (".yaml", ".yml") else _load_json(text, path)
    except RecursionError:
        raise QPlanError(f"{path} nests too deeply to be a training config") from None
    return data


def _load_json(text: str, path: Path) -> Any:
    def unique(pairs: list[tuple[str, Any]]) -> dict:
        keys = [key for key, _ in pairs]
        twice = sorted({key for key in keys if keys.count(key) > 1})
        if twice:
            raise QPlanError(f"{path}: {twice[0]!r} is given twice; keep one")
        return dict(pairs)

    try:
        return json.loads(text, object_pairs_hook=unique)
    except json.JSONDecodeError as err:
        raise QPlanError(f"{path} is not valid JSON: {err}") from None
    except ValueError as err:  # an integer of more digits than Python converts
        raise QPlanError(f"{path} is not a usable config: {str(err).splitlines()[0]}") from None


def _load_yaml(text: str, path: Path) -> Any:
    import yaml  # a base dependency

    class UniqueKeyLoader(yaml.SafeLoader):
        """safe_load, refusing a mapping that names a key twice (YAML says keys are unique; pyyaml keeps the last)."""

        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise QPlanError(f"{path}: line {key_node.start_mark.line + 1}: {key!r} is given twice; keep one")
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    try:
        return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        raise QPlanError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None


# ---- mapping to TrainSettings ---------------------------------------------------------------------------

# peft 0.21.2 utils/constants.py TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING, for the model types
# planner.inputs.architecture lays out; peft raises for a type it has no entry for.
PEFT_DEFAULT_TARGETS = {t: ("q_proj", "v_proj") for t in ("llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma2", "gemma3_text")}


@dataclass
class Spelling:
    """How another tool's config (axolotl, LLaMA-Factory, trl; :mod:`planner.inputs.formats`) spells the
    knobs that were read into a :class:`RunConfig`, so that a patch names the tool's own keys."""

    format: str = "qplan"
    keys: dict[str, str] = field(default_factory=dict)  # "training.per_device_train_batch_size" -> "micro_batch_size"
    values: dict[str, Callable[[Any], Any]] = field(default_factory=dict)  # TrainSettings field -> qplan value -> the tool's
    update: dict[str, Any] = field(default_factory=dict)  # TrainSettings fields the tool sets outside the HF sections
    notes: list[str] = field(default_factory=list)


@dataclass
class Mapped:
    """A config as :class:`TrainSettings`, plus where each knob was written (for patches)."""

    settings: TrainSettings
    fixed: set[str] = field(default_factory=set)  # TrainSettings fields the user wrote
    paths: dict[str, str] = field(default_factory=dict)  # TrainSettings field -> "training.max_seq_length"
    written: dict[str, Any] = field(default_factory=dict)  # TrainSettings field -> the value as written
    notes: list[str] = field(default_factory=list)
    values: dict[str, Callable[[Any], Any]] = field(default_factory=dict)  # see Spelling.values

    def written_as(self, setting: str, value: Any) -> Any:
        """A TrainSettings value as the config's own key takes it (LLaMA-Factory's
        ``disable_gradient_checkpointing`` is the negation of ``gradient_checkpointing``)."""
        spell = self.values.get(setting)
        return spell(value) if spell else value


def to_settings(config: RunConfig, model_type: str, labels: Mapping[str, str] | None = None,
                spelling: Spelling | None = None) -> Mapped:
    """Map the sections to :class:`TrainSettings`. ``model_type`` picks peft's default target modules;
    ``labels`` renames the sections in messages (the Python API says ``training_args`` for ``training``);
    ``spelling`` names the knobs as another tool's config wrote them."""
    mapping = _Mapping(config, labels, spelling)
    mapping.quantization()
    mapping.lora(model_type)
    mapping.training()
    return mapping.finish()


class _Mapping:
    """One config on its way to :class:`TrainSettings`: a method per section, then :meth:`finish`."""

    def __init__(self, config: RunConfig, labels: Mapping[str, str] | None, spelling: Spelling | None = None):
        self.config, self.spelling = config, spelling
        self.label = {name: (labels or {}).get(name, name) for name in SECTIONS}
        self.quant, self.lora_section, self.train = config.quantization or Quantization(), config.lora, config.training
        if self.lora_section is None:
            raise QPlanError(f"no {self.label['lora']} given: qplan checks LoRA / QLoRA fine-tunes (LoraConfig: r, target_modules...)")
        if self.train.seq_len is None:
            raise QPlanError(
                f"{self.label['training']}.max_seq_length (or max_length) is not set: qplan needs the sequence length "
                "(TrainingArguments has none, trl's SFTConfig calls it max_length; preflight() and QPlanCallback "
                "take max_seq_length=...)"
            )
        self.sections = {"quantization": self.quant, "lora": self.lora_section, "training": self.train}
        self.out = Mapped(settings=TrainSettings(), values=dict(spelling.values) if spelling else {})
        self.values: dict[str, Any] = {}
        self.defaulted: list[str] = []

    def take(self, setting: str, section: str, key: str, value: Any, written: Any = None, *, note_default: bool = True) -> None:
        """Set ``setting`` from ``section.key``, remembering where it was written (or that a default was used)."""
        out = self.out
        self.values[setting] = value
        path = f"{self.label[section]}.{key}"
        out.paths[setting] = self.spelling.keys.get(path, path) if self.spelling else path
        out.written[setting] = out.written_as(setting, value if written is None else written)
        if key in self.sections[section].model_fields_set:
            out.fixed.add(setting)
        elif note_default:
            self.defaulted.append(f"{out.paths[setting]}={show(out.written[setting])}")

    def quantization(self) -> None:
        """BitsAndBytesConfig, and the Trainer's bf16/fp16 autocast."""
        quant, train, label, notes = self.quant, self.train, self.label, self.out.notes
        if quant.load_in_4bit:
            self.take("quant", "quantization", "bnb_4bit_quant_type", quant.bnb_4bit_quant_type)
            self.take("double_quant", "quantization", "bnb_4bit_use_double_quant", quant.bnb_4bit_use_double_quant)
            dtype = str(quant.bnb_4bit_compute_dtype or "float32").removeprefix("torch.").lower()
            if dtype not in COMPUTE_DTYPES:
                default = " (the BitsAndBytesConfig default)" if quant.bnb_4bit_compute_dtype is None else ""
                raise QPlanError(
                    f"{label['quantization']}.bnb_4bit_compute_dtype is {dtype}{default}: qplan models bfloat16 or "
                    "float16 compute (the QLoRA recipe uses bfloat16)"
                )
            self.take("compute_dtype", "quantization", "bnb_4bit_compute_dtype", COMPUTE_DTYPES[dtype],
                      quant.bnb_4bit_compute_dtype)
        else:
            self.values["quant"] = "int8" if quant.load_in_8bit else "none"
            self.values["compute_dtype"] = "bf16" if train.bf16 or not train.fp16 else "fp16"
            if not (train.bf16 or train.fp16):
                notes.append("neither bf16 nor fp16 is set and the model is not 4-bit: the plan assumes it was loaded in bfloat16")
        self.values["autocast"] = train.bf16 or train.fp16
        if quant.load_in_4bit and not self.values["autocast"]:
            notes.append(f"{label['training']}.bf16/fp16 not set: no autocast, the LoRA adapters compute in float32")

    def lora(self, model_type: str) -> None:
        """LoraConfig: rank, dropout and the targets as peft resolves them."""
        lora, label, notes = self.lora_section, self.label["lora"], self.out.notes
        self.take("rank", "lora", "r", lora.r)
        self.take("alpha", "lora", "lora_alpha", lora.lora_alpha, note_default=False)  # no effect on memory
        self.take("lora_dropout", "lora", "lora_dropout", lora.lora_dropout)
        targets = lora.target_modules
        if targets is None:
            if model_type not in PEFT_DEFAULT_TARGETS:
                raise QPlanError(f"{label}.target_modules is not set and peft has no default for model_type {model_type!r}: list the modules")
            targets = PEFT_DEFAULT_TARGETS[model_type]
            key = f"{label}.target_modules"
            key = self.spelling.keys.get(key, key) if self.spelling else key
            notes.append(f"{key} not set: peft's default for {model_type} is {', '.join(targets)}")
        if not isinstance(targets, str) and any("." in str(t) for t in targets):
            # peft matches a target on the module name or a dotted suffix of it; once injected, peft stores
            # "all-linear" as the full module paths (model.layers.0.mlp.down_proj ...)
            targets = list(dict.fromkeys(str(t).rsplit(".", 1)[-1] for t in targets))
            notes.append(f"{label}.target_modules names module paths: planned as {', '.join(targets)} in every layer")
        self.take("targets", "lora", "target_modules", (targets,) if isinstance(targets, str) else tuple(targets),
                  note_default=False)

    def training(self) -> None:
        """TrainingArguments / SFTConfig: lengths, batches, optimizer, checkpointing, packing."""
        train, config, notes = self.train, self.config, self.out.notes
        self.take("seq_len", "training", "max_seq_length" if train.max_seq_length else "max_length", train.seq_len)
        self.take("batch", "training", "per_device_train_batch_size", train.per_device_train_batch_size)
        self.take("grad_accum", "training", "gradient_accumulation_steps", train.gradient_accumulation_steps)
        if train.optim not in TRAINING_ARGS_OPTIM:
            raise QPlanError(f"{self.label['training']}.optim {train.optim!r} is not modelled; qplan knows "
                             f"{', '.join(TRAINING_ARGS_OPTIM)}")
        self.take("optim", "training", "optim", TRAINING_ARGS_OPTIM[train.optim], train.optim)
        if train.optim == "adamw_torch_fused":
            notes.append(
                "optim adamw_torch_fused is priced as adamw_torch (the same two float32 states); the fused kernel "
                "skips the foreach step temporary, so the optimizer-step figure is an upper bound"
            )
        quantized = self.values["quant"] != "none"
        prepare = config.prepare_model_for_kbit_training
        self.values["prepare_kbit"] = quantized if prepare is None else prepare
        if prepare is None and quantized:
            notes.append(
                "prepare_model_for_kbit_training assumed called (the QLoRA recipe): norms and embeddings in float32, "
                "gradient checkpointing on (its use_gradient_checkpointing=True default)"
            )
        by_prepare = self.values["prepare_kbit"] and quantized
        self.take("gradient_checkpointing", "training",
                  "activation_checkpointing" if train.activation_checkpointing is not None else "gradient_checkpointing",
                  bool(train.checkpointing) or by_prepare, bool(train.checkpointing), note_default=not by_prepare)
        self.values["attn"] = config.attn_implementation
        if not (train.packing or train.padding_free) and self.spelling is None:  # a tool's reader words its own
            notes.append(
                "packing is off: each micro-batch is padded to its longest sequence, at worst max_seq_length; "
                f"the plan assumes every sequence is {train.seq_len} tokens"
            )

    def finish(self) -> Mapped:
        out = self.out
        if self.defaulted:
            out.notes.append("not set, library defaults used: " + ", ".join(self.defaulted))
        if self.spelling:
            self.values.update(self.spelling.update)
            out.notes[:0] = self.spelling.notes
        try:
            out.settings = TrainSettings(**self.values)
        except ValidationError as err:
            first = err.errors()[0]
            where = out.paths.get(str(first["loc"][0]), str(first["loc"][0])) if first["loc"] else "config"
            raise QPlanError(f"{where}: {first['msg']}") from None
        return out


def show(value: Any) -> str:
    """A value as a YAML line shows it: ``true``, ``null``, ``[q_proj, v_proj]``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)
