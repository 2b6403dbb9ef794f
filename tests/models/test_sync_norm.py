"""Under DDP, BatchNorm statistics are shared: 2 gloo processes with batch B give the loss,
gradients and running statistics of one process with batch 2B (a ResNet backbone)."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cxrcl.models.backbones import create_backbone
from cxrcl.models.sync_norm import CrossRankBatchNorm, convert_batchnorm


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model():
    torch.manual_seed(0)
    return create_backbone("resnet18", 32)


def _loss(model, x):
    return model(x).pow(2).mean()


def _worker(rank, world, port, x, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    model = convert_batchnorm(_model(), "cpu").train()
    n = x.shape[0] // world
    loss = _loss(model, x[rank * n:(rank + 1) * n])
    loss.backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    for g in grads.values():  # what DDP does: average the gradients over ranks
        dist.all_reduce(g)
        g /= world
    out[rank] = {"loss": loss.item(), "grads": grads,
                 "running_mean": model.stem[1].running_mean.clone()}
    dist.destroy_process_group()


def test_two_processes_equal_one_process_on_the_concatenated_batch():
    x = torch.randn(8, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    out = mp.Manager().dict()
    mp.spawn(_worker, args=(2, _free_port(), x, out), nprocs=2, join=True)
    ref = _model().train()
    full = _loss(ref, x)
    full.backward()
    assert abs((out[0]["loss"] + out[1]["loss"]) / 2 - full.item()) < 1e-5
    for k, p in ref.named_parameters():
        assert torch.allclose(out[0]["grads"][k], p.grad, atol=1e-5, rtol=1e-4), k
    assert torch.allclose(out[0]["running_mean"], ref.stem[1].running_mean, atol=1e-6)


def test_conversion_keeps_weights_and_names_and_is_plain_batchnorm_on_one_process():
    plain = _model()
    synced = convert_batchnorm(_model(), "cpu")
    assert any(isinstance(m, CrossRankBatchNorm) for m in synced.modules())
    assert plain.state_dict().keys() == synced.state_dict().keys()
    x = torch.randn(4, 1, 32, 32)
    assert torch.allclose(plain.train()(x), synced.train()(x), atol=1e-5)
