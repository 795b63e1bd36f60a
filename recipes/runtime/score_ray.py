"""``fusion score --engine ray``: the chunks of a scoring job as Ray tasks, on a local Ray instance or a cluster.

The job is the local engine's (:mod:`recipes.runtime.score`): the same manifest, chunk ``k`` = input rows
``[k·C, (k+1)·C)``, the same part files, resume and merge. Only who scores a chunk changes: a Ray task reads its
chunk from the input itself, scores it with :func:`recipes.runtime.chunks.write_chunk` (row index = the chunk's
input offset, never the order tasks finish in) and writes ``part-<k>.parquet`` atomically; the driver sends chunk
numbers and counts finished chunks, so no rows travel through Ray's object store. The merged file therefore has
the same bytes as the local engine's.

Each worker process loads the predictor once and keeps it for the next chunks of the same run. A worker process
that dies mid-chunk (killed, out of memory) is replaced and its chunk retried up to ``max_retries`` times; a
rerun after the driver died scores only the chunks with no part file. Rows that fail are ``error`` rows, as in the
local engine.

Where it runs: ``address`` (``--address``), else ``$RAY_ADDRESS``, else a local instance with this machine's cores
(``object_store_memory`` capped: chunks do not pass through it). The input, the output's folder, the run folder
and the data root must be at the same path on every node: a local path on one machine; on a cluster a shared
mount (NFS, Lustre, s3fs or gcsfuse for a bucket).
"""
from __future__ import annotations

import contextlib
import os
import resource
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

if TYPE_CHECKING:
    from recipes.runtime.recipe import Recipe
    from recipes.runtime.runs import Run

__all__ = ["RayEngine", "RayUnavailableError", "RayScoringError", "DEFAULT_OBJECT_STORE_MB"]

DEFAULT_OBJECT_STORE_MB = 256  # a local instance's object store; Ray's default (30% of RAM) would starve a shared box


class RayUnavailableError(RuntimeError):
    """``--engine ray`` without Ray installed, or no cluster at the address given."""


class RayScoringError(RuntimeError):
    """A chunk failed on Ray for a reason other than its rows (its worker died more than ``max_retries`` times,
    the input could not be read on a node); finished chunks are kept and a rerun resumes."""


@dataclass
class RayEngine:
    """Score a job's chunks as Ray tasks (see the module docstring).

    ``num_workers`` chunks are scored at a time (default: the cluster's CPUs), one CPU each. After a job,
    ``worker_peak_rss_mb`` maps each worker that scored a chunk (``host:pid``) to its peak resident memory,
    ``chunks_per_worker`` to how many chunks it scored, and ``chunk_seconds`` gives each chunk's scoring time in
    its worker (the predictor's loading not included).
    """

    address: str | None = None
    num_workers: int | None = None
    max_retries: int = 3
    object_store_mb: int = DEFAULT_OBJECT_STORE_MB
    worker_peak_rss_mb: dict[str, float] = field(default_factory=dict, init=False)
    chunks_per_worker: dict[str, int] = field(default_factory=dict, init=False)
    chunk_seconds: dict[int, float] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        if self.num_workers is not None and self.num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {self.num_workers}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.object_store_mb < 80:
            raise ValueError(f"object_store_mb must be >= 80 (Ray's minimum is 75 MiB), got {self.object_store_mb}")

    def score_chunks(
        self,
        recipe: "Recipe",
        run: "Run",
        input_path: Path,
        chunks: list[int],
        chunk_size: int,
        passthrough: list[str],
        data_root: Path,
        parts: Path,
        on_chunk: Callable[[], None] | None = None,
    ) -> None:
        """Write the part file of every chunk in ``chunks``; ``on_chunk`` is called as each one lands."""
        from recipes.runtime.runs import Run

        self.worker_peak_rss_mb.clear()
        self.chunks_per_worker.clear()
        self.chunk_seconds.clear()
        if not chunks:
            return
        with connected(self.address, self.object_store_mb) as ray:
            workers = self.num_workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
            task = ray.remote(_score_chunk_task).options(num_cpus=1, max_retries=self.max_retries,
                                                         retry_exceptions=False)
            # absolute paths: a worker's working directory is not the driver's on another node
            job = (recipe, Run(run.path.resolve()), str(input_path.resolve()), chunk_size, list(passthrough),
                   str(data_root.resolve()), str(parts.resolve()))
            job_ref = ray.put(job)  # once, not once per chunk
            todo = iter(chunks)
            pending: dict[Any, int] = {}
            try:
                while True:
                    for chunk in todo:
                        pending[task.remote(job_ref, chunk)] = chunk
                        if len(pending) >= workers:
                            break
                    if not pending:
                        break
                    (ready,), _ = ray.wait(list(pending), num_returns=1)
                    chunk = pending.pop(ready)
                    try:
                        report = ray.get(ready)
                    except Exception as error:  # noqa: BLE001 - a RayTaskError/WorkerCrashedError subclass of many kinds
                        raise RayScoringError(
                            f"chunk {chunk} failed on Ray after up to {self.max_retries} retries: {_first_line(error)}; "
                            f"the finished chunks are kept in {parts} and rerunning the same command resumes"
                        ) from error
                    self.worker_peak_rss_mb[report["worker"]] = max(report["peak_rss_mb"],
                                                                    self.worker_peak_rss_mb.get(report["worker"], 0.0))
                    self.chunks_per_worker[report["worker"]] = self.chunks_per_worker.get(report["worker"], 0) + 1
                    self.chunk_seconds[chunk] = report["seconds"]
                    if on_chunk is not None:
                        on_chunk()
            finally:
                for ref in pending:
                    ray.cancel(ref, force=True)


@contextlib.contextmanager
def connected(address: str | None = None, object_store_mb: int = DEFAULT_OBJECT_STORE_MB) -> Iterator[Any]:
    """The ``ray`` module, connected: to the instance this process already joined, else to ``address`` or
    ``$RAY_ADDRESS``, else to a new local instance with this machine's cores (shut down again on exit)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing may phone home from a scoring job
    try:
        import ray
    except ImportError:
        raise RayUnavailableError(
            "--engine ray needs Ray: pip install 'fusion-suite[distributed]' (or use the default --engine local)"
        ) from None
    if ray.is_initialized():
        yield ray
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    try:
        if address:
            ray.init(address=address, log_to_driver=True)
        else:
            ray.init(num_cpus=os.cpu_count() or 1, object_store_memory=object_store_mb * 2**20,
                     include_dashboard=False, log_to_driver=True)
    except ConnectionError as error:
        raise RayUnavailableError(f"no Ray cluster at {address}: {_first_line(error)}; start one with `ray start "
                                  "--head` or drop --address to use a local instance") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


# --- in the worker process -------------------------------------------------------------------------------------
_PREDICTOR: dict[tuple[str, str], Any] = {}  # (recipe, run folder) → predictor; one entry, the job at hand


def _predictor(recipe: "Recipe", run: "Run") -> Any:
    key = (recipe.name, str(run.path))
    if key not in _PREDICTOR:
        _PREDICTOR.clear()  # a worker that moved on to another job frees the previous model first
        _PREDICTOR[key] = recipe.load_predictor(run)
    return _PREDICTOR[key]


def _score_chunk_task(job: tuple, chunk: int) -> dict[str, Any]:
    """A Ray task: score chunk ``chunk`` of ``job`` into its part file; returns who did it and its peak memory."""
    from recipes.runtime.chunks import write_chunk

    recipe, run, input_path, chunk_size, passthrough, data_root, parts = job
    predictor = _predictor(recipe, run)
    started = time.perf_counter()
    write_chunk(recipe, predictor, Path(input_path), chunk, chunk_size, passthrough, Path(data_root), Path(parts))
    return {
        "worker": f"{socket.gethostname()}:{os.getpid()}",
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
        "seconds": time.perf_counter() - started,
    }
