"""--gpu parsing (catalogue names, sizes, auto through NVML) and the catalogue's own sanity."""

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
        ("4070ti", "did you mean rtx3090ti"),
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
        cited = re.search(r"https://|github\.com/|KINDS\.md", entry.source)
        assert cited or ("marketing size" in entry.source and "not verified" in entry.source), entry.name
        if not cited:  # the marketing fallback holds a whole number of GiB
            assert entry.memory_mib % 1024 == 0, entry.name


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
    assert cards[0].name == "t4" and cards[-1].name == "b200"


def test_normalize():
    assert normalize("NVIDIA GeForce RTX-4090") == normalize("rtx_4090") == "rtx4090"
    assert normalize("Tesla V100-SXM2-16GB") == "v100sxm216gb"


def test_resolving_a_card_imports_no_torch():
    code = "import sys; from planner.inputs.gpus import resolve_gpu; resolve_gpu('4090'); resolve_gpu('24GB'); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
