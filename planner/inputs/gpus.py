"""Which card a plan is for: ``--gpu`` as a catalogue name, a memory size, or ``auto``.

- A name or alias from ``profiles/gpus.json`` (``rtx4090``, ``"RTX 4090"``, ``4090``, ``a100-80gb``...):
  case, spaces, dashes, underscores and the words NVIDIA/GeForce/Tesla are ignored. The card's memory
  is the total nvidia-smi prints for it (NVML ``memory.total``), each figure with its source in the file.
  A name two cards share (``3080``: 10 GB and 12 GB) is refused in one line naming both (``ambiguous``).
- ECC: on GDDR cards with optional ECC (RTX A6000, RTX 6000 Ada, L40S, A10...) ECC on keeps part of the
  memory for check bits, so nvidia-smi prints less (RTX A6000: 46068 MiB on, 49140 MiB off). Such an entry
  holds both figures; ``ecc`` picks one, and without it the ECC-on figure is planned (the smaller, so a plan
  that fits fits either way) and the plan says so. Cards with one figure (HBM, GeForce) ignore ``ecc``.
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
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from planner.errors import QPlanError
from planner.profiles import load_profile_json
from planner.inputs.units import GiB, MiB, TiB, parse_size

MAX_BYTES = 4 * TiB  # no single GPU comes near this; anything above is a typo
MIN_BYTES = 1 * GiB  # below this "24MB" was almost surely meant as 24GB
ECC_MODES = ("on", "off")


class Gpu(BaseModel):
    """One card a plan is priced against."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="catalogue name (rtx4090), or e.g. '24GiB' for a size")
    label: str = Field(description="what people call it: the NVML name, or '24 GiB card'")
    total_bytes: int = Field(gt=0, description="device memory as nvidia-smi reports it (memory.total)")
    bf16: bool = Field(description="native bf16 (compute capability >= 8.0)")
    count: int = Field(1, ge=1)
    source: str = Field(description="where total_bytes comes from")
    ecc: Literal["on", "off"] | None = Field(
        None, description="ECC mode total_bytes is for, on a card whose total depends on it; None: one figure")
    ecc_assumed: bool = Field(False, description="ECC mode not given: the ECC-on figure was taken")
    ecc_other_bytes: int | None = Field(None, description="what nvidia-smi prints in the other ECC mode")


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
    # GDDR cards with optional ECC: memory_mib is the ECC-on figure, this the ECC-off one
    memory_mib_ecc_off: int | None = None
    source_ecc_off: str | None = None

    @model_validator(mode="after")
    def _both_ecc_figures_sourced(self):
        if (self.memory_mib_ecc_off is None) != (self.source_ecc_off is None):
            raise ValueError(f"{self.name}: memory_mib_ecc_off and source_ecc_off go together")
        if self.memory_mib_ecc_off is not None and self.memory_mib_ecc_off <= self.memory_mib:
            raise ValueError(f"{self.name}: ECC off must leave more memory than ECC on (memory_mib)")
        return self

    def gpu(self, ecc: str | None = None) -> Gpu:
        card = dict(name=self.name, label=self.label, bf16=self.bf16)
        if self.memory_mib_ecc_off is None:
            return Gpu(**card, total_bytes=self.memory_mib * MiB, source=self.source)
        on, off = self.memory_mib * MiB, self.memory_mib_ecc_off * MiB
        if ecc == "off":
            return Gpu(**card, total_bytes=off, source=self.source_ecc_off, ecc="off", ecc_other_bytes=on)
        return Gpu(**card, total_bytes=on, source=self.source, ecc="on", ecc_assumed=ecc is None, ecc_other_bytes=off)


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


@cache
def _ambiguous() -> dict[str, tuple[_Entry, ...]]:
    """Normalized name people use for several cards (``3080``: 10 GB and 12 GB) -> those cards. A name
    that is also a card's own key, or a card that is not catalogued, is a catalogue bug."""
    index, table = _index(), {}
    for row in load_profile_json("gpus.json").get("ambiguous", []):
        cards = tuple(index[normalize(name)] for name in row["cards"] if normalize(name) in index)
        if len(cards) != len(row["cards"]) or len(cards) < 2:
            raise QPlanError(f"profiles/gpus.json: ambiguous {row['names']} must list two or more catalogued cards")
        for key in {normalize(name) for name in row["names"]}:
            if key in index or key in table:
                raise QPlanError(f"profiles/gpus.json: ambiguous {key!r} also names {index[key].name if key in index else 'another row'}")
            table[key] = cards
    return table


def catalog_gpus() -> list[Gpu]:
    """Every catalogued card, smallest memory first (ties by name): the search order for "the smallest
    card that fits"."""
    return sorted((e.gpu() for e in _entries()), key=lambda g: (g.total_bytes, g.name))


def _lookup(spec: str, ecc: str | None = None) -> Gpu | None:
    entry = _index().get(normalize(spec))
    return entry.gpu(ecc) if entry else None


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


def resolve_gpu(spec: str, ecc: str | None = None) -> Gpu:
    """``"RTX 4090"`` / ``"24GB"`` / ``"auto"`` -> :class:`Gpu` (see module doc); bad input -> QPlanError.
    ``ecc`` ("on"/"off", None: not known) picks the figure of a card whose total depends on it; a size and
    ``auto`` (NVML reports the mode the card is in) ignore it."""
    text = str(spec).strip()
    if ecc is not None and ecc not in ECC_MODES:
        raise QPlanError(f"--ecc {ecc!r}: give on or off")
    if not text:
        raise QPlanError("--gpu is empty: give a card (rtx4090, a100-80gb...), its memory (24GB) or auto")
    if text.lower() == "auto":
        return _from_nvml()
    known = _lookup(text, ecc)
    if known:
        return known
    cards = _ambiguous().get(normalize(text))
    if cards:
        which = ", ".join(f"{c.name} ({c.memory_mib} MiB)" for c in cards)
        size = f"{round(cards[0].memory_mib / 1024)}GB"
        raise QPlanError(f"--gpu {text!r} names more than one card: {which}; give one of them, or its memory like {size}")
    if _SIZE_LIKE.match(text):
        return _from_size(text)
    raise _unknown(text)
