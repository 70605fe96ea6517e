"""Search strategies: one file each, one entry function each, same interfaces.

Each is a generator ``strategy(problem, models, config)`` that yields steps as
they become final and returns a ``SearchResult``.
"""
from .beam import beam_draft, beam_target
from .best_of_n import best_of_n
from .common import Models, run
from .config import SearchConfig
from .results import SearchResult, Step
from .greedy import greedy_draft, greedy_target
from .rsd import rsd
from .specs import specs

STRATEGIES = {
    "specs": specs,
    "beam-target": beam_target,
    "beam-draft": beam_draft,
    "best-of-n": best_of_n,
    "rsd": rsd,
    "greedy-target": greedy_target,
    "greedy-draft": greedy_draft,
}
# Short names the CLI accepts for --method.
ALIASES = {"beam": "beam-target", "greedy": "greedy-target"}


def strategy(name: str):
    from ..errors import SpecsError

    key = ALIASES.get(name, name)
    if key not in STRATEGIES:
        raise SpecsError(f"unknown method {name!r}; choose one of {', '.join(sorted(STRATEGIES))}")
    return STRATEGIES[key]


__all__ = ["Models", "SearchConfig", "SearchResult", "Step", "STRATEGIES", "run", "strategy"]
