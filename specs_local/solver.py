"""The Python API: load a preset's models once, then solve problems with any method.

    from specs_local import Solver
    solver = Solver.from_preset("small")
    result = solver.solve("What is 12 times 7?")
    print(result.answer)
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from .engine import Model, ModelConfig
from .errors import HeadMismatchError, SpecsError
from .interrupts import deferred
from .probe import ProbeHead
from .rewards import make_reward, probe_head
from .search import Models, SearchConfig, SearchResult, Step, run, strategy
from .slots import Slots, search_slots, sequences_needed


@dataclass(frozen=True)
class EngineOptions:
    n_gpu_layers: int = 0
    threads: int | None = None
    ctx: int = 8192
    flash_attn: bool | None = None
    main_gpu: int = 0
    cpu_repack: str = "auto"  # CPU weight layouts: auto, on, no-amx, off (engine/repack.py)

    def model_config(self, slots: Slots, embeddings: bool = False, capture: tuple[str, ...] = ()) -> ModelConfig:
        """How to load one model for a workload: its sequences come from slots.py, which names it."""
        return ModelConfig(n_ctx=self.ctx, n_seq_max=slots.count, workload=slots.workload,
                           n_gpu_layers=self.n_gpu_layers, n_threads=self.threads, flash_attn=self.flash_attn,
                           main_gpu=self.main_gpu, cpu_repack=self.cpu_repack, embeddings=embeddings, capture=capture)


@dataclass
class Solver:
    models: Models
    config: SearchConfig = field(default_factory=SearchConfig)
    method: str = "specs"
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    def __post_init__(self) -> None:
        for model in self.models.distinct().values():
            model.cancel_event = self._cancel

    @classmethod
    def from_paths(cls, target: str | Path, draft: str | Path | None = None, *, reward: str | Path | None = None,
                   reward_kind: str = "calculator+self", value_head: str | Path | ProbeHead | None = None,
                   reward_template: dict | None = None, config: SearchConfig = SearchConfig(),
                   method: str = "specs", engine: EngineOptions = EngineOptions(),
                   reserve: dict | None = None) -> "Solver":
        """Load the models from GGUF files (the reward model defaults to the target).
        ``reward_template``: the reward's prompt settings (see rewards.make_reward).
        ``reserve``: larger search sizes (n, k) a later search may ask for, which the models
        reserve sequence slots for."""
        strategy(method)  # fail on an unknown method before loading anything
        sizes = {key: max(value, getattr(config, key)) for key, value in (reserve or {}).items()}
        slots = search_slots(config.with_(**sizes))
        capture = ()
        if reward_kind.endswith("probe") and value_head:  # read once: its nodes decide how the target loads
            value_head = probe_head(value_head)
            capture = value_head.capture
        loaded: list[Model] = []
        try:
            target_model = Model(target, engine.model_config(slots, capture=capture))
            loaded.append(target_model)
            draft_model = Model(draft, engine.model_config(slots)) if draft else None
            loaded.append(draft_model)
            reward_model = None
            if reward and Path(reward) != Path(target):
                reward_model = Model(reward, engine.model_config(slots, embeddings=reward_kind.endswith("value-prm")))
            loaded.append(reward_model)
            reward_obj = make_reward(reward_kind, target=target_model, reward_model=reward_model,
                                     value_head=value_head, template=reward_template)
        except BaseException:
            for model in loaded:  # a refused head or a file that will not load: free what did load
                if model is not None:
                    model.close()
            raise
        return cls(Models(target=target_model, reward=reward_obj, draft=draft_model), config, method)

    @classmethod
    def from_preset(cls, preset: str = "small", *, method: str = "specs", search: dict | None = None,
                    engine: EngineOptions = EngineOptions(), progress: bool = False, draft: str | None = None,
                    target: str | None = None, reward: str | None = None, reward_kind: str | None = None,
                    value_head: str | None = None, reserve: dict | None = None) -> "Solver":
        """Resolve a preset's files (cache, installed bundles, or the hub) and load them.

        ``search`` holds SearchConfig fields; they win over the preset's defaults.
        ``draft``/``target``/``reward`` replace a role's file (a path, a preset
        role, or hf:REPO/FILE)."""
        from .presets import load_preset, resolve, value_head_path

        manifest = load_preset(preset)
        config = SearchConfig().with_(**dict(manifest.search_defaults)).with_(**(search or {}))  # bad settings: no load
        paths = {role: resolve(spec or role, role=role, preset=preset, progress=progress)
                 for role, spec in (("draft", draft), ("target", target))}
        kind = reward_kind or manifest.reward_kind
        shipped = False  # whether the value head is the one the preset ships
        # The preset's prompt settings belong to its own reward kind.
        template = dict(manifest.roles["reward"].template) if kind == manifest.reward_kind else None
        reward_path = None
        uses = manifest.roles["reward"].uses  # e.g. self-verification "uses" the target
        if reward:
            reward_path = resolve(reward, role="reward", preset=preset, progress=progress)
        elif uses in paths:
            reward_path = paths[uses]
        elif manifest.has_role("reward"):
            reward_path = resolve("reward", role="reward", preset=preset, progress=progress)
            if kind.endswith("value-prm") and value_head is None:
                value_head = value_head_path(manifest.model("reward"))
        if kind.endswith("probe") and value_head is None and kind == manifest.reward_kind:
            value_head = manifest.roles["reward"].probe_head  # the head the preset ships
            shipped = value_head is not None
        try:
            return cls.from_paths(paths["target"], paths["draft"], reward=reward_path, reward_kind=kind,
                                  value_head=value_head, reward_template=template, config=config, method=method,
                                  engine=engine, reserve=reserve)
        except HeadMismatchError:
            if not shipped:
                raise
            raise SpecsError(f"preset {preset!r} rewards with a probe head trained for its own target, not "
                             f"{Path(paths['target']).name}; pass --reward-kind (e.g. calculator+self), or a "
                             "--value-head trained for this target (specs-local value collect / value train)") from None

    def stream(self, problem: str, *, method: str | None = None, **changes) -> Iterator[Step]:
        """A generator of the steps as they are chosen; it returns the SearchResult.
        A ``cancel()`` from the moment this returns stops it."""
        if not problem or not problem.strip():
            raise SpecsError("the problem is empty")
        config = self.config.with_(**changes)
        slots = min(m.config.n_seq_max for m in self.models.distinct().values())
        if sequences_needed(config) > slots:
            raise SpecsError(f"n = {config.n} and k = {config.k} need {sequences_needed(config)} sequence slots; "
                             f"the models were loaded with {slots} (load them with the larger n or k)")
        search = strategy(method or self.method)(problem, self.models, config)
        self._cancel.clear()  # here, not in the generator: a cancel before its first step must hold
        return self._drain(search)

    def _drain(self, search) -> Iterator[Step]:
        try:
            result = yield from search
        finally:
            self._release_everything()
        return result

    def solve(self, problem: str, *, method: str | None = None, on_step: Callable[[Step], None] | None = None,
              **changes) -> SearchResult:
        """Solve one problem; ``on_step`` sees each step as soon as it is chosen."""
        return run(self.stream(problem, method=method, **changes), on_step)

    def cancel(self) -> None:
        """Stop the search in progress (from any thread): it raises ``Cancelled``
        at its next decode, between steps or inside a step's decode loop, and
        gives back every sequence, as on Ctrl-C. The next search starts afresh."""
        self._cancel.set()

    def _release_everything(self) -> None:
        # A search that stopped half-way (Ctrl-C, an error) may leave sequences
        # behind; the models stay loaded for the next problem, so free them all,
        # holding Ctrl-C back until it is done (it is quick: no decode).
        with deferred():
            self.models.reward.reset()
            for model in self.models.distinct().values():
                model.release_all(model.live_sequences)

    def close(self) -> None:
        for model in self.models.distinct().values():
            model.close()


__all__ = ["Solver", "EngineOptions"]
