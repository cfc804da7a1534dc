"""Where shard jobs run: local processes (joblib's loky) or a dask cluster.

Either way a job is ``fn(job, *args)`` in another process, results arrive in completion
order, and an exception in a job stops the run (joblib re-raises it here). With dask,
the workers write shards straight into the cache directory, which must be on storage
they all see, under the same path; manifest and CSVs are written by this process.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator

from pipeline.errors import BadInput
from pipeline.settings import Registry

BACKENDS = Registry(
    "backend",
    {"loky": "local processes", "dask": "a dask.distributed cluster (--scheduler)"},
)


def local_cores() -> int:
    """The CPU cores this process may run on (its affinity mask)."""
    return len(os.sched_getaffinity(0))


def _start_workers_without_sigint() -> None:
    """Start loky workers with SIGINT blocked (a signal mask survives exec). Ctrl-C
    reaches the whole process group, and a worker still importing its modules would print
    a KeyboardInterrupt traceback of its own; this way only this process sees it, stops
    the run and terminates the workers (their temporary files are removed here)."""
    from multiprocessing import resource_tracker as mp_tracker

    from joblib.externals.loky.backend import popen_loky_posix, resource_tracker

    launch = popen_loky_posix.Popen._launch
    if getattr(launch, "without_sigint", False):
        return

    def _launch(self, process_obj):
        # starting a resource tracker unblocks SIGINT: both are started first
        resource_tracker.ensure_running()
        mp_tracker.ensure_running()
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            return launch(self, process_obj)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    _launch.without_sigint = True
    popen_loky_posix.Popen._launch = _launch


@contextlib.contextmanager
def _backend(backend: str, scheduler: str | None) -> Iterator[None]:
    from joblib import parallel_config

    if backend == "loky":
        _start_workers_without_sigint()
        # one thread per worker: n busy workers on n cores, no oversubscription
        with parallel_config(backend="loky", inner_max_num_threads=1):
            yield
        return
    try:
        from dask.distributed import Client
    except ImportError:
        raise BadInput(
            "--backend dask needs dask and distributed; install them with "
            "pip install 'mrnet[cluster]'"
        ) from None
    try:
        client = Client(scheduler, timeout="10s")
    except (OSError, TimeoutError, ValueError) as e:
        raise BadInput(
            f"cannot reach the dask scheduler at {scheduler} ({type(e).__name__}); "
            "start one with `dask scheduler` or fix --scheduler"
        ) from None
    try:
        with parallel_config(backend="dask", client=client):
            yield
    finally:
        client.close()


def run_jobs(
    fn: Callable,
    jobs: list,
    args: tuple,
    backend: str = "loky",
    n_jobs: int | None = None,
    scheduler: str | None = None,
) -> Iterator:
    """Yield ``fn(job, *args)`` for every job as each finishes (in completion order).

    Args:
        fn: the work function, called as ``fn(job, *args)`` in a worker.
        jobs: the jobs; none: nothing is started.
        args: the arguments after the job, the same for every job.
        backend: "loky" (local processes) or "dask" (a dask.distributed cluster).
        n_jobs: processes, at most one per job (default: all local cores with loky, all
            of the cluster's workers with dask).
        scheduler: the dask scheduler's address (dask only).

    Returns:
        An iterator of ``fn``'s results.
    """
    from joblib import Parallel, delayed

    if not jobs:
        return
    with _backend(backend, scheduler):
        n = n_jobs or (local_cores() if backend == "loky" else -1)
        if n > 0:
            n = min(n, len(jobs))
        yield from Parallel(n_jobs=n, return_as="generator_unordered")(
            delayed(fn)(job, *args) for job in jobs
        )
