"""A QLoRA fine-tune with ``QPlanCallback``: qplan checks the run before step 1, then logs the measured
peak memory of the first optimizer steps against its prediction and writes ``OUTPUT_DIR/qplan_memory.json``.

    python examples/train_qlora.py --model llama-3.1-8b --steps 4 --seq-len 1024 --batch 1 --rank 16 --output-dir out/qlora

``--model``:
- a local checkpoint folder (config.json + weights) or a Hugging Face hub id: ``from_pretrained`` with the
  BitsAndBytesConfig below;
- a catalogue name (``llama-3.1-8b``, ``70b``...; ``qplan`` lists them) or a folder / config.json without
  weights: the full-size model with random weights quantized straight to NF4 on the GPU
  (``planner.measure.build.build_model``: the state ``from_pretrained`` leaves, no download, no 16-bit copy).

The recipe is the seeds' (shared/seeds): NF4 + double quantization, bf16 compute,
``prepare_model_for_kbit_training``, LoRA on every linear (alpha = 2r, dropout 0.05), paged 32-bit AdamW,
lr 2e-4, max_grad_norm 0.3, bf16 autocast. Training data: random tokens, every sequence ``--seq-len`` long
(what the plan assumes). Needs a CUDA GPU (bitsandbytes 4-bit).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="checkpoint folder or hub id (real weights), or a catalogue name / config.json (random NF4 weights)")
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps to train")
    parser.add_argument("--seq-len", type=int, default=1024, help="tokens per sequence (max_seq_length)")
    parser.add_argument("--batch", type=int, default=1, help="per_device_train_batch_size")
    parser.add_argument("--grad-accum", type=int, default=4, help="gradient_accumulation_steps")
    parser.add_argument("--rank", type=int, default=16, help="LoraConfig.r")
    parser.add_argument("--optim", default="paged_adamw_32bit", help="TrainingArguments.optim")
    parser.add_argument("--gpu", default="auto", help="card to plan for (default: this GPU through NVML)")
    parser.add_argument("--output-dir", required=True, help="where qplan_memory.json goes")
    return parser.parse_args(argv)


def has_weights(folder: Path) -> bool:
    return any(folder.glob("*.safetensors")) or any(folder.glob("*.bin"))


def load_model(spec: str, bnb_config, output_dir: Path):
    """(model, how it was loaded)."""
    import torch
    from transformers import AutoModelForCausalLM

    path = Path(spec).expanduser()
    folder = path.parent if path.is_file() else path
    if folder.is_dir() and has_weights(folder):
        return AutoModelForCausalLM.from_pretrained(folder, quantization_config=bnb_config, device_map={"": 0}, dtype=torch.bfloat16), "from_pretrained"
    if not folder.is_dir():
        from planner.inputs.catalog import find_entry

        entry = find_entry(spec)
        if entry is None:  # a hub id: real weights
            return AutoModelForCausalLM.from_pretrained(spec, quantization_config=bnb_config, device_map={"": 0}, dtype=torch.bfloat16), "from_pretrained"
        folder = output_dir / "model_config"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(entry.config))
    from planner.measure.build import build_model
    from planner.inputs.settings import TrainSettings

    settings = TrainSettings(quant="nf4", double_quant=True, compute_dtype="bf16", attn="sdpa")
    return build_model(folder, settings, "cuda", log=lambda msg: print(f"build: {msg}", flush=True)), "random NF4 weights (planner.measure.build)"


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig, Trainer, TrainingArguments

    from planner.integrations import QPlanCallback
    from planner.preflight import WillNotFit

    if not torch.cuda.is_available():
        print("train_qlora.py needs a CUDA GPU (bitsandbytes 4-bit training)", file=sys.stderr)
        return 2
    output_dir = Path(args.output_dir)
    bnb_config = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16,
    )
    model, how = load_model(args.model, bnb_config, output_dir)
    print(f"model: {args.model} ({how})", flush=True)
    model = prepare_model_for_kbit_training(model)
    model = get_peft_model(model, LoraConfig(
        r=args.rank, lora_alpha=2 * args.rank, target_modules="all-linear", lora_dropout=0.05, bias="none", task_type="CAUSAL_LM",
    ))
    training_args = TrainingArguments(
        output_dir=str(output_dir), per_device_train_batch_size=args.batch, gradient_accumulation_steps=args.grad_accum,
        optim=args.optim, learning_rate=2e-4, max_grad_norm=0.3, bf16=True, max_steps=args.steps,
        logging_steps=1, save_strategy="no", report_to=[], disable_tqdm=True,
    )
    vocab = model.get_input_embeddings().weight.shape[0]

    class RandomTokens(torch.utils.data.Dataset):
        def __len__(self):
            return args.steps * args.batch * args.grad_accum

        def __getitem__(self, index):
            ids = torch.randint(0, vocab, (args.seq_len,), generator=torch.Generator().manual_seed(index))
            return {"input_ids": ids, "labels": ids.clone()}

    callback = QPlanCallback(gpu=args.gpu, max_seq_length=args.seq_len, measure_steps=min(3, args.steps))
    try:
        Trainer(model=model, args=training_args, train_dataset=RandomTokens(), callbacks=[callback]).train()
    except WillNotFit as stop:  # raised before step 1: nothing trained
        print(f"qplan stopped the run: {stop}\nplan written to {output_dir / 'qplan_memory.json'}", file=sys.stderr)
        return 1

    report = callback.report
    print(f"wrote {output_dir / 'qplan_memory.json'}")
    for key, comp in report.comparison.items():
        print(f"{key:22s} predicted {comp.predicted / 2**30:7.2f} GiB  measured {comp.measured / 2**30:7.2f} GiB  ({100 * comp.error:+.1f}%)")
    for warning in report.warnings:
        print(f"warning: {warning}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
