"""Data-parallel plumbing for torchrun: process-group setup and teardown, the loss-module
wrapper, and a resumable, sharded batch order. No math lives here.

One code path for one process and many: without torchrun's environment (``WORLD_SIZE``
unset or 1) every helper degrades to the single-process case. DDP wraps the *loss module*
(``scorepde.losses.FPObjective``: the model plus its regularizer), never the bare network,
because forward-mode jvp does not pass through a DDP-wrapped module.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data.distributed import DistributedSampler

__all__ = [
    "DistInfo",
    "resolve_device",
    "setup",
    "teardown",
    "exit_process",
    "wrap",
    "unwrap",
    "barrier",
    "mean_across_ranks",
    "gather_objects",
    "params_agree",
    "ShardedBatches",
]


@dataclass(frozen=True)
class DistInfo:
    """Who this process is: ``rank`` of ``world_size``, its ``device``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes checkpoints, logs and figures."""
        return self.rank == 0


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` (CUDA if torch sees a GPU, else CPU), ``"cpu"`` or ``"cuda"`` as a device;
    a ``ValueError`` saying what to pass instead when CUDA is asked for and absent."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu")
    return torch.device(
        "cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu"
    )


def setup(device: str = "auto", backend: str | None = None) -> DistInfo:
    """Join torchrun's process group if there is one; pick this process's device.

    ``device``: ``"auto"`` (CUDA if available, else CPU), ``"cpu"`` or ``"cuda"``. Under
    torchrun the backend is NCCL on CUDA and gloo on CPU unless ``backend`` says otherwise.
    """
    use_cuda = resolve_device(device).type == "cuda"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        if world > 1 and torch.cuda.device_count() > 1:
            torch.cuda.set_device(local % torch.cuda.device_count())
        dev = torch.device("cuda", torch.cuda.current_device())
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if use_cuda else "gloo"))
    return DistInfo(rank, world, local, dev)


def teardown(info: DistInfo) -> None:
    """Leave the process group (a no-op for one process)."""
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()


def exit_process(code: int = 0) -> None:
    """Flush and leave at once with ``os._exit``.

    torch 2.x sometimes aborts at interpreter exit after a gloo process group was used
    ("terminate called without an active exception"), after the work is done; skipping the
    interpreter's teardown avoids it. Call only after ``teardown`` and after closing files.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code)


def wrap(objective: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    """``DistributedDataParallel(objective)`` under torchrun, else the objective itself.

    Wrap the loss module (model plus regularizer): DDP's parameter broadcast at
    construction makes every rank start from rank 0's weights.
    """
    if not info.distributed:
        return objective
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [info.device.index] if info.device.type == "cuda" else None
    return DDP(objective, device_ids=ids)


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DDP wrapper (or the module itself)."""
    return getattr(module, "module", module)


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def mean_across_ranks(values: dict, info: DistInfo) -> dict:
    """Average a dict of floats over ranks (one all-reduce); unchanged for one process."""
    if not info.distributed or not values:
        return dict(values)
    keys = sorted(values)
    backend_cuda = dist.get_backend() == "nccl"
    t = torch.tensor(
        [float(values[k]) for k in keys], dtype=torch.float64, device=info.device if backend_cuda else "cpu"
    )
    dist.all_reduce(t)
    return {k: v / info.world_size for k, v in zip(keys, t.tolist())}


def gather_objects(obj, info: DistInfo) -> list:
    """Every rank's ``obj`` as a list indexed by rank (a one-element list for one process)."""
    if not info.distributed:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def params_agree(module: torch.nn.Module, info: DistInfo) -> bool:
    """Whether every rank holds bit-identical parameters (what DDP promises); True for one process."""
    if not info.distributed:
        return True
    flat = torch.cat([p.detach().reshape(-1).cpu().double() for p in module.parameters()])
    return len({tuple(flat.tolist())} | {tuple(x) for x in gather_objects(flat.tolist(), info)}) == 1


class ShardedBatches:
    """Index batches for step ``start, start+1, …``: a per-epoch shuffle from (seed, epoch),
    this rank's shard of it, cut into batches of ``batch_size`` (the ragged end dropped).

    The order depends only on (seed, epoch, rank, world_size), so a run resumed at step k
    sees exactly the batches an uninterrupted run sees from step k on: no sampler state
    needs saving. Uses ``DistributedSampler`` with ``set_epoch`` (one replica when not
    distributed).
    """

    def __init__(self, n: int, batch_size: int, *, seed: int, info: DistInfo, start: int = 0):
        self.sampler = DistributedSampler(
            range(n), num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=seed, drop_last=True
        )
        self.batch_size = int(batch_size)
        self.per_epoch = len(self.sampler) // self.batch_size
        if self.per_epoch < 1:
            raise ValueError(
                f"{n} training images give each of {info.world_size} process(es) "
                f"{len(self.sampler)}, fewer than one batch of {batch_size}; "
                "lower --batch-size"
            )
        self.step = int(start)

    def __iter__(self) -> Iterator[torch.Tensor]:
        while True:
            epoch, offset = divmod(self.step, self.per_epoch)
            self.sampler.set_epoch(epoch)
            order = torch.tensor(list(self.sampler), dtype=torch.long)
            for i in range(offset, self.per_epoch):
                self.step += 1
                yield order[i * self.batch_size : (i + 1) * self.batch_size]
