"""Where training runs: device choice, the process group under torchrun, and allocator settings."""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys
from dataclasses import dataclass

import torch

from chargen.errors import UserError

# glibc's malloc returns large blocks to the kernel (munmap / trim) and maps them again on the
# next training step; on a 2-core machine the page faults cost ~20% of an LSTM step. Raising the
# trim threshold and serving every block from the heap (no mmap: the threshold is capped at 32 MiB,
# smaller than a step's gate buffers) keeps those blocks in the process. mallopt numbers (malloc.h):
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4


def tune_allocator() -> bool:
    """Keep large freed blocks inside the process (glibc only); returns whether it took effect."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    return mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX-BF16) for oneDNN.

    There, bf16 autocast runs a 2x512 LSTM training step ~1.6x faster than fp32 and reaches the same
    validation loss (bench/speed.py, BENCHMARKS.md); without it oneDNN emulates bf16 and gains little.
    """
    capabilities = getattr(torch.cpu, "get_capabilities", None)
    if capabilities is None or not torch.backends.mkldnn.is_available():
        return False
    caps = capabilities()
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


@functools.cache
def cpu_runs_bf16_recurrence() -> bool:
    """Whether a bf16-autocast recurrent forward and backward run on this CPU at all.

    oneDNN has bf16 RNN kernels only on AVX-512 CPUs; elsewhere (an AVX2-only EPYC, say) the
    LSTM refuses to build its primitive. A two-step probe is the reliable test; its answer is a
    property of the machine, so it runs once per process.
    """
    try:
        lstm = torch.nn.LSTM(4, 4, batch_first=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, _ = lstm(torch.zeros(1, 2, 4))
        out.float().sum().backward()
    except RuntimeError:
        return False
    return True


def _local_gpu() -> torch.device:
    """This process's GPU: the one numbered by LOCAL_RANK under torchrun (GPU 0 otherwise)."""
    local, count = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
    if local >= count:  # NCCL refuses two ranks of one group on the same GPU
        raise UserError(f"process {local} on this node has no GPU of its own (there are {count}): start at most "
                        f"{count} processes per node (torchrun --nproc_per_node={count}), or use --device cpu")
    return torch.device("cuda", local)


def pick_device(requested: str = "auto") -> torch.device:
    """CUDA, then Apple MPS, then CPU; a forced device that is not there is a clear error.

    Under torchrun each process takes the GPU of its LOCAL_RANK ("cuda" and "auto" alike).
    """
    if requested == "auto":
        if torch.cuda.is_available():
            return _local_gpu()
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise UserError(f"--device {requested!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but CUDA is not available here; use --device cpu (or auto)")
    if device.type == "cuda" and device.index is not None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError(f"--device {requested}: under torchrun each process uses the GPU of its LOCAL_RANK; "
                        "use --device cuda (choose the GPUs with CUDA_VISIBLE_DEVICES)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"--device {requested}: only {torch.cuda.device_count()} CUDA device(s) here")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("--device mps was asked for but Apple MPS is not available here; use --device cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"--device {requested!r} is not supported; use auto, cpu, cuda or mps")
    return _local_gpu() if device.type == "cuda" and device.index is None else device


@dataclass
class Distributed:
    """This process's place among the processes torchrun started (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


_joined_a_group = False  # whether this process ever joined a process group (see end_process)


def init_distributed(device: torch.device) -> Distributed:
    """Join the process group when launched by torchrun (NCCL on CUDA, gloo on CPU)."""
    global _joined_a_group
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    import torch.distributed as dist

    _joined_a_group = True

    if device.type == "cuda":  # before the group exists, so NCCL binds this process to its own GPU
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Distributed(rank=dist.get_rank(), world=dist.get_world_size(),
                       local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def close_distributed(dist: Distributed, together: bool = True) -> None:
    """Leave the process group.

    together: every rank finished (or stopped at the same step) and ends here: wait at a barrier
    first, so no rank closes its connections while rank 0 is still writing the run (which is also
    when the exit abort of end_process's docstring was likeliest: 3 launches in 40 before, 3 in 100
    with the barrier). After a failure on one rank the others may be inside a collective that will
    never complete; then leave at once.
    """
    if dist.enabled:
        import torch.distributed as tdist

        if tdist.is_initialized():
            if together:
                tdist.barrier()
            tdist.destroy_process_group()


def end_process(code: int) -> None:
    """End a process that took part in a process group now, with `code`, without interpreter shutdown.

    Why, from the core dumps of the aborts this prevents (bench/ddp_stress.py, BENCHMARKS.md): once
    DDP has run, `destroy_process_group` leaves gloo's worker threads running (4 threads stay, against
    1 without DDP), and a worker may release the last collectives' work objects, which hold tensors
    with Python owners, while the interpreter is finalizing. Releasing them takes the GIL; a
    finalizing interpreter ends any thread that asks for it, and the C++ runtime aborts the process
    ("terminate called without an active exception", SIGABRT) after a run that succeeded: 3 launches
    in 40 before any fix, 3 in 100 with only the barrier of close_distributed. Everything a run writes
    is already on disk (atomic writes, fsynced); the standard streams are flushed here. A process that
    never joined a group returns and ends as usual.
    """
    if not _joined_a_group:
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or gone: nothing more can be said on it
            pass
    os._exit(code)
