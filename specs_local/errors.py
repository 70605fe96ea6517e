"""Errors that reach a person as one line (the CLI prints ``Error: <message>``)."""


class SpecsError(Exception):
    """An error with a one-line message meant for the user."""


class ModelLoadError(SpecsError):
    """A model file is missing, not GGUF, or truncated/corrupt."""


class ContextFullError(SpecsError):
    """A prompt or a sequence does not fit in the context (KV cache)."""


class HeadMismatchError(SpecsError):
    """A value head was trained for another target (vocabulary, file or layers)."""


class PromptTooLongError(SpecsError):
    """The problem's prompt alone fills the context: no search can start. Not a
    ContextFullError, which a search takes as its cue to stop with what it has."""


class SettingError(SpecsError):
    """A search setting out of its bounds (SearchConfig); ``field`` names it, ``problem`` says what is wrong."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field, self.problem = field, problem


class OutOfSequencesError(SpecsError):
    """All parallel sequence slots of a context are in use."""


class Cancelled(KeyboardInterrupt):
    """A search stopped on request (a client went away, or a server is stopping).

    It is a KeyboardInterrupt so that it takes the very path Ctrl-C takes: every
    strategy and the engine already release what they hold on the way out."""
