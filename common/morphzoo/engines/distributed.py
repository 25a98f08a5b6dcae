"""Start and end the process group of a ``torchrun`` training so that every rank exits cleanly.

Every bundle's ``multi_gpu_train.json`` calls :func:`init_process_group` in ``initialize`` and
:func:`finish_process_group` in ``finalize``.

Why not ``dist.init_process_group`` / ``dist.destroy_process_group`` directly: a CPU (gloo) run
once ended in CI with rank 1 killed by ``terminate called without an active exception``
(SIGABRT) after its training had finished. gloo's worker loop completes a collective, which wakes
the Python caller, *before* it drops its own reference to the collective's tensors; if the
interpreter is already finalising when that late drop needs the GIL (the last collective followed
closely by exit, on a loaded machine), the thread is torn down inside C++ and the process aborts.
``destroy_process_group`` does not stop it: the DDP wrappers keep the gloo backend, and its worker
threads, alive until the process ends. So on CPU the group gets one worker thread, which runs
collectives in order and drops each one before it takes the next, and the run ends with a
barrier: when the barrier returns, every earlier collective has been released while the
interpreter was fully alive, whatever the machine's load. NCCL (GPU) runs only gain the barrier.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["SERIAL_GLOO", "finish_process_group", "init_process_group"]

logger = logging.getLogger(__name__)


SERIAL_GLOO = "morphzoo_gloo"


def _serial_gloo(store: Any, rank: int, size: int, timeout: datetime.timedelta) -> Any:
    """A ``ProcessGroupGloo`` with one worker thread (the creator :data:`SERIAL_GLOO` registers)."""
    options = dist.ProcessGroupGloo._Options()
    options._timeout = timeout
    options._devices = [dist.ProcessGroupGloo.create_default_device()]
    options._threads = 1
    return dist.ProcessGroupGloo(store, rank, size, options)


def _cpu_backend() -> str:
    """:data:`SERIAL_GLOO`, registered on first use, or ``"gloo"`` (two worker threads) where this
    PyTorch build does not let a gloo group be built with its own options."""
    gloo = getattr(dist, "ProcessGroupGloo", None)
    options = getattr(gloo, "_Options", None)
    if options is None or not all(hasattr(options(), a) for a in ("_threads", "_devices", "_timeout")):
        return "gloo"
    if not hasattr(dist.Backend, SERIAL_GLOO.upper()):
        dist.Backend.register_backend(SERIAL_GLOO, _serial_gloo, devices=["cpu"])
    return SERIAL_GLOO


def init_process_group(device: torch.device | str, **kwargs: Any) -> bool:
    """Join the default process group for ``device`` unless one exists.

    NCCL on CUDA devices; otherwise gloo with one worker thread, registered as the backend
    :data:`SERIAL_GLOO` (PyTorch builds a ``"gloo"`` group with two threads and ignores
    ``pg_options``; see the module docstring for why one thread).

    Args:
        device: the device this rank trains on.
        kwargs: passed to ``torch.distributed.init_process_group`` (``init_method``, ``rank``,
            ``world_size``...); by default the environment ``torchrun`` sets is read.

    Returns:
        ``True`` if this call created the group, ``False`` if one was already initialised.
    """
    if dist.is_initialized():
        return False
    backend = "nccl" if torch.device(device).type == "cuda" else _cpu_backend()
    dist.init_process_group(backend=backend, **kwargs)
    logger.info("process group: backend %s, rank %d of %d", backend, dist.get_rank(), dist.get_world_size())
    return True


def finish_process_group() -> bool:
    """Wait for every rank and every pending collective (a barrier), then destroy the default
    process group; a no-op without one.

    Returns:
        ``True`` if a group was destroyed.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return False
    dist.barrier()
    dist.destroy_process_group()
    return True
