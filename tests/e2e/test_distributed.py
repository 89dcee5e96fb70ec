"""A sharded (FSDP2-style DTensor) job on two gloo ranks, posting to a real server.

Every rank sketches its own shard with global element indices, the partial sketches are
all-reduced, and only rank 0 posts: the server sees one run whose spectrum is the one of
the unsharded model's sketches, and no checkpoint twice.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from sedmon_core.spectrum import spectrum_series

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ADMIN = "distributed-admin-token"
BIN = Path(sys.executable).parent
STEPS = 7

WORKER = textwrap.dedent(
    """
    import json, sys
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor
    import sedmon

    def run(rank, port, url, token, spool, out):
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}",
                                rank=rank, world_size=2)
        mesh = init_device_mesh("cpu", (2,))
        gen = torch.Generator().manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(40, 301), torch.nn.Linear(301, 3))
        full = {n: torch.randn(p.shape, generator=gen) for n, p in model.named_parameters()}
        for module_name, module in model.named_children():
            for pname in ("weight", "bias"):
                tensor = full[f"{module_name}.{pname}"]
                sharded = distribute_tensor(tensor, mesh, [Shard(0)])  # 301 rows: uneven
                setattr(module, pname, torch.nn.Parameter(sharded))
        run = sedmon.init(project="dist", name="fsdp2", model=model, server=url,
                          token=token, dim=64, seed=3, windows=[3], spool_dir=f"{spool}/{rank}")
        plain = []
        for step in range(STEPS):
            with torch.no_grad():
                for name, p in model.named_parameters():
                    delta = torch.randn(p.shape, generator=gen) * (0.1 + 0.05 * step)
                    full[name] += delta
                    p.add_(distribute_tensor(delta, mesh, p.placements))
            run.checkpoint(step)
            if rank == 0:
                plain.append(sedmon.sketch_parameters(list(full.items()), dim=64, seed=3)["all"])
        delivered = run.flush(30)
        run.finish(timeout=30)
        result = {"rank": rank, "posts": run.rank == 0, "delivered": delivered}
        if rank == 0:
            result["plain"] = [p.tolist() for p in plain]
        with open(f"{out}.{rank}", "w") as f:
            json.dump(result, f)
        dist.destroy_process_group()

    if __name__ == "__main__":
        mp.spawn(run, args=(int(sys.argv[1]), *sys.argv[2:]), nprocs=2)
    """
).replace("STEPS", str(STEPS))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _counter(metrics_text: str, outcome: str) -> float:
    match = re.search(
        rf'^sedmon_ingest_checkpoints_total{{outcome="{outcome}"}} (\S+)$', metrics_text, re.M
    )
    return float(match.group(1)) if match else 0.0


def test_sharded_ranks_post_once_and_the_server_sees_the_unsharded_spectrum(
    fresh_postgres_url: str, tmp_path: Path
) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "SEDMON_ADMIN_TOKEN": ADMIN}
    cmd = [str(BIN / "sedmon-server"), "serve", "--database-url", fresh_postgres_url]
    server = subprocess.Popen(
        [*cmd, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server not ready"
            time.sleep(0.05)
        script, out = tmp_path / "worker.py", tmp_path / "out"
        script.write_text(WORKER)
        args = [str(_free_port()), url, ADMIN, str(tmp_path / "spool"), str(out)]
        subprocess.run([sys.executable, str(script), *args], check=True, timeout=180)
        ranks = [json.loads(Path(f"{out}.{r}").read_text()) for r in (0, 1)]
        assert [r["posts"] for r in ranks] == [True, False]
        assert ranks[0]["delivered"]

        auth = {"authorization": f"Bearer {ADMIN}"}
        runs = httpx.get(f"{url}/api/v1/runs", params={"project": "dist"}, headers=auth).json()
        assert [r["name"] for r in runs["runs"]] == ["fsdp2"]
        run = runs["runs"][0]
        assert run["num_checkpoints"] == STEPS
        metrics = httpx.get(f"{url}/metrics").text
        assert _counter(metrics, "created") == STEPS
        assert _counter(metrics, "unchanged") == 0  # rank 1 never posted a copy

        spectrum = httpx.get(
            f"{url}/api/v1/runs/{run['id']}/spectrum", params={"window": 3}, headers=auth
        ).json()
        sketches = np.array(ranks[0]["plain"])
        deltas = np.diff(sketches, axis=0)
        expected = spectrum_series(deltas @ deltas.T, 3, "half", 64)
        assert len(spectrum["points"]) == len(expected) == STEPS - 3
        for point, exact in zip(spectrum["points"], expected, strict=True):
            np.testing.assert_allclose(point["sigma"], exact.sigma, rtol=1e-9)
            assert point["signal_rank"] == exact.signal_rank
    finally:
        server.terminate()
        server.wait(10)
