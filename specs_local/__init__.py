"""specs-local: offline test-time scaling (SPECS) for local GGUF models on llama.cpp.

``from specs_local import Solver`` is the Python API. The import is lazy so that
grading workers and light commands do not load llama.cpp.
"""

__all__ = ["Solver", "SearchConfig", "EngineOptions"]


def __getattr__(name):
    if name in ("Solver", "EngineOptions"):
        from . import solver

        return getattr(solver, name)
    if name == "SearchConfig":
        from .search import SearchConfig

        return SearchConfig
    raise AttributeError(f"module 'specs_local' has no attribute {name!r}")
