"""The QLoRA recipe of the seeds (shared/seeds), on a built model, in two forms that must measure the same:

- manual loop: ``forward`` (under ``torch.autocast`` when ``settings.autocast``) on a random token batch
  with ``labels = input_ids`` and no padding, ``loss.backward()`` for each of ``grad_accum`` micro-batches,
  then ``clip_grad_norm_(max_grad_norm)``, ``optimizer.step()``, ``optimizer.zero_grad(set_to_none=True)``;
- Trainer: the same through ``transformers.Trainer`` with the seeds' ``TrainingArguments``, phases taken
  by a forward pre-hook / forward hook on the model and a ``TrainerCallback``.

Both take the optimizer from ``Trainer.get_optimizer_cls_and_kwargs`` (transformers
``trainer_optimizer.py``), so ``optim`` names map exactly as the Trainer maps them.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext

from planner.inputs.settings import TRAINING_ARGS_OPTIM, TrainSettings

LEARNING_RATE = 2e-4  # the seeds' TrainingArguments
MAX_GRAD_NORM = 0.3
# settings.optim -> the TrainingArguments.optim name the Trainer is given (the first name that prices as it)
TRAINER_OPTIM = {priced: name for name, priced in reversed(TRAINING_ARGS_OPTIM.items())}
ATTENTION_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj")


def lora_target_modules(model, targets: tuple[str, ...]):
    """``LoraConfig.target_modules``: ``"all-linear"`` as peft's string, ``attn`` as the model's attention
    projections, anything else as module names."""
    if targets == ("all-linear",):
        return "all-linear"
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    wanted: list[str] = []
    for target in targets:
        wanted += [n for n in ATTENTION_NAMES if n in names] if target == "attn" else [target]
    return sorted(set(wanted))


def attach_adapter(model, settings: TrainSettings):
    """``prepare_model_for_kbit_training`` (when asked), then ``get_peft_model`` with the settings' LoRA.

    Without prepare_kbit, gradient checkpointing is switched on as the Trainer does it:
    ``gradient_checkpointing_enable()`` with no kwargs (transformers' default ``use_reentrant=False``).
    ``adapter_fp32=False`` keeps the LoRA weights in the model dtype (``autocast_adapter_dtype=False``)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if settings.prepare_kbit and settings.quantized:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=settings.gradient_checkpointing)
    elif settings.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha if settings.alpha is not None else 2 * settings.rank,
        target_modules=lora_target_modules(model, settings.targets),
        lora_dropout=settings.lora_dropout,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config, autocast_adapter_dtype=settings.adapter_fp32)


def training_arguments(settings: TrainSettings, steps: int, output_dir: str, *, cuda: bool = True):
    """The seeds' ``TrainingArguments`` with the scenario's knobs; nothing saved, logged or reported."""
    from transformers import TrainingArguments

    half = settings.autocast and cuda
    return TrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=settings.batch,
        gradient_accumulation_steps=settings.grad_accum,
        optim=TRAINER_OPTIM[settings.optim],
        learning_rate=LEARNING_RATE,
        bf16=half and settings.compute_dtype == "bf16",
        fp16=half and settings.compute_dtype == "fp16",
        max_grad_norm=MAX_GRAD_NORM,
        max_steps=steps,
        gradient_checkpointing=settings.gradient_checkpointing,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        use_cpu=not cuda,
    )


def make_optimizer(model, args):
    """The optimizer the Trainer would build: ``Trainer.get_optimizer_cls_and_kwargs(args, model)`` over the
    trainable parameters (weight decay 0 in both of the Trainer's groups, so one group)."""
    from transformers import Trainer

    cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    params = [p for p in model.parameters() if p.requires_grad]
    return cls([{"params": params, "weight_decay": args.weight_decay}], **kwargs)


def vocab_size(model) -> int:
    """Rows of the input embedding, read before any wrapper (FSDP) can have replaced it with a shard."""
    config = getattr(model, "config", None)
    return getattr(config, "vocab_size", None) or model.get_input_embeddings().weight.shape[0]


def random_batch(torch, settings: TrainSettings, vocab: int, generator):
    return torch.randint(0, vocab, (settings.batch, settings.seq_len), generator=generator)


def run_manual(model, settings: TrainSettings, steps: int, tracker, device, guard: Callable) -> float:
    """Train ``steps`` optimizer steps; returns the median seconds per step after the first."""
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        args = training_arguments(settings, steps, tmp, cuda=device.type == "cuda")
    optimizer = make_optimizer(model, args)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16 if settings.compute_dtype == "bf16" else torch.float16)
        if settings.autocast else nullcontext()
    )
    generator, vocab = torch.Generator().manual_seed(0), vocab_size(model)
    model.train()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        optimizer_step(model, optimizer, params, settings, settings.grad_accum,
                       lambda: random_batch(torch, settings, vocab, generator).to(device), lambda: autocast,
                       tracker.enter, guard)
        tracker.close()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:] or times)


def optimizer_step(model, optimizer, params: list, settings: TrainSettings, micro_batches: int, batch: Callable,
                   autocast: Callable, mark: Callable[[str], None], guard: Callable | None = None) -> None:
    """One optimizer step of the manual loop, shared by the GPU harness and the trace (``planner.trace.step``):
    ``micro_batches`` of ``batch()`` forward under ``autocast()`` and backward, loss scaled by grad_accum, then
    clipping, ``guard(optimizer)``, the step and ``zero_grad``; ``mark`` names each phase as it starts."""
    import torch

    for _ in range(micro_batches):
        ids = batch()
        mark("forward")
        with autocast():
            loss = model(input_ids=ids, labels=ids).loss / settings.grad_accum
        mark("backward")
        loss.backward()
        del loss, ids
    mark("optimizer")
    torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
    if guard is not None:
        guard(optimizer)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def run_trainer(model, settings: TrainSettings, steps: int, tracker, device, guard: Callable) -> float:
    """The same steps through ``transformers.Trainer``; returns the median seconds per step after the first."""
    import torch
    from transformers import Trainer, TrainerCallback

    class RandomTokens(torch.utils.data.Dataset):
        def __init__(self, count: int, vocab: int):
            self.count, self.vocab = count, vocab
            self.generator = torch.Generator().manual_seed(0)

        def __len__(self):
            return self.count

        def __getitem__(self, index):
            ids = torch.randint(0, self.vocab, (settings.seq_len,), generator=self.generator)
            return {"input_ids": ids, "labels": ids.clone()}

    times: list[float] = []

    class Phases(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
            tracker.enter("optimizer")
            guard(optimizer)

        def on_step_end(self, args, state, control, **kwargs):
            tracker.close()
            times.append(time.perf_counter() - self.start)

    with tempfile.TemporaryDirectory() as tmp:
        args = training_arguments(settings, steps, tmp, cuda=device.type == "cuda")
        dataset = RandomTokens(steps * settings.batch * settings.grad_accum, vocab_size(model))
        trainer = Trainer(model=model, args=args, train_dataset=dataset, callbacks=[Phases()])
        hooks = [
            model.register_forward_pre_hook(lambda *_: tracker.enter("forward")),
            model.register_forward_hook(lambda *_: tracker.enter("backward")),
        ]
        try:
            trainer.train()
        finally:
            for hook in hooks:
                hook.remove()
    return statistics.median(times[1:] or times)
