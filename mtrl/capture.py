"""The MT-SAC update replayed as one CUDA graph (``train.compile=cudagraph``).

Run eagerly, an update launches several hundred small kernels from Python (and surgery adds its
K x K solves), so on a GPU it is bound by launch overhead, not arithmetic. A CUDA graph records
the kernels of one update once and replays them with a single launch. The replay runs the same
kernels on the same memory as the eager update, so it computes the same thing; what it needs:

- static inputs: every call copies its batch into buffers the graph reads (same shapes always);
- no host sync and no data-dependent Python control flow inside the update (the graph holds one
  path): the plain update and the surgery methods whose ``syncs(device)`` is false qualify;
- random numbers from generators registered with the graph, so that each replay draws fresh
  numbers from the generators' current state, the same numbers the eager update would draw;
- state created before the capture: Adam with ``capturable=True`` keeps its step count on the
  device, and its moments must exist before capture (a captured lazy init would re-run on every
  replay).

Hence the first ``WARMUP`` calls run eagerly, on the side stream the graph is captured on (as
torch's documentation asks, so that libraries allocate their per-stream workspaces there), and
count as ordinary updates; the next call captures and then replays.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from mtrl.replay import Batch

WARMUP = 3
"""Eager updates before the capture."""

Step = Callable[[Batch], dict[str, Tensor]]


class Captured(NamedTuple):
    """A recorded update: replaying ``graph`` reads ``inputs`` and writes ``outputs``."""

    graph: torch.cuda.CUDAGraph
    inputs: Batch
    outputs: dict[str, Tensor]


class GraphedUpdate:
    """Calls ``step(batch)``, replayed from one CUDA graph after ``WARMUP`` eager calls.

    ``generators`` returns the generators ``step`` draws from; it is asked at capture time.
    Returns fresh tensors (the graph's outputs are overwritten by the next replay).
    """

    def __init__(self, step: Step, generators: Callable[[], list[torch.Generator]]) -> None:
        self.step = step
        self.generators = generators
        self.eager_calls = 0
        self.stream = torch.cuda.Stream()
        self.captured: Captured | None = None

    def __call__(self, batch: Batch) -> dict[str, Tensor]:
        if self.captured is None:
            if self.eager_calls < WARMUP:
                self.eager_calls += 1
                return self._on_side_stream(batch)
            self.captured = self._capture(batch)
        captured = self.captured
        for static, new in zip(captured.inputs, batch, strict=True):
            if static.shape != new.shape:
                raise ValueError(
                    f"a captured update needs batches of one shape: got {tuple(new.shape)}, "
                    f"captured with {tuple(static.shape)}"
                )
            static.copy_(new, non_blocking=True)
        captured.graph.replay()
        return {key: value.clone() for key, value in captured.outputs.items()}

    def _on_side_stream(self, batch: Batch) -> dict[str, Tensor]:
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            out = self.step(batch)
        torch.cuda.current_stream().wait_stream(self.stream)
        return out

    def _capture(self, batch: Batch) -> Captured:
        """Record ``step`` on the side stream (nothing runs yet). ``thread_local``: another
        thread may use CUDA meanwhile (an env collector acting, say) without breaking it."""
        graph = torch.cuda.CUDAGraph()
        for generator in self.generators():
            graph.register_generator_state(generator)
        inputs = Batch(*(t.clone() for t in batch))
        with torch.cuda.graph(graph, stream=self.stream, capture_error_mode="thread_local"):
            outputs = self.step(inputs)
        return Captured(graph, inputs, outputs)
