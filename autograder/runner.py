"""Runners: grade a class on other machines through Dask distributed.

The scheduler is Dask's own (``dask scheduler``).  A runner
(``autograder runner --scheduler ADDRESS [--gpu] [--name NAME]``) is a Dask
worker with one thread and a :class:`RunnerPlugin`, which holds a one-process
:class:`~autograder.pool.GradingPool` with a warm sandbox: every job the
runner takes is graded by ``job.run_job`` in that process, under the same
hard wall-clock budget as local grading, so a submission that kills or hangs
the grading process costs only that process.

The TA's machine keeps collecting and recording: :class:`RunnerClient` turns
submissions into :class:`~autograder.job.GradingJob` s (plain data: trusted
cells, limits, the submission's bytes), sends them to runners that have the
right resources (``grader``; ``GPU`` as well for ``--device cuda``), and
yields their outcomes as they arrive, for ``grade.py`` to record in the one
gradebook writer.

Faults.  A runner killed mid-job: the scheduler gives its jobs to other
runners (Dask counts such deaths per task and gives up after
``distributed.scheduler.allowed-failures``, reported as a grader error).  A
grading process that dies on a runner is retried on any runner, up to
``tries`` times in all, then recorded as a grader error that says so.  Each
job's result is recorded once, when its future completes.  With no suitable
runner connected, grading refuses to start; if every suitable runner leaves,
the rest of the class is recorded as not graded after ``wait_seconds``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Hashable, Iterable, Iterator

from . import job as jobs
from . import sandbox
from .errors import UsageError
from .pool import DIED, DONE, FAILED, GradingPool, Outcome

#: The Dask resource every runner offers (one job at a time), and the one GPU runners add.
GRADER, GPU = "grader", "GPU"
PLUGIN_NAME = "autograder"


# -- settings ------------------------------------------------------------------------


@dataclass(frozen=True)
class RunnerSettings:
    """Where the runners are and how patient to be: ``c.Runners.<field>`` in nbgrader_config.py."""

    scheduler: str = ""
    #: How many times a job may lose its grading process (or its runner) before it is recorded as failed.
    tries: int = 3
    #: How long to wait for the scheduler to answer.
    connect_seconds: float = 10.0
    #: How long grading waits with no suitable runner connected before the rest is recorded as not graded.
    wait_seconds: float = 120.0
    #: TLS (for tls:// addresses): the CA certificate, and this machine's certificate and key.
    tls_ca_file: str = ""
    tls_cert: str = ""
    tls_key: str = ""

    def security(self):
        """A ``distributed.Security`` from these files, or Dask's own configuration when none is given."""
        from distributed.security import Security

        if not (self.tls_ca_file or self.tls_cert or self.tls_key):
            return Security()  # distributed.comm.tls.* in Dask's configuration, if any
        if not (self.tls_ca_file and self.tls_cert and self.tls_key):
            raise UsageError("TLS needs all three of the CA file, the certificate and the key")
        return Security(
            tls_ca_file=self.tls_ca_file,
            tls_client_cert=self.tls_cert,
            tls_client_key=self.tls_key,
            tls_worker_cert=self.tls_cert,
            tls_worker_key=self.tls_key,
            require_encryption=True,
        )


def settings_from_config(config, scheduler: str | None = None) -> RunnerSettings | None:
    """The runner settings of nbgrader_config.py (``c.Runners``), ``scheduler`` overriding its address;
    None when neither names a scheduler (grade locally)."""
    values: dict = {}
    fields = RunnerSettings.__dataclass_fields__
    for key, value in config.get("Runners", {}).items():
        if key == "device":
            continue  # read by the command line (see configured_device)
        if key not in fields:
            raise UsageError(f"nbgrader_config.py: c.Runners.{key} is not a runner setting (known: device, {', '.join(fields)})")
        wanted = type(getattr(RunnerSettings(), key))
        if wanted is str and not isinstance(value, str):
            raise UsageError(f"nbgrader_config.py: c.Runners.{key} must be a string")
        if wanted is not str and (not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0):
            raise UsageError(f"nbgrader_config.py: c.Runners.{key} must be a positive number")
        values[key] = wanted(value)
    if scheduler:
        values["scheduler"] = scheduler
    if not values.get("scheduler"):
        return None
    return RunnerSettings(**values)


def configured_device(config) -> str | None:
    device = config.get("Runners", {}).get("device")
    if device is not None and device not in ("cpu", "cuda", "auto"):
        raise UsageError(f"nbgrader_config.py: c.Runners.device must be cpu, cuda or auto, not {device!r}")
    return device


# -- the runner's side -----------------------------------------------------------------


@dataclass
class RunnerReply:
    """What a runner sends back for one job."""

    kind: str
    outcome: "jobs.JobOutcome | None"
    detail: str
    provenance: jobs.Provenance
    #: The runner's engine_fingerprint, as loaded when it started.
    engine: str = ""
    #: Seconds the runner's grading process spent on the job.
    seconds: float = 0.0


def _grade_in_process(job: jobs.GradingJob | None, mode: str) -> "jobs.JobOutcome | None":
    if job is None:
        return None  # the warm-up: the process and its sandbox are started
    # Looked up at call time, so a test can stand a fault in for run_job.
    return jobs.run_job(job, mode)


class RunnerPlugin:
    """The grading engine inside a Dask worker: a warm one-process pool and where it runs.

    Built (and warmed) before the worker starts, while the process has a
    single thread to fork from; Dask calls ``setup`` when the worker starts
    and ``teardown`` when it closes."""

    name = PLUGIN_NAME
    idempotent = False

    def __init__(self, runner: str, gpu: bool) -> None:
        from .grade import _pool_init

        jobs.runner_name = runner
        self.engine = jobs.engine_fingerprint()  # of the code this process loaded, before anyone edits the checkout
        self.runner = runner
        self.gpu = gpu
        self.mode = sandbox.sandbox_mode()
        sandbox.sweep_leftovers()
        # The GPU's name is asked here, in the runner, never in the pool process (see job.run_job).
        self.provenance = {device: jobs.provenance(device) for device in (("cpu", "cuda") if gpu else ("cpu",))}
        device = "cuda" if gpu else "cpu"
        self.pool = GradingPool(1, _grade_in_process, initializer=_pool_init, initargs=(sandbox.Limits(), self.mode, device, True))
        self.pool.after_loss = sandbox.sweep_leftovers

    def warm(self) -> None:
        """Start the pool process and its sandbox now, before the first job."""
        for _ in self.pool.run([("warm", (None, self.mode), 600.0)]):
            pass

    def setup(self, worker) -> None:
        self.worker = worker

    def teardown(self, worker) -> None:
        self.pool.close()

    def grade(self, job: jobs.GradingJob) -> RunnerReply:
        where = self.provenance.get(job.device, self.provenance["cpu"])
        budget = job.budget()
        started = time.perf_counter()
        for _, outcome in self.pool.run([(job.key, (job, self.mode), budget)]):
            seconds = time.perf_counter() - started
            if outcome.kind == DONE:
                outcome.value.provenance = where
                return RunnerReply(DONE, outcome.value, "", where, self.engine, seconds)
            return RunnerReply(outcome.kind, None, f"on runner {self.runner}: {outcome.detail}", where, self.engine, seconds)
        return RunnerReply(DIED, None, f"on runner {self.runner}: the pool returned nothing", where, self.engine)


def grade_on_runner(job: jobs.GradingJob) -> RunnerReply:
    """The Dask task: grade ``job`` with this worker's plugin."""
    from distributed import get_worker

    return get_worker().plugins[PLUGIN_NAME].grade(job)


def serve(scheduler: str, gpu: bool = False, name: str | None = None, settings: RunnerSettings | None = None) -> int:
    """``autograder runner``: check this machine, warm the sandbox, then be a Dask worker until stopped."""
    problem = jobs.torch_problem()
    if problem:
        raise UsageError(f"this runner is refused: {problem} (verdicts and quoted numbers hold for the pinned torch only)")
    if gpu:
        import torch

        if not torch.cuda.is_available():
            raise UsageError("--gpu: torch sees no CUDA device here (torch.cuda.is_available() is False)")
    name = name or f"{socket.gethostname()}-{os.getpid()}"
    from distributed import WorkerPlugin

    # A Dask worker plugin (Dask checks the type); distributed is imported only by runners and runner clients.
    plugin = type("RunnerPlugin", (RunnerPlugin, WorkerPlugin), {})(name, gpu)
    plugin.warm()
    resources = {GRADER: 1, **({GPU: 1} if gpu else {})}
    security = (settings or RunnerSettings(scheduler)).security()
    print(f"autograder runner {name}: {'GPU ' + plugin.provenance['cuda'].device if gpu else 'CPU'}, sandbox {plugin.mode}, "
          f"torch {plugin.provenance['cpu'].torch}; joining {scheduler}", file=sys.stderr, flush=True)
    return asyncio.run(_serve_worker(scheduler, name, resources, plugin, security))


async def _serve_worker(scheduler: str, name: str, resources: dict, plugin: RunnerPlugin, security) -> int:
    import dask
    from distributed import Worker

    # Memory is limited per sandbox, not by Dask pausing the worker; no profiler thread in a process that forks.
    with dask.config.set({"distributed.worker.profile.enabled": False}):
        worker = Worker(
            scheduler, nthreads=1, name=name, resources=resources, plugins=[plugin], security=security,
            memory_limit=0, dashboard=False, death_timeout=60,
        )
        loop = asyncio.get_running_loop()

        def stop() -> None:
            # A clean close hands the runner's jobs back to the scheduler; if it cannot finish, end anyway.
            stopper = threading.Timer(30.0, os._exit, (1,))
            stopper.daemon = True
            stopper.start()
            asyncio.ensure_future(worker.close())

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop)
        try:
            await worker
        except Exception as err:  # noqa: BLE001 - one line for the TA, not a Tornado traceback
            plugin.pool.close()
            raise UsageError(f"could not join the scheduler at {scheduler}: {type(err).__name__}: {err}") from None
        await worker.finished()
    plugin.pool.close()
    return 0


# -- the TA's side -------------------------------------------------------------------------


@dataclass(frozen=True)
class RunnerOutcome(Outcome):
    """A pool outcome, plus where it happened."""

    provenance: jobs.Provenance | None = None
    sandbox: str = ""
    #: Seconds the runner's grading process spent on it (for bench/runners.py).
    runner_seconds: float = 0.0


class RunnerClient:
    """The TA's connection to the scheduler: checks the runners, sends jobs and yields outcomes."""

    def __init__(self, settings: RunnerSettings, device: str, check: bool = True) -> None:
        from distributed import Client

        self.settings = settings
        #: Jobs in flight per connected runner: one grading, one ready to start.
        self.in_flight_per_runner = 2
        self._warned: set[str] = set()
        try:
            self.client = Client(
                settings.scheduler, timeout=settings.connect_seconds, security=settings.security(), set_as_default=False,
            )
        except UsageError:
            raise
        except Exception as err:  # noqa: BLE001 - OSError, TimeoutError, ValueError for a bad address
            raise UsageError(f"no Dask scheduler answered at {settings.scheduler} ({type(err).__name__}: {err})") from None
        try:
            self.device = self._resolve(device) if check else device
        except BaseException:
            self.client.close()
            raise
        self.resources = {GRADER: 1, **({GPU: 1} if self.device == "cuda" else {})}

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "RunnerClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def runners(self, gpu: bool = False) -> list[str]:
        """Names of the connected runners (with a GPU when ``gpu``)."""
        info = self.client.scheduler_info(n_workers=-1)["workers"]
        wanted = GPU if gpu else GRADER
        return sorted(str(w.get("name")) for w in info.values() if w.get("resources", {}).get(wanted, 0) >= 1)

    def _resolve(self, device: str) -> str:
        if device not in ("cpu", "cuda", "auto"):
            raise UsageError(f"--device must be cpu, cuda or auto, not {device!r}")
        gpus = self.runners(gpu=True)
        if device == "auto":
            device = "cuda" if gpus else "cpu"
        if device == "cuda" and not gpus:
            raise UsageError(f"--device cuda: no GPU runner is connected to {self.settings.scheduler} "
                             "(start one with: autograder runner --scheduler ADDRESS --gpu)")
        if device == "cpu" and not self.runners():
            raise UsageError(f"no runner is connected to {self.settings.scheduler} "
                             "(start one with: autograder runner --scheduler ADDRESS)")
        return device

    def run(self, todo: Iterable[tuple[Hashable, Callable[[], jobs.GradingJob]]]) -> Iterator[tuple[Hashable, Outcome]]:
        """Grade each ``(key, build)`` (``build()`` reads the submission into a job); yield
        ``(key, outcome)`` as jobs finish, each key exactly once."""
        from distributed.client import _wait

        queue = list(todo)
        queue.reverse()
        pending: dict = {}  # future -> (key, build, tries so far, runners it was lost on)
        lost_since: float | None = None
        runners: list[str] = []
        looked = 0.0
        run_id = uuid.uuid4().hex[:8]
        try:
            while queue or pending:
                if time.monotonic() - looked > 1.0:
                    runners, looked = self.runners(gpu=self.device == "cuda"), time.monotonic()
                # A few jobs per runner in flight, not the class: a runner that joins later gets work too.
                while queue and len(pending) < self.in_flight_per_runner * max(len(runners), 1):
                    key, build = queue.pop()
                    pending[self._submit(build(), run_id, 1)] = (key, build, 1, [])
                if not runners:
                    lost_since = lost_since or time.monotonic()
                    if time.monotonic() - lost_since > self.settings.wait_seconds:
                        yield from self._abandon(pending, queue)
                        return
                else:
                    lost_since = None
                try:
                    # distributed.wait would look for a default client; this one is the TA's own.
                    done, _ = self.client.sync(_wait, list(pending), timeout=2.0, return_when="FIRST_COMPLETED")
                except TimeoutError:
                    continue
                for future in done:
                    key, build, tries, lost = pending.pop(future)
                    outcome = self._outcome(future, tries)
                    future.release()
                    if outcome.kind == DIED and tries < self.settings.tries:
                        lost = lost + [outcome.detail]
                        pending[self._submit(build(), run_id, tries + 1)] = (key, build, tries + 1, lost)
                        continue
                    if outcome.kind == DIED:
                        detail = f"lost its grading process on every one of {tries} tries: " + "; ".join(lost + [outcome.detail])
                        outcome = RunnerOutcome(FAILED, detail=detail[:1500], provenance=outcome.provenance, sandbox=outcome.sandbox)
                    yield key, outcome
        finally:
            for future in pending:
                future.cancel()

    def _submit(self, job: jobs.GradingJob, run_id: str, attempt: int):
        key = f"autograder-{job.assignment}-{job.student}-{run_id}-{attempt}"
        return self.client.submit(grade_on_runner, job, key=key, resources=self.resources, pure=False, retries=0)

    def _outcome(self, future, tries: int) -> RunnerOutcome:
        from distributed import KilledWorker

        if future.status == "finished":
            reply: RunnerReply = future.result()
            self._check_engine(reply)
            problem = _torch_mismatch(reply.provenance)
            if problem:
                return RunnerOutcome(FAILED, detail=problem, provenance=reply.provenance)
            if reply.kind == DONE:
                return RunnerOutcome(DONE, reply.outcome, provenance=reply.provenance, sandbox=reply.outcome.sandbox,
                                     runner_seconds=reply.seconds)
            return RunnerOutcome(reply.kind, detail=reply.detail, provenance=reply.provenance)
        if future.status == "error":
            error = future.exception()
            if isinstance(error, KilledWorker):
                return RunnerOutcome(FAILED, detail=f"every runner that took it died ({error}); rerun to retry")
            return RunnerOutcome(FAILED, detail=f"{type(error).__name__}: {error}")
        return RunnerOutcome(DIED, detail=f"its job was {future.status} by the scheduler")

    def _check_engine(self, reply: RunnerReply) -> None:
        """Warn once per runner whose grading code is not this machine's: its verdicts may differ."""
        mine = jobs.engine_fingerprint()
        if reply.engine and reply.engine != mine and reply.provenance.runner not in self._warned:
            self._warned.add(reply.provenance.runner)
            print(f"warning: runner {reply.provenance.runner} runs other grading code ({reply.engine}) than this machine ({mine}): "
                  "update its checkout and restart it", file=sys.stderr)

    def _abandon(self, pending: dict, queue: list) -> Iterator[tuple[Hashable, Outcome]]:
        wanted = "GPU runner" if self.device == "cuda" else "runner"
        detail = f"not graded: no {wanted} was connected to {self.settings.scheduler} for {self.settings.wait_seconds:g} s; rerun to grade it"
        for future, (key, *_rest) in list(pending.items()):
            future.cancel()
            yield key, RunnerOutcome(FAILED, detail=detail)
        pending.clear()
        while queue:
            key, _build = queue.pop()
            yield key, RunnerOutcome(FAILED, detail=detail)


def _torch_mismatch(where: jobs.Provenance) -> str | None:
    if where.torch and where.torch.split("+")[0] != jobs.PINNED_TORCH:
        return f"graded on runner {where.runner} with torch {where.torch}, but the course is pinned to torch {jobs.PINNED_TORCH}: not recorded"
    return None


# -- started by a cluster manager ----------------------------------------------------------


def launched(argv: list[str]) -> int:
    """``python -m autograder.runner [SCHEDULER] [dask worker options]``: a runner started the way
    dask-jobqueue (``worker_command="autograder.runner"``) and dask-kubernetes
    (``worker_command=["python", "-m", "autograder.runner"]``) start a ``dask worker``.

    The scheduler comes as the first argument or in ``DASK_SCHEDULER_ADDRESS``; ``--name`` is kept;
    a GPU is offered when ``--resources`` or Dask's ``distributed.worker.resources`` names one; the
    other dask-worker options (threads, memory limit, nanny, dashboard) do not apply to a runner
    (one job at a time, limits per sandbox) and are ignored."""
    import argparse

    import dask

    parser = argparse.ArgumentParser(prog="python -m autograder.runner")
    parser.add_argument("--name", default=None)
    parser.add_argument("--resources", default="")
    args, _ignored = parser.parse_known_args(argv)
    # The address is the one argument that looks like one (an option's value, such as a port, never does).
    addresses = [arg for arg in argv if "://" in arg and not arg.startswith("-")]
    args.scheduler = addresses[0] if addresses else os.environ.get("DASK_SCHEDULER_ADDRESS")
    if not args.scheduler:
        print("autograder: error: no scheduler address (an argument or DASK_SCHEDULER_ADDRESS)", file=sys.stderr)
        return 2
    offered = {part.split("=")[0].strip() for part in args.resources.replace(",", " ").split() if "=" in part}
    gpu = GPU in offered or bool(dask.config.get("distributed.worker.resources", {}).get(GPU))
    try:
        return serve(args.scheduler, gpu=gpu, name=args.name)
    except UsageError as err:
        print(f"autograder: error: {err}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    from autograder.runner import launched as _launched  # the package's module, not this __main__ copy

    sys.exit(_launched(sys.argv[1:]))
