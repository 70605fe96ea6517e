"""The engine's sequence and KV bookkeeping under long searches and interrupts,
on tiny GGUF models with real llama.cpp.

Two properties a user relies on: a search of any length, with any reward,
never runs out of sequence slots; and an interrupt at any moment leaves the
models clean for the next problem (no live sequence, no counted cell, and no
position held in llama.cpp's own memory)."""
from __future__ import annotations

import collections
import itertools
import os
import signal
import threading
import time

import numpy as np
import pytest

import llama_cpp
import specs_local.engine.capture as capture_module
import specs_local.engine.loading as loading_module
from specs_local.engine import KVCells, Model, ModelConfig
from specs_local.engine.batching import Decoder
from specs_local.engine.capture import layer_output
from specs_local.engine.sequences import SequenceTable
from specs_local.sampling import SamplerParams
from specs_local.search import STRATEGIES, SearchConfig
from specs_local.solver import EngineOptions, Solver

PROBLEM = "What is 12 times 7?"
ENGINE = EngineOptions(threads=1, ctx=4096)
LONG = SearchConfig(n=4, beam_width=2, max_steps=12, max_step_tokens=12, final_step_tokens=14, seed=3)


def assert_clean(solver: Solver) -> None:
    for model in solver.models.distinct().values():
        assert model.live_sequences == [], model.name
        assert model.live_cells == 0, model.name
        assert sorted(model.sequences.free_ids) == list(range(model.config.n_seq_max)), model.name
        assert model.positions_in_memory() == {}, model.name


def value_head_file(tmp_path, n_embd: int):
    path = tmp_path / "head.npz"
    rng = np.random.default_rng(0)
    np.savez(path, w0=rng.standard_normal((1, n_embd)).astype(np.float32), b0=np.zeros(1, np.float32),
             kind=np.array("sigmoid"))
    return path


# Reward kinds with where their model sits: on the target, or a model of its own.
REWARDS = [
    ("calculator", None), ("self", None), ("calculator+self", None),
    ("verifier", None), ("verifier", "own"), ("calculator+verifier", None), ("calculator+verifier", "own"),
    ("token-prm", None), ("token-prm", "own"), ("calculator+token-prm", "own"),
    ("value-prm", "own"), ("calculator+value-prm", "own"),
]


@pytest.fixture(scope="module", params=REWARDS, ids=lambda p: f"{p[0]}-{p[1] or 'target'}")
def long_solver(request, tiny_models, tmp_path_factory):
    kind, where = request.param
    head = value_head_file(tmp_path_factory.mktemp("head"), 64) if kind.endswith("value-prm") else None
    solver = Solver.from_paths(tiny_models["arith"], tiny_models["arith-draft"], reward_kind=kind,
                               reward=tiny_models["arith-draft"] if where else None, value_head=head,
                               config=LONG, engine=ENGINE)
    yield solver
    solver.close()


@pytest.mark.parametrize("method", sorted(STRATEGIES))
def test_long_searches_never_run_out_of_sequences(long_solver, method):
    """At least 10 steps at n = 4 cycle every model's 12 slots several times,
    with steps the calculator decides (never cached by a model reward)."""
    reward = long_solver.models.reward
    calls, checked = reward.stats.calls, reward.stats.checked
    result = long_solver.solve(PROBLEM, method=method)
    assert result.stop_reason in ("max_steps", "eos"), result.stop_reason
    if method.startswith("greedy"):
        assert len(result.steps) == LONG.max_steps
    elif method != "best-of-n":  # best-of-n: one whole-solution step by design
        assert reward.stats.calls - calls >= 10  # at least 10 steps were judged
    assert_clean(long_solver)
    if reward.name.startswith("calculator") and method in ("specs", "beam-target", "beam-draft"):
        assert reward.stats.checked > checked  # the calculator did decide some steps


def test_long_searches_reach_ten_steps(tiny_models):
    """The models above do make searches that long, with claims the calculator
    decides (the test above relies on it)."""
    solver = Solver.from_paths(tiny_models["arith"], tiny_models["arith-draft"], reward_kind="calculator",
                               config=LONG, engine=ENGINE)
    try:
        for method in ("specs", "rsd"):
            result = solver.solve(PROBLEM, method=method)
            assert len(result.steps) == LONG.max_steps, method
        assert solver.models.reward.stats.checked >= 5
    finally:
        solver.close()


# -- interrupts at every bookkeeping call -----------------------------------------------------

INTERRUPTED = SearchConfig(n=3, beam_width=1, max_steps=3, max_step_tokens=4, final_step_tokens=5, seed=1)


# Each call that changes the bookkeeping; "Decoder._decode" is an interrupted decode (extend's rollback).
BOOKKEEPING_CALLS = ["Model.fork", "SequenceTable.copy", "SequenceTable.allocate", "Model.truncate",
                     "SequenceTable.cut", "SequenceTable.release", "Decoder._decode", "KVCells.new", "KVCells.share",
                     "KVCells.drop", "llama.llama_memory_seq_cp", "llama.llama_memory_seq_rm"]
OWNERS = {"Model": Model, "SequenceTable": SequenceTable, "Decoder": Decoder, "KVCells": KVCells, "llama": llama_cpp}


class Interrupter:
    """Counts the calls of one function, and raises KeyboardInterrupt at call number ``at``."""

    def __init__(self, monkeypatch, owner, name, at: int | None):
        self.calls, self.at = 0, at
        real = getattr(owner, name)

        def wrapped(*args, **kwargs):
            self.calls += 1
            if self.calls == self.at:
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, wrapped)


@pytest.fixture(scope="module")
def interrupted_solver(tiny_models):
    solver = Solver.from_paths(tiny_models["target"], tiny_models["draft"], reward_kind="calculator+verifier",
                               reward=tiny_models["draft"], config=INTERRUPTED, engine=ENGINE)
    yield solver
    solver.close()


@pytest.mark.parametrize("method", ["specs", "beam-target", "rsd"])
@pytest.mark.parametrize("call", BOOKKEEPING_CALLS)
def test_an_interrupt_at_any_bookkeeping_call_leaves_the_engine_clean(interrupted_solver, monkeypatch, method, call):
    solver = interrupted_solver
    owner_name, name = call.split(".")
    owner = OWNERS[owner_name]
    with monkeypatch.context() as m:
        counter = Interrupter(m, owner, name, at=None)
        solver.solve(PROBLEM, method=method)
    calls = counter.calls
    assert calls > 0, f"{name} is never called by {method}"
    # Every call for the small ones; a spread (first, last and between) for the busy ones.
    points = sorted(set(range(1, calls + 1)) if calls <= 12 else {1, 2, calls, *np.linspace(1, calls, 10, dtype=int)})
    for at in points:
        with monkeypatch.context() as m:
            Interrupter(m, owner, name, at=at)
            with pytest.raises(KeyboardInterrupt):
                solver.solve(PROBLEM, method=method)
        solver._release_everything()
        assert_clean(solver)
    # and the models still work
    assert solver.solve(PROBLEM, method=method).steps
    assert_clean(solver)


def test_real_sigint_at_random_moments_leaves_the_engine_clean(interrupted_solver):
    """SIGINT from another thread at 30 random moments of real searches."""
    # Python turns SIGINT into KeyboardInterrupt only if it was not ignored when the
    # process started, and a shell's background jobs start with it ignored.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _sigint_at_random_moments(interrupted_solver)
    finally:
        signal.signal(signal.SIGINT, previous)


def _sigint_at_random_moments(solver):
    rng = np.random.default_rng(7)
    started = time.perf_counter()
    solver.solve(PROBLEM, method="specs")
    typical = time.perf_counter() - started
    interrupted = 0
    for method, _ in zip(itertools.cycle(["specs", "beam-target", "rsd", "best-of-n"]), range(30)):
        timer = threading.Timer(rng.uniform(0, typical), os.kill, (os.getpid(), signal.SIGINT))
        try:
            try:
                timer.start()  # a timer near 0 s can fire while it starts
                solver.solve(PROBLEM, method=method)
            finally:
                timer.join()
            time.sleep(0.01)  # a signal that comes after the search lands here
        except KeyboardInterrupt:
            interrupted += 1
        solver._release_everything()
        assert_clean(solver)
    assert interrupted >= 5  # the timers did land inside searches


def test_cancel_from_another_thread_stops_the_search_and_frees_everything(interrupted_solver):
    """Solver.cancel(), as a server calls it when a client goes away: the search
    raises Cancelled at its next decode, the models are clean, the next search runs."""
    from specs_local.errors import Cancelled

    solver = interrupted_solver
    seen = []

    def on_step(step):
        seen.append(step)
        if len(seen) == 1:
            threading.Thread(target=solver.cancel).start()
            time.sleep(0.2)  # the search goes on meanwhile; it must stop at its next decode

    with pytest.raises(Cancelled):
        solver.solve(PROBLEM, method="specs", max_steps=50, tau_reject=float("-inf"), on_step=on_step)
    assert len(seen) == 1
    assert_clean(solver)
    assert solver.solve(PROBLEM, method="specs").steps  # a cancel does not outlive its search


def test_a_cancel_before_the_first_step_holds(interrupted_solver):
    from specs_local.errors import Cancelled

    search = interrupted_solver.stream(PROBLEM, method="specs")
    interrupted_solver.cancel()
    with pytest.raises(Cancelled):
        next(search)
    assert_clean(interrupted_solver)


# -- Ctrl-C while llama.cpp runs Python callbacks -------------------------------------------
# A signal's handler runs in whatever Python code is executing, and during a decode with
# activation capture (the probe reward's) that is mostly the capture callback, called from C:
# ctypes drops the KeyboardInterrupt. The Ctrl-C went unheeded, and the decode lost its captured
# rows, so the problem was recorded as "no graph node l_out-18". The same held for model loading,
# which logs through a callback.

CAPTURED = ModelConfig(n_ctx=512, n_threads=1, capture=(layer_output(0),))


@pytest.fixture
def sigint_raises():
    # Python turns SIGINT into KeyboardInterrupt only if it was not ignored when the
    # process started, and a shell's background jobs start with it ignored.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _sigint_now() -> None:
    os.kill(os.getpid(), signal.SIGINT)


class _SigintAtNodeName:
    """The capture module's ggml bindings, sending SIGINT (or ``sig``) at the ``at``-th node name
    read: a Ctrl-C (or a kill) that arrives while the capture callback runs."""

    def __init__(self, real, at: int, sig: int = signal.SIGINT):
        self._real, self._at, self._sig, self.calls = real, at, sig, 0

    def ggml_get_name(self, tensor):
        self.calls += 1
        if self.calls == self._at:
            os.kill(os.getpid(), self._sig)
        return self._real.ggml_get_name(tensor)

    def __getattr__(self, name):
        return getattr(self._real, name)


@pytest.mark.parametrize("at", [1, 5, 40])
def test_ctrl_c_inside_the_capture_callback_stops_the_decode_and_leaves_the_model_clean(
        tiny_models, monkeypatch, sigint_raises, at):
    model = Model(tiny_models["target"], CAPTURED)
    try:
        tokens = model.tokenize("What is 12 times 7?")
        with monkeypatch.context() as m:
            m.setattr(capture_module, "_ggml", _SigintAtNodeName(capture_module._ggml, at))
            with pytest.raises(KeyboardInterrupt):
                model.new_sequence(tokens)
        assert model.live_sequences == [] and model.live_cells == 0 and model.positions_in_memory() == {}
        seq = model.new_sequence(tokens)  # and the next decode captures as before
        assert seq.hidden is not None and seq.hidden.shape == (model.n_embd,)
    finally:
        model.close()


@pytest.fixture
def sigterm_exits(monkeypatch):
    """SIGTERM handled as the CLI handles it (run_markers.exit_on_sigterm): SystemExit(143)."""
    from specs_local import run_markers

    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    run_markers.exit_on_sigterm()
    monkeypatch.setattr(run_markers, "_terminating", False)
    yield
    signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize("at", [1, 40])
def test_a_kill_inside_the_capture_callback_exits_after_the_decode(tiny_models, monkeypatch, sigterm_exits, at):
    """`pkill` of a bench during a probe-reward decode: the SystemExit raised in the callback was
    dropped by ctypes, and the decode's lost rows became the problem's error record."""
    model = Model(tiny_models["target"], CAPTURED)
    try:
        tokens = model.tokenize("What is 12 times 7?")
        with monkeypatch.context() as m:
            m.setattr(capture_module, "_ggml", _SigintAtNodeName(capture_module._ggml, at, signal.SIGTERM))
            with pytest.raises(SystemExit) as stopped:
                model.new_sequence(tokens)
        assert stopped.value.code == 143
        assert model.live_sequences == [] and model.live_cells == 0
    finally:
        model.close()


def test_ctrl_c_while_a_model_loads_stops_the_load(tiny_models, monkeypatch, sigint_raises):
    class SigintOnFirstMessage(collections.deque):
        def append(self, message):
            if not self:
                _sigint_now()
            super().append(message)

    Model(tiny_models["target"], CAPTURED).close()  # the backend and its log sink are set up
    monkeypatch.setattr(loading_module, "_LOG_TAIL", SigintOnFirstMessage(maxlen=20))
    with pytest.raises(KeyboardInterrupt):
        Model(tiny_models["target"], CAPTURED)
    monkeypatch.undo()
    Model(tiny_models["target"], CAPTURED).close()


def test_real_sigint_during_captured_decodes_always_stops_them(tiny_models, sigint_raises):
    """SIGINT from another thread at 12 random moments of decodes with capture: none is lost."""
    model = Model(tiny_models["target"], CAPTURED)
    rng = np.random.default_rng(11)
    try:
        prompt = model.tokenize("What is 12 times 7?")
        for _ in range(12):
            timer = threading.Timer(rng.uniform(0.0, 0.3), _sigint_now)
            deadline = time.perf_counter() + 20
            with pytest.raises(KeyboardInterrupt):
                try:
                    timer.start()
                    while time.perf_counter() < deadline:  # far longer than the timer: it must land in here
                        seqs = model.fork(model.new_sequence(prompt), 3)
                        model.generate(seqs, SamplerParams(temperature=0.7), rng, max_tokens=24)
                        model.release_all(model.live_sequences)
                finally:
                    timer.join()
            model.release_all(model.live_sequences)
            assert model.live_cells == 0 and model.positions_in_memory() == {}
    finally:
        model.close()
