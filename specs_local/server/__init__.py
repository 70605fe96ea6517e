"""An OpenAI-compatible HTTP server over one loaded Solver (``specs-local serve``).

    POST /v1/chat/completions   the last user message is the problem; search
                                parameters travel in an extension object "specs"
    GET  /v1/models, /health, /metrics

Before any route, ``access.RequestGuard`` refuses what a web page could send (see there).

The engine holds one llama.cpp context per model, so one search runs at a time,
in one worker thread, through ``Solver.stream``; other requests wait in a
bounded FIFO queue. The worker hands each step to its request's asyncio queue
as soon as it is chosen. A client that goes away leaves the queue, or cancels
its search (``Solver.cancel``: the search stops at its next decode and frees
its sequences). SIGINT/SIGTERM refuse the queue, cancel the search in flight,
and the process exits 0.

One module a job: ``protocol`` (OpenAI's request and answer shapes, apart from HTTP), ``runner``
(the queue, the worker thread and the metrics), ``access`` (who may send requests), ``app`` (the
routes, streaming, and uvicorn).
"""
from .app import create_app, serve

__all__ = ["create_app", "serve"]
