"""A module's inference forward replayed from CUDA graphs, one per batch-size bucket (`torch.cuda.graph`).

An encoder's forward on a small batch is host-bound: Megatron-Core's unfused layers launch a few hundred kernels,
and in a Serve replica those launches hold the GIL that the replica's event loop needs to take requests in
(docs/gpu-fast-path.md, ninth session). A graph replays the captured kernels in one launch. Inputs are copied into
the bucket's static buffers (rows past the batch zero-filled: a zero attention mask, computed and dropped), the
graph replays, and the first rows of its static output are cloned out; a batch larger than the largest bucket runs
in chunks. Buckets are powers of two up to the largest batch, captured largest first into one memory pool
(PyTorch's "whole-network capture" recipe, CUDA semantics docs). Before use, each capture and the batch path
(bucket choice, padding, chunks) are checked against the eager forward on the example rows.
"""

from __future__ import annotations

import threading

import torch

from raytron.errors import RaytronError

RTOL, ATOL = 1e-2, 2e-2
"""Graph vs eager outputs must be `allclose` within these (bf16 outputs: a capture may pick other kernels; ATOL is
the absolute bound the first GPU run passed with, docs/gpu-fast-path.md)."""


def buckets_up_to(rows: int) -> list[int]:
    """Powers of two from 1 to the first one >= `rows`."""
    sizes = [1]
    while sizes[-1] < rows:
        sizes.append(sizes[-1] * 2)
    return sizes


def tiled(inputs: list[torch.Tensor], rows: int) -> list[torch.Tensor]:
    """`rows` rows of each input, its own rows repeated."""
    index = torch.arange(rows, device=inputs[0].device) % len(inputs[0])
    return [t[index] for t in inputs]


class GraphedForward:
    """`forward(*inputs)` for inputs of any number of rows, their other dimensions those of `example`'s."""

    def __init__(self, forward, example: list[torch.Tensor], max_rows: int, share: "GraphedForward | None" = None):
        """`share`: graphs captured before (of the same forward at other input shapes) whose memory pool and lock these
        use too: one pool, so one lock."""
        if not example[0].is_cuda:
            raise RaytronError("cuda_graphs=true needs the model on a GPU; set cuda_graphs: false in the "
                               "deployment's user_config on CPU replicas")
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, list[torch.Tensor], torch.Tensor]] = {}
        # One lock for every graph of the pool: each batch's copies, replay and clone are issued under it on one
        # stream, so no two graphs sharing the pool ever run at once, whatever the order of the buckets.
        self.lock = threading.Lock() if share is None else share.lock
        self.pool = None if share is None else share.pool
        for rows in reversed(buckets_up_to(max_rows)):
            static = tiled(example, rows)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up off the capture (cuBLAS / cuDNN workspaces, lazy inits)
                forward(*static)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):
                output = forward(*static)
            self.pool = graph.pool()
            self.graphs[rows] = (graph, static, output)
        self.largest = max(self.graphs)
        for rows in sorted({1, 3, self.largest, self.largest + 1}):  # a bucket, padding, the largest, chunks
            inputs = tiled(example, rows)
            self.check(self(*inputs), forward(*inputs), rows)

    @staticmethod
    def check(graphed: torch.Tensor, eager: torch.Tensor, rows: int) -> None:
        if not torch.allclose(graphed.float(), eager.float(), rtol=RTOL, atol=ATOL):
            difference = (graphed.float() - eager.float()).abs().max().item()
            raise RaytronError(f"CUDA graphs give a batch of {rows} rows outputs {difference:.3g} away from the eager "
                               "forward's: set cuda_graphs: false and report it")

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        rows = inputs[0].shape[0]
        if rows > self.largest:
            return torch.cat([self(*(t[start:start + self.largest] for t in inputs))
                              for start in range(0, rows, self.largest)])
        graph, static, output = self.graphs[min(size for size in self.graphs if size >= rows)]
        with self.lock:
            for buffer, t in zip(static, inputs, strict=True):
                buffer[:rows].copy_(t)
                buffer[rows:].zero_()
            graph.replay()
            return output[:rows].clone()
