"""Batch files on a Ray cluster: the workers solve, only the driver writes.

Each worker is a Ray actor holding one Solver, built on its own machine from the
same command-line options as a local run, so it resolves the preset there (cache,
installed bundles, hub) and loads the models once. Its CPU reservation is its
llama.cpp thread count; its GPU reservation turns on GPU offload. The driver hands
each worker at most ``in_flight`` problems at a time and writes every record it
gets back through the local batch writer (``batch.write_records``,
``bench.run_bench_tasks``): the same durable JSONL, resume, torn-line repair and
summary as on one machine.

A problem's result does not depend on its worker or on the order: every search
starts from the configured seed (``SearchConfig.seed``, the same for every
problem) and from an engine with nothing of the previous problem left
(``Solver`` releases every sequence and resets the reward after each search).

``value collect --ray`` runs on the same pool with a CollectWorker (``run_cluster_collect``).

Ray is imported only when a command asks for it (``import_ray``).
"""
from __future__ import annotations

import logging
import sys
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .batch import Note, Record, Summary, error_record, solve_record, write_records
from .bench import run_bench_tasks, solve_arm
from .errors import SpecsError
from .solver_options import build_solver, method_of
from .problems import Problem

Task = tuple[Problem, str]  # a problem and the method to solve it with

RAY_EXTRA = "pip install 'specs-local[ray]'"


@dataclass(frozen=True)
class ClusterOptions:
    address: str = "auto"  # "auto": RAY_ADDRESS, else a cluster started on this machine, else a Ray of its own
    workers: int | None = None  # None: as many as the cluster holds (default_workers)
    gpus_per_worker: float = 0.0
    threads: int = 1  # CPUs a worker reserves, and its llama.cpp threads
    in_flight: int = 2  # problems per worker: one solving, one waiting, so that no worker waits on the driver
    attempts: int = 3  # workers a problem may be lost with before it gets an error record


# ---------------------------------------------------------------- Ray itself


def import_ray():
    """The ray module, or a one-line SpecsError naming the extra."""
    try:
        import ray
    except ImportError:
        raise SpecsError(f"--ray needs Ray, which is not installed: {RAY_EXTRA}") from None
    return ray


def _last_line(error: BaseException) -> str:
    """The telling line of a Ray error: its last one (a traceback's ends with the exception)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def connect(ray, address: str) -> None:
    """Join the cluster at ``address``, unless this process already has (a test, a notebook)."""
    if ray.is_initialized():
        return
    try:
        ray.init(address=None if address == "auto" else address, include_dashboard=False,
                 log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, ValueError, RuntimeError, TimeoutError) as error:
        raise SpecsError(f"cannot join the Ray cluster at {address}: {_last_line(error)}") from None


def node_resources(ray) -> list[dict[str, float]]:
    """The resources of each live machine of the cluster."""
    return [node["Resources"] for node in ray.nodes() if node["Alive"]]


def workers_on(resources: dict[str, float], threads: int, gpus: float) -> int:
    """Workers one machine holds: one per ``threads`` CPUs."""
    by_cpu = int(resources.get("CPU", 0)) // threads
    by_gpu = int(resources.get("GPU", 0) // gpus) if gpus else by_cpu
    return max(0, min(by_cpu, by_gpu))


def default_workers(nodes: Sequence[dict[str, float]], threads: int, gpus: float) -> int:
    """The workers of ``--workers`` left out: what the machines hold, at least one.

    Measured on a 2-core machine (docs/results/ray-scaling.json): two 1-thread
    workers did 2.2 problems/min against one's 1.1, each problem as fast as alone;
    what collapses is two workloads that each use every core."""
    return max(1, sum(workers_on(resources, threads, gpus) for resources in nodes))


def check_room(nodes: Sequence[dict[str, float]], threads: int, gpus: float) -> None:
    """Refuse a worker no machine can hold: Ray would leave it pending for ever."""
    if not any(r.get("CPU", 0) >= threads and r.get("GPU", 0) >= gpus for r in nodes):
        need = f"{threads} CPUs" + (f" and {gpus:g} GPUs" if gpus else "")
        raise SpecsError(f"no machine of the Ray cluster has {need} for one worker (see --threads, --gpus-per-worker)")


def _absolute(spec: str | None) -> str | None:
    return str(Path(spec).resolve()) if spec and Path(spec).exists() else spec


def worker_options(opts: dict, options: ClusterOptions) -> dict:
    """The command-line options a worker builds its Solver from.

    Its threads are its CPU reservation; it offloads (all layers unless
    --n-gpu-layers says otherwise) only with GPUs of its own. Local files become
    absolute paths, since a worker's working directory need not be the driver's."""
    layers = (opts["n_gpu_layers"] or -1) if options.gpus_per_worker else 0
    files = {key: _absolute(opts.get(key)) for key in ("draft", "target", "reward", "value_head")}
    return {**opts, **files, "threads": options.threads, "n_gpu_layers": layers}


# ---------------------------------------------------------------- the workers


class Worker:
    """The body of one Ray actor: a Solver loaded once on its machine. It writes no
    file; every record goes back to the driver."""

    def __init__(self, opts: dict):
        import ray

        self.node = ray.util.get_node_ip_address()
        self.solver, self.load_error = None, None
        try:
            self.solver = build_solver(opts, progress=False)
        except SpecsError as error:  # kept for ready(), so that the driver can say why
            self.load_error = str(error)

    def ready(self) -> tuple[str, str | None]:
        """This worker's machine, and why it cannot solve (None once its models are loaded)."""
        return self.node, self.load_error

    def solve(self, problem: Problem, method: str, trace: bool) -> Record:
        return solve_record(problem, lambda text: solve_arm(self.solver, text, method), method=method, trace=trace)


class CollectWorker:
    """The body of one Ray actor of ``value collect --ray``: the target, copying out the
    collection's layers, and the draft, loaded once on its machine. Each task is a
    problem and whether it gets Monte Carlo labels; the record goes back to the driver
    with its feature rows under "hidden", and the driver writes both."""

    def __init__(self, opts: dict, meta: dict, no_draft: bool, mc):
        import ray

        from .collect import load_collect_models

        self.node = ray.util.get_node_ip_address()
        self.models, self.load_error, self.k, self.mc = None, None, meta["k"], mc
        try:
            self.models = load_collect_models(opts, meta, no_draft=no_draft, mc=mc)
        except SpecsError as error:
            self.load_error = str(error)

    def ready(self) -> tuple[str, str | None]:
        return self.node, self.load_error

    def solve(self, problem: Problem, with_mc: bool, trace: bool) -> Record:
        from .collect import collect_problem

        target, draft, config = self.models
        record, rows = collect_problem(problem, target=target, draft=draft, k=self.k, config=config, mc=self.mc,
                                       with_mc=with_mc)
        return {**record, "hidden": rows}


class WorkerPool:
    """The driver's side of its workers: their actors, which are starting, live or
    lost, and the tasks each has in hand. The actors start on first use, so a rerun
    of a finished file starts none. ``worker`` is the actor's class (a Worker, which
    solves, or a CollectWorker), built from the worker options and ``worker_args``."""

    def __init__(self, ray, opts: dict, options: ClusterOptions, worker: type = Worker, worker_args: tuple = ()):
        self.ray, self.opts, self.options = ray, opts, options
        self.worker, self.worker_args = worker, worker_args
        self.actors: list = []
        self.nodes: dict[int, str] = {}  # worker -> its machine's address
        self.starting: dict[Any, int] = {}  # ready() reference -> worker
        self.live: set[int] = set()
        self.lost: dict[int, str] = {}  # worker -> why
        self.running: dict[Any, tuple[int, Task]] = {}  # solve() reference -> worker, task

    def start(self) -> None:
        if self.actors:
            return
        connect(self.ray, self.options.address)
        nodes = node_resources(self.ray)
        threads, gpus = self.options.threads, self.options.gpus_per_worker
        check_room(nodes, threads, gpus)
        count = self.options.workers or default_workers(nodes, threads, gpus)
        actor = self.ray.remote(self.worker).options(num_cpus=threads, num_gpus=gpus, max_restarts=0)
        self.actors = [actor.remote(worker_options(self.opts, self.options), *self.worker_args) for _ in range(count)]
        self.starting = {a.ready.remote(): worker for worker, a in enumerate(self.actors)}

    def name(self, worker: int) -> str:
        node = self.nodes.get(worker)
        return f"worker {worker + 1}" + (f" on {node}" if node else "")

    def started(self, ref) -> str | None:
        """Take one worker's answer to ready(); the line to show when it cannot solve."""
        worker = self.starting.pop(ref)
        try:
            self.nodes[worker], error = self.ray.get(ref)
        except self.ray.exceptions.RayError as died:  # it crashed while loading, or its machine went
            error = _last_line(died)
        if error is None:
            self.live.add(worker)
            return None
        self.lose(worker, error)
        return f"{self.name(worker)} could not start: {error}"

    def wait_started(self, note: Note) -> None:
        """Start the workers and wait until each is ready or has failed (a measurement wants them warm)."""
        self.start()
        for ref in list(self.starting):
            if (message := self.started(ref)) is not None:
                note(message)

    def lose(self, worker: int, why: str) -> None:
        """Take a worker out for good; killed, so that one only unreachable for now cannot come back."""
        if worker in self.lost:
            return
        self.live.discard(worker)
        self.lost[worker] = why
        self.ray.kill(self.actors[worker])

    def hand_out(self, queue: deque[Task], trace: bool) -> None:
        """Give each live worker tasks from the queue, up to ``in_flight`` in hand."""
        load = Counter(worker for worker, _ in self.running.values())
        for worker in sorted(self.live):
            while queue and load[worker] < self.options.in_flight:
                task = queue.popleft()
                self.running[self.actors[worker].solve.remote(*task, trace)] = (worker, task)
                load[worker] += 1

    def next_answer(self):
        """The next reference that is ready (a task done or a worker started); None when none is pending."""
        pending = [*self.running, *self.starting]
        if not pending:
            return None
        (ref,), _ = self.ray.wait(pending, num_returns=1)
        return ref

    def describe(self) -> str:
        return f"{len(self.live)}/{len(self.actors)} workers" if self.actors else ""

    def none_left(self) -> str:
        last = next(reversed(self.lost.values()), "none started")
        return (f"no Ray worker left ({len(self.lost)} of {len(self.actors)} lost; the last: {last}); "
                "the records done so far are kept")

    def close(self) -> None:
        for worker, actor in enumerate(self.actors):
            if worker not in self.lost:
                self.ray.kill(actor)


@contextmanager
def worker_pool(opts: dict, options: ClusterOptions, worker: type = Worker, worker_args: tuple = ()
                ) -> Iterator[WorkerPool]:
    """A WorkerPool whose actors are killed at the end; SpecsError at once without Ray."""
    pool = WorkerPool(import_ray(), opts, options, worker, worker_args)
    try:
        yield pool
    finally:
        pool.close()


# ---------------------------------------------------------------- dispatch


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _raised(error) -> str:
    """What an exception raised inside a worker says, in one line."""
    cause = getattr(error, "cause", None)
    if cause is None:
        return _last_line(error)
    first = next((line for line in str(cause).splitlines() if line.strip()), "")
    return f"{type(cause).__name__}: {first}" if first else type(cause).__name__


def _answer(pool: WorkerPool, ref, queue: deque[Task], losses: Counter, note: Note) -> Record | None:
    """The record a finished reference gives; None when its task went back to the queue."""
    worker, task = pool.running.pop(ref)
    problem, method = task
    try:
        return pool.ray.get(ref)
    except pool.ray.exceptions.RayTaskError as error:  # raised inside solve: this problem's failure alone
        return error_record(problem, method, _raised(error))
    except pool.ray.exceptions.RayError as error:  # the worker is gone: killed, crashed, or its machine lost
        why = _last_line(error)
        if worker not in pool.lost:
            pool.lose(worker, why)
            note(f"{pool.name(worker)} lost: {why} ({len(pool.live)} left)")
        losses[task] += 1
        if losses[task] >= pool.options.attempts:
            return error_record(problem, method, f"{losses[task]} workers were lost solving it; the last: {why}")
        queue.appendleft(task)  # to another worker, before anything new
        return None


def cluster_records(tasks: Sequence[Task], pool: WorkerPool, *, trace: bool = False,
                    note: Note = _stderr) -> Iterator[Record]:
    """Solve the tasks on the pool's workers; yield each record as it comes back, in any order.

    A task whose worker is lost goes to another worker, up to ``attempts`` losses,
    then becomes an error record; an exception inside a worker becomes an error
    record too. SpecsError when tasks remain and no worker is left."""
    if not tasks:
        return
    pool.start()
    queue = deque(tasks)
    losses: Counter = Counter()
    while queue or pool.running:
        pool.hand_out(queue, trace)
        ref = pool.next_answer()
        if ref is None:
            raise SpecsError(pool.none_left())
        if ref in pool.starting:
            if (message := pool.started(ref)) is not None:
                note(message)
            continue
        record = _answer(pool, ref, queue, losses, note)
        if record is not None:
            yield record


def run_cluster_batch(problems: Sequence[Problem], output_path, opts: dict, options: ClusterOptions, *,
                      trace: bool = False, progress: bool = True, out=None, retry_errors: bool = False) -> Summary:
    """``run_batch`` on a Ray cluster: ``opts`` are the search options, as ``build_solver`` takes them."""
    method = method_of(opts)
    with worker_pool(opts, options) as pool:
        def produce(todo: list[Problem], note: Note) -> Iterator[Record]:
            return cluster_records([(problem, method) for problem in todo], pool, trace=trace, note=note)

        return write_records(problems, output_path, produce, progress=progress, out=out, detail=pool.describe,
                             retry_errors=retry_errors)


def run_cluster_bench(problems: list[Problem], methods: list[str], out_dir: Path, opts: dict,
                      options: ClusterOptions, *, trace: bool = False, progress: bool = True,
                      out=sys.stderr, retry_errors: bool = False,
                      revision: str | None = None) -> dict[str, list[dict]]:
    """``run_bench`` on a Ray cluster: every (problem, method) pair is one task; ``revision``
    is the driver's (the workers of a local cluster run its checkout)."""
    with worker_pool(opts, options) as pool:
        def produce(tasks: list[Task], note: Note) -> Iterator[Record]:
            return cluster_records(tasks, pool, trace=trace, note=note)

        return run_bench_tasks(problems, methods, out_dir, produce, progress=progress, out=out,
                               detail=pool.describe, retry_errors=retry_errors, revision=revision)


def run_cluster_collect(problems: list[Problem], output_path, meta: dict, opts: dict, options: ClusterOptions, *,
                        no_draft: bool, mc, on_record=None, note: Note = _stderr) -> None:
    """``value collect`` on a Ray cluster: the workers sample and read the hidden states,
    the driver writes the records and the features file (``collect.write_collection``),
    so a kill of either loses at most the problems in hand."""
    from .collect import write_collection

    position = {p.id: i for i, p in enumerate(problems)}  # Monte Carlo labels go by place in the input
    with worker_pool(opts, options, CollectWorker, (meta, no_draft, mc)) as pool:
        def produce(todo: list[Problem]):
            tasks = [(problem, mc.wanted(position[problem.id])) for problem in todo]
            for record in cluster_records(tasks, pool, note=note):
                yield record, record.pop("hidden", None)

        write_collection(problems, output_path, meta, produce, on_record=on_record, note=note)
