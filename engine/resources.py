"""What the machine has and uses: GPUs through NVML (when there are any), the torch allocator, CPU and RAM."""

from __future__ import annotations

from typing import Any

import psutil
import torch


def gpu_resources() -> list[dict[str, Any]]:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 (no driver, no library, no GPU: all mean "none")
        return []
    gpus = []
    try:
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            gpu: dict[str, Any] = {"index": index, "name": _text(pynvml.nvmlDeviceGetName(handle)),
                                   "memory_used_bytes": memory.used, "memory_total_bytes": memory.total}
            for key, read in (("utilization_percent", lambda h: pynvml.nvmlDeviceGetUtilizationRates(h).gpu),
                              ("temperature_c", lambda h: pynvml.nvmlDeviceGetTemperature(h, 0)),
                              ("power_w", lambda h: pynvml.nvmlDeviceGetPowerUsage(h) / 1000)):
                try:
                    gpu[key] = read(handle)
                except pynvml.NVMLError:
                    gpu[key] = None
            if torch.cuda.is_available() and index < torch.cuda.device_count():
                gpu["torch_allocated_bytes"] = torch.cuda.memory_allocated(index)
                gpu["torch_reserved_bytes"] = torch.cuda.memory_reserved(index)
            gpus.append(gpu)
    finally:
        pynvml.nvmlShutdown()
    return gpus


def cpu_resources() -> dict[str, Any]:
    memory = psutil.virtual_memory()
    return {"cpu_count": psutil.cpu_count(), "cpu_percent": psutil.cpu_percent(interval=None),
            "memory_used_bytes": memory.total - memory.available, "memory_total_bytes": memory.total,
            "process_rss_bytes": psutil.Process().memory_info().rss, "torch_threads": torch.get_num_threads()}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
