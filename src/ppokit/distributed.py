"""Data-parallel training on torch.distributed, as launched by ``torchrun``.

``torchrun --nproc_per_node N -m ppokit train ...`` starts N processes with RANK/WORLD_SIZE set;
each steps its own environments and all of them take the same optimizer steps, because gradients
are averaged over ranks after every minibatch's backward pass. Gloo is used on CPU and NCCL on
CUDA. Without those variables (or with WORLD_SIZE=1) every function here is a no-op, so the
single-process path pays nothing.

Devices (issue 31): ``resolve_device`` is the one place a config's ``device`` becomes a
``torch.device``; ``auto`` is ``cuda:LOCAL_RANK`` where CUDA is present (each torchrun rank on its
own local GPU, as accelerate and torchrun's docs arrange it), else the CPU. The process group's
backend follows the resolved device (``backend_for``), and ``announce`` says once per process which
device and backend a rank uses.

Batch semantics: ``num_envs``, ``n_steps`` and ``batch_size`` are per rank; one optimizer step
averages ``world_size * batch_size`` samples; ``total_timesteps`` counts all ranks' steps together.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ppokit.config import DEVICE_SPEC, DEVICES
from ppokit.errors import ConfigError
from ppokit.functional import masked_whiten, normalize


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its rank and the number of processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only the main rank writes logs, plots, checkpoints and the run directory."""
        return self.rank == 0


def local_rank() -> int:
    """This process's index among the processes of its node (torchrun's LOCAL_RANK; 0 alone)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def resolve_device(
    spec: str | torch.device = "auto", rank: int | None = None, key: str = "device"
) -> torch.device:
    """The ``torch.device`` a config's ``device`` names for the process of local rank ``rank``
    (default: ``local_rank()``); a spec that is not allowed or not present here is a ``ConfigError``
    naming ``key``.

    ``auto``: ``cuda:<rank>`` when CUDA is available, else ``cpu``. ``cuda`` also means the rank's own
    GPU (``cuda:<rank>``), so ``torchrun --nproc_per_node N`` on an N-GPU machine puts one rank on each;
    ``cuda:N``, ``cpu`` and ``mps`` are kept as given. ``auto`` never picks MPS: ppokit's guarded
    optimizer step takes the gradient norm in float64 (train/step.py), which MPS does not support, and
    no MPS machine runs ppokit's tests; ``mps`` stays available by name.
    """
    text = str(spec)
    rank = local_rank() if rank is None else rank
    if not DEVICE_SPEC.fullmatch(text):
        raise ConfigError(f"{key}={text!r} is not allowed; use {DEVICES}")
    if text == "cpu" or (text == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if text == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(
                f"{key}='mps' is not allowed; MPS is not available on this machine; use auto or cpu"
            )
        return torch.device("mps")
    if not torch.cuda.is_available():
        raise ConfigError(
            f"{key}={text!r} is not allowed; CUDA is not available on this machine; use auto or cpu"
        )
    index = int(text.partition(":")[2]) if ":" in text else rank
    count = torch.cuda.device_count()
    if index >= count:
        why = f"LOCAL_RANK={rank} needs GPU {index}" if ":" not in text else f"there is no GPU {index}"
        raise ConfigError(
            f"{key}={text!r} is not allowed; {why} and this machine has {count} CUDA device(s); start at "
            f"most {count} processes per node (torchrun --nproc_per_node) or name cuda:0..cuda:{count - 1}"
        )
    return torch.device("cuda", index)


def backend_for(device: torch.device) -> str:
    """The process group's backend for ranks on ``device``: NCCL on CUDA, gloo elsewhere (CPU, MPS)."""
    return "nccl" if device.type == "cuda" else "gloo"


def init(device: str | torch.device = "auto") -> DistInfo:
    """Join the process group torchrun describes in the environment (idempotent). ``device``: the
    config's spec; resolved here (``resolve_device``) to choose the backend and, on CUDA, to make the
    rank's own GPU its current device before NCCL starts (else every rank's NCCL context lands on GPU 0)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        resolved = resolve_device(device)
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
        dist.init_process_group(backend=backend_for(resolved))
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank())


_ANNOUNCED: set[str] = set()  # what announce() has printed in this process


def describe(device: torch.device, strategy: str | None = None) -> str:
    """Where this process trains: ``"rank 1 of 2 on cuda:1 (nccl, fsdp)"`` under torchrun, else
    ``"on cpu"`` (the strategy is only named when several processes share the work)."""
    here = info()
    if not here.enabled:
        return f"on {device}"
    how = ", ".join(x for x in (dist.get_backend(), strategy) if x)
    return f"rank {here.rank} of {here.world_size} on {device} ({how})"


def announce(prog: str, device: torch.device, strategy: str | None = None) -> bool:
    """Print ``"<prog>: <describe(...)>"`` to stderr, once per process and description (a second
    trainer in the same process on the same device says nothing); True if it printed."""
    line = describe(device, strategy)
    if line in _ANNOUNCED:
        return False
    _ANNOUNCED.add(line)
    # one write of the whole line: print() writes the text and the newline apart, and two ranks
    # sharing a stderr pipe interleaved them ("...(gloo)ppokit ppo: rank 1 ...", a CI failure)
    sys.stderr.write(f"{prog}: {line}\n")
    sys.stderr.flush()
    return True


def ensure_process_group(device: str | torch.device = "auto") -> None:
    """A process group even without torchrun: ``init``'s under torchrun, else a group of one process
    (an in-memory store, no port). FSDP2 and torch.distributed.checkpoint need a group, and one code
    path for 1 and N processes lets a sharded run resume at another number of ranks."""
    init(device)
    if not dist.is_initialized():
        backend = backend_for(resolve_device(device))
        dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0, world_size=1)


def info() -> DistInfo:
    """The current process group's ``DistInfo`` (single process when none is initialised)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank())
    return DistInfo()


def broadcast_parameters(module: torch.nn.Module) -> None:
    """Copy rank 0's parameters to every rank, so all start identical."""
    if info().enabled:
        for p in module.state_dict().values():
            dist.broadcast(p.data if isinstance(p, torch.nn.Parameter) else p, src=0)


def average_gradients(grads: list[torch.Tensor]) -> None:
    """Replace each gradient tensor, in place, by its mean over ranks (in place keeps FlatAdam's
    gradient views attached)."""
    world = info().world_size
    if world == 1:
        return
    for g in grads:
        dist.all_reduce(g)
        g /= world


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """Element-wise mean over ranks (a copy; the input is untouched)."""
    out = values.detach().clone().float()
    if info().enabled:
        dist.all_reduce(out)
        out /= info().world_size
    return out


def aggregate_metrics(metrics: dict[str, float], summed: tuple[str, ...] = ()) -> dict[str, float]:
    """Metrics averaged over ranks (those named in ``summed`` are totals: summed); unchanged alone."""
    if not info().enabled:
        return metrics
    keys = sorted(k for k, v in metrics.items() if isinstance(v, (int, float)))
    means = all_reduce_mean(torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64))
    out = dict(metrics)
    for k, v in zip(keys, means.tolist()):
        out[k] = v * info().world_size if k in summed else v
    return out


def all_agree(flag: bool | torch.Tensor) -> bool:
    """True only if ``flag`` holds on every rank (used so all ranks skip or stop together)."""
    t = torch.tensor([1.0 if bool(flag) else 0.0])
    if info().enabled:
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item() > 0)


def global_mean_std(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Mean, unbiased std and count of ``x`` over all ranks' elements (for advantage normalisation:
    with it, N ranks with minibatch B normalise exactly like one process with minibatch N*B)."""
    stats = torch.stack([x.sum(), (x * x).sum(), torch.tensor(float(x.numel()))]).double()
    if info().enabled:
        dist.all_reduce(stats)
    s, sq, n = stats.tolist()
    mean = s / n
    var = max(sq - n * mean * mean, 0.0) / max(n - 1, 1)
    return torch.tensor(mean, dtype=x.dtype), torch.tensor(var**0.5, dtype=x.dtype), int(n)


def whiten(x: torch.Tensor, mask: torch.Tensor | None = None, shift_mean: bool = True) -> torch.Tensor:
    """``x`` normalised by the mean and std of its (``mask``ed) elements over every rank: the one
    advantage whitening of both sides (classic PPO's minibatches, RLHF's token batches).

    One process: ``functional.normalize`` (no mask; SB3's unbiased std) or ``functional.masked_whiten``
    (TRL's masked rule; ``shift_mean=False`` only rescales). Several ranks: the union of their
    elements' unbiased statistics (``global_mean_std``), so N ranks normalise as one process with
    their union would; zero outside the mask.
    """
    if not info().enabled:
        return normalize(x) if mask is None else masked_whiten(x, mask, shift_mean)
    mean, std, n = global_mean_std(x if mask is None else x[mask.bool()])
    if n <= 1:  # one element in all: nothing to scale (no NaN), as functional.normalize
        return x if mask is None else x * mask.to(x.dtype)
    out = (x - mean) / (std + 1e-8) + (0.0 if shift_mean else mean)
    return out if mask is None else out * mask.to(x.dtype)


def all_gather_objects(obj: object) -> list[object]:
    """Every rank's ``obj`` (small Python objects: statistics, episode returns)."""
    if not info().enabled:
        return [obj]
    out: list[object] = [None] * info().world_size
    dist.all_gather_object(out, obj)
    return out


def from_rank0(value: object) -> object:
    """Rank 0's ``value`` on every rank (one broadcast; ``value`` itself in one process): where a
    decision read from a rank's own clock or file system must be the same on all ranks."""
    if not info().enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if info().enabled:
        dist.barrier()


def shutdown() -> None:
    """Leave the process group (end of a torchrun job)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
