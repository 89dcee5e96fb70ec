"""Torch sketcher: equal to the numpy reference, shard-additive, exact for deltas, sharded."""

from __future__ import annotations

import itertools
import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from sedmon import _sketcher
from sedmon._sketcher import (
    ShardPiece,
    all_reduce_sketches,
    sketch_groups,
    sketch_pieces,
    sketch_tensor,
)
from sedmon.sketching import DEFAULT_DIM, sketch_parameters
from sedmon_core.sketch import (
    BLOCK,
    SketchSpec,
    countsketch_buckets_signs,
    gaussian_columns,
    sketch_array,
)


def close(got: np.ndarray, want: np.ndarray, rel: float) -> None:
    """Agreement relative to the size of the reference vector."""
    assert np.linalg.norm(got - want) <= rel * np.linalg.norm(want), np.linalg.norm(got - want)


@pytest.mark.parametrize("k", [1, 7, 300, 5000])
def test_torch_and_numpy_agree_on_every_bucket_and_sign(k: int) -> None:
    spec = SketchSpec("countsketch", k, 11)
    index = np.concatenate([np.arange(3 * BLOCK + 5), 10**10 + np.arange(BLOCK)])
    bucket, sign = countsketch_buckets_signs(spec, "transformer.h.0.mlp.c_fc.weight", index)
    tb, ts = _sketcher.countsketch_buckets_signs(
        spec, "transformer.h.0.mlp.c_fc.weight", torch.from_numpy(index)
    )
    assert np.array_equal(tb.numpy(), bucket)
    assert np.array_equal(ts.numpy(), sign)


@pytest.mark.parametrize("k", [1, 8, 101])
def test_torch_gaussian_columns_match_numpy(k: int) -> None:
    spec = SketchSpec("gaussian", k, 2)
    index = np.arange(5 * 10**9, 5 * 10**9 + 3000)
    got = _sketcher.gaussian_columns(spec, "w", torch.from_numpy(index)).numpy()
    np.testing.assert_allclose(got, gaussian_columns(spec, "w", index), rtol=0, atol=1e-14)


LAYOUTS = {
    "contiguous": lambda x: x,
    "transposed": lambda x: x.t(),
    "strided": lambda x: x[:, ::3],
    "scalar": lambda x: x[0, 0],
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize(
    ("method", "k", "chunk"),
    [
        ("countsketch", 300, None),
        ("countsketch", 13, BLOCK),
        ("countsketch", 5000, 2 * BLOCK),
        ("gaussian", 50, None),
    ],
)
def test_torch_sketch_equals_numpy_reference(
    layout: str, method: str, k: int, chunk: int | None
) -> None:
    spec = SketchSpec(method, k, 5)
    x = LAYOUTS[layout](torch.randn(40, 1237, generator=torch.Generator().manual_seed(0)))
    offset = 3 * BLOCK + 100
    got = sketch_tensor(spec, "w", x, offset, chunk_elems=chunk)
    assert got.dtype == torch.float64 and got.shape == (k,)
    close(got.numpy(), sketch_array(spec, "w", x.numpy(), offset), 1e-12)


def test_half_precision_parameters_are_sketched_exactly_in_float64() -> None:
    spec = SketchSpec("countsketch", 64, 0)
    x = torch.randn(5000).to(torch.bfloat16)
    close(sketch_tensor(spec, "w", x).numpy(), sketch_array(spec, "w", x.double().numpy()), 1e-12)


@pytest.mark.parametrize("method", ["countsketch", "gaussian"])
def test_shard_sketches_at_unaligned_offsets_sum_to_the_whole(method: str) -> None:
    spec = SketchSpec(method, 97, 1)
    x = torch.randn(6 * BLOCK + 333, dtype=torch.float32)
    cuts = [0, 5, 4000, 4100, 3 * BLOCK, 3 * BLOCK + 1, 20_000, x.numel()]
    pieces = [ShardPiece("w", x[a:b], a) for a, b in itertools.pairwise(cuts)]
    parts = sum(sketch_tensor(spec, p.name, p.tensor, p.offset).numpy() for p in pieces)
    whole = sketch_tensor(spec, "w", x).numpy()
    close(parts, whole, 1e-12)
    close(sketch_pieces(spec, pieces, chunk_elems=BLOCK).numpy(), whole, 1e-12)


@pytest.mark.parametrize("method", ["countsketch", "gaussian"])
def test_difference_of_position_sketches_is_the_sketch_of_the_delta(method: str) -> None:
    gen = torch.Generator().manual_seed(4)
    theta = [torch.randn(600, 500, generator=gen), torch.randn(1000, generator=gen)]
    step = [1e-4 * torch.randn(t.shape, generator=gen) for t in theta]
    after = [t + d for t, d in zip(theta, step, strict=True)]
    delta = [(a.double() - t.double()) for a, t in zip(after, theta, strict=True)]
    norm = np.sqrt(sum(float((t.double() ** 2).sum()) for t in theta))
    assert np.sqrt(sum(float((d**2).sum()) for d in delta)) < 2e-4 * norm
    spec = SketchSpec(method, 100, 3)
    names = ["w", "b"]
    groups = {"all": names}
    before_s = sketch_groups(spec, list(zip(names, theta, strict=True)), groups)["all"]
    after_s = sketch_groups(spec, list(zip(names, after, strict=True)), groups)["all"]
    delta_s = sketch_groups(spec, list(zip(names, delta, strict=True)), groups)["all"]
    close(after_s - before_s, delta_s, 1e-9)


def test_group_sketches_add_up_to_the_whole_model() -> None:
    params = [(f"p{i}", torch.randn(i * 1000 + 7)) for i in range(5)]
    spec = SketchSpec("countsketch", 32, 0)
    parts = sketch_groups(spec, params, {"a": ["p0", "p3"], "b": ["p1", "p2", "p4"]})
    whole = sketch_groups(spec, params, {"all": [n for n, _ in params]})["all"]
    close(parts["a"] + parts["b"], whole, 1e-12)


def test_identity_is_the_flat_parameters_in_group_order() -> None:
    a, b = torch.arange(6.0).reshape(2, 3).t(), torch.tensor([7.0])
    out = sketch_groups(SketchSpec("identity", 7), [("a", a), ("b", b)], {"g": ["b", "a"]})
    assert out["g"].tolist() == [7.0, 0.0, 3.0, 1.0, 4.0, 2.0, 5.0]


def test_sketching_does_not_touch_autograd() -> None:
    w = torch.nn.Parameter(torch.randn(100))
    y = sketch_tensor(SketchSpec("countsketch", 10), "w", w)
    assert not y.requires_grad and w.grad is None


def test_sketch_parameters_on_numpy_and_torch_agree() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(30, 20), torch.nn.ReLU(), torch.nn.Linear(20, 5))
    state = {n: p.detach().numpy().copy() for n, p in model.named_parameters()}
    from_torch = sketch_parameters(model, groups="layers")
    from_numpy = sketch_parameters(state, groups="layers")
    assert set(from_torch) == set(from_numpy) == {"0", "2"}
    for group in from_torch:
        assert from_torch[group].shape == (DEFAULT_DIM,)
        close(from_torch[group], from_numpy[group], 1e-12)


def test_all_reduce_without_a_process_group_returns_the_sketches() -> None:
    y = {"all": torch.ones(3, dtype=torch.float64)}
    assert all_reduce_sketches(y)["all"].tolist() == [1.0, 1.0, 1.0]


WORKER = textwrap.dedent(
    """
    import json, sys
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor
    from sedmon._sketcher import ShardPiece, all_reduce_sketches, sketch_groups, sketch_pieces
    from sedmon_core.sketch import SketchSpec

    def run(rank, port, out):
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}",
                                rank=rank, world_size=2)
        spec = SketchSpec("countsketch", 64, 7)
        gen = torch.Generator().manual_seed(0)
        w, b = torch.randn(37, 301, generator=gen), torch.randn(5000, generator=gen)
        # FSDP1-style: each rank owns an unaligned range of each flat parameter
        cut_w, cut_b = 5003, 4097
        mine = ([("w", w.reshape(-1)[:cut_w], 0), ("b", b[:cut_b], 0)] if rank == 0 else
                [("w", w.reshape(-1)[cut_w:], cut_w), ("b", b[cut_b:], cut_b)])
        partial = sketch_pieces(spec, [ShardPiece(*p) for p in mine])
        flat = all_reduce_sketches({"all": partial})["all"]
        # FSDP2-style DTensors, sharded on dim 0 and on dim 1 (uneven)
        mesh = init_device_mesh("cpu", (2,))
        named = [("w", distribute_tensor(w, mesh, [Shard(0)])),
                 ("b", distribute_tensor(b, mesh, [Shard(0)])),
                 ("v", distribute_tensor(w, mesh, [Shard(1)]))]
        dt = sketch_groups(spec, named, {"all": ["w", "b", "v"]})["all"]
        if rank == 0:
            whole = sketch_groups(spec, [("w", w), ("b", b)], {"all": ["w", "b"]})["all"]
            whole3 = sketch_groups(spec, [("w", w), ("b", b), ("v", w)],
                                   {"all": ["w", "b", "v"]})["all"]
            with open(out, "w") as f:
                json.dump({"flat": flat.tolist(), "whole": whole.tolist(),
                           "dtensor": dt.tolist(), "whole3": whole3.tolist()}, f)
        dist.destroy_process_group()

    if __name__ == "__main__":
        mp.spawn(run, args=(int(sys.argv[1]), sys.argv[2]), nprocs=2)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_gloo_ranks_sketching_their_shards_sum_to_the_unsharded_sketch(
    tmp_path: Path,
) -> None:
    script, out = tmp_path / "worker.py", tmp_path / "out.json"
    script.write_text(WORKER)
    subprocess.run(
        [sys.executable, str(script), str(_free_port()), str(out)], check=True, timeout=120
    )
    result = {k: np.array(v) for k, v in json.loads(out.read_text()).items()}
    close(result["flat"], result["whole"], 1e-12)
    close(result["dtensor"], result["whole3"], 1e-12)


def test_the_deferred_sketch_is_the_sketch_and_serialises_as_json() -> None:
    from sedmon._spool import to_json
    from sedmon.sketching import sketch_parameters_async

    model = torch.nn.Sequential(torch.nn.Linear(30, 20), torch.nn.ReLU(), torch.nn.Linear(20, 5))
    pending = sketch_parameters_async(model, dim=50, groups="layers")
    assert pending.nbytes == 2 * 50 * 8
    want = sketch_parameters(model, dim=50, groups="layers")
    got = json.loads(to_json({"sketch": pending}))["sketch"]
    assert set(got) == set(want)
    for group in want:
        assert np.array_equal(np.array(got[group]), want[group])
    assert pending.result() is pending.result()  # computed once
