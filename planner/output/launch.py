"""How to launch a multi-GPU plan: the command and the settings that make the run match its estimate."""

from __future__ import annotations

from planner.inputs.settings import Parallel

FSDP_YAML = ("distributed_type: FSDP, mixed_precision: bf16, fsdp_config: {{fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP, "
             "fsdp_sharding_strategy: FULL_SHARD, fsdp_offload_params: {offload}, fsdp_cpu_ram_efficient_loading: true, "
             "fsdp_use_orig_params: false, fsdp_sync_module_states: true}}")
ZERO3_YAML = ("distributed_type: DEEPSPEED, mixed_precision: bf16, deepspeed_config: {{zero_stage: 3, zero3_init_flag: true, "
              "offload_param_device: {device}, offload_optimizer_device: {device}}}")
SHARDED_MODEL = ("load with BitsAndBytesConfig(..., bnb_4bit_quant_storage=torch.bfloat16) and torch_dtype=torch.bfloat16, "
                 "no prepare_model_for_kbit_training")


def launch_hint(parallel: Parallel) -> str:
    """One line: the launcher, its config keys and what the training script must do."""
    n = parallel.gpus
    if parallel.strategy == "fsdp":
        config = FSDP_YAML.format(offload=str(parallel.cpu_offload).lower())
        return f"accelerate launch --num_processes {n} --config_file fsdp.yaml train.py; fsdp.yaml: {config}; {SHARDED_MODEL}"
    if parallel.strategy == "zero3":
        config = ZERO3_YAML.format(device="cpu" if parallel.cpu_offload else "none")
        return f"accelerate launch --num_processes {n} --config_file zero3.yaml train.py; zero3.yaml: {config}; {SHARDED_MODEL}"
    if parallel.strategy == "ddp":
        return f"torchrun --nproc_per_node {n} train.py (or accelerate launch --multi_gpu --num_processes {n}); each process loads the whole model on its own GPU"
    return (f"python train.py with from_pretrained(..., device_map=\"auto\") over {n} visible GPUs; one process, "
            "one GPU computes at a time")
