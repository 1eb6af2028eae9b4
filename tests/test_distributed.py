"""DistributedDataParallel over fusedrnn layers: two CPU processes (gloo) get the gradients of
one process on the whole batch."""
import datetime
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import fusedrnn

WORLD_SIZE = 2
#: A rank that waits longer than this for the other fails the test instead of hanging it.
TIMEOUT_S = 120


class Tagger(torch.nn.Module):
    """A fusedrnn layer of each cell and a linear read-out, as a user stacks them."""

    def __init__(self):
        super().__init__()
        self.lstm = fusedrnn.LSTM(4, 6, num_layers=2, bidirectional=True)
        self.mogrifier = fusedrnn.MogrifierLSTM(12, 6, mogrify_steps=3)
        self.g2 = fusedrnn.G2LSTM(6, 5).eval()  # evaluation gates: no noise to tell the ranks apart
        self.head = torch.nn.Linear(5, 3)

    def forward(self, x):
        x, _ = self.lstm(x)
        x, _ = self.mogrifier(x)
        x, _ = self.g2(x)
        return self.head(x)


def _loss(model, x, y):
    return torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())


def _data():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(7, 4, 4, generator=generator), torch.randint(0, 3, (7, 4), generator=generator)


def _rank_gradients(rank, init_file, out_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE,
                            timeout=datetime.timedelta(seconds=TIMEOUT_S))
    try:
        torch.manual_seed(1)
        model = torch.nn.parallel.DistributedDataParallel(Tagger())
        x, y = _data()
        half = x.shape[1] // WORLD_SIZE
        _loss(model, x[:, rank * half:(rank + 1) * half], y[:, rank * half:(rank + 1) * half]).backward()
        if rank == 0:
            torch.save({name: p.grad for name, p in model.module.named_parameters()}, out_file)
        # Tear down in order: DDP's reducer before its process group, and neither rank before
        # the other is done (a rank that freed its DDP module after the group was destroyed
        # sometimes hung there: 1 run in 6 on the 2-core VM).
        del model
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="this torch has no torch.distributed")
def test_ddp_gradients_equal_one_process_on_the_whole_batch(tmp_path):
    ranks = mp.start_processes(_rank_gradients, args=(str(tmp_path / "init"), str(tmp_path / "grads.pt")),
                               nprocs=WORLD_SIZE, join=False, start_method="spawn")
    deadline = time.monotonic() + 2 * TIMEOUT_S
    while not ranks.join(timeout=5):
        if time.monotonic() > deadline:
            for process in ranks.processes:
                process.kill()
            pytest.fail(f"the two DDP ranks did not finish within {2 * TIMEOUT_S} s")
    distributed = torch.load(tmp_path / "grads.pt")
    torch.manual_seed(1)
    model = Tagger()
    _loss(model, *_data()).backward()
    for name, parameter in model.named_parameters():
        error = ((distributed[name] - parameter.grad).norm() / parameter.grad.norm()).item()
        assert error <= 1e-5, f"{name}: DDP gradient differs from one process by {error:.3g}"
    assert set(distributed) == {name for name, _ in model.named_parameters()}
