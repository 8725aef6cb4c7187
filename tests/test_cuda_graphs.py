"""`raytron.inference.cuda_graphs`: the batch buckets the graphs are captured for, and a CPU model refused with the
setting that turns the graphs off. (Capture and replay need a GPU: serve/raytron-gpu.yaml's classifier runs them, and
each capture is checked against the eager forward when a replica starts; figures in docs/gpu-fast-path.md.)"""

import pytest
import torch

from raytron.errors import RaytronError
from raytron.inference.cuda_graphs import GraphedForward, buckets_up_to


def test_buckets_are_powers_of_two_covering_the_largest_batch():
    assert buckets_up_to(1) == [1]
    assert buckets_up_to(5) == [1, 2, 4, 8]
    assert buckets_up_to(128) == [1, 2, 4, 8, 16, 32, 64, 128]


def test_a_model_on_cpu_is_refused_with_the_setting_to_change():
    with pytest.raises(RaytronError, match="cuda_graphs=true needs the model on a GPU; set cuda_graphs: false"):
        GraphedForward(lambda x: x, [torch.zeros(1, 4)], max_rows=8)
