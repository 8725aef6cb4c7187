"""A module's inference forward replayed from CUDA graphs, one per batch-size bucket (`torch.cuda.graph`).

An encoder's forward on a small batch is host-bound: Megatron-Core's unfused layers launch a few hundred kernels,
and in a Serve replica those launches hold the GIL that the replica's event loop needs to take requests in
(docs/gpu-fast-path.md, ninth session). A graph replays the captured kernels in one launch. Inputs are copied into
the bucket's static buffers (rows past the batch zero-filled: a zero attention mask, computed and dropped), the
graph replays, and the first rows of its static output are cloned out. Buckets are powers of two up to the largest
batch; all share one memory pool (captured largest first). Each capture is checked against the eager forward on
the same inputs before it is used (PyTorch's "whole-network capture" recipe, CUDA semantics docs).
"""

from __future__ import annotations

import threading

import torch

from raytron.errors import RaytronError

TOLERANCE = 2e-2
"""Largest |graph - eager| accepted at capture (bf16 outputs: kernels may be chosen differently in a capture)."""


def buckets_up_to(rows: int) -> list[int]:
    """Powers of two from 1 to the first one >= `rows`."""
    sizes = [1]
    while sizes[-1] < rows:
        sizes.append(sizes[-1] * 2)
    return sizes


class GraphedForward:
    """`forward(*inputs)` for inputs of up to `max_rows` rows, each input's other dimensions fixed by `example`."""

    def __init__(self, forward, example: list[torch.Tensor], max_rows: int):
        if not example[0].is_cuda:
            raise RaytronError("cuda_graphs=true needs the model on a GPU; set cuda_graphs: false in the "
                               "deployment's user_config on CPU replicas")
        self.forward = forward
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, list[torch.Tensor], torch.Tensor]] = {}
        self.lock = threading.Lock()  # a bucket's buffers hold one batch at a time
        pool = None
        for rows in reversed(buckets_up_to(max_rows)):
            static = [torch.zeros((rows, *t.shape[1:]), dtype=t.dtype, device=t.device) for t in example]
            for buffer, t in zip(static, example, strict=True):
                buffer[: min(rows, len(t))] = t[:rows]
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up off the capture (cuBLAS / cuDNN workspaces, lazy inits)
                eager = forward(*static)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                output = forward(*static)
            pool = graph.pool()
            graph.replay()
            difference = (output.float() - eager.float()).abs().max().item()
            if not difference <= TOLERANCE:
                raise RaytronError(f"the CUDA graph of {rows} rows differs from the eager forward by {difference:.3g} "
                                   f"(over {TOLERANCE}): set cuda_graphs: false and report it")
            self.graphs[rows] = (graph, static, output)

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        rows = inputs[0].shape[0]
        if rows > max(self.graphs):
            return torch.cat([self(*(t[start:start + max(self.graphs)] for t in inputs))
                              for start in range(0, rows, max(self.graphs))])
        bucket = min(size for size in self.graphs if size >= rows)
        graph, static, output = self.graphs[bucket]
        with self.lock:
            for buffer, t in zip(static, inputs, strict=True):
                buffer[:rows].copy_(t)
                buffer[rows:].zero_()
            graph.replay()
            return output[:rows].clone()
