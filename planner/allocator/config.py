"""The allocator settings the simulator follows, and a ``PYTORCH_CUDA_ALLOC_CONF`` string parser.

Source: c10/core/AllocatorConfig.cpp ``AcceleratorAllocatorConfig::parseArgs`` and its ``parse*`` helpers
(torch v2.9+, where the parsing moved out of c10/cuda/CUDAAllocatorConfig.cpp; v2.13's header
c10/core/AllocatorConfig.h has the same keys plus ``large_segment_size_mb``, not supported here), and the
``ConfigTokenizer``: the string splits at ``,``, ``:``, ``[`` and ``]``, whitespace is dropped.

Supported keys (each checked as torch checks it): ``expandable_segments:True|False``,
``max_split_size_mb:N`` and ``max_non_split_rounding_mb:N`` (N >= 20, i.e. kLargeBuffer),
``garbage_collection_threshold:F`` (0 < F < 1; torch applies it only with a memory fraction, here
``cap_bytes``) and ``roundup_power2_divisions:N`` or ``:[64:8,256:4,>:1]`` (MiB interval starts, powers of
two). Any other key is refused, since a setting the simulator ignores would make its answer wrong silently.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import QPlanError
from .sizes import LARGE_BUFFER, MiB, ROUNDUP_INTERVALS

UNLIMITED = (1 << 64) - 1  # size_t max: torch's default max_split_size ("every block may be split")
DEFAULT_DEVICE_TOTAL = 80 * 1024 * MiB

SUPPORTED_KEYS = ("expandable_segments", "max_split_size_mb", "max_non_split_rounding_mb",
                  "garbage_collection_threshold", "roundup_power2_divisions")


@dataclass(frozen=True)
class AllocatorConfig:
    """One device's allocator settings. ``cap_bytes`` is ``set_per_process_memory_fraction(f)``'s
    ``allowed_memory_maximum`` (f times the device's total memory): a new segment that would take the
    reserved bytes above it fails (``alloc_block``), which starts the release-and-retry path, then OOM.
    ``device_total_bytes`` sizes an expandable segment's address space (``ExpandableSegment``: 1 1/8 of
    the device's memory); it matters only for which free block ends a segment."""

    expandable_segments: bool = False
    max_split_size: int = UNLIMITED
    max_non_split_rounding_size: int = LARGE_BUFFER
    garbage_collection_threshold: float = 0.0
    roundup_power2_divisions: tuple[int, ...] = (0,) * ROUNDUP_INTERVALS
    cap_bytes: int | None = None
    device_total_bytes: int = DEFAULT_DEVICE_TOTAL

    @classmethod
    def from_conf(cls, conf: str | None, **fields) -> AllocatorConfig:
        """Settings from a ``PYTORCH_CUDA_ALLOC_CONF`` string (None or "" for torch's defaults) and
        keyword overrides (``cap_bytes``, ``device_total_bytes``, ...)."""
        return replace(cls(**_parse(conf or "")), **fields)


def _tokens(conf: str) -> list[str]:
    out, word = [], ""
    for ch in conf:
        if ch in ",:[]":
            if word:
                out.append(word)
                word = ""
            out.append(ch)
        elif not ch.isspace():
            word += ch
    return out + ([word] if word else [])


class _Reader:
    def __init__(self, conf: str):
        self.conf, self.tokens, self.i = conf, _tokens(conf), 0

    def fail(self, why: str) -> QPlanError:
        return QPlanError(f"cannot read allocator settings {self.conf!r}: {why}")

    def take(self, expected: str | None = None) -> str:
        if self.i >= len(self.tokens):
            raise self.fail(f"expected {expected!r} at the end" if expected else "a value is missing at the end")
        token = self.tokens[self.i]
        self.i += 1
        if expected is not None and token != expected:
            raise self.fail(f"expected {expected!r}, got {token!r}")
        return token

    def peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def integer(self, what: str) -> int:
        token = self.take()
        if not token.isdigit():
            raise self.fail(f"{what} must be a whole number, got {token!r}")
        return int(token)


def _power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


def _divisions(r: _Reader) -> tuple[int, ...]:
    """``parseRoundUpPower2Divisions``: one power of two for every interval, or ``[start_mib:d, ...]``
    where the first entry also fills the intervals below it and ``>:d`` fills those after the last one."""
    if r.peek() != "[":
        value = r.integer("roundup_power2_divisions")
        if not _power_of_two(value):
            raise r.fail("roundup_power2_divisions must be a power of two")
        return (value,) * ROUNDUP_INTERVALS
    r.take("[")
    slots, last, first = [0] * ROUNDUP_INTERVALS, 0, True
    while r.peek() != "]":
        start = r.take()
        r.take(":")
        value = r.integer("a roundup_power2_divisions value")
        if value and not _power_of_two(value):
            raise r.fail("roundup_power2_divisions values must be powers of two or 0")
        if start == ">":
            slots[last + 1:] = [value] * (ROUNDUP_INTERVALS - last - 1)
        else:
            if not start.isdigit() or not _power_of_two(int(start)):
                raise r.fail(f"roundup_power2_divisions interval {start!r} must be a power of two (MiB)")
            index = min(int(start).bit_length() - 1, ROUNDUP_INTERVALS - 1)
            if first:
                slots[:index] = [value] * index
                first = False
            slots[index], last = value, index
        if r.peek() != "]":
            r.take(",")
    r.take("]")
    return tuple(slots)


def _parse(conf: str) -> dict:
    r, fields = _Reader(conf), {}
    while r.peek() is not None:
        key = r.take()
        r.take(":")
        if key == "expandable_segments":
            value = r.take()
            if value not in ("True", "False"):
                raise r.fail(f"expandable_segments must be True or False, got {value!r}")
            fields["expandable_segments"] = value == "True"
        elif key in ("max_split_size_mb", "max_non_split_rounding_mb"):
            mib = r.integer(key)
            if mib < LARGE_BUFFER // MiB:
                raise r.fail(f"{key} must be >= {LARGE_BUFFER // MiB}")
            name = "max_split_size" if key == "max_split_size_mb" else "max_non_split_rounding_size"
            fields[name] = min(mib, UNLIMITED // MiB) * MiB
        elif key == "garbage_collection_threshold":
            token = r.take()
            try:
                value = float(token)
            except ValueError:
                raise r.fail(f"garbage_collection_threshold must be a number, got {token!r}") from None
            if not 0.0 < value < 1.0:
                raise r.fail("garbage_collection_threshold must lie in (0.0, 1.0)")
            fields["garbage_collection_threshold"] = value
        elif key == "roundup_power2_divisions":
            fields["roundup_power2_divisions"] = _divisions(r)
        else:
            raise r.fail(f"unsupported option {key!r} (the simulator supports {', '.join(SUPPORTED_KEYS)})")
        if r.peek() is not None:
            r.take(",")
    return fields
