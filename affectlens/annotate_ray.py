"""The ``ray`` engine of ``affectlens annotate``: the same per-input jobs, run by actors on a Ray cluster.

Each actor builds its analyzer once (model loading is the expensive part) and annotates many inputs with
``annotate_one``, writing that input's tables into ``OUT/<video-id>/`` itself, atomically, exactly as a local
worker does; it returns the manifest entry, and this process (the driver) alone records it in the manifest.
So the outputs and the resume rules are those of the local engine.

Workers read the inputs and write the tables by path: on a cluster of several machines the inputs and the
output folder must be on a file system every node mounts at the same path (NFS, a cluster file system...).
A worker that cannot see the output folder stops the run rather than write tables nobody will find.
The analyzer factory travels to the workers by reference, so its module must import there too (Ray adds the
driver's working folder to the workers' ``sys.path``; an installed package works everywhere), and the
``AFFECTLENS_*`` environment variables (the weights folder...) are set on the workers. Joining a cluster
that uses Ray's token authentication takes Ray's own settings (``RAY_AUTH_MODE=token`` and its token).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections import deque
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from affectlens.annotate import (
    MANIFEST,
    AnnotateError,
    AnnotateSettings,
    Job,
    _log_entry,
    _Manifest,
    _Progress,
    annotate_one,
)

if TYPE_CHECKING:
    from affectlens.analyzer import Analyzer

logger = logging.getLogger(__name__)

#: The cluster to use when ``AnnotateSettings.ray_address`` is unset (Ray's own variable).
ADDRESS_ENV = "RAY_ADDRESS"
#: Environment variables with this prefix (weights folder, injected analyzer...) are set on the workers too.
_FORWARDED_PREFIX = "AFFECTLENS_"


def import_ray() -> ModuleType:
    """``import ray``, or an ``AnnotateError`` that says how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise AnnotateError(
            f"--engine ray needs the ray package ({exc}); install it with: pip install 'affectlens[ray]'"
        ) from None
    return ray


class _Worker:
    """One Ray actor: an analyzer built on first use, then one ``annotate_one`` call per input."""

    def __init__(self, factory: Callable[[], Analyzer], settings: AnnotateSettings, out: Path, level: int) -> None:
        logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
        self.factory = factory
        self.settings = settings
        self.out = out
        self.analyzer: Analyzer | None = None

    def annotate(self, job: Job) -> dict[str, Any]:
        if not (self.out / MANIFEST).is_file():  # the driver wrote it before the first job
            raise AnnotateError(
                f"{self.out}: not visible on Ray node {socket.gethostname()}; a cluster of several machines needs "
                "the output folder (and the inputs) on a file system shared by every node, at the same path"
            )
        if self.analyzer is None:
            self.analyzer = self.factory()
        return annotate_one(self.analyzer, job, self.out, self.settings)


def run_ray(
    jobs: list[Job],
    out: Path,
    settings: AnnotateSettings,
    manifest: _Manifest,
    bars: _Progress,
    analyzer: Analyzer | None,
    factory: Callable[[], Analyzer],
) -> None:
    """Run the jobs on Ray actors; record each entry in ``manifest`` here, as it comes back.

    The cluster is ``settings.ray_address``, else ``$RAY_ADDRESS``, else a local instance started here (with
    ``settings.workers`` CPUs, or all of this machine's when ``workers`` is 1) and shut down at the end; a Ray
    already initialised in this process is used as it is. ``settings.workers`` actors run (one CPU each), or
    one per CPU of the cluster when it is 1. A worker that dies fails its input only; an error that stops a
    local run (missing weights) stops this one too.
    """
    if analyzer is not None:
        raise AnnotateError("Ray workers build their own analyzers: pass analyzer_factory, not an analyzer")
    if not jobs:
        return
    ray = import_ray()
    started = _connect(ray, settings)
    try:
        _run_actors(ray, jobs, out, settings, manifest, bars, factory)
    finally:
        if started:
            ray.shutdown()


def _connect(ray: ModuleType, settings: AnnotateSettings) -> bool:
    """Connect to the cluster (or start a local instance); ``True`` when this call started Ray here."""
    address = settings.ray_address or os.environ.get(ADDRESS_ENV) or None
    if ray.is_initialized():
        logger.info("using the Ray instance this process already holds")
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.ERROR, "log_to_driver": True}
    if address is None:
        kwargs.update(address="local", num_cpus=settings.workers if settings.workers > 1 else os.cpu_count() or 1)
    else:
        kwargs.update(address=address)
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise AnnotateError(f"cannot start or reach {where} ({exc})") from exc
    logger.info("Ray: %s", address or "a local instance")
    return True


def _run_actors(
    ray: ModuleType,
    jobs: list[Job],
    out: Path,
    settings: AnnotateSettings,
    manifest: _Manifest,
    bars: _Progress,
    factory: Callable[[], Analyzer],
) -> None:
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    wanted = settings.workers if settings.workers > 1 else cpus
    if wanted > cpus:  # more one-CPU actors than CPUs would leave some unscheduled, their jobs waiting forever
        logger.warning("%d workers asked for, the Ray cluster has %d CPUs: using %d", wanted, cpus, cpus)
    forwarded = {k: v for k, v in os.environ.items() if k.startswith(_FORWARDED_PREFIX)}
    actor_class = ray.remote(num_cpus=1, max_restarts=0)(_Worker).options(runtime_env={"env_vars": forwarded})
    level = logging.getLogger().level
    actors: list[Any] = []

    def new_actor() -> Any:
        actors.append(actor_class.remote(factory, settings, out, level))
        return actors[-1]

    idle = [new_actor() for _ in range(min(wanted, cpus, len(jobs)))]
    queue = deque(jobs)
    pending: dict[Any, tuple[Job, Any]] = {}
    try:
        while queue or pending:
            while queue and idle:
                actor, job = idle.pop(), queue.popleft()
                pending[actor.annotate.remote(job)] = (job, actor)
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            job, actor = pending.pop(ref)
            try:
                entry = ray.get(ref)
                idle.append(actor)
            except ray.exceptions.RayTaskError as exc:  # raised by our code on the worker: stops the run
                cause = getattr(exc, "cause", None)
                raise (cause if isinstance(cause, Exception) else exc) from None
            except ray.exceptions.RayError as exc:  # the actor's process or node died: this input fails
                logger.debug("%s: Ray worker lost", job.path, exc_info=True)
                entry = {
                    "input": job.path, "size": job.size, "sha256": job.sha256, "status": "failed",
                    "reason": f"{job.path}: the Ray worker died (out of memory? node lost?): {type(exc).__name__}",
                }  # fmt: skip
                with contextlib.suppress(Exception):
                    ray.kill(actor)
                idle.append(new_actor())
            manifest.record(job.video, entry)
            bars.end_video()
            _log_entry(entry)
    finally:
        for actor in actors:
            with contextlib.suppress(Exception):
                ray.kill(actor)
