"""Two gloo processes on CPU: identical SSPS state on both ranks, and the
distributed NT-Xent equals the single-process loss on the global batch, with
the same gradients and the same parameters after one optimiser step."""

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ssps_ext.losses.ntxent import NTXent
from ssps_ext.ssps import SSPS

WORLD, N, b, D = 2, 64, 4, 6


def data():
    g = torch.Generator().manual_seed(0)
    speakers = torch.arange(N) // 8
    centres = torch.nn.functional.normalize(torch.randn(8, D, generator=g), dim=1)
    refs = torch.nn.functional.normalize(centres[speakers] + 0.1 * torch.randn(N, D, generator=g), dim=1)
    return speakers, refs


def encoder():
    torch.manual_seed(3)
    return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, D))


def views():
    g = torch.Generator().manual_seed(2)
    return torch.randn(b * WORLD, 5, generator=g), torch.randn(b * WORLD, 5, generator=g)


def worker(rank, folder):
    os.environ.update(MASTER_ADDR="127.0.0.1")
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=WORLD)
    speakers, refs = data()
    ssps = SSPS(K=8, M=1, start_epoch=2, pos_queue_size=24, seed=0)
    ssps.setup(N, b * WORLD, D, D, 1, speakers, None)
    order = torch.randperm(N, generator=torch.Generator().manual_seed(5))
    for step in range(N // (b * WORLD)):
        glob = order[step * b * WORLD : (step + 1) * b * WORLD]
        mine = glob[rank * b : (rank + 1) * b]  # each rank sees only its shard
        ssps.update(mine, refs[mine], refs[mine][None])
    ssps.cluster(epoch=2)
    slots, _ = ssps.sample(torch.arange(rank * 8, rank * 8 + 8))
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(2 * b * WORLD, D, generator=g).chunk(2)
    local = NTXent(0.5, margin=0.1)(z1[rank * b : (rank + 1) * b], z2[rank * b : (rank + 1) * b])
    # gradients through DDP + gathered negatives, then one Adam step
    model = torch.nn.parallel.DistributedDataParallel(encoder())
    x1, x2 = (v[rank * b : (rank + 1) * b] for v in views())
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    NTXent(0.5, margin=0.1)(model(x1), model(x2)).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    opt.step()
    torch.save(
        {"state": ssps.state_dict(), "slots": slots, "loss": local.detach(), "grads": grads,
         "params": [p.detach().clone() for p in model.parameters()]},
        os.path.join(folder, f"rank{rank}.pt"),
    )
    dist.barrier()  # both ranks done before either tears gloo down
    dist.destroy_process_group()


def test_two_ranks_identical_queues_and_assignments(tmp_path):
    mp.spawn(worker, args=(str(tmp_path),), nprocs=WORLD, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD))
    for name, tensor in r0["state"].items():
        assert torch.equal(tensor, r1["state"][name]), name
    assert (r0["state"]["ref_queue.indices"] >= 0).all()
    assert sorted(r0["state"]["ref_queue.indices"].tolist()) == list(range(N))  # every rank's shard arrived
    assert (r0["state"]["assignments"] >= 0).all()
    # the distributed loss (negatives gathered across ranks) = global single-process loss
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(2 * b * WORLD, D, generator=g).chunk(2)
    glob = NTXent(0.5, margin=0.1)(z1, z2)
    assert torch.allclose((r0["loss"] + r1["loss"]) / 2, glob, atol=1e-6)
    # gradients and one step: 2 ranks x b anchors == 1 process x 2b anchors
    model = encoder()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    x1, x2 = views()
    NTXent(0.5, margin=0.1)(model(x1), model(x2)).backward()
    for rank_out in (r0, r1):
        for got, want in zip(rank_out["grads"], [p.grad for p in model.parameters()]):
            assert torch.allclose(got, want, atol=1e-6)
    assert any(float(p.grad.abs().max()) > 1e-4 for p in model.parameters())
    opt.step()
    for rank_out in (r0, r1):
        for got, want in zip(rank_out["params"], model.parameters()):
            assert torch.allclose(got, want, atol=1e-6)
