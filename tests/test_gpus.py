"""--gpu parsing (catalogue names, sizes, auto through NVML) and the catalogue's own sanity."""

import json
import re
import subprocess
import sys
import types

import pytest

from planner.inputs import gpus
from planner.errors import QPlanError
from planner.inputs.gpus import Gpu, catalog_gpus, normalize, resolve_gpu
from planner.inputs.units import GiB, MiB, TiB


@pytest.mark.parametrize(
    "spec,name,mib",
    [
        ("rtx4090", "rtx4090", 24564),
        ("RTX 4090", "rtx4090", 24564),
        ("4090", "rtx4090", 24564),
        ("rtx-4090", "rtx4090", 24564),
        ("geforce_rtx-4090", "rtx4090", 24564),
        ("NVIDIA GeForce RTX 4090", "rtx4090", 24564),
        ("3090", "rtx3090", 24576),
        ("RTX 3090 Ti", "rtx3090ti", 24564),
        ("5090", "rtx5090", 32607),
        ("A10G", "a10g", 23028),
        ("a10", "a10", 23028),
        ("L4", "l4", 23034),
        ("l40s", "l40s", 46068),
        ("Tesla T4", "t4", 15360),
        ("V100-SXM2-32GB", "v100-32gb", 32768),
        ("rtx a6000", "a6000", 46068),
        ("RTX 6000 Ada", "rtx6000-ada", 46068),
        ("A100 40GB", "a100-40gb", 40960),
        ("NVIDIA A100-SXM4-80GB", "a100-80gb", 81920),
        ("H100", "h100", 81559),
        ("NVIDIA H100 80GB HBM3", "h100", 81559),
        ("h100 nvl", "h100-nvl", 95830),
        ("H200", "h200", 143771),
        ("b200", "b200", 183359),
    ],
)
def test_catalogue_names_and_aliases(spec, name, mib):
    gpu = resolve_gpu(spec)
    assert (gpu.name, gpu.total_bytes, gpu.count) == (name, mib * MiB, 1)


def test_bf16_follows_compute_capability():
    assert not resolve_gpu("t4").bf16 and not resolve_gpu("v100-16gb").bf16
    assert resolve_gpu("a100-80gb").bf16 and resolve_gpu("rtx3090").bf16 and resolve_gpu("h100").bf16


@pytest.mark.parametrize(
    "spec,nbytes,label",
    [
        ("24GB", 24 * GiB, "24 GiB card"),
        ("24GiB", 24 * GiB, "24 GiB card"),
        ("24G", 24 * GiB, "24 GiB card"),
        ("24 gb", 24 * GiB, "24 GiB card"),
        ("80GB", 80 * GiB, "80 GiB card"),
        ("24576MiB", 24 * GiB, "24 GiB card"),
        ("24564MiB", 24564 * MiB, "23.99 GiB card"),
        ("1.5TB", 1536 * GiB, "1536 GiB card"),
    ],
)
def test_sizes_are_binary_units(spec, nbytes, label):
    gpu = resolve_gpu(spec)
    assert (gpu.total_bytes, gpu.label, gpu.bf16) == (nbytes, label, True)
    assert spec in gpu.source


@pytest.mark.parametrize(
    "spec,message",
    [
        ("24XB", "cannot read GPU memory '24XB'"),
        ("24K", "cannot read GPU memory"),
        ("0GB", "must be larger than zero"),
        ("-5GB", "must be larger than zero"),
        ("0", "must be larger than zero"),
        ("5TB", "no single GPU has more than 4 TiB"),
        ("4097GB", "no single GPU has more than 4 TiB"),
        ("24MB", "less than 1 GiB"),
        ("24", "write 24GB"),
        ("", "--gpu is empty"),
        ("   ", "--gpu is empty"),
        ("4070ti", "did you mean rtx4070tisuper, rtx4070"),
        ("a100", "did you mean a100-40gb, a100-80gb"),
        ("v100", "did you mean v100-16gb, v100-32gb"),
        ("quadro", "known cards: rtx3090"),
    ],
)
def test_bad_input_is_one_clear_line(spec, message):
    with pytest.raises(QPlanError) as err:
        resolve_gpu(spec)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_four_tib_is_the_limit():
    assert resolve_gpu("4TB").total_bytes == 4 * TiB


# --- auto: NVML stand-ins -------------------------------------------------------------------------


class _NVMLError(Exception):
    pass


def _fake_pynvml(*, name="NVIDIA H100 80GB HBM3", mib=81559, cc=(9, 0), count=1, init_error=None):
    calls = []

    def init():
        calls.append("init")
        if init_error:
            raise _NVMLError(init_error)

    module = types.SimpleNamespace(
        NVMLError=_NVMLError,
        nvmlInit=init,
        nvmlShutdown=lambda: calls.append("shutdown"),
        nvmlDeviceGetCount=lambda: count,
        nvmlDeviceGetHandleByIndex=lambda i: f"handle{i}",
        nvmlDeviceGetName=lambda h: name,
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(total=mib * MiB, free=0, used=0),
        nvmlDeviceGetCudaComputeCapability=lambda h: cc,
        nvmlSystemGetDriverVersion=lambda: b"580.159.04",
    )
    return module, calls


def test_auto_reads_the_first_gpu(monkeypatch):
    module, calls = _fake_pynvml()
    monkeypatch.setitem(sys.modules, "pynvml", module)
    gpu = resolve_gpu("auto")
    assert (gpu.name, gpu.label, gpu.total_bytes, gpu.bf16) == ("h100", "NVIDIA H100 80GB HBM3", 81559 * MiB, True)
    assert "NVML on this machine" in gpu.source and "580.159.04" in gpu.source
    assert calls == ["init", "shutdown"]


def test_auto_takes_memory_from_nvml_not_the_catalogue(monkeypatch):
    module, _ = _fake_pynvml(name=b"Tesla P100-PCIE-16GB", mib=16280, cc=(6, 0))
    monkeypatch.setitem(sys.modules, "pynvml", module)
    gpu = resolve_gpu("AUTO")
    assert (gpu.name, gpu.label, gpu.total_bytes, gpu.bf16) == ("p100pcie16gb", "Tesla P100-PCIE-16GB", 16280 * MiB, False)


def test_auto_without_pynvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    with pytest.raises(QPlanError, match="needs NVML's Python binding"):
        resolve_gpu("auto")


def test_auto_without_a_driver(monkeypatch):
    module, calls = _fake_pynvml(init_error="NVML Shared Library Not Found")
    monkeypatch.setitem(sys.modules, "pynvml", module)
    with pytest.raises(QPlanError, match="found no NVIDIA GPU here .NVML: NVML Shared Library Not Found"):
        resolve_gpu("auto")
    assert calls == ["init"]


def test_auto_with_no_devices(monkeypatch):
    module, calls = _fake_pynvml(count=0)
    monkeypatch.setitem(sys.modules, "pynvml", module)
    with pytest.raises(QPlanError, match="found no NVIDIA GPU here;"):
        resolve_gpu("auto")
    assert calls == ["init", "shutdown"]


@pytest.mark.gpu
def test_auto_on_a_real_gpu():
    torch = pytest.importorskip("torch")
    pytest.importorskip("pynvml")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    gpu = resolve_gpu("auto")
    props = torch.cuda.get_device_properties(0)
    assert gpu.label == torch.cuda.get_device_name(0)
    assert gpu.bf16 == (props.major >= 8)
    # CUDA's total leaves out what the driver keeps; NVML's memory.total is the whole card
    assert props.total_memory <= gpu.total_bytes < props.total_memory + 2 * GiB


# --- the catalogue ---------------------------------------------------------------------------------


def test_catalogue_entries_are_sourced_and_sane():
    entries = gpus._entries()
    names = [e.name for e in entries]
    assert len(names) == len(set(names)) >= 18
    for entry in entries:
        assert entry.memory_mib > 1024, entry.name
        assert entry.bf16 == (int(entry.arch[2:]) >= 80), entry.name
        figures = [(entry.memory_mib, entry.source)]
        if entry.memory_mib_ecc_off is not None:
            figures.append((entry.memory_mib_ecc_off, entry.source_ecc_off))
        for mib, source in figures:
            cited = re.search(r"https://|github\.com/|KINDS\.md", source)
            assert cited or ("marketing size" in source and "not verified" in source), entry.name
            if not cited:  # the marketing fallback holds a whole number of GiB
                assert mib % 1024 == 0, entry.name


def test_every_name_label_and_alias_resolves_to_its_own_card():
    for entry in gpus._entries():
        for key in (entry.name, entry.label, *entry.aliases):
            assert resolve_gpu(key).name == entry.name, key


def test_colliding_aliases_are_refused(monkeypatch):
    a = gpus._Entry(name="x1", label="X One", aliases=("shared",), memory_mib=1024, bf16=True, arch="sm80", source="s")
    b = gpus._Entry(name="x2", label="X Two", aliases=("Shared",), memory_mib=2048, bf16=True, arch="sm80", source="s")
    monkeypatch.setattr(gpus, "_entries", lambda: (a, b))
    with pytest.raises(QPlanError, match="'shared' names both x1 and x2"):
        gpus._index.__wrapped__()


def test_catalog_gpus_sorted_by_memory():
    cards = catalog_gpus()
    assert all(isinstance(c, Gpu) for c in cards)
    assert [c.total_bytes for c in cards] == sorted(c.total_bytes for c in cards)
    assert {c.name for c in cards} == {e.name for e in gpus._entries()}
    assert cards[0].name == "rtx4060ti-8gb" and cards[-1].name == "b200"


def test_normalize():
    assert normalize("NVIDIA GeForce RTX-4090") == normalize("rtx_4090") == "rtx4090"
    assert normalize("Tesla V100-SXM2-16GB") == "v100sxm216gb"


def test_resolving_a_card_imports_no_torch():
    code = "import sys; from planner.inputs.gpus import resolve_gpu; resolve_gpu('4090'); resolve_gpu('24GB'); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- the 8-16 GB (and 24 GB) cards people train on ------------------------------------------------------


@pytest.mark.parametrize(
    "spec,name,mib",
    [
        ("3060", "rtx3060", 12288),
        ("RTX 3060 12GB", "rtx3060", 12288),
        ("NVIDIA GeForce RTX 3060", "rtx3060", 12288),
        ("rtx3080-10gb", "rtx3080-10gb", 10240),
        ("RTX 3080 10GB", "rtx3080-10gb", 10240),
        ("3080 12gb", "rtx3080-12gb", 12288),
        ("4060ti-16gb", "rtx4060ti-16gb", 16384),
        ("4060 Ti 16GB", "rtx4060ti-16gb", 16384),
        ("rtx 4060 ti 8gb", "rtx4060ti-8gb", 8192),
        ("4070", "rtx4070", 12288),
        ("RTX 4070 Super", "rtx4070super", 12288),
        ("NVIDIA GeForce RTX 4070 SUPER", "rtx4070super", 12288),
        ("4070 Ti Super", "rtx4070tisuper", 16384),
        ("4080", "rtx4080", 16384),
        ("4080 super", "rtx4080super", 16376),
        ("NVIDIA GeForce RTX 4080 SUPER", "rtx4080super", 16376),
        ("5060 ti 16gb", "rtx5060ti-16gb", 16311),
        ("5060ti-8gb", "rtx5060ti-8gb", 8192),
        ("5070", "rtx5070", 12227),
        ("RTX 5080", "rtx5080", 16384),
        ("A10", "a10", 23028),
        ("a10 24gb", "a10", 23028),
        ("NVIDIA A10G", "a10g", 23028),
    ],
)
def test_new_cards_resolve_to_their_nvidia_smi_total(spec, name, mib):
    gpu = resolve_gpu(spec)
    assert (gpu.name, gpu.total_bytes, gpu.bf16) == (name, mib * MiB, True)


def test_new_cards_have_their_compute_capability():
    arch = {e.name: e.arch for e in gpus._entries()}
    assert {arch[n] for n in ("rtx3060", "rtx3080-10gb", "rtx3080-12gb", "a10", "a10g")} == {"sm86"}
    assert {arch[n] for n in ("rtx4060ti-16gb", "rtx4070", "rtx4070super", "rtx4070tisuper", "rtx4080super")} == {"sm89"}
    assert {arch[n] for n in ("rtx5060ti-16gb", "rtx5070", "rtx5080")} == {"sm120"}


@pytest.mark.parametrize(
    "spec,variants",
    [
        ("3080", "rtx3080-10gb (10240 MiB), rtx3080-12gb (12288 MiB)"),
        ("RTX 3080", "rtx3080-10gb (10240 MiB), rtx3080-12gb (12288 MiB)"),
        ("NVIDIA GeForce RTX 3080", "rtx3080-10gb (10240 MiB), rtx3080-12gb (12288 MiB)"),
        ("4060 ti", "rtx4060ti-8gb (8192 MiB), rtx4060ti-16gb (16384 MiB)"),
        ("4060ti", "rtx4060ti-8gb (8192 MiB), rtx4060ti-16gb (16384 MiB)"),
        ("5060 Ti", "rtx5060ti-8gb (8192 MiB), rtx5060ti-16gb (16311 MiB)"),
    ],
)
def test_a_name_two_cards_share_is_refused_naming_both(spec, variants):
    with pytest.raises(QPlanError) as err:
        resolve_gpu(spec)
    message = str(err.value)
    assert "names more than one card: " + variants in message
    assert "\n" not in message


def test_ambiguous_names_are_not_card_names(monkeypatch):
    table = gpus._ambiguous()
    assert set(table) == {"3080", "rtx3080", "4060ti", "rtx4060ti", "5060ti", "rtx5060ti"}
    assert not set(table) & set(gpus._index())
    monkeypatch.setattr(gpus, "load_profile_json", lambda name: {"ambiguous": [{"names": ["4090"], "cards": ["rtx4090", "rtx3090"]}]})
    with pytest.raises(QPlanError, match="ambiguous '4090' also names rtx4090"):
        gpus._ambiguous.__wrapped__()


# --- ECC: GDDR cards whose total depends on it ---------------------------------------------------------


def test_a6000_without_ecc_plans_the_ecc_on_figure_and_says_so():
    gpu = resolve_gpu("a6000")
    assert (gpu.total_bytes, gpu.ecc, gpu.ecc_assumed, gpu.ecc_other_bytes) == (46068 * MiB, "on", True, 49140 * MiB)
    assert "46068MiB" in gpu.source


def test_a6000_with_ecc_off_plans_49140_mib():
    gpu = resolve_gpu("RTX A6000", ecc="off")
    assert (gpu.total_bytes, gpu.ecc, gpu.ecc_assumed, gpu.ecc_other_bytes) == (49140 * MiB, "off", False, 46068 * MiB)
    assert "49140 MiB" in gpu.source and "Disabled" in gpu.source


def test_a6000_with_ecc_on_said():
    gpu = resolve_gpu("a6000", ecc="on")
    assert (gpu.total_bytes, gpu.ecc, gpu.ecc_assumed) == (46068 * MiB, "on", False)


@pytest.mark.parametrize("name", ["rtx6000-ada", "l40s", "a10", "a10g", "l4"])
def test_other_gddr_ecc_cards_hold_both_figures(name):
    on, off = resolve_gpu(name), resolve_gpu(name, ecc="off")
    assert (on.ecc, off.ecc) == ("on", "off")
    assert off.total_bytes > on.total_bytes == off.ecc_other_bytes


@pytest.mark.parametrize("name", ["h100", "a100-80gb", "h200", "rtx4090", "t4"])
def test_ecc_changes_nothing_on_cards_with_one_figure(name):
    plain = resolve_gpu(name)
    for ecc in ("on", "off"):
        gpu = resolve_gpu(name, ecc=ecc)
        assert (gpu.total_bytes, gpu.ecc, gpu.ecc_other_bytes) == (plain.total_bytes, None, None)


def test_ecc_is_ignored_for_sizes_and_refused_when_not_on_or_off():
    assert resolve_gpu("48GB", ecc="off").total_bytes == 48 * GiB
    with pytest.raises(QPlanError, match="--ecc 'maybe': give on or off"):
        resolve_gpu("a6000", ecc="maybe")


def test_ecc_figures_come_with_their_source():
    row = dict(name="x", label="X", memory_mib=46068, bf16=True, arch="sm86", source="s")
    with pytest.raises(ValueError, match="go together"):
        gpus._Entry(**row, memory_mib_ecc_off=49140)
    with pytest.raises(ValueError, match="ECC off must leave more memory"):
        gpus._Entry(**row, memory_mib_ecc_off=46068, source_ecc_off="s")


def test_ecc_note_in_the_plan():
    from planner.pricing.explain import ecc_note

    assert ecc_note(resolve_gpu("a6000")) == (
        "NVIDIA RTX A6000: assumed ECC on (46068 MiB, the smaller figure); with ECC off nvidia-smi prints "
        "49140 MiB: plan for that with --ecc off (nvidia-smi -q shows the ECC mode)")
    assert ecc_note(resolve_gpu("a6000", ecc="off")) == (
        "NVIDIA RTX A6000: planned with ECC off (49140 MiB); with ECC on nvidia-smi prints 46068 MiB")
    assert ecc_note(resolve_gpu("a6000", ecc="on")) is None
    assert ecc_note(resolve_gpu("h100", ecc="off")) is None


# --- --ecc on the command line and in a config -------------------------------------------------------------


def _plan_json(capsys, *args):
    from planner.cli import main

    rc = main(["--model", "llama-2-7b", "--top", "1", "--json", *args])
    return rc, json.loads(capsys.readouterr().out)


def _ecc_notes(plan):
    return [note for note in plan["notes"] if "ECC" in note]


def test_qplan_ecc_off_on_an_a6000(capsys):
    rc, plan = _plan_json(capsys, "--gpu", "a6000", "--ecc", "off")
    assert rc == 0
    assert (plan["gpu"]["total_bytes"], plan["gpu"]["ecc"]) == (49140 * MiB, "off")
    assert _ecc_notes(plan) == ["NVIDIA RTX A6000: planned with ECC off (49140 MiB); with ECC on nvidia-smi prints 46068 MiB"]


def test_qplan_without_ecc_plans_ecc_on_with_the_note(capsys):
    rc, plan = _plan_json(capsys, "--gpu", "a6000")
    assert rc == 0
    assert (plan["gpu"]["total_bytes"], plan["gpu"]["ecc"]) == (46068 * MiB, "on")
    assert len(_ecc_notes(plan)) == 1 and "--ecc off" in _ecc_notes(plan)[0] and "49140 MiB" in _ecc_notes(plan)[0]


def test_qplan_ecc_on_an_hbm_card_changes_nothing(capsys):
    rc, plan = _plan_json(capsys, "--gpu", "h100", "--ecc", "off")
    assert rc == 0
    assert (plan["gpu"]["total_bytes"], plan["gpu"]["ecc"], _ecc_notes(plan)) == (81559 * MiB, None, [])


def test_qplan_bad_ecc_and_ambiguous_card_exit_2(capsys):
    from planner.cli import main

    assert main(["--model", "llama-2-7b", "--gpu", "a6000", "--ecc", "maybe"]) == 2
    assert "invalid choice: 'maybe'" in capsys.readouterr().err
    assert main(["--model", "llama-2-7b", "--gpu", "3080"]) == 2
    assert "names more than one card: rtx3080-10gb" in capsys.readouterr().err


# llama-3.1-8b, r=16 all-linear, seq 11776, micro-batch 1: 1.3 GiB short on an A6000 with ECC on, 1.7 GiB
# to spare with ECC off
CONFIG = """\
model: llama-3.1-8b
gpu: a6000
{ecc}quantization: {{load_in_4bit: true, bnb_4bit_quant_type: nf4, bnb_4bit_use_double_quant: true, bnb_4bit_compute_dtype: bfloat16}}
lora: {{r: 16, lora_alpha: 32, target_modules: all-linear, lora_dropout: 0.05}}
training: {{per_device_train_batch_size: 1, gradient_accumulation_steps: 16, optim: paged_adamw_32bit, bf16: true,
           gradient_checkpointing: true, max_seq_length: 11776, packing: true}}
"""


def _check(tmp_path, capsys, ecc_line, *args):
    from planner.cli import main

    path = tmp_path / "run.yaml"
    path.write_text(CONFIG.format(ecc=ecc_line))
    rc = main(["check", str(path), "--json", *args])
    out = capsys.readouterr()
    return rc, (json.loads(out.out) if out.out else out.err)


@pytest.mark.parametrize(
    "ecc_line,args,rc,mib,ecc_notes",
    [
        ("", (), 1, 46068, 1),                         # no ecc: ECC on assumed, short, and said
        ("ecc: off\n", (), 0, 49140, 1),               # YAML reads `off` as false: ECC off
        ("ecc: 'off'\n", (), 0, 49140, 1),
        ("ecc: on\n", (), 1, 46068, 0),                # said: nothing to note
        ("", ("--ecc", "off"), 0, 49140, 1),
        ("ecc: off\n", ("--ecc", "on"), 1, 46068, 0),  # the flag wins over the file
    ],
)
def test_qplan_check_ecc_from_the_config_or_the_flag(tmp_path, capsys, ecc_line, args, rc, mib, ecc_notes):
    code, result = _check(tmp_path, capsys, ecc_line, *args)
    assert code == rc
    assert (result["plan"]["gpu"]["total_bytes"], result["fits"]) == (mib * MiB, rc == 0)
    assert len(_ecc_notes(result["plan"])) == ecc_notes


def test_qplan_check_bad_ecc_is_exit_2(tmp_path, capsys):
    code, err = _check(tmp_path, capsys, "ecc: maybe\n")
    assert code == 2
    assert "ecc" in err and "\n" not in err.strip()
