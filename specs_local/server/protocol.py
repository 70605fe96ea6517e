"""OpenAI's chat-completions shapes, apart from HTTP and the search: a request parsed and checked
into search settings, and a search result shaped into choices, usage and the "specs" extension."""
from __future__ import annotations

import math
from dataclasses import asdict
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import SettingError
from ..search import ALIASES, STRATEGIES, SearchConfig, SearchResult, Step
from ..search.config import BEAM_ANSWERS
from ..selection import RULES
from ..solver import Solver

METHODS = tuple(sorted({*STRATEGIES, *ALIASES}))
TOP_LEVEL_SETTINGS = ("seed", "temperature", "top_p")  # SearchConfig fields a request sets outside "specs"


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
    consensus: int | None = None


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
    best-of-n samples n (all of them: no consensus stop), SPECS runs k = n chains; 400 for a
    method that makes one."""
    key = CHOICES_FROM.get(ALIASES.get(method, method))
    if key is None:
        raise APIError(400, f"n: {method} makes one solution; n > 1 needs specs.method best-of-n or specs",
                       "invalid_value")
    if changes.get(key, n) < n:
        raise APIError(400, f"n: {n} choices need specs.{key} of at least {n}", "invalid_value")
    return {key: changes.get(key, n), "consensus": 0}


def search_config(solver: Solver, changes: dict) -> SearchConfig:
    """The settings a request asks for, within SearchConfig's bounds (400 naming the request's field)."""
    try:
        return solver.config.with_(**changes)
    except SettingError as err:
        where = err.field if err.field in TOP_LEVEL_SETTINGS else f"specs.{err.field}"
        raise APIError(400, f"{where}: {err.problem}", "invalid_value") from None



# -- answers ------------------------------------------------------------------

def finish_reason(result: SearchResult) -> str:
    return "stop" if result.stop_reason == "eos" else "length"



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
