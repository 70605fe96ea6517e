"""One search at a time: requests wait in a bounded FIFO queue, one worker thread runs their
searches through ``Solver.stream`` and hands each step to the request's event loop; the counters
``/metrics`` shows."""
from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field

from ..errors import Cancelled, PromptTooLongError, SpecsError
from ..search import Step
from ..solver import Solver
from .protocol import APIError, finish_reason

log = logging.getLogger("uvicorn.error")  # uvicorn's own stderr log: one line per request


@dataclass(eq=False)
class Job:
    problem: str
    method: str
    changes: dict
    loop: asyncio.AbstractEventLoop
    choices: int = 1  # OpenAI's n
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex[:24]}")
    created: int = field(default_factory=lambda: int(time.time()))
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    queued_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    steps: int = 0
    cancel_reason: str | None = None
    steps_at_cancel: int = 0
    finished: bool = False  # the request side has its final event

    def put(self, kind: str, value) -> None:
        """From the worker thread: hand an event to the request's event loop."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))


class Runner:
    """One worker thread runs one search at a time; jobs wait in a bounded FIFO queue."""

    def __init__(self, solver: Solver, max_queue: int, metrics: "Metrics"):
        self.solver, self.max_queue, self.metrics = solver, max_queue, metrics
        self.waiting: collections.deque[Job] = collections.deque()
        self.current: Job | None = None
        self.stopping = False
        self.lock = threading.Condition(threading.RLock())
        self.engine = threading.Lock()  # held for a whole search: /health reads llama.cpp's memory only when idle
        self.thread = threading.Thread(target=self._work, name="specs-search", daemon=True)

    def submit(self, job: Job) -> None:
        with self.lock:
            if self.stopping:
                raise APIError(503, "the server is shutting down", "shutting_down", "server_error")
            # the job waits only behind another: on an idle server the worker takes it at once
            if len(self.waiting) + (self.current is not None) > self.max_queue:
                raise APIError(503, f"the queue is full ({self.max_queue} waiting); retry later", "queue_full",
                               "server_error", headers={"Retry-After": "1"})
            self.waiting.append(job)
            self.lock.notify()

    def cancel(self, job: Job, reason: str) -> None:
        """Take the job out of the queue, or stop its search at the next decode."""
        with self.lock:
            if job in self.waiting:
                self.waiting.remove(job)
                self.metrics.count("cancelled")
                log.info("%s: %s while queued", job.id, reason)
                return
            if job.cancel_reason is None:
                job.cancel_reason, job.steps_at_cancel = reason, job.steps
            if self.current is job:
                self.solver.cancel()

    def stop(self) -> None:
        """Shutdown: refuse the queued jobs and cancel the search in flight."""
        with self.lock:
            self.stopping = True
            for job in self.waiting:
                job.put("error", APIError(503, "the server is shutting down", "shutting_down", "server_error"))
            self.waiting.clear()
            self.lock.notify()
            if self.current is not None:
                self.cancel(self.current, "the server is shutting down")  # the lock is re-entrant

    def _work(self) -> None:
        while True:
            with self.lock:
                while not self.waiting and not self.stopping:
                    self.lock.wait()
                if self.stopping:
                    return
                job = self.current = self.waiting.popleft()
            try:
                with self.engine:
                    self._search(job)
            finally:
                with self.lock:
                    self.current = None

    def _search(self, job: Job) -> None:
        job.started_at = time.monotonic()
        models = self.solver.models.distinct()
        for model in models.values():
            model.reset_usage()  # the strategy resets it too, but only once it has started
        search = None
        steps: list[Step] = []
        outcome = "error"
        try:
            search = self.solver.stream(job.problem, method=job.method, **job.changes)
            while True:
                if job.cancel_reason:  # also covers a cancel() that came before the search cleared the flag
                    raise Cancelled(job.cancel_reason)
                try:
                    step = next(search)
                except StopIteration as done:
                    result = done.value
                    break
                steps.append(step)
                job.steps += 1
                job.put("step", step)
            outcome = finish_reason(result)
            job.put("done", result)
        except Cancelled:
            outcome = "cancelled"
            job.put("error", APIError(503, f"the search was cancelled: {job.cancel_reason}", "cancelled",
                                      "server_error"))
        except PromptTooLongError as err:  # the prompt fit, but left no room for a step
            job.put("error", APIError(400, str(err).splitlines()[0], "context_length_exceeded"))
        except SpecsError as err:
            job.put("error", APIError(400, str(err).splitlines()[0], "search_failed"))
        except Exception as err:  # a failing request must not take the worker down
            log.exception("%s: the search failed", job.id)
            job.put("error", APIError(500, f"the search failed: {type(err).__name__}: {err}".splitlines()[0],
                                      "search_failed", "server_error"))
        finally:
            if search is not None:  # a search stopped early (a cancel) frees everything here (Solver.stream's finally)
                search.close()
            seconds = time.monotonic() - job.started_at
            self.metrics.record(job, outcome, steps, models, seconds)
            late = f" ({job.steps - job.steps_at_cancel} after: {job.cancel_reason})" if job.cancel_reason else ""
            log.info("%s: %s after %d steps%s, %.2f s", job.id, outcome, len(steps), late, seconds)



class Metrics:
    """Counters for /metrics, in Prometheus text format."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests: collections.Counter = collections.Counter()
        self.steps: collections.Counter = collections.Counter()
        self.tokens: collections.Counter = collections.Counter()
        self.seconds: collections.Counter = collections.Counter()  # (name, "sum" | "count")

    def count(self, outcome: str) -> None:
        with self.lock:
            self.requests[outcome] += 1

    def record(self, job: Job, outcome: str, steps: list[Step], models: dict, seconds: float) -> None:
        with self.lock:
            self.requests[outcome] += 1
            self.steps.update(s.source for s in steps)
            for role, m in models.items():
                for kind in ("prompt", "generated", "scored"):
                    self.tokens[role, kind] += getattr(m.usage, kind)
            for name, value in (("queue_wait", job.started_at - job.queued_at), ("search", seconds)):
                self.seconds[name, "sum"] += value
                self.seconds[name, "count"] += 1

    def render(self, runner: Runner) -> str:
        def family(name, kind, help_, samples):
            return [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", *(f"{name}{k} {v}" for k, v in samples)]

        with self.lock:
            lines = family("specs_requests_total", "counter", "Chat completion requests by outcome.",
                           [(f'{{outcome="{k}"}}', v) for k, v in sorted(self.requests.items())])
            lines += family("specs_steps_total", "counter", "Solution steps chosen, by source.",
                            [(f'{{source="{k}"}}', v) for k, v in sorted(self.steps.items())])
            lines += family("specs_tokens_total", "counter", "Tokens per model: prompted, generated, scored.",
                            [(f'{{model="{r}",kind="{k}"}}', v) for (r, k), v in sorted(self.tokens.items())])
            for name, help_ in (("queue_wait", "Time requests waited in the queue."),
                                ("search", "Time searches ran.")):
                total, count = round(self.seconds[name, "sum"], 6), self.seconds[name, "count"]
                lines += family(f"specs_{name}_seconds", "summary", help_, [("_sum", total), ("_count", count)])
        lines += family("specs_queue_depth", "gauge", "Requests waiting.", [("", len(runner.waiting))])
        lines += family("specs_in_progress", "gauge", "Searches running.", [("", int(runner.current is not None))])
        models = runner.solver.models.distinct().items()
        lines += family("specs_live_sequences", "gauge", "Live KV sequences per model.",
                        [(f'{{model="{r}"}}', len(m.live_sequences)) for r, m in models])
        return "\n".join(lines) + "\n"
