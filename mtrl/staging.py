"""Host-device transfers through page-locked (pinned) staging buffers.

A copy from pageable host memory to a CUDA device is staged by the driver through its own pinned
buffer, and a plain ``.cpu()`` waits for the whole stream; with our own pinned buffer the
host-to-device copy is a true asynchronous DMA that the host does not wait for. The buffers come
from torch's caching host allocator, which records the copy on the buffer and does not hand the
memory out again until the copy has finished, so a buffer can be dropped right after the copy is
queued. On the CPU the same functions use ordinary memory and add no copy.
"""

from __future__ import annotations

import numpy as np
import torch


def host_buffer(shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """An uninitialised float32 host tensor for a copy to or from ``device``: pinned for CUDA."""
    return torch.empty(shape, dtype=torch.float32, pin_memory=device.type == "cuda")


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """``array`` as a float32 tensor on ``device``; the host does not wait for the copy."""
    buffer = host_buffer(array.shape, device)
    buffer.numpy()[...] = array
    return buffer.to(device, non_blocking=True)


def to_host(tensor: torch.Tensor) -> np.ndarray:
    """A float32 tensor's values on the host. From a CUDA device this waits for the stream: the
    caller needs the values now (actions for the envs)."""
    if tensor.device.type == "cpu":
        return tensor.numpy()
    buffer = host_buffer(tuple(tensor.shape), tensor.device)
    buffer.copy_(tensor, non_blocking=True)
    torch.cuda.current_stream(tensor.device).synchronize()
    return buffer.numpy()
