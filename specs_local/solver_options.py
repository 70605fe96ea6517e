"""A Solver, or a search config and engine options, from the option dict every front
end shares: the CLI's flags (with the config file under them), or the copy a Ray
worker is sent.

Below the front ends, so that the CLI and the cluster's workers load models the same
way without one importing the other. Nothing here loads llama.cpp until it is called:
the CLI imports it for `--help` too.
"""
from __future__ import annotations

# The option names that are SearchConfig fields; the rest name models and engine settings.
SEARCH_KEYS = ("n", "beam_width", "beam_answer", "temperature", "beta", "tau_reject", "tau_switch", "greedy_candidate",
               "k", "select", "veto", "stop_confidence", "window", "consensus", "rsd_delta", "max_steps",
               "max_step_tokens", "seed")


def engine_from(opts: dict):
    """The EngineOptions of a command's engine flags."""
    from .solver import EngineOptions

    return EngineOptions(n_gpu_layers=opts["n_gpu_layers"], threads=opts["threads"], ctx=opts["ctx"],
                         cpu_repack=opts.get("cpu_repack") or "auto")


def method_of(opts: dict) -> str:
    """The method the flags ask for, else the preset's."""
    from .presets import load_preset

    return opts.get("method") or load_preset(opts["preset"]).method


def build_solver(opts: dict, *, progress: bool = True, reserve: dict | None = None):
    """A Solver from the shared flags (models load here, once). ``reserve``: the largest n and
    k a search may ask for later (a request, a bench arm), which the models reserve slots for."""
    from .solver import Solver

    engine = engine_from(opts)
    overrides = {k: opts.get(k) for k in ("draft", "target", "reward", "reward_kind", "value_head")}
    return Solver.from_preset(opts["preset"], method=method_of(opts), search=search_flags(opts), engine=engine,
                              progress=progress, reserve=reserve, **overrides)


def search_flags(opts: dict) -> dict:
    """The SearchConfig fields the flags set (the rest keep the preset's defaults)."""
    return {key: opts[key] for key in SEARCH_KEYS if opts.get(key) is not None}


def search_setup(opts: dict):
    """The search config (the preset's defaults under the flags) and engine options of a
    command that loads its models itself (`value collect`, `value replay`)."""
    from .presets import load_preset
    from .search import SearchConfig

    manifest = load_preset(opts["preset"])
    config = SearchConfig().with_(**dict(manifest.search_defaults)).with_(**search_flags(opts))
    return config, engine_from(opts)
