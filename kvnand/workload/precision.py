"""Numeric precisions of a deployment: bytes per weight, bytes per activation, and the MAC kind.

The KV cache is stored at the activation precision, so `kv_bytes == act_bytes`, unless a KV policy
(kvnand.workload.kv_policy) quantizes it: `kv_width` is then its bytes per element, metadata included.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvnand.errors import InputError


@dataclass(frozen=True)
class Precision:
    name: str
    weight_bytes: float
    act_bytes: float
    mac_kind: str  # the multiplier the compute units need: "bf16" or "int8"
    kv_width: float | None = None  # bytes per stored KV element when a KV policy sets it

    @property
    def kv_bytes(self) -> float:
        return self.act_bytes if self.kv_width is None else self.kv_width


PRECISIONS: dict[str, Precision] = {
    "bf16": Precision("bf16", 2, 2, "bf16"),
    "w8a8": Precision("w8a8", 1, 1, "int8"),
    # 4-bit weights are dequantized to bf16 before the MAC, so the MAC kind stays bf16.
    "w4a16": Precision("w4a16", 0.5, 2, "bf16"),
}


def get_precision(name: str | Precision) -> Precision:
    """The precision called `name` (case-insensitive); a Precision passes through unchanged."""
    if isinstance(name, Precision):
        return name
    key = str(name).strip().lower()
    if key not in PRECISIONS:
        raise InputError("unknown precision", key="precision", value=name, allowed=", ".join(PRECISIONS))
    return PRECISIONS[key]
