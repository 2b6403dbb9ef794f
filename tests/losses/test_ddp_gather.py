"""Two CPU processes over gloo give the same loss and gradients as one process on the
concatenated batch (negatives gathered across ranks with gradient)."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cxrcl.losses.info_nce import info_nce


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, q, k, intra, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    n = q.shape[0] // world
    ql = q[rank * n:(rank + 1) * n].clone().requires_grad_(True)
    kl = k[rank * n:(rank + 1) * n].clone().requires_grad_(True)
    loss = info_nce(ql, kl, 0.1, intra_view_negatives=intra)
    loss.backward()
    # DDP averages gradients over ranks; do the same by hand for the raw tensors
    out[rank] = {"loss": loss.item(), "gq": ql.grad / world, "gk": kl.grad / world}
    dist.destroy_process_group()


def _run(intra: bool):
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_worker, args=(2, _free_port(), q, k, intra, out), nprocs=2, join=True)
    qa, ka = q.clone().requires_grad_(True), k.clone().requires_grad_(True)
    full = info_nce(qa, ka, 0.1, intra_view_negatives=intra)
    full.backward()
    mean_loss = (out[0]["loss"] + out[1]["loss"]) / 2
    assert abs(mean_loss - full.item()) < 1e-5
    assert torch.allclose(torch.cat([out[0]["gq"], out[1]["gq"]]), qa.grad, atol=1e-6)
    assert torch.allclose(torch.cat([out[0]["gk"], out[1]["gk"]]), ka.grad, atol=1e-6)


def test_two_processes_equal_one_process_on_concatenated_batch():
    _run(intra=False)


def test_two_processes_equal_one_process_ntxent():
    _run(intra=True)
