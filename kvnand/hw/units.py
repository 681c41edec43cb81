"""Non-flash parts as timed work: channel/link/DRAM transfers and NPU operations."""

from __future__ import annotations

from kvnand.config.schema import Dram, Link, Npu
from kvnand.program import Pipe, pick, single_stage


def dram_rate(dram: Dram) -> float:
    return dram.channels * dram.rate_per_channel


def link_time(link: Link, bytes_: float) -> float:
    return link.latency + bytes_ / link.rate


def npu_peak(npu: Npu, kind: str) -> float:
    """ops/s for a MAC kind; int8 falls back to 2x bf16 and bf16 to the first listed when absent."""
    if kind in npu.peak_ops:
        return npu.peak_ops[kind]
    if kind == "int8" and "bf16" in npu.peak_ops:
        return 2 * npu.peak_ops["bf16"]
    return next(iter(npu.peak_ops.values()))


def npu_matmul_pipe(npu: Npu, macs: float, kind: str, stream_bytes: float = 0.0,
                    stream_rate: float = float("inf"), label: str = "NPU PE array") -> Pipe:
    """A matmul on the NPU fed by a stream (DRAM, flash readout): the slower of compute and feed."""
    compute = 2 * macs / npu_peak(npu, kind)
    feed = stream_bytes / stream_rate  # 0 without a stream (0 bytes, or an infinite rate)
    return pick(feed > compute, single_stage(label.replace("NPU PE array", "operand stream"), feed),
                single_stage(label, compute))


def npu_special_pipe(npu: Npu, elements: float, label: str = "NPU special function") -> Pipe:
    return single_stage(label, elements / npu.special_rate)
