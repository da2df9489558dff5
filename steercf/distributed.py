"""Data-parallel training over ``torch.distributed`` and device selection.

Every process (a *rank*) holds the same model and the same (seeded) batch order. Each
global batch of ``B`` users is split by position: rank ``r`` of ``W`` takes users
``r, r + W, r + 2W, ...`` of it (the ``DistributedSampler`` layout, drawn per batch), so
over an epoch every user is read by exactly one rank. Each rank computes the mean loss
over its ``b_r`` users; the gradients are combined with weights ``b_r / B`` and summed
over ranks, which is the gradient of the mean over the whole batch. Every rank then takes
the same optimiser step, so ``W``-process training equals 1-process training with the
same ``batch_size`` up to float rounding (the sum runs in another order);
``tests/test_distributed.py`` compares them.

* ELSA computes its gradient by hand: :meth:`Collective.mean_over_batch` all-reduces it.
* The SAE is an ``nn.Module`` trained with autograd: :meth:`Collective.wrap` puts it in
  ``DistributedDataParallel``, whose all-reduce averages over ranks, and
  :meth:`Collective.scale_loss` rescales each rank's loss by ``W * b_r / B`` so that the
  average is the whole-batch mean.
* Early stopping and the kept best state agree across ranks: validation runs on every
  rank and :meth:`Collective.agree` hands rank 0's verdict to all.

Launch with ``torchrun`` (``torchrun --standalone --nproc_per_node 2 -m steercf train
...``, or ``steercf train ... --nproc 2``, which runs torchrun for you) or from Python
with :func:`launch`. Backends: gloo on the CPU, nccl on CUDA.

Example::

    from steercf.distributed import launch

    def fit(group, train, val):
        return ELSA(factors=256, progress=False).fit(train, val, group=group).items_

    items = launch(fit, 2, train, val)  # rank 0's result
"""

from __future__ import annotations

import datetime
import inspect
import os
import queue as queue_module
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import scipy.sparse as sp
import torch
import torch.distributed as dist

from steercf.errors import InputError

T = TypeVar("T")
PRECISIONS = ("auto", "fp32", "tf32", "bf16")


# ---- devices --------------------------------------------------------------------------


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """The torch device ``spec`` names; ``"auto"`` (or None) picks CUDA when present.

    Under ``torchrun`` a bare ``"cuda"`` becomes ``cuda:LOCAL_RANK``, so that each process
    of a machine drives its own GPU.

    Raises:
        InputError: an unknown device, or CUDA asked for where there is none.
    """
    if spec is None or spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError) as err:
        raise InputError(f"unknown device {spec!r}: {err}") from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {spec!r} asked for, but torch sees no CUDA GPU")
        if device.index is None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


def configure_precision(device: torch.device, precision: str = "auto") -> str:
    """Set the float32 matmul precision for ``device``; returns the precision in force.

    ``"auto"``: TF32 on CUDA (float32 range and accumulation with 10-bit-mantissa
    inputs: safe for training these models, and several times faster on tensor cores),
    plain float32 on the CPU. ``"fp32"``: full float32 everywhere. ``"tf32"``: TF32 on
    CUDA (no-op on the CPU). ``"bf16"``: TF32 for training; batch scoring also computes
    the (users x items) score product in bfloat16 (see :mod:`steercf.scoring`).
    """
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        precision = "tf32" if device.type == "cuda" else "fp32"
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = precision != "fp32"
        torch.backends.cudnn.allow_tf32 = precision != "fp32"
    return precision


# ---- the process group ------------------------------------------------------------------


@dataclass(frozen=True)
class Collective:
    """This process's place in a data-parallel job; ``Collective()`` is a single process.

    Every method is a no-op returning its input when ``world_size`` is 1, so training code
    runs one path for both. All ranks must call the collective methods in the same order.

    Attributes:
        rank: this process, 0 .. world_size - 1.
        world_size: number of processes.
    """

    rank: int = 0
    world_size: int = 1

    @classmethod
    def current(cls) -> Collective:
        """The default ``torch.distributed`` process group if one is initialised, else a
        single process."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that reports progress and writes files."""
        return self.rank == 0

    # -- sharding -----------------------------------------------------------------------
    def shard(self, index: T) -> T:
        """This rank's part of a batch: every ``world_size``-th entry from ``rank`` on.

        Args:
            index: (B,) numpy array, torch tensor or sequence of the batch's rows.
        """
        return index[self.rank :: self.world_size]  # type: ignore[index]

    def shard_rows(
        self,
        rows: sp.csr_matrix,
        users: np.ndarray,
        thin: Callable[[sp.csr_matrix], sp.csr_matrix] | None = None,
    ) -> tuple[sp.csr_matrix, sp.csr_matrix | None]:
        """This rank's rows of the batch ``rows[users]`` and, with ``thin``, of
        ``thin(rows[users])``.

        Args:
            rows: (n_users, n_items) CSR.
            users: (B,) the global batch's row indices.
            thin: a random edit of a batch (ELSA's input dropout). It is applied to the
                whole batch on every rank, so its random draws stay in step with
                single-process training; only then is the rank's part cut out.

        Returns:
            ``(batch, thinned)``: (b_r, n_items) each; ``thinned`` is None without ``thin``.
        """
        if thin is None:
            return rows[self.shard(users)], None
        batch = rows[users]
        thinned = thin(batch)
        if self.world_size == 1:
            return batch, thinned
        mine = self.shard(np.arange(len(users)))
        return batch[mine], thinned[mine]

    # -- reductions ---------------------------------------------------------------------
    def mean_over_batch(
        self, loss: torch.Tensor, grad: torch.Tensor, local_size: int, global_size: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Turn this rank's mean ``loss`` (scalar) and its gradient (any shape) over its
        ``local_size`` users into the mean over all ``global_size`` users of the batch,
        on every rank. ``grad`` is updated in place."""
        if self.world_size == 1:
            return loss, grad
        weight = local_size / global_size
        grad.mul_(weight)
        loss = (loss.detach() * weight).reshape(1).to(grad.device)
        dist.all_reduce(grad)
        dist.all_reduce(loss)
        return loss[0], grad

    def scale_loss(self, loss: torch.Tensor, local_size: int, global_size: int) -> torch.Tensor:
        """The loss to back-propagate through :meth:`wrap`'s DDP module: DDP averages the
        ranks' gradients, so each rank's mean loss is weighted by ``W * b_r / B``."""
        if self.world_size == 1:
            return loss
        return loss * (self.world_size * local_size / global_size)

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over ranks, in place; returns it."""
        if self.world_size > 1:
            dist.all_reduce(tensor)
        return tensor

    def sum_floats(self, *values: float) -> tuple[float, ...]:
        """Sums over ranks of a few Python numbers (float64)."""
        if self.world_size == 1:
            return tuple(float(v) for v in values)
        device = _collective_device()
        summed = self.sum_(torch.tensor(values, dtype=torch.float64, device=device))
        return tuple(float(v) for v in summed.cpu())

    def any_(self, mask: torch.Tensor) -> torch.Tensor:
        """Element-wise OR of a bool tensor over ranks (a new tensor when distributed)."""
        if self.world_size == 1:
            return mask
        as_int = mask.to(torch.int32)
        dist.all_reduce(as_int, op=dist.ReduceOp.MAX)
        return as_int.bool()

    def agree(self, value: T) -> T:
        """Rank 0's ``value`` on every rank (any picklable value: a number, a dict of
        numbers). Decisions such as early stopping go through it, so ranks can never
        diverge on them even if their own numbers differed in the last bit."""
        if self.world_size == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, device=_collective_device())
        return box[0]

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.world_size > 1:
            dist.barrier()

    # -- autograd models ----------------------------------------------------------------
    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` in ``DistributedDataParallel`` (itself with one process)."""
        if self.world_size == 1:
            return module
        from torch.nn.parallel import DistributedDataParallel

        device = next(module.parameters()).device
        # Buffers (the SAE's BatchTopK threshold, unused data-parallel) need no broadcast
        # before every forward; torch >= 2.13 renamed the switch.
        options = inspect.signature(DistributedDataParallel).parameters
        no_sync = (
            {"forward_sync_buffers": False}
            if "forward_sync_buffers" in options
            else {"broadcast_buffers": False}
        )
        return DistributedDataParallel(
            module, device_ids=[device.index] if device.type == "cuda" else None, **no_sync
        )


def _collective_device() -> torch.device:
    """Where small collective tensors live: nccl only moves CUDA tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def backend_for(device: torch.device) -> str:
    """``nccl`` for CUDA devices, ``gloo`` otherwise."""
    return "nccl" if device.type == "cuda" else "gloo"


def init_from_env(device: str | torch.device | None = "auto") -> tuple[Collective, torch.device]:
    """Join the process group that ``torchrun`` describes in the environment (``RANK``,
    ``WORLD_SIZE``, ``MASTER_ADDR``, ...); a plain single process otherwise.

    Returns:
        ``(collective, device)``: the device resolved for this rank (``cuda:LOCAL_RANK``
        under torchrun with CUDA).
    """
    resolved = resolve_device(device)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Collective(), resolved
    if not dist.is_initialized():
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
        dist.init_process_group(backend_for(resolved))
    return Collective.current(), resolved


def shutdown() -> None:
    """Leave the process group (if any)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for the rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---- launching from Python ----------------------------------------------------------------


def launch(
    fn: Callable[..., Any],
    nproc: int,
    *args: Any,
    backend: str = "gloo",
    threads: int | None = 1,
    timeout_s: float = 600.0,
) -> Any:
    """Run ``fn(collective, *args)`` in ``nproc`` fresh processes joined in a process
    group on this machine, and return rank 0's result.

    Args:
        fn: a module-level function (the processes are spawned, so it must be importable).
        nproc: number of processes (1 runs ``fn`` in a single spawned process too).
        args: passed to every rank (each gets a copy).
        backend: ``"gloo"`` (CPU) or ``"nccl"`` (one GPU per rank: ``cuda:rank``).
        threads: torch intra-op threads per process (None: torch's default).
        timeout_s: collective timeout; a hung rank fails the job after this long.

    Returns:
        rank 0's return value, with every torch tensor in it (also inside dicts, lists
        and tuples) turned into a numpy array: torch would otherwise pass tensors as
        shared-memory handles that die with the process that made them.

    Raises:
        torch.multiprocessing.ProcessRaisedException: a rank raised (its traceback is in
            the message); the other ranks are terminated.
    """
    if nproc < 1:
        raise InputError(f"nproc must be >= 1, got {nproc}")
    import torch.multiprocessing as mp

    context = mp.get_context("spawn")
    results = context.Queue()
    port = free_port()
    job = mp.start_processes(
        _worker,
        args=(fn, args, nproc, port, backend, threads, timeout_s, results),
        nprocs=nproc,
        join=False,
        start_method="spawn",
    )
    # Drain the queue while waiting: a rank blocks on exit until its result is read.
    result, received = None, False
    while True:
        if not received:
            try:
                result, received = results.get(timeout=0.05), True
            except queue_module.Empty:
                pass
        if job.join(timeout=0.05):
            break
    if not received:
        result = results.get(timeout=timeout_s)
    return result


def _worker(
    rank: int,
    fn: Callable[..., Any],
    args: tuple,
    world_size: int,
    port: int,
    backend: str,
    threads: int | None,
    timeout_s: float,
    results: Any,
) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
    )
    if threads is not None:
        torch.set_num_threads(threads)
    if backend == "nccl":
        torch.cuda.set_device(rank)
    dist.init_process_group(
        backend, rank=rank, world_size=world_size, timeout=datetime.timedelta(seconds=timeout_s)
    )
    try:
        result = fn(Collective.current(), *args)
        if rank == 0:
            results.put(_to_numpy(result))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _to_numpy(value: Any) -> Any:
    """``value`` with torch tensors (nested in dicts, lists, tuples) as numpy arrays."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, dict):
        return {k: _to_numpy(v) for k, v in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a NamedTuple
        return type(value)(*(_to_numpy(v) for v in value))
    if isinstance(value, (list, tuple)):
        return type(value)(_to_numpy(v) for v in value)
    return value
