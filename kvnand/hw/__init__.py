"""Hardware parts turned into timed work: flash page pipelines, channel/link/DRAM transfers, NPU ops."""
