"""The HTTP app over one loaded Solver: the routes, a request turned into a job, the answer whole or
streamed as server-sent events, and uvicorn with a stop that cancels the search in flight."""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import signal
import threading
import time

import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware

from ..chat import solution_prompt
from ..errors import SpecsError
from ..run_markers import enable_faulthandler
from ..search import Step
from ..slots import sequences_needed
from ..solver import Solver
from .access import Access, RequestGuard
from .protocol import APIError, ChatRequest, choices, choices_changes, parse_request, search_config, step_info, summary, usage
from .runner import Job, Metrics, Runner

MAX_BODY = 1 << 20  # bytes; a problem is a few KB, and the context bounds it in tokens anyway


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
