"""QPlanCallback driven by a real transformers Trainer on a tiny random Llama on the CPU: the run that cannot
fit stops before step 1, the one that fits trains and writes the predicted numbers; trl-style args; and the
measured-vs-predicted path on a CUDA GPU (marked gpu)."""

import dataclasses
import json

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from planner.errors import QPlanError  # noqa: E402
from planner.integrations import JSON_NAME, QPlanCallback  # noqa: E402
from planner.preflight import WillNotFit  # noqa: E402

VOCAB, SEQ = 256, 16


def tiny_model():
    config = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=256)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).to(torch.bfloat16)  # qplan prices 16-bit or quantized bases
    return peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))


class RandomTokens(torch.utils.data.Dataset):
    def __len__(self):
        return 64

    def __getitem__(self, index):
        ids = torch.randint(0, VOCAB, (SEQ,), generator=torch.Generator().manual_seed(index))
        return {"input_ids": ids, "labels": ids.clone()}


class CountSteps(transformers.TrainerCallback):
    def __init__(self):
        self.begun = 0

    def on_step_begin(self, args, state, control, **kwargs):
        self.begun += 1


def arguments(tmp_path, cls=None, **extra):
    cls = cls or transformers.TrainingArguments
    return cls(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=extra.pop("batch", 2), use_cpu=True,
               report_to=[], save_strategy="no", logging_strategy="no", disable_tqdm=True, **extra)


def train(tmp_path, callback, args=None):
    counter = CountSteps()
    trainer = transformers.Trainer(model=tiny_model(), args=args or arguments(tmp_path), train_dataset=RandomTokens(),
                                   callbacks=[callback, counter])
    return trainer, counter


def report(tmp_path):
    return json.loads((tmp_path / JSON_NAME).read_text())


def test_run_that_cannot_fit_stops_before_the_first_step(tmp_path):
    # planned at 32k tokens x micro-batch 8 on a 3 GiB card: the plan cannot fit, and must stop the run
    callback = QPlanCallback(gpu="3GB", max_seq_length=32768, margin=0.05)
    trainer, counter = train(tmp_path, callback, arguments(tmp_path, batch=8))
    with pytest.raises(WillNotFit) as caught:
        trainer.train()
    assert counter.begun == 0 and trainer.state.global_step == 0
    assert "will not fit on 3 GiB card" in str(caught.value)
    assert caught.value.suggestion is not None  # a smaller micro-batch with more accumulation fits the made-up card
    saved = report(tmp_path)
    assert saved["fits"] is False
    assert saved["plan"]["settings"]["seq_len"] == 32768 and saved["plan"]["settings"]["batch"] == 8
    assert saved["plan"]["peak_bytes"] > saved["plan"]["gpu"]["budget_bytes"]
    assert saved["suggestion"]["changes"][0]["field"] == "training_args.per_device_train_batch_size"


def test_run_that_fits_trains_and_writes_the_prediction(tmp_path):
    callback = QPlanCallback(gpu="80GB", max_seq_length=SEQ)
    trainer, counter = train(tmp_path, callback)
    trainer.train()
    assert trainer.state.global_step == 2 and counter.begun == 2
    saved = report(tmp_path)
    plan = saved["plan"]
    assert saved["fits"] is True and saved["skipped"] is None
    assert plan["settings"]["rank"] == 4 and plan["settings"]["targets"] == ["q_proj", "v_proj"]
    assert plan["settings"]["seq_len"] == SEQ and plan["settings"]["batch"] == 2 and plan["settings"]["quant"] == "none"
    assert plan["peak_bytes"] >= plan["reserved_peak_bytes"] >= plan["allocated_peak_bytes"] > 0
    # LoRA r=4 on q (64->64) and v (64->32) in 2 layers: 2 * 4 * ((64 + 64) + (64 + 32))
    assert plan["trainable_params"] == saved["live_trainable_params"] == 1792
    assert saved["readings"] == [] and saved["warnings"] == []  # CPU: nothing measured
    logged = [entry for entry in trainer.state.log_history if "qplan/fits" in entry]
    assert logged and logged[0]["qplan/fits"] is True and logged[0]["qplan/predicted_peak_gib"] > 0


def test_warn_mode_trains_anyway_and_records_why(tmp_path):
    callback = QPlanCallback(gpu="1GB", max_seq_length=32768, on_will_not_fit="warn")
    trainer, counter = train(tmp_path, callback, arguments(tmp_path, batch=8))
    trainer.train()
    assert counter.begun == 2
    saved = report(tmp_path)
    assert saved["fits"] is False and "training anyway" in saved["warnings"][0]


def test_sftconfig_style_args_give_the_sequence_length(tmp_path):
    @dataclasses.dataclass
    class SFTConfig(transformers.TrainingArguments):  # trl's names, without trl
        max_length: int = 1024
        packing: bool = False

    callback = QPlanCallback(gpu="80GB")
    trainer, _ = train(tmp_path, callback, arguments(tmp_path, cls=SFTConfig, max_length=SEQ, packing=True))
    trainer.train()
    assert report(tmp_path)["plan"]["settings"]["seq_len"] == SEQ
    assert not any("packing is off" in note for note in report(tmp_path)["plan"]["notes"])


def test_plain_training_arguments_need_a_sequence_length(tmp_path):
    trainer, counter = train(tmp_path, QPlanCallback(gpu="80GB"))
    with pytest.raises(QPlanError, match="max_seq_length"):
        trainer.train()
    assert counter.begun == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only path of gpu='auto'")
def test_auto_gpu_without_cuda_skips_the_check(tmp_path):
    trainer, counter = train(tmp_path, QPlanCallback(max_seq_length=SEQ))
    trainer.train()
    assert counter.begun == 2
    assert "no CUDA GPU" in report(tmp_path)["skipped"]


@pytest.mark.gpu
def test_gpu_measures_peaks_against_the_plan(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    bnb = transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                          bnb_4bit_compute_dtype=torch.bfloat16)
    config = transformers.LlamaConfig(hidden_size=1024, intermediate_size=2816, num_hidden_layers=4, num_attention_heads=16,
                                      num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048)
    transformers.LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(tmp_path / "ckpt")
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt", quantization_config=bnb, device_map={"": 0})
    model = peft.prepare_model_for_kbit_training(model)
    model = peft.get_peft_model(model, peft.LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))

    class Tokens(torch.utils.data.Dataset):
        def __len__(self):
            return 64

        def __getitem__(self, index):
            ids = torch.randint(0, 32000, (512,))
            return {"input_ids": ids, "labels": ids.clone()}

    args = transformers.TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=3, per_device_train_batch_size=2,
                                          gradient_accumulation_steps=2, optim="paged_adamw_32bit", bf16=True,
                                          report_to=[], save_strategy="no", logging_strategy="no", disable_tqdm=True)
    callback = QPlanCallback(max_seq_length=512)
    transformers.Trainer(model=model, args=args, train_dataset=Tokens(), callbacks=[callback]).train()
    saved = json.loads((tmp_path / "out" / JSON_NAME).read_text())
    assert saved["fits"] is True and [r["step"] for r in saved["readings"]] == [1, 2, 3]
    assert {"max_memory_allocated", "max_memory_reserved"} <= set(saved["comparison"])
    for comp in saved["comparison"].values():
        assert comp["measured"] > 0 and comp["predicted"] > 0
    assert saved["plan"]["trainable_params"] == saved["live_trainable_params"]


def test_live_4bit_model_is_read_as_the_qlora_recipe(tmp_path):
    """A 4-bit model (random NF4 weights, built on the CPU as from_pretrained leaves it) after
    prepare_model_for_kbit_training and peft's all-linear: read as nf4 + double quant, prepare_kbit,
    checkpointing, the 7 projections, and trained with the callback."""
    from planner.measure.build import build_model
    from planner.inputs.settings import TrainSettings

    transformers.LlamaConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, vocab_size=VOCAB).save_pretrained(tmp_path / "cfg")
    model = build_model(tmp_path / "cfg", TrainSettings(quant="nf4", double_quant=True, compute_dtype="bf16"), "cpu")
    model = peft.prepare_model_for_kbit_training(model)
    model = peft.get_peft_model(model, peft.LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"))
    callback = QPlanCallback(gpu="24GB", max_seq_length=SEQ)
    args = arguments(tmp_path, optim="paged_adamw_32bit", gradient_accumulation_steps=2)
    transformers.Trainer(model=model, args=args, train_dataset=RandomTokens(), callbacks=[callback]).train()
    saved = report(tmp_path)
    s = saved["plan"]["settings"]
    assert (s["quant"], s["double_quant"], s["compute_dtype"], s["prepare_kbit"], s["gradient_checkpointing"]) == (
        "nf4", True, "bf16", True, True)
    assert sorted(s["targets"]) == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    assert (s["optim"], s["grad_accum"], s["batch"]) == ("paged_adamw_32bit", 2, 2)
    assert saved["plan"]["trainable_params"] == saved["live_trainable_params"] > 0
    assert saved["fits"] is True


def test_a_float32_base_model_is_refused_not_priced_as_bf16(tmp_path):
    from planner.errors import QPlanError
    from planner.integrations import live_run_inputs

    model = tiny_model().to(torch.float32)
    with pytest.raises(QPlanError, match="loaded in float32 and not quantized"):
        live_run_inputs(model, arguments(tmp_path))
