"""An OpenAI-compatible HTTP server over one loaded Solver (``specs-local serve``).

    POST /v1/chat/completions   the last user message is the problem; search
                                parameters travel in an extension object "specs"
    GET  /v1/models, /health, /metrics

Before any route, ``RequestGuard`` refuses what a web page could send: a Host that
is not this server's (DNS rebinding), a browser Origin not allowed by
``--allowed-origins``, and a POST whose body is not declared JSON (a "simple"
request, which a browser sends cross-origin without asking first).

The engine holds one llama.cpp context per model, so one search runs at a time,
in one worker thread, through ``Solver.stream``; other requests wait in a
bounded FIFO queue. The worker hands each step to its request's asyncio queue
as soon as it is chosen. A client that goes away leaves the queue, or cancels
its search (``Solver.cancel``: the search stops at its next decode and frees
its sequences). SIGINT/SIGTERM refuse the queue, cancel the search in flight,
and the process exits 0.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import json
import logging
import math
import signal
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Literal

import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware

from .chat import solution_prompt
from .errors import Cancelled, PromptTooLongError, SettingError, SpecsError
from .search import ALIASES, STRATEGIES, SearchConfig, SearchResult, Step
from .search.common import BEAM_ANSWERS
from .run_markers import enable_faulthandler
from .selection import RULES
from .slots import sequences_needed
from .solver import Solver

MAX_BODY = 1 << 20  # bytes; a problem is a few KB, and the context bounds it in tokens anyway
METHODS = tuple(sorted({*STRATEGIES, *ALIASES}))
TOP_LEVEL_SETTINGS = ("seed", "temperature", "top_p")  # SearchConfig fields a request sets outside "specs"
log = logging.getLogger("uvicorn.error")  # uvicorn's own stderr log: one line per request


class APIError(Exception):
    """An error that reaches the client as OpenAI's error object."""

    def __init__(self, status: int, message: str, code: str | None = None, kind: str = "invalid_request_error",
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.kind, self.headers = status, message, code, kind, headers

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "code": self.code}}


# -- requests -----------------------------------------------------------------

class Specs(BaseModel):
    """The search parameters a request may change (SearchConfig fields, and the method).
    Their bounds are SearchConfig's, checked in ``prepare``; here only their types."""
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # our namespace: a typo must not pass silently
    method: Literal[METHODS] | None = None
    n: int | None = None
    beam_width: int | None = None
    beam_answer: Literal[BEAM_ANSWERS] | None = None
    beta: float | None = None
    tau_reject: float | None = None
    tau_switch: float | None = None
    greedy_candidate: bool | None = None
    rsd_delta: float | None = None
    max_steps: int | None = None
    max_step_tokens: int | None = None
    final_step_tokens: int | None = None
    k: int | None = None
    select: Literal[RULES] | None = None
    veto: bool | None = None
    stop_confidence: float | None = None
    window: int | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: str
    content: str | list[dict] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):  # content parts: keep the text ones
            return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)  # unknown fields are ignored, as OpenAI does
    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    seed: int | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    specs: Specs = Field(default_factory=Specs)


def parse_request(data) -> ChatRequest:
    try:
        req = ChatRequest.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(map(str, first["loc"])) or "body"
        message = "unknown search parameter" if first["type"] == "extra_forbidden" else first["msg"]
        raise APIError(400, f"{where}: {message}", "invalid_value") from None
    if req.n is not None and req.n < 1:
        raise APIError(400, "n: at least one choice", "invalid_value")
    return req


# Methods that end with several whole solutions, and the setting that says how many.
CHOICES_FROM = {"best-of-n": "n", "specs": "k"}


def choices_changes(method: str, n: int, changes: dict) -> dict:
    """The settings that make ``method`` end with at least ``n`` whole solutions (OpenAI's ``n``):
    best-of-n samples n, SPECS runs k = n chains; 400 for a method that makes one."""
    key = CHOICES_FROM.get(ALIASES.get(method, method))
    if key is None:
        raise APIError(400, f"n: {method} makes one solution; n > 1 needs specs.method best-of-n or specs",
                       "invalid_value")
    if changes.get(key, n) < n:
        raise APIError(400, f"n: {n} choices need specs.{key} of at least {n}", "invalid_value")
    return {key: changes.get(key, n)}


# -- the queue and the worker ---------------------------------------------------

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


def finish_reason(result: SearchResult) -> str:
    return "stop" if result.stop_reason == "eos" else "length"


# -- metrics --------------------------------------------------------------------

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


# -- who may send requests -------------------------------------------------------

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_BINDS = ("", "0.0.0.0", "::")


def host_name(host: str) -> str:
    """A Host header's (or an address's) name: lower case, without its port or IPv6 brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def origin_name(origin: str) -> str:
    """An origin as browsers send it: scheme://host[:port], lower case, no trailing slash."""
    return origin.strip().lower().rstrip("/")


@dataclass(frozen=True)
class Access:
    """Who may send requests: host names (Host headers) and browser origins; None allows any."""
    hosts: frozenset[str] | None
    origins: frozenset[str] | None

    @classmethod
    def of(cls, bound: str, allowed_hosts=(), allowed_origins=()) -> "Access":
        """The loopback names, the bound address (unless it binds every address) and the lists given ('*': any)."""
        hosts = {*LOOPBACK_NAMES, *(() if host_name(bound) in WILDCARD_BINDS else (host_name(bound),)),
                 *map(host_name, allowed_hosts)}
        origins = set(map(origin_name, allowed_origins))
        return cls(None if "*" in hosts else frozenset(hosts), None if "*" in origins else frozenset(origins))

    def refusal(self, method: str, headers: Headers) -> APIError | None:
        """Why a request is refused before any route, or None."""
        host = headers.get("host")
        if host is not None and self.hosts is not None and host_name(host) not in self.hosts:
            return APIError(403, f"the Host {host_name(host)!r} is not this server's (a guard against DNS rebinding); "
                                 f"start it with --allowed-hosts {host_name(host)} to allow it", "host_not_allowed")
        origin = headers.get("origin")
        if origin is not None and self.origins is not None and origin_name(origin) not in self.origins:
            return APIError(403, f"requests from the browser origin {origin!r} are not allowed; start the server "
                                 f"with --allowed-origins {origin} to allow them", "origin_not_allowed")
        declared = headers.get("content-type", "").split(";")[0].strip().lower()
        if method == "POST" and declared != "application/json":
            return APIError(415, f"the body must be JSON, sent with Content-Type: application/json, not "
                                 f"{declared or 'no Content-Type'}", "unsupported_media_type")
        return None


class RequestGuard:
    """ASGI middleware, outermost: a refused request gets its error object and reaches nothing else."""

    def __init__(self, app, access: Access):
        self.app, self.access = app, access

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and (refused := self.access.refusal(scope["method"], Headers(scope=scope))):
            log.info("refused %s %s: %s", scope["method"], scope["path"], refused.message)
            await JSONResponse(refused.body(), refused.status)(scope, receive, send)
            return
        await self.app(scope, receive, send)


# -- the HTTP app ---------------------------------------------------------------

def create_app(solver: Solver, *, preset: str, api_key: str | None = None, max_queue: int = 8,
               access: Access = Access.of("127.0.0.1")) -> FastAPI:
    metrics = Metrics()
    runner = Runner(solver, max_queue, metrics)
    models = solver.models.distinct()
    served = models["target"].path.stem  # the id /v1/models lists; the preset name is accepted too
    slots = min(m.config.n_seq_max for m in models.values())

    @contextlib.asynccontextmanager
    async def lifespan(app):
        runner.thread.start()
        yield
        runner.stop()
        runner.thread.join()

    async def authorize(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), api_key.encode()):  # constant time
            raise APIError(401, "invalid or missing API key (Authorization: Bearer KEY)", "invalid_api_key",
                           "authentication_error")

    app = FastAPI(title="specs-local", lifespan=lifespan, dependencies=[Depends(authorize)],
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.runner = runner
    if access.origins is None or access.origins:  # a browser front end: CORS answers for the origins allowed
        app.add_middleware(CORSMiddleware, allow_origins=["*"] if access.origins is None else sorted(access.origins),
                           allow_methods=["GET", "POST"], allow_headers=["*"], expose_headers=["Retry-After"],
                           allow_private_network=True)  # a page on a public site may call this one on loopback
    app.add_middleware(RequestGuard, access=access)  # added last: it runs first

    @app.exception_handler(APIError)
    async def api_error(request, err: APIError):
        return JSONResponse(err.body(), err.status, headers=err.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request, err: HTTPException):  # unknown routes and methods, in OpenAI's shape too
        return JSONResponse(APIError(err.status_code, str(err.detail)).body(), err.status_code)

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [{"id": served, "object": "model", "created": 0, "owned_by": "specs-local",
                                            "specs": {"preset": preset, **{r: m.name for r, m in models.items()}}}]}

    @app.get("/health")
    async def health():
        job = runner.current
        report = {"status": "stopping" if runner.stopping else "ok", "preset": preset, "model": served,
                  "queue_depth": len(runner.waiting), "max_queue": max_queue,
                  "in_progress": job and {"id": job.id, "method": job.method, "steps": job.steps,
                                          "seconds": round(time.monotonic() - (job.started_at or job.queued_at), 3)},
                  "models": {r: {"file": m.name, "live_sequences": len(m.live_sequences), "live_cells": m.live_cells}
                             for r, m in models.items()}}
        if runner.engine.acquire(blocking=False):  # llama.cpp's own count, read only while no search runs
            try:
                for r, m in models.items():
                    report["models"][r]["kv_positions"] = sum(m.positions_in_memory().values())
            finally:
                runner.engine.release()
        return report

    @app.get("/metrics")
    async def prometheus():
        return PlainTextResponse(metrics.render(runner), media_type="text/plain; version=0.0.4")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        try:
            req, job, prompt_tokens = await prepare(request)
            runner.submit(job)
        except APIError as err:
            metrics.count("queue_full" if err.code == "queue_full" else "refused")
            raise
        if req.stream:
            return StreamingResponse(stream_events(runner, job, served, prompt_tokens), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return await complete(runner, job, served, prompt_tokens, request)

    async def prepare(request: Request) -> tuple[ChatRequest, Job, int]:
        """The request checked and turned into a job (APIError when it is refused)."""
        req = parse_request(await read_json(request))
        if req.model not in (None, served, preset):
            raise APIError(404, f"model {req.model!r} not found; this server serves {served!r}", "model_not_found")
        users = [m for m in req.messages if m.role == "user"]
        problem = users[-1].text().strip() if users else ""
        if not problem:
            raise APIError(400, "messages: no user message with a problem", "invalid_value")
        system = next((m.text() for m in reversed(req.messages) if m.role == "system"), None)
        changes = req.specs.model_dump(exclude_none=True, exclude={"method"})
        changes.update({k: v for k, v in (("seed", req.seed), ("temperature", req.temperature),
                                          ("top_p", req.top_p), ("system_prompt", system)) if v is not None})
        method = req.specs.method or solver.method
        if req.n and req.n > 1:
            changes.update(choices_changes(method, req.n, changes))
        cap = req.max_completion_tokens or req.max_tokens
        if cap:  # the search stops at the first step that reaches it, and no step passes it
            changes["max_tokens"] = cap
        config = search_config(solver, changes)
        if sequences_needed(config) > slots:
            raise APIError(400, f"n = {config.n} with k = {config.k} needs {sequences_needed(config)} sequences; this "
                                f"server holds {slots} (start it with a larger --max-n)", "invalid_value")
        prompt_tokens = await asyncio.to_thread(count_prompt, solver, problem, system)
        job = Job(problem, method, changes, asyncio.get_running_loop(), choices=req.n or 1)
        return req, job, prompt_tokens

    return app


def search_config(solver: Solver, changes: dict) -> SearchConfig:
    """The settings a request asks for, within SearchConfig's bounds (400 naming the request's field)."""
    try:
        return solver.config.with_(**changes)
    except SettingError as err:
        where = err.field if err.field in TOP_LEVEL_SETTINGS else f"specs.{err.field}"
        raise APIError(400, f"{where}: {err.problem}", "invalid_value") from None


async def read_json(request: Request):
    """The body as JSON, refused past MAX_BODY bytes without reading further."""
    if int(request.headers.get("content-length") or 0) > MAX_BODY:
        raise APIError(413, f"the request body is over {MAX_BODY} bytes", "request_too_large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise APIError(413, f"the request body is over {MAX_BODY} bytes", "request_too_large")
    try:
        return json.loads(body)
    except ValueError as err:
        raise APIError(400, f"the body is not valid JSON ({err})", "invalid_json") from None
    except RecursionError:
        raise APIError(400, "the body is not valid JSON (nested too deeply)", "invalid_json") from None


def count_prompt(solver: Solver, problem: str, system: str | None) -> int:
    """Tokens of the rendered prompt on the target; 400 when a model's context cannot hold it.
    (Tokenizing and rendering read only the vocabulary: safe beside a running search.)"""
    counts = {}
    for role in ("target", "draft"):
        model = getattr(solver.models, role)
        if model is None:
            continue
        try:
            tokens = len(model.tokenize(solution_prompt(model, problem, system), add_special=True, parse_special=True))
        except SpecsError as err:
            raise APIError(400, str(err).splitlines()[0], "invalid_prompt") from None
        if tokens >= model.n_ctx:
            raise APIError(400, f"the prompt has {tokens} tokens; the context of {role} {model.name} holds "
                                f"{model.n_ctx}", "context_length_exceeded")
        counts[role] = tokens
    return counts["target"]


def step_info(index: int, step: Step) -> dict:
    """A step's source, reward and scores (JSON has no infinities: they become null)."""
    info = {k: v for k, v in asdict(step).items() if k != "text"}
    return {"index": index, **{k: None if isinstance(v, float) and not math.isfinite(v) else v
                               for k, v in info.items()}}


def choices(result: SearchResult, n: int) -> list[tuple[str, str, dict | None]]:
    """(text, finish reason, scores) of each choice of an answer with ``n`` choices (OpenAI's
    ``n``): the solution the search chose first, then its other whole solutions in their
    order. Each choice of a search that chose among several carries its answer and scores."""
    extra = result.extra
    candidates = extra.get("candidates", [])

    def info(c: dict) -> dict:
        return {k: v for k, v in c.items() if k not in ("text", "confidence")}

    first = (result.text, finish_reason(result),
             {**info(candidates[extra["chosen"]]), "chosen": True} if candidates else None)
    others = [(c["text"], "stop" if c["ended"] else "length", {**info(c), "chosen": False})
              for i, c in enumerate(candidates) if i != extra.get("chosen")]
    return [first] + others[:n - 1]


def usage(prompt_tokens: int, result: SearchResult, n: int = 1) -> dict:
    """Tokens of the prompt and of every choice returned."""
    extra = result.extra
    others = [c["tokens"] for i, c in enumerate(extra.get("candidates", [])) if i != extra.get("chosen")][:n - 1]
    completion = sum(s.tokens for s in result.steps) + sum(others)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion}


def summary(result: SearchResult) -> dict:
    return {"method": result.method, "answer": result.answer, "stop_reason": result.stop_reason, "stats": result.stats}


async def next_event(job: Job):
    kind, value = await job.events.get()
    if kind == "error":
        job.finished = True
        raise value
    if kind == "done":
        job.finished = True
    return kind, value


async def complete(runner: Runner, job: Job, served: str, prompt_tokens: int, request: Request):
    """The non-streaming answer; a client that disconnects first cancels the job."""
    async def collect():
        while True:
            kind, value = await next_event(job)
            if kind == "done":
                return value

    async def disconnected():
        while (await request.receive())["type"] != "http.disconnect":
            pass

    result_task, gone = asyncio.ensure_future(collect()), asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({result_task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not result_task.done():
            result_task.cancel()
            runner.cancel(job, "the client disconnected")
    if not result_task.done() or result_task.cancelled():
        return Response(status_code=499)  # nobody is there to read it
    result = result_task.result()  # raises the job's APIError
    return {"id": job.id, "object": "chat.completion", "created": job.created, "model": served,
            "choices": [{"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": finish,
                         "logprobs": None, **({"specs": info} if info else {})}
                        for i, (text, finish, info) in enumerate(choices(result, job.choices))],
            "usage": usage(prompt_tokens, result, job.choices),
            "specs": {**summary(result), "steps": [{**step_info(i, s), "text": s.text}
                                                   for i, s in enumerate(result.steps, 1)]}}


async def stream_events(runner: Runner, job: Job, served: str, prompt_tokens: int):
    """Server-sent events: one chunk per step as it is chosen, a final chunk, then [DONE].
    Starlette cancels this generator when the client disconnects: the job is cancelled then."""
    def chunk(delta: dict, finish: str | None = None, index: int = 0, **extra) -> str:
        body = {"id": job.id, "object": "chat.completion.chunk", "created": job.created, "model": served,
                "choices": [{"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    steps: list[Step] = []
    try:
        yield chunk({"role": "assistant", "content": ""})
        while True:
            try:
                kind, value = await next_event(job)
            except APIError as err:
                yield f"data: {json.dumps(err.body())}\n\n"
                break
            if kind == "step":
                steps.append(value)
                yield chunk({"content": value.text}, specs={"step": step_info(len(steps), value)})
            else:
                [(_, finish, info), *others] = choices(value, job.choices)
                yield chunk({}, finish, usage=usage(prompt_tokens, value, job.choices),
                            specs={**summary(value), **({"choice": info} if info else {})})
                for index, (text, finish, info) in enumerate(others, 1):  # the other solutions, whole
                    yield chunk({"role": "assistant", "content": text}, finish, index=index, specs={"choice": info})
                break
        yield "data: [DONE]\n\n"
    finally:
        if not job.finished:
            runner.cancel(job, "the client disconnected")


# -- running it -------------------------------------------------------------------

class Server(uvicorn.Server):
    """uvicorn, with a stop on SIGINT/SIGTERM that cancels the search in flight and exits 0."""

    def __init__(self, config: uvicorn.Config, runner: Runner):
        super().__init__(config)
        self.runner = runner

    @contextlib.contextmanager
    def capture_signals(self):
        # uvicorn re-raises the signal after a graceful stop (exit status 130/143); a server stopped on purpose exits 0.
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig, frame) -> None:
        # Refuse the queue and cancel the search now (uvicorn waits for open responses). From a
        # thread: this handler may interrupt the main thread inside the runner's lock.
        threading.Thread(target=self.runner.stop, daemon=True).start()
        super().handle_exit(sig, frame)


def serve(solver: Solver, *, preset: str, host: str, port: int, api_key: str | None, max_queue: int,
          allowed_hosts: tuple[str, ...] = (), allowed_origins: tuple[str, ...] = ()) -> None:
    enable_faulthandler()  # a segfault in llama.cpp ends the process: say where it was
    app = create_app(solver, preset=preset, api_key=api_key, max_queue=max_queue,
                     access=Access.of(host, allowed_hosts, allowed_origins))
    config = uvicorn.Config(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=10)
    runner = app.state.runner
    Server(config, runner).run()
    runner.stop()  # a forced exit (a second Ctrl-C) skips the lifespan's end: the worker must be done
    if runner.thread.is_alive():  # before the caller closes the models under it
        runner.thread.join()
