"""`specs-local serve` as a real process on a free port, talked to with the official
`openai` client (httpx for raw bodies), on tiny models; one test on the real pair."""
from __future__ import annotations

import collections
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from specs_local.presets import load_preset

ROOT = Path(__file__).resolve().parents[1]
PRESET_METHOD = load_preset("small").method  # what a request that names no method runs
# the tiny targets cannot use the preset's probe head: self-verification instead
FAST = ["--reward-kind", "calculator+self", "--n", "2", "--max-steps", "3", "--max-step-tokens", "8", "--threads", "1", "--ctx", "2048", "--max-n", "8"]
# An endless target: the blocker request below runs until it is cancelled (or fills 8192 cells).
BUSY = ["--reward-kind", "calculator+self", "--method", "greedy-target", "--n", "2", "--max-steps", "2", "--max-step-tokens", "4", "--threads", "1",
        "--ctx", "8192", "--max-queue", "4"]
KEY = "sekret-key"


class Served:
    """A `specs-local serve` process on a port the OS picked; its log in a file."""

    def __init__(self, args: list[str], log: Path):
        self.log_path = log
        with log.open("w") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "specs_local", "serve", "--port", "0", *args],
                                         stdout=out, stderr=subprocess.STDOUT,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 180
        while not (found := re.search(r"Uvicorn running on http://(?:127\.0\.0\.1|0\.0\.0\.0):(\d+)", self.log())):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"the server did not start:\n{self.log()}")
            time.sleep(0.05)
        self.port = int(found.group(1))
        self.url = f"http://127.0.0.1:{self.port}"  # a server bound to 0.0.0.0 is reached on loopback too

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self, key: str = "none", **headers) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=300,
                             default_headers=headers or None)

    def get(self, path: str, key: str | None = None, **headers) -> httpx.Response:
        auth = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.get(self.url + path, headers={**auth, **headers}, timeout=30)

    def health(self, key: str | None = None) -> dict:
        return self.get("/health", key).json()

    def post(self, body, timeout: float = 60, **headers) -> httpx.Response:
        """A raw POST of a chat completion, declared JSON unless ``headers`` say otherwise."""
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.post(self.url + "/v1/chat/completions", content=content, timeout=timeout,
                          headers={"Content-Type": "application/json", **headers})

    def idle_and_clean(self, key: str | None = None) -> dict:
        """Wait for no search and no queue, then check that no model holds a sequence or a KV cell."""
        health = wait_for(lambda: (h := self.health(key))["in_progress"] is None and not h["queue_depth"] and h,
                          "the server to go idle")
        for role, model in health["models"].items():
            assert (model["live_sequences"], model["live_cells"], model["kv_positions"]) == (0, 0, 0), (role, model)
        return health

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=60)


def wait_for(predicate, what: str, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def metric(server: Served, name: str, key: str | None = None) -> float:
    text = server.get("/metrics", key).text
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


@pytest.fixture(scope="module")
def server(tiny_models, tmp_path_factory):
    served = Served(["--draft", str(tiny_models["draft"]), "--target", str(tiny_models["target"]), *FAST],
                    tmp_path_factory.mktemp("server") / "log")
    yield served
    served.stop()


def busy_args(tiny_models) -> list[str]:
    return ["--draft", str(tiny_models["draft"]), "--target", str(tiny_models["endless"]), *BUSY]


@pytest.fixture(scope="module")
def busy(tiny_models, tmp_path_factory):
    served = Served(busy_args(tiny_models), tmp_path_factory.mktemp("busy") / "log")
    yield served
    served.stop()


@pytest.fixture(scope="module")
def keyed(tiny_models, tmp_path_factory):
    """A key, a public bind, and a verifier reward on a file without a chat template: every
    search that asks the reward fails half-way, after the target has generated its candidates."""
    served = Served(["--draft", str(tiny_models["draft"]), "--target", str(tiny_models["target"]),
                     "--reward", str(tiny_models["no-template"]), "--reward-kind", "verifier", "--api-key", KEY,
                     "--host", "0.0.0.0", *FAST[2:]], tmp_path_factory.mktemp("keyed") / "log")
    yield served
    served.stop()


def start_blocker(client: openai.OpenAI):
    """A streaming greedy search on the endless model, already past its first step."""
    stream = client.chat.completions.create(
        model="small", messages=user("Count to a million."), stream=True,
        extra_body={"specs": {"max_steps": 100000}})
    chunks = iter(stream)
    first, step = next(chunks), next(chunks)
    assert first.choices[0].delta.role == "assistant" and step.specs["step"]["index"] == 1
    return stream, chunks, step.id


# -- the API on a plain server --------------------------------------------------

def test_models_lists_the_served_model(server):
    models = server.client().models.list().data
    assert [m.id for m in models] == ["target"]
    assert models[0].specs["draft"] == "draft.gguf" and models[0].specs["preset"] == "small"


def test_a_completion_carries_the_solution_usage_and_the_search(server):
    response = server.client().chat.completions.create(model="small", messages=user("What is 12 times 7?"), seed=3,
                                                       extra_body={"frequency_penalty": 0.5, "whatever": {"x": 1}})
    choice, specs = response.choices[0], response.specs
    steps = specs["steps"]
    assert response.object == "chat.completion" and response.model == "target"
    assert choice.message.role == "assistant" and choice.message.content == "".join(s["text"] for s in steps)
    assert choice.finish_reason == ("stop" if specs["stop_reason"] == "eos" else "length")
    assert [s["index"] for s in steps] == list(range(1, len(steps) + 1)) and steps[0]["source"] == "target"
    assert all({"source", "reward", "score", "accepted", "deferred", "tokens"} <= set(s) for s in steps)
    assert response.usage.completion_tokens == sum(s["tokens"] for s in steps) == specs["stats"]["step_tokens"]
    assert 50 < response.usage.prompt_tokens < 2048
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens
    assert {"wall_seconds", "steps", "steps_draft", "deferrals", "models"} <= set(specs["stats"])
    assert specs["method"] == PRESET_METHOD and specs["stats"]["n"] == 2 and "answer" in specs


def test_the_server_gives_what_solve_json_gives_for_the_same_seed(server, tiny_models):
    from click.testing import CliRunner

    from specs_local.cli import main

    response = server.client().chat.completions.create(model="target", messages=user("What is 3 + 4?"), seed=5)
    solved = CliRunner().invoke(main, ["solve", "What is 3 + 4?", "--json", "--seed", "5", "--draft",
                                       str(tiny_models["draft"]), "--target", str(tiny_models["target"]), *FAST[:-2]])
    expected = json.loads(solved.output)
    assert response.choices[0].message.content == expected["text"]
    assert [s["source"] for s in response.specs["steps"]] == [s["source"] for s in expected["steps"]]


def test_streaming_sends_each_step_as_it_is_chosen_then_the_end(server):
    client = server.client()
    chunks = list(client.chat.completions.create(model="target", messages=user("What is 12 times 7?"), seed=3,
                                                 stream=True))
    whole = client.chat.completions.create(model="target", messages=user("What is 12 times 7?"), seed=3)
    first, steps, last = chunks[0], chunks[1:-1], chunks[-1]
    assert first.choices[0].delta.role == "assistant" and first.choices[0].finish_reason is None
    assert [c.specs["step"]["index"] for c in steps] == list(range(1, len(steps) + 1))
    assert all(c.object == "chat.completion.chunk" and c.id == first.id and c.choices[0].finish_reason is None
               for c in steps)
    assert [c.specs["step"]["source"] for c in steps] == [s["source"] for s in whole.specs["steps"]]
    assert "".join(c.choices[0].delta.content for c in steps) == whole.choices[0].message.content
    assert last.choices[0].finish_reason == whole.choices[0].finish_reason and last.choices[0].delta.content is None
    assert last.specs["answer"] == whole.specs["answer"]
    assert last.usage.completion_tokens == whole.usage.completion_tokens
    raw = httpx.post(server.url + "/v1/chat/completions", json={"messages": user("2+2?"), "stream": True}, timeout=60)
    assert raw.headers["content-type"].startswith("text/event-stream") and raw.text.endswith("data: [DONE]\n\n")


def test_extra_body_sets_the_search_parameters(server):
    client = server.client()
    beam = client.chat.completions.create(model="target", messages=user("What is 2 + 2?"),
                                          extra_body={"specs": {"method": "beam-target", "n": 4}})
    assert beam.specs["method"] == "beam-target" and beam.specs["stats"]["n"] == 4
    # Every draft passes: after the first (target) step the draft writes.
    drafty = client.chat.completions.create(model="target", messages=user("What is 2 + 2?"), extra_body={
        "specs": {"method": "specs", "tau_switch": -1, "tau_reject": -1e9, "max_steps": 4}})
    sources = [s["source"] for s in drafty.specs["steps"]]
    assert sources[0] == "target" and "draft" in sources[1:], sources
    default = client.chat.completions.create(model="target", messages=user("What is 2 + 2?"))
    assert default.specs["method"] == PRESET_METHOD and default.specs["stats"]["n"] == 2  # per request, not sticky


def test_seed_and_temperature_are_per_request(server):
    client = server.client()

    def text(**kw):
        response = client.chat.completions.create(model="target", messages=user("What is 9 - 4?"), **kw)
        return response.choices[0].message.content

    assert text(seed=11) == text(seed=11)
    assert len({text(seed=s) for s in range(4)}) > 1
    assert text(seed=1, temperature=0) == text(seed=2, temperature=0)  # greedy: the seed no longer matters


def test_n_returns_the_chosen_solution_first_and_the_others_with_their_scores(server):
    """OpenAI's n: best-of-n samples n solutions and SPECS runs n chains; the selector's choice is
    choice 0, and every choice carries its answer and scores in `specs`."""
    client = server.client()
    for method in ("best-of-n", "specs"):
        response = client.chat.completions.create(model="target", messages=user("What is 12 times 7?"), n=3, seed=1,
                                                  extra_body={"specs": {"method": method}})
        assert [c.index for c in response.choices] == [0, 1, 2]
        first, *others = response.choices
        assert first.message.content == "".join(s["text"] for s in response.specs["steps"])
        assert first.specs["chosen"] is True and not any(c.specs["chosen"] for c in others)
        for choice in response.choices:
            assert set(choice.specs["scores"]) == {"logprob", "certainty", "window", "reward"}
            assert choice.finish_reason in ("stop", "length") and choice.message.content
        assert response.usage.completion_tokens == sum(c.specs["tokens"] for c in response.choices)
    chunks = list(client.chat.completions.create(model="target", messages=user("What is 12 times 7?"), n=2,
                                                 stream=True, extra_body={"specs": {"method": "best-of-n"}}))
    last = [c for c in chunks if c.choices and c.choices[0].index == 1]
    assert len(last) == 1 and last[0].choices[0].delta.content and last[0].specs["choice"]["chosen"] is False
    server.idle_and_clean()


def test_n_choices_turn_off_best_of_ns_consensus_stop():
    """n choices are n whole solutions: a consensus stop (a preset's or the request's) would draw fewer."""
    from specs_local.server.protocol import choices_changes

    assert choices_changes("best-of-n", 3, {"consensus": 2}) == {"n": 3, "consensus": 0}
    assert choices_changes("best-of-n", 3, {"n": 5}) == {"n": 5, "consensus": 0}


def test_max_tokens_caps_the_solution_with_finish_reason_length(server):
    response = server.client().chat.completions.create(model="target", messages=user("What is 12 times 7?"),
                                                       max_tokens=5, extra_body={"specs": {"method": "greedy"}})
    steps = response.specs["steps"]
    assert response.choices[0].finish_reason == "length" and response.specs["stop_reason"] == "max_tokens"
    assert all(s["tokens"] <= 5 for s in steps) and sum(s["tokens"] for s in steps[:-1]) < 5
    assert response.usage.completion_tokens == sum(s["tokens"] for s in steps) >= 5
    assert response.specs["stats"]["steps"] == len(steps)
    server.idle_and_clean()


def test_a_system_message_replaces_the_system_prompt(server):
    from specs_local.chat import SYSTEM_PROMPT

    client = server.client()

    def prompt_tokens(messages):
        return client.chat.completions.create(model="target", messages=messages, max_tokens=1).usage.prompt_tokens

    plain = prompt_tokens(user("What is 1 + 1?"))
    assert prompt_tokens([{"role": "system", "content": SYSTEM_PROMPT}, *user("What is 1 + 1?")]) == plain
    longer = prompt_tokens([{"role": "system", "content": SYSTEM_PROMPT + " Be brief."}, *user("What is 1 + 1?")])
    assert longer == plain + len(" Be brief.")  # the tiny tokenizer: one token per byte
    # The last user message is the problem; earlier turns do not reach the prompt.
    history = [*user("What is 5 + 5?"), {"role": "assistant", "content": "10"}, *user("What is 1 + 1?")]
    assert prompt_tokens(history) == plain


BODY = {"model": "target", "messages": user("What is 2 + 2?")}


@pytest.mark.parametrize("body, status, code, says", [
    (b"{not json", 400, "invalid_json", "not valid JSON"),
    (b"[1, 2]", 400, "invalid_value", "body"),
    ({"messages": []}, 400, "invalid_value", "messages"),
    ({"messages": [{"role": "system", "content": "Be brief."}]}, 400, "invalid_value", "no user message"),
    ({"messages": user("   ")}, 400, "invalid_value", "no user message"),
    ({**BODY, "temperature": 3}, 400, "invalid_value", "temperature"),
    ({**BODY, "seed": -1}, 400, "invalid_value", "seed"),
    ({**BODY, "max_tokens": 0}, 400, "invalid_value", "max_tokens"),
    ({**BODY, "n": 2, "specs": {"method": "greedy"}}, 400, "invalid_value", "n: greedy makes one solution"),
    ({**BODY, "n": 3, "specs": {"method": "best-of-n", "n": 2}}, 400, "invalid_value", "specs.n of at least 3"),
    ({**BODY, "stream": "maybe"}, 400, "invalid_value", "stream"),
    ({**BODY, "specs": {"n": 0}}, 400, "invalid_value", "specs.n"),
    ({**BODY, "specs": {"n": 9}}, 400, "invalid_value", "sequences; this server holds"),
    ({**BODY, "specs": {"method": "magic"}}, 400, "invalid_value", "specs.method"),
    ({**BODY, "specs": {"beam_answer": "vote"}}, 400, "invalid_value", "specs.beam_answer"),
    ({**BODY, "specs": {"tau_rejct": 5}}, 400, "invalid_value", "specs.tau_rejct: unknown search parameter"),
    ({**BODY, "specs": {"max_steps": -3}}, 400, "invalid_value", "specs.max_steps"),
    ({**BODY, "specs": 5}, 400, "invalid_value", "specs"),
    (b'{"messages": [{"role": "user", "content": "x"}], "specs": {"beta": NaN}}', 400, "invalid_value", "finite"),
    ({**BODY, "messages": user("1 + " * 1000)}, 400, "context_length_exceeded", "the context of target"),
    (b'{"messages": [{"role": "user", "content": "x"}], "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400,
     "invalid_json", "nested too deeply"),
    ({**BODY, "temperature": 1e-300}, 400, "invalid_value", "temperature: must be 0 (greedy) or from 0.01 to 2"),
    ({**BODY, "top_p": 0}, 400, "invalid_value", "top_p: must be above 0"),
    ({**BODY, "specs": {"beta": 1.7e308}}, 400, "invalid_value", "specs.beta: must be from -1000 to 1000"),
    ({**BODY, "specs": {"n": 65}}, 400, "invalid_value", "specs.n: must be a whole number from 1 to 64"),
    ({**BODY, "specs": {"max_step_tokens": 1 << 21}}, 400, "invalid_value", "specs.max_step_tokens: must be"),
    ({**BODY, "model": "gpt-4"}, 404, "model_not_found", "'gpt-4' not found"),
    ({**BODY, "messages": user("x" * (2 << 20))}, 413, "request_too_large", "over"),
])
def test_bad_requests_get_an_openai_error_object(server, body, status, code, says):
    response = server.post(body)
    error = response.json()["error"]
    assert response.status_code == status, error
    assert error["code"] == code and says in error["message"] and "\n" not in error["message"]
    assert error["type"] == "invalid_request_error"


def test_a_prompt_that_leaves_no_room_for_a_step_is_refused_not_answered_empty(server):
    """It fits in the context (2048), but no step fits after it."""
    client = server.client()
    overhead = client.chat.completions.create(model="target", messages=user("x"), max_tokens=1).usage.prompt_tokens - 1
    body = {"messages": user("x" * (1999 - overhead))}  # 1,999 tokens (one per byte)
    response = server.post(body)
    error = response.json()["error"]
    assert response.status_code == 400 and error["code"] == "context_length_exceeded", error
    assert error["message"].startswith("the prompt leaves no room for a step: ") and "after 1999" in error["message"]
    with pytest.raises(openai.APIError, match="the prompt leaves no room for a step"):
        list(client.chat.completions.create(model="target", stream=True, **body))
    server.idle_and_clean()


def test_the_openai_client_raises_on_those_errors_and_the_engine_stays_clean(server):
    client = server.client()
    with pytest.raises(openai.BadRequestError, match="specs.n"):
        client.chat.completions.create(model="target", messages=user("2+2?"), extra_body={"specs": {"n": 0}})
    with pytest.raises(openai.NotFoundError, match="not found"):
        client.chat.completions.create(model="gpt-4", messages=user("2+2?"))
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="target", prompt="x")  # a route this server does not have
    server.idle_and_clean()


def test_metrics_count_requests_steps_tokens_and_times(server):
    before = {name: metric(server, name) for name in (
        'specs_requests_total{outcome="stop"}', 'specs_requests_total{outcome="refused"}',
        'specs_steps_total{source="target"}', 'specs_tokens_total{model="target",kind="generated"}',
        "specs_search_seconds_count", "specs_queue_wait_seconds_count")}
    response = server.client().chat.completions.create(model="target", messages=user("What is 6 + 6?"),
                                                       extra_body={"specs": {"method": "greedy"}})
    server.post({"messages": []})
    after = {name: metric(server, name) for name in before}
    delta = {name: after[name] - before[name] for name in before}
    assert delta['specs_requests_total{outcome="stop"}'] == (response.choices[0].finish_reason == "stop")
    assert delta['specs_requests_total{outcome="refused"}'] == 1
    assert delta['specs_steps_total{source="target"}'] == len(response.specs["steps"])
    generated = response.specs["stats"]["models"]["target"]["generated"]
    assert delta['specs_tokens_total{model="target",kind="generated"}'] == generated > 0
    assert delta["specs_search_seconds_count"] == delta["specs_queue_wait_seconds_count"] == 1
    text = server.get("/metrics").text
    assert "# TYPE specs_requests_total counter" in text and 'specs_live_sequences{model="draft"} 0' in text


# -- who may send requests: Host, Origin and Content-Type ------------------------

FOREIGN = "attacker.example"  # a DNS-rebinding page's host name, pointed at 127.0.0.1


def searches(server: Served, key: str | None = None) -> float:
    return metric(server, "specs_search_seconds_count", key)


def refused(response: httpx.Response, status: int, code: str) -> str:
    error = response.json()["error"]
    assert response.status_code == status and error["code"] == code, (response.status_code, error)
    assert error["type"] == "invalid_request_error" and "\n" not in error["message"]
    return error["message"]


def test_a_post_not_declared_json_is_refused_before_any_search(server):
    """What a web page may send without a CORS preflight: text/plain, a form, multipart."""
    before, url = searches(server), server.url + "/v1/chat/completions"
    body = json.dumps(BODY)
    for content_type in ("text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded"):
        message = refused(server.post(body.encode(), **{"Content-Type": content_type}), 415, "unsupported_media_type")
        assert "Content-Type: application/json" in message and content_type.split(";")[0] in message
    refused(httpx.post(url, data={"messages": "x"}, timeout=30), 415, "unsupported_media_type")  # a form
    refused(httpx.post(url, files={"messages": body}, timeout=30), 415, "unsupported_media_type")  # multipart
    refused(httpx.post(url, content=body, timeout=30), 415, "unsupported_media_type")  # no type at all
    assert searches(server) == before
    for content_type in ("application/json; charset=utf-8", "Application/JSON"):
        assert server.post(BODY, **{"Content-Type": content_type}).status_code == 200
    assert searches(server) == before + 2


@pytest.mark.parametrize("path", ["/health", "/v1/models", "/metrics", "/v1/nowhere"])
def test_a_foreign_host_is_refused_on_every_route_and_loopback_names_pass(server, path):
    port = server.port
    for host in (f"{FOREIGN}:{port}", FOREIGN, f"127.0.0.1.{FOREIGN}", f"localhost.{FOREIGN}:{port}"):
        message = refused(server.get(path, Host=host), 403, "host_not_allowed")
        assert f"--allowed-hosts {host.split(':')[0]}" in message
    for host in (f"127.0.0.1:{port}", "127.0.0.1", f"localhost:{port}", "LocalHost", f"[::1]:{port}", "[::1]"):
        assert server.get(path, Host=host).status_code == (404 if path == "/v1/nowhere" else 200), host


@pytest.mark.parametrize("headers, code", [
    ({"Host": FOREIGN}, "host_not_allowed"),
    ({"Origin": f"http://{FOREIGN}"}, "origin_not_allowed"),
    ({"Origin": "null"}, "origin_not_allowed"),  # a sandboxed frame or a file:// page
    ({"Origin": "http://127.0.0.1:3000"}, "origin_not_allowed"),  # a page on this machine is a page too
])
def test_a_foreign_host_or_a_browser_origin_cannot_run_a_search_or_read_a_page(server, headers, code):
    before = searches(server)
    with pytest.raises(openai.PermissionDeniedError) as err:
        server.client(**headers).chat.completions.create(model="target", messages=user("2+2?"))
    assert err.value.body["code"] == code
    with pytest.raises(openai.PermissionDeniedError):
        server.client(**headers).models.list()
    refused(server.post(BODY, **headers), 403, code)
    refused(server.get("/health", **headers), 403, code)
    refused(httpx.options(server.url + "/v1/chat/completions", timeout=30, headers={
        **headers, "Access-Control-Request-Method": "POST"}), 403, code)  # a CORS preflight
    assert searches(server) == before
    # The client as people use it sends no Origin, and 127.0.0.1 as its Host.
    assert server.client().chat.completions.create(model="target", messages=user("2+2?")).choices
    assert searches(server) == before + 1


@pytest.fixture(scope="module")
def guarded(tiny_models, tmp_path_factory):
    """Host names and a browser front end allowed by flag."""
    served = Served(["--draft", str(tiny_models["draft"]), "--target", str(tiny_models["target"]), *FAST,
                     "--allowed-hosts", "specs.internal, Host2.internal:8080", "--allowed-hosts", "third.internal",
                     "--allowed-origins", "http://ui.example:3000/"], tmp_path_factory.mktemp("guarded") / "log")
    yield served
    served.stop()


def test_allowed_hosts_pass_and_others_are_still_refused(guarded):
    for host in ("specs.internal", f"specs.internal:{guarded.port}", "host2.internal", "THIRD.internal:80",
                 "localhost"):
        assert guarded.get("/health", Host=host).status_code == 200, host
        assert guarded.client(Host=host).chat.completions.create(model="target", messages=user("2+2?")).choices
    for host in (FOREIGN, "internal", "specs.internal.attacker.example"):
        refused(guarded.get("/health", Host=host), 403, "host_not_allowed")


def test_an_allowed_origin_gets_cors_answers_and_other_origins_are_refused(guarded):
    origin = "http://ui.example:3000"
    preflight = httpx.options(guarded.url + "/v1/chat/completions", timeout=30, headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os",
        "Access-Control-Request-Private-Network": "true"})  # a public page calling this machine's loopback
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == origin
    assert preflight.headers["access-control-allow-private-network"] == "true"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert preflight.headers["access-control-allow-headers"] == "authorization, content-type, x-stainless-os"
    # The front end's requests: answers, streams and errors all carry the origin, so that the page may read them.
    client = guarded.client(Origin=origin)
    whole = client.chat.completions.with_raw_response.create(model="target", messages=user("2+2?"))
    assert whole.headers["access-control-allow-origin"] == origin and whole.parse().choices
    raw_stream = guarded.post({**BODY, "stream": True}, Origin=origin)
    assert raw_stream.status_code == 200 and raw_stream.headers["access-control-allow-origin"] == origin
    assert raw_stream.text.endswith("data: [DONE]\n\n")
    error = guarded.post({"messages": []}, Origin=origin)
    assert error.status_code == 400 and error.headers["access-control-allow-origin"] == origin
    full = guarded.get("/health", Origin=origin)
    assert full.status_code == 200 and full.headers["access-control-allow-origin"] == origin
    assert "retry-after" in full.headers["access-control-expose-headers"].lower()
    for other in ("http://ui.example:3001", "https://ui.example:3000", "http://ui.example", f"http://{FOREIGN}"):
        refused(guarded.post(BODY, Origin=other), 403, "origin_not_allowed")
        refused(httpx.options(guarded.url + "/v1/chat/completions", timeout=30, headers={
            "Origin": other, "Access-Control-Request-Method": "POST"}), 403, "origin_not_allowed")


def test_a_star_allows_any_host_and_any_origin_but_not_a_body_that_is_not_json(tiny_models, tmp_path):
    served = Served(["--draft", str(tiny_models["draft"]), "--target", str(tiny_models["target"]), *FAST,
                     "--allowed-hosts", "*", "--allowed-origins", "*"], tmp_path / "log")
    try:
        response = served.client(Host=FOREIGN, Origin=f"http://{FOREIGN}").chat.completions.with_raw_response.create(
            model="target", messages=user("2+2?"))
        assert response.parse().choices and response.headers["access-control-allow-origin"] in ("*", f"http://{FOREIGN}")
        assert served.get("/health", Host=FOREIGN).status_code == 200
        refused(served.post(json.dumps(BODY).encode(), **{"Content-Type": "text/plain"}, Origin=f"http://{FOREIGN}"),
                415, "unsupported_media_type")
    finally:
        served.stop()


# -- the queue, disconnects and signals, on the endless model -------------------

def test_sixteen_concurrent_requests_against_a_queue_of_four(busy):
    client = busy.client()
    stream, _, _ = start_blocker(client)  # holds the engine: the 16 below queue or overflow
    results = []

    def one(i):
        try:
            results.append(("ok", client.chat.completions.create(model="small", messages=user(f"What is {i} + {i}?"))))
        except openai.APIStatusError as err:
            results.append((err.status_code, err))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    wait_for(lambda: sum(r[0] == 503 for r in results) + busy.health()["queue_depth"] == 16, "the 16 to settle")
    stream.close()  # the blocker goes: the queue drains
    for thread in threads:
        thread.join(timeout=120)
    assert collections.Counter(r[0] for r in results) == {503: 12, "ok": 4}
    for status, value in results:
        if status == 503:
            assert value.response.headers["retry-after"] == "1" and value.body["code"] == "queue_full"
        else:
            assert value.choices[0].finish_reason == "length" and len(value.specs["steps"]) == 2
    busy.idle_and_clean()


def test_max_queue_0_runs_a_request_on_an_idle_server_and_queues_none(tiny_models, tmp_path):
    served = Served([*busy_args(tiny_models), "--max-queue", "0"], tmp_path / "log")
    try:
        client = served.client()
        alone = client.chat.completions.create(model="small", messages=user("What is 2 + 2?"))  # idle: it runs
        assert alone.choices[0].finish_reason == "length" and len(alone.specs["steps"]) == 2
        stream, _, _ = start_blocker(client)
        with pytest.raises(openai.APIStatusError) as refused:  # one runs: nothing may wait
            client.chat.completions.create(model="small", messages=user("What is 3 + 3?"))
        assert refused.value.status_code == 503 and refused.value.body["code"] == "queue_full"
        stream.close()
        served.idle_and_clean()
    finally:
        served.stop()


def test_a_client_that_disconnects_mid_stream_cancels_its_search(busy):
    stream, chunks, job = start_blocker(busy.client())
    assert [next(chunks).specs["step"]["index"] for _ in range(2)] == [2, 3]
    stream.close()
    busy.idle_and_clean()
    line = wait_for(lambda: re.search(rf"{job}: cancelled after (\d+) steps \((\d+) after: the client disconnected\)",
                                      busy.log()), "the log line")
    steps, after = map(int, line.groups())
    assert after <= 1 and steps < 1000, line.group(0)  # left alone it would run about 2700 steps


def test_clients_that_give_up_leave_the_queue_or_cancel_their_search(busy):
    body = {"messages": user("Count to a million."), "specs": {"max_steps": 100000}}
    gave_up = []

    def give_up_while_running():
        try:
            busy.post(body, timeout=8)
        except httpx.ReadTimeout:
            gave_up.append(True)

    running = threading.Thread(target=give_up_while_running)
    running.start()
    wait_for(lambda: busy.health()["in_progress"], "the first search to run")
    cancelled = metric(busy, 'specs_requests_total{outcome="cancelled"}')
    with pytest.raises(httpx.ReadTimeout):
        busy.post(body, timeout=1)  # waits in the queue, then gives up
    wait_for(lambda: busy.health()["queue_depth"] == 0, "the queue to empty")
    assert busy.health()["in_progress"] is not None  # the first one still runs
    assert metric(busy, 'specs_requests_total{outcome="cancelled"}') == cancelled + 1
    running.join(timeout=60)
    assert gave_up == [True]
    busy.idle_and_clean()
    lines = re.findall(r"cancelled after (\d+) steps \((\d+) after: the client disconnected\)", busy.log())
    assert lines and int(lines[-1][1]) <= 1
    assert "while queued" in busy.log()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_cancels_the_request_in_flight_and_exits_0(tiny_models, tmp_path, sig):
    served = Served(busy_args(tiny_models), tmp_path / "log")
    try:
        client = served.client()
        stream, chunks, job = start_blocker(client)
        queued = []
        waiting = threading.Thread(target=lambda: queued.append(served.post({"messages": user("2 + 2?")})))
        waiting.start()
        wait_for(lambda: served.health()["queue_depth"] == 1, "the second request to queue")
        served.proc.send_signal(sig)
        with pytest.raises(openai.APIError, match="shutting down"):
            for _ in chunks:
                pass
        assert served.proc.wait(timeout=60) == 0
        waiting.join(timeout=30)
        assert queued[0].status_code == 503 and queued[0].json()["error"]["code"] == "shutting_down"
        log = served.log()
        assert re.search(rf"{job}: cancelled after \d+ steps \([01] after: the server is shutting down\)", log), log
        assert "Traceback" not in log
        with pytest.raises(httpx.ConnectError):
            served.health()
    finally:
        served.stop()


# -- a failing search and the key -------------------------------------------------

def test_a_failing_search_leaves_the_server_up_and_the_engine_clean(keyed):
    client = keyed.client(KEY)
    generated = metric(keyed, 'specs_tokens_total{model="target",kind="generated"}', KEY)
    with pytest.raises(openai.BadRequestError, match="no-template.gguf has no chat template"):
        client.chat.completions.create(model="target", messages=user("What is 2 + 2?"))
    with pytest.raises(openai.APIError, match="no chat template"):
        list(client.chat.completions.create(model="target", messages=user("What is 2 + 2?"), stream=True))
    # It failed half-way: the target had generated its candidates.
    assert metric(keyed, 'specs_tokens_total{model="target",kind="generated"}', KEY) > generated
    assert metric(keyed, 'specs_requests_total{outcome="error"}', KEY) == 2
    keyed.idle_and_clean(KEY)
    ok = client.chat.completions.create(model="target", messages=user("What is 2 + 2?"),
                                        extra_body={"specs": {"method": "greedy"}})  # greedy asks no reward
    assert ok.choices[0].message.content and ok.specs["steps"]
    keyed.idle_and_clean(KEY)


def test_the_api_key_is_required_everywhere(keyed):
    for key in ("none", KEY.upper(), KEY[:-1]):
        with pytest.raises(openai.AuthenticationError, match="API key"):
            keyed.client(key).chat.completions.create(model="target", messages=user("2+2?"))
    for path in ("/health", "/metrics", "/v1/models"):
        response = keyed.get(path)
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    assert keyed.get("/health", KEY).status_code == 200
    assert [m.id for m in keyed.client(KEY).models.list().data] == ["target"]


def test_a_public_bind_with_a_key_still_checks_the_host(keyed):
    """Bound to 0.0.0.0: the machine's own address is a foreign Host until --allowed-hosts names it."""
    message = refused(keyed.get("/health", KEY, Host=f"192.0.2.7:{keyed.port}"), 403, "host_not_allowed")
    assert "--allowed-hosts 192.0.2.7" in message
    refused(keyed.get("/health", Host=FOREIGN), 403, "host_not_allowed")  # before the key is asked
    assert keyed.get("/health", KEY, Host=f"localhost:{keyed.port}").status_code == 200


def test_binding_a_public_address_needs_a_key():
    out = subprocess.run([sys.executable, "-m", "specs_local", "serve", "--host", "0.0.0.0", "--target", "/nope.gguf"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr == "Error: refusing to bind 0.0.0.0 without --api-key (only loopback addresses may go without)\n"


# -- the load script ------------------------------------------------------------------

def test_the_load_script_reports_throughput_latency_and_refusals(server):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "load_server.py"), "load", "--url", server.url,
                          "--clients", "3", "--requests", "6", "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["completed"] == 6 and report["errors"] == 0 and report["rejected_503"] == 0
    assert report["requests_per_s"] > 0 and 0 < report["latency_p50_s"] <= report["latency_p95_s"]
    assert 0 < report["first_step_p50_s"] <= report["latency_p95_s"]


def test_the_load_script_measures_the_overhead_against_an_in_process_loop(tiny_models):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "load_server.py"), "overhead", "--limit", "3",
                          "--json", "--", "--draft", str(tiny_models["draft"]), "--target", str(tiny_models["target"]),
                          *FAST], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["problems"] == 3 and report["same_texts"] is True
    assert report["in_process_median_s"] > 0 and report["server_median_s"] > 0
    assert report["overhead_ratio"] == pytest.approx(report["server_median_s"] / report["in_process_median_s"] - 1,
                                                     abs=0.01)
    pairs = report["per_problem_s"]
    assert len(pairs) == 3 and all(local > 0 and remote > 0 for local, remote in pairs)
    assert report["per_problem_overhead_median"] == pytest.approx(
        sorted(remote / local for local, remote in pairs)[1] - 1, abs=0.05)
    # Which side goes first alternates, so going second costs both sides alike.
    order = report["per_problem_first"]
    assert set(order) == {"in_process", "server"} and all(a != b for a, b in zip(order, order[1:]))


# -- the real pair ------------------------------------------------------------------

@pytest.mark.real
def test_the_small_preset_answers_84_through_the_server(real_pair, tmp_path):
    served = Served(["--draft", str(real_pair["draft"]), "--target", str(real_pair["target"])], tmp_path / "log")
    try:
        chunks = list(served.client().chat.completions.create(model="small", messages=user("What is 12 times 7?"),
                                                              stream=True))
        steps, last = chunks[1:-1], chunks[-1]
        assert [c.specs["step"]["index"] for c in steps] == list(range(1, len(steps) + 1))
        assert steps[0].specs["step"]["source"] == "target"
        assert last.specs["answer"] == "84" and last.choices[0].finish_reason == "stop"
        assert "\\boxed{84}" in "".join(c.choices[0].delta.content for c in steps)
        served.idle_and_clean()
    finally:
        served.stop()
