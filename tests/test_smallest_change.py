"""The "smallest change" search (planner.search.smallest_change), on a made-up estimator whose numbers are easy to follow,
so every rule of the documented order is tested on its own; and on the real memory model for maximality."""

from types import SimpleNamespace

import pytest

from planner.inputs.catalog import resolve_model
from planner.inputs.config_file import parse_config, to_settings
from planner.memory.estimate import estimate
from planner.memory.overhead import select_profile
from planner.search.grid import shorter_seq_lens
from planner.search.smallest_change import smallest_change


def mapped(**training):
    lora = {"r": training.pop("r", 64), "target_modules": ["q_proj", "v_proj"]}
    quant = {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True,
             "bnb_4bit_compute_dtype": "bfloat16"}
    config = parse_config({"model": "llama-3.1-8b", "quantization": quant, "lora": lora,
                           "prepare_model_for_kbit_training": False,
                           "training": {"bf16": True, "packing": True, **training}})
    return to_settings(config, "llama")


def fake(settings):
    """activations: batch * seq_len, x4 without checkpointing; optimizer: rank x 8 (32-bit) or x 2 (8-bit);
    no safety margin."""
    acts = settings.batch * settings.seq_len * (1 if settings.gradient_checkpointing else 4)
    state = settings.rank * (2 if settings.optim.endswith("8bit") else 8)
    return SimpleNamespace(device_peak=acts + state, required_bytes=acts + state)


def patch(suggestion):
    return [str(change) for change in suggestion.changes]


BASE = dict(per_device_train_batch_size=4, gradient_accumulation_steps=2, max_seq_length=1024,
            gradient_checkpointing=False, optim="paged_adamw_32bit")


def test_speed_only_change_first_and_checkpointing_keeps_the_micro_batch():
    # base 4*1024*4 + 512 = 16896. Checkpointing: 4608; micro-batch 1: 4608 too; seq alone: 256
    s = smallest_change(mapped(**BASE), fake, 5000)
    assert patch(s) == ["training.gradient_checkpointing: false -> true"]
    assert s.peak_bytes == 4608 and s.headroom_bytes == 5000 - 4608


def test_fewest_knobs_wins_over_milder_kinds():
    # checkpointing + micro-batch 2 (2560) would keep seq_len, but one knob (seq_len 128: 2560) is fewer
    s = smallest_change(mapped(**BASE), fake, 2600)
    assert patch(s) == ["training.max_seq_length: 1024 -> 128"]


def test_lower_rank_before_shorter_sequences():
    m = mapped(per_device_train_batch_size=1, gradient_accumulation_steps=8, max_seq_length=1024,
               gradient_checkpointing=True, optim="adamw_8bit", r=256)
    # base 1024 + 512; rank 128 -> 1280 fits and keeps seq_len; seq_len 768 would fit too
    s = smallest_change(m, fake, 1300)
    assert patch(s) == ["lora.r: 256 -> 128"]


def test_8bit_optimizer_before_lower_rank():
    m = mapped(per_device_train_batch_size=1, gradient_accumulation_steps=8, max_seq_length=1024,
               gradient_checkpointing=True, optim="paged_adamw_32bit", r=64)
    s = smallest_change(m, fake, 1200)  # 8-bit state: 1152; rank 16: 1152 as well
    assert len(s.changes) == 1 and s.changes[0].field == "training.optim"
    assert s.changes[0].old == "paged_adamw_32bit" and s.changes[0].new.endswith("8bit")


def test_micro_batch_split_keeps_the_effective_batch():
    m = mapped(per_device_train_batch_size=8, gradient_accumulation_steps=2, max_seq_length=512,
               gradient_checkpointing=True, optim="paged_adamw_32bit", r=64)
    s = smallest_change(m, fake, 2700)  # batch 4: 2048 + 512 fits; batch 8: 4608 does not
    assert patch(s) == ["training.per_device_train_batch_size: 8 -> 4", "training.gradient_accumulation_steps: 2 -> 4"]
    assert s.settings.batch * s.settings.grad_accum == 16
    assert s.tokens_per_step == 16 * 512


def test_seq_len_bisection_finds_the_longest_multiple_of_128():
    m = mapped(per_device_train_batch_size=1, gradient_accumulation_steps=1, max_seq_length=4096,
               gradient_checkpointing=True, optim="adamw_8bit", r=8)
    s = smallest_change(m, fake, 1000)  # 16 + seq_len <= 1000 -> 896
    assert patch(s) == ["training.max_seq_length: 4096 -> 896"]


def test_nothing_fits():
    assert smallest_change(mapped(**BASE), fake, 10) is None


def test_patch_names_the_key_the_user_wrote():
    m = mapped(per_device_train_batch_size=1, max_length=4096, gradient_checkpointing=True, optim="adamw_8bit", r=8)
    assert patch(smallest_change(m, fake, 1000)) == ["training.max_length: 4096 -> 896"]


def test_shorter_seq_lens():
    assert shorter_seq_lens(1024) == [128, 256, 384, 512, 640, 768, 896]
    assert shorter_seq_lens(100) == [25, 50]  # shortest first, for the bisection


def test_real_model_suggestion_is_maximal():
    """Llama-3.1-8B at 16k tokens on 20 GiB: the suggested seq_len fits and 128 more would not."""
    arch, profile = resolve_model("llama-3.1-8b"), select_profile()
    m = mapped(per_device_train_batch_size=1, gradient_accumulation_steps=16, max_seq_length=16384,
               gradient_checkpointing=True, optim="paged_adamw_8bit", r=8)
    budget = 20 * 2**30
    run = lambda s: estimate(arch, s, profile)  # noqa: E731
    assert run(m.settings).device_peak > budget
    s = smallest_change(m, run, budget)
    assert [c.field for c in s.changes] == ["training.max_seq_length"]
    assert run(s.settings).device_peak == s.peak_bytes <= budget
    longer = s.settings.model_copy(update={"seq_len": s.settings.seq_len + 128})
    assert run(longer).device_peak > budget


@pytest.mark.parametrize("optim", ["adafactor", "sgd"])
def test_other_algorithms_are_not_swapped_in(optim):
    m = mapped(per_device_train_batch_size=1, max_seq_length=1024, gradient_checkpointing=True, optim=optim, r=64)
    s = smallest_change(m, fake, 1000)
    assert all(change.field != "training.optim" for change in s.changes)
