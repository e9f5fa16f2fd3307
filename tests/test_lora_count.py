"""LoRA parameter counts equal what peft itself reports for real architectures (built on the meta device
from catalogue configs, cut to 2 layers: the count is per layer)."""

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from planner.inputs.architecture import from_config  # noqa: E402
from planner.inputs.catalog import find_entry  # noqa: E402
from planner.memory.trainable import PEFT_EXPERT_TARGETS, trainable_params  # noqa: E402
from planner.inputs.settings import TrainSettings  # noqa: E402

CASES = [
    ("llama-3.1-8b", ("all-linear",), 16),
    ("llama-2-7b", ("q_proj", "v_proj"), 8),
    ("qwen2.5-7b", ("all-linear",), 64),
    ("qwen3-8b", ("q_proj", "k_proj", "v_proj", "o_proj"), 32),
    ("gemma-2-2b", ("all-linear",), 8),
    ("phi-3-mini-4k", ("all-linear",), 16),
    ("phi-3-mini-4k", ("qkv_proj",), 8),
    ("mistral-7b-v0.1", ("gate_proj", "up_proj", "down_proj"), 128),
    ("mixtral-8x7b", ("all-linear",), 8),
    ("mixtral-8x7b", ("attn",), 8),
    ("mixtral-8x7b", ("q_proj", "k_proj", "v_proj", "o_proj", "w1", "w2", "w3"), 16),  # experts, no router
    ("mixtral-8x7b", ("gate",), 8),  # the router alone
    ("mixtral-8x7b", ("q_proj", "v_proj", "gate_proj"), 8),  # gate_proj: no such module, peft ignores it
    ("qwen3-30b-a3b", ("gate_proj", "up_proj", "down_proj"), 8),
    ("qwen3-30b-a3b", ("all-linear",), 4),
    ("gemma-3-1b", ("all-linear",), 16),
    ("phi-4", ("all-linear",), 8),
]


def peft_trainable(config: dict, targets: tuple[str, ...], rank: int) -> int:
    hf_config = transformers.AutoConfig.for_model(**config)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(hf_config)
    names = {"attn": ["q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj"]}
    target = "all-linear" if targets == ("all-linear",) else [n for t in targets for n in names.get(t, [t])]
    if isinstance(target, list):
        present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
        experts = PEFT_EXPERT_TARGETS.get(config["model_type"], {})  # v4 expert names peft maps onto the banks
        target = [t for t in target if t in present or t in experts or t == "gate_proj"]
    lora = peft.LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=target, task_type="CAUSAL_LM")
    trainable, _ = peft.get_peft_model(model, lora).get_nb_trainable_parameters()
    return trainable


@pytest.mark.parametrize("slug,targets,rank", CASES, ids=[f"{s}-{'+'.join(t)}-r{r}" for s, t, r in CASES])
def test_lora_params_equal_peft(slug, targets, rank):
    config = {**find_entry(slug).config, "num_hidden_layers": 2}
    arch = from_config(config, slug)
    settings = TrainSettings(rank=rank, targets=targets)
    assert trainable_params(arch, settings) == peft_trainable(config, targets, rank)
