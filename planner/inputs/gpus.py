"""Which card a plan is for: ``--gpu`` as a catalogue name, a memory size, or ``auto``.

- A name or alias from ``profiles/gpus.json`` (``rtx4090``, ``"RTX 4090"``, ``4090``, ``a100-80gb``...):
  case, spaces, dashes, underscores and the words NVIDIA/GeForce/Tesla are ignored. The card's memory
  is the total nvidia-smi prints for it (NVML ``memory.total``), each figure with its source in the file.
- A size (``24GB``, ``24GiB``, ``24G``, ``80GB``, ``24576MiB``): that many GiB/MiB of device memory
  (see :mod:`planner.inputs.units`: card makers' "24GB" is 24 GiB). A bare size says nothing about the
  architecture, so bf16 is assumed (Ampere or newer); fp16 would cost the same bytes.
- ``auto``: the first GPU of this machine through NVML (``pynvml``, imported only here): its name,
  ``memory.total`` and compute capability (bf16 when major >= 8, as ``torch.cuda.is_bf16_supported``).
"""

from __future__ import annotations

import difflib
import re
from functools import cache

from pydantic import BaseModel, ConfigDict, Field

from planner.errors import QPlanError
from planner.profiles import load_profile_json
from planner.inputs.units import GiB, MiB, TiB, parse_size

MAX_BYTES = 4 * TiB  # no single GPU comes near this; anything above is a typo
MIN_BYTES = 1 * GiB  # below this "24MB" was almost surely meant as 24GB


class Gpu(BaseModel):
    """One card a plan is priced against."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="catalogue name (rtx4090), or e.g. '24GiB' for a size")
    label: str = Field(description="what people call it: the NVML name, or '24 GiB card'")
    total_bytes: int = Field(gt=0, description="device memory as nvidia-smi reports it (memory.total)")
    bf16: bool = Field(description="native bf16 (compute capability >= 8.0)")
    count: int = Field(1, ge=1)
    source: str = Field(description="where total_bytes comes from")


class _Entry(BaseModel):
    """One card in profiles/gpus.json."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    label: str
    aliases: tuple[str, ...] = ()
    memory_mib: int = Field(gt=0)
    bf16: bool
    arch: str = Field(pattern=r"^sm\d+$")
    source: str = Field(min_length=1)

    def gpu(self) -> Gpu:
        return Gpu(name=self.name, label=self.label, total_bytes=self.memory_mib * MiB, bf16=self.bf16, source=self.source)


def normalize(text: str) -> str:
    """``"NVIDIA GeForce RTX-4090"`` -> ``"rtx4090"``: the key names and aliases are matched on."""
    text = re.sub(r"[\s_\-]+", " ", text.lower())
    return re.sub(r"\b(nvidia|geforce|tesla)\b| ", "", text)


@cache
def _entries() -> tuple[_Entry, ...]:
    return tuple(_Entry(**row) for row in load_profile_json("gpus.json")["gpus"])


@cache
def _index() -> dict[str, _Entry]:
    """Normalized name, label and every alias -> entry. Two cards sharing a key is a catalogue bug."""
    index: dict[str, _Entry] = {}
    for entry in _entries():
        for key in {normalize(k) for k in (entry.name, entry.label, *entry.aliases)}:
            other = index.setdefault(key, entry)
            if other is not entry:
                raise QPlanError(f"profiles/gpus.json: {key!r} names both {other.name} and {entry.name}")
    return index


def catalog_gpus() -> list[Gpu]:
    """Every catalogued card, smallest memory first (ties by name): the search order for "the smallest
    card that fits"."""
    return sorted((e.gpu() for e in _entries()), key=lambda g: (g.total_bytes, g.name))


def _lookup(spec: str) -> Gpu | None:
    entry = _index().get(normalize(spec))
    return entry.gpu() if entry else None


# A number with an optional sign and a unit-like tail ("24", "24GB", "-5GB", "24XB"): meant as a size.
# "4070ti" or "a100" are not: they get the unknown-card message with suggestions.
_SIZE_LIKE = re.compile(r"^[-+]?\d+(?:\.\d+)?\s*(?:[a-z]|[a-z]{0,2}b)?$", re.IGNORECASE)


def _fmt_amount(nbytes: int) -> str:
    gib = nbytes / GiB
    return f"{gib:.0f} GiB" if nbytes % GiB == 0 else f"{gib:.2f} GiB"


def _from_size(spec: str) -> Gpu:
    text = spec.strip()
    if text.startswith("-"):
        raise QPlanError(f"GPU memory {spec!r} must be larger than zero")
    if re.fullmatch(r"\+?\d+(?:\.\d+)?", text):
        if float(text) == 0:
            raise QPlanError(f"GPU memory {spec!r} must be larger than zero")
        raise QPlanError(f"--gpu {spec!r} is neither a known card nor a size with a unit: write {text.lstrip('+')}GB for that many GiB")
    nbytes = parse_size(text.lstrip("+"), what="GPU memory")
    if nbytes > MAX_BYTES:
        raise QPlanError(f"GPU memory {spec!r} is {_fmt_amount(nbytes)}: no single GPU has more than 4 TiB (give one card's memory; --gpus for several)")
    if nbytes < MIN_BYTES:
        raise QPlanError(f"GPU memory {spec!r} is only {nbytes / MiB:g} MiB, less than 1 GiB (give one card's memory, like 24GB)")
    amount = _fmt_amount(nbytes)
    return Gpu(
        name=amount.replace(" ", ""), label=f"{amount} card", total_bytes=nbytes, bf16=True,
        source=f"size given as {spec!r} (bf16 assumed: a size does not say the architecture)",
    )


def _from_nvml() -> Gpu:
    """The first GPU NVML sees. NVML's total is what nvidia-smi prints as memory.total."""
    try:
        import pynvml
    except ImportError:
        raise QPlanError("--gpu auto needs NVML's Python binding (pip install nvidia-ml-py); or give the card or its memory, like 24GB") from None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as err:
        raise QPlanError(f"--gpu auto found no NVIDIA GPU here (NVML: {err}); give the card or its memory, like 24GB") from None
    try:
        if pynvml.nvmlDeviceGetCount() < 1:
            raise QPlanError("--gpu auto found no NVIDIA GPU here; give the card or its memory, like 24GB")
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        name = pynvml.nvmlDeviceGetName(handle)
        name = name.decode() if isinstance(name, bytes) else name
        total = int(pynvml.nvmlDeviceGetMemoryInfo(handle).total)
        major, _minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
        driver = pynvml.nvmlSystemGetDriverVersion()
        driver = driver.decode() if isinstance(driver, bytes) else driver
    except pynvml.NVMLError as err:
        raise QPlanError(f"--gpu auto could not read GPU 0 through NVML: {err}") from None
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass
    known = _lookup(name)
    return Gpu(
        name=known.name if known else normalize(name), label=name, total_bytes=total, bf16=major >= 8,
        source=f"NVML on this machine: GPU 0 {name!r}, memory.total {total // MiB} MiB, driver {driver}",
    )


def _unknown(spec: str) -> QPlanError:
    index, key = _index(), normalize(spec)
    extensions = [k for k in index if k.startswith(key)] if len(key) >= 2 else []  # "a100" -> a100-40gb, a100-80gb
    close = extensions + difflib.get_close_matches(key, index, n=6, cutoff=0.6)
    names = list(dict.fromkeys(index[k].name for k in close))[:3]
    hint = f"did you mean {', '.join(names)}?" if names else f"known cards: {', '.join(e.name for e in _entries())}"
    return QPlanError(f"unknown GPU {spec!r}: {hint} (or give its memory, like 24GB, or auto)")


def resolve_gpu(spec: str) -> Gpu:
    """``"RTX 4090"`` / ``"24GB"`` / ``"auto"`` -> :class:`Gpu` (see module doc); bad input -> QPlanError."""
    text = str(spec).strip()
    if not text:
        raise QPlanError("--gpu is empty: give a card (rtx4090, a100-80gb...), its memory (24GB) or auto")
    if text.lower() == "auto":
        return _from_nvml()
    known = _lookup(text)
    if known:
        return known
    if _SIZE_LIKE.match(text):
        return _from_size(text)
    raise _unknown(text)
