"""Chat prompts: the policy's prompt for a problem, and a GGUF's Jinja chat template,
rendered with bounded work.

The template is code from the model file. jinja2's sandbox keeps it away from
Python's internals but not from building huge values: ``{{ 'x' * 10**9 }}``
would take all memory. Here each operation that can grow a value is refused
when its result would pass ``max_chars`` (checked before it runs where the size
is known in advance, else on its result), ``range()`` has a budget per render,
and the output is streamed and bounded as it grows.
"""
from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Any

from jinja2.compiler import CodeGenerator
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import SpecsError

if TYPE_CHECKING:  # the engine imports this module to render its templates
    from .engine import Model

# Real chat prompts are a few KB (tens with a long problem); a million characters
# is far above any of them and far below what would strain memory.
MAX_CHARS = 1_000_000


def _size(value: Any) -> int:
    """About how many characters a value holds: strings and containers with their items, ints by bytes."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, (list, tuple)):
        return len(value) + sum(map(_size, value))
    if isinstance(value, dict):
        return len(value) + sum(_size(k) + _size(v) for k, v in value.items())
    if isinstance(value, int):
        return value.bit_length() // 8
    return 0


def _binop_size(operator: str, left: Any, right: Any) -> int:
    """An upper bound on the size of ``left <operator> right``, known before computing it."""
    if operator == "*":
        for items, times in ((left, right), (right, left)):
            if isinstance(items, (str, list, tuple)) and isinstance(times, int):
                return _size(items) * times
    if operator == "**" and isinstance(left, int) and isinstance(right, int):
        return left.bit_length() * right // 8
    if operator == "%" and isinstance(left, str):
        return _format_size(left, "%", right if isinstance(right, tuple) else (right,))
    return _size(left) + _size(right)  # + and int * int


def _format_size(fmt: str, marker: str, args: tuple) -> int:
    """A bound on a formatted string, widths aside (checked apart): each field, a `marker`
    ('%' or '{'), is at most the largest argument, since '%(a)s%(a)s' or '{0}{0}' repeat one."""
    return len(fmt) + fmt.count(marker) * max(map(_size, args), default=0)


class _BoundedCodeGenerator(CodeGenerator):
    """Passes each ``~`` concatenation through ``environment.bounded``: jinja has no hook for it."""

    def visit_Concat(self, node, frame) -> None:
        self.write("environment.bounded(")
        super().visit_Concat(node, frame)
        self.write(")")


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with each way to build a large value checked against max_chars."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _BoundedCodeGenerator

    def __init__(self, name: str, max_chars: int):
        super().__init__(trim_blocks=True, lstrip_blocks=True)
        self.name, self.max_chars = name, max_chars
        self.range_left = max_chars  # range() items over the whole render, so nested loops count too
        self.filters = {key: self._bounded_filter(f) for key, f in self.filters.items()}
        self.globals.update(range=self._range, raise_exception=self._raise_exception)

    def refuse(self, what: str) -> SpecsError:
        return SpecsError(f"chat template of {self.name} {what}; refusing it")

    def _raise_exception(self, message):
        raise SpecsError(f"chat template of {self.name}: {message}")

    def bounded(self, value: Any) -> Any:
        self._check_size(_size(value))
        return value

    def concat(self, parts) -> str:
        """Joins the output of {% set %}...{% endset %}, {% filter %} and macro blocks, measured first."""
        parts = list(parts)
        self._check_size(sum(map(len, parts)))
        return "".join(parts)

    def _check_args(self, args, kwargs) -> None:
        # A number is a size to ljust, center, indent, zfill, range...: one allocation of that size.
        if any(isinstance(a, int) and abs(a) > self.max_chars for a in (*args, *kwargs.values())):
            raise self.refuse(f"passes a number above {self.max_chars}")

    def _check_format(self, fmt: str, args) -> None:
        # A width or precision in a format string is one allocation of that size: '%999999999s' % ''.
        if re.search(r"\d{%d}" % len(str(self.max_chars)), fmt):
            raise self.refuse(f"formats to a width above {self.max_chars}")
        if "*" in fmt:  # '%*s' takes its width from the arguments
            self._check_args(args if isinstance(args, tuple) else (args,), {})

    def _check_size(self, size: int) -> None:
        if size > self.max_chars:
            raise self.refuse(f"builds a value of more than {self.max_chars} characters")

    # Calls that multiply sizes: each match of `old` (len(text) + 1 of them if empty) becomes `new`;
    # `sep` goes between every two items.
    def _check_replace(self, text: Any, old: Any = "", new: Any = "", *_) -> None:
        text, old, new = str(text), str(old), str(new)
        self._check_size((len(text) // max(len(old), 1) + 1) * len(new) + len(text))

    def _check_join(self, sep: Any, items: list) -> None:
        self._check_size(len(str(sep)) * len(items) + _size(items))

    def _range(self, *args) -> range:
        items = range(*args)
        self.range_left -= len(items)
        if self.range_left < 0:
            raise self.refuse(f"loops over more than {self.max_chars} range() items")
        return items

    def _bounded_filter(self, func):
        first = 1 if hasattr(func, "jinja_pass_arg") else 0  # the value comes after a pass_context argument

        @functools.wraps(func)  # keeps that pass_context mark
        def bounded(*args, **kwargs):
            self._check_args(args[first + 1 :], kwargs)  # the value itself may be any number
            if func.__name__ == "do_format":
                self._check_format(str(args[first]), args[first + 1 :])
                self._check_size(_format_size(str(args[first]), "%", args[first + 1 :] or (kwargs,)))
            if func.__name__ == "do_replace":
                self._check_replace(*args[first:])
            if func.__name__ == "do_join":  # measured as a list: a generator would be used up
                args = (*args[:first], list(args[first]), *args[first + 1 :])
                self._check_join(args[first + 1] if len(args) > first + 1 else kwargs.get("d", ""), args[first])
            return self.bounded(func(*args, **kwargs))

        return bounded

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        if operator == "%" and isinstance(left, str):
            self._check_format(left, right)
        self._check_size(_binop_size(operator, left, right))
        return self.bounded(super().call_binop(context, operator, left, right))

    def wrap_str_format(self, value: Any) -> Any:
        wrapped = super().wrap_str_format(value)  # str.format and format_map, as the template reads them
        if wrapped is None:
            return None
        fmt = value.__self__
        self._check_format(fmt, ())

        def bounded(*args, **kwargs):
            self._check_size(_format_size(fmt, "{", (*args, *kwargs.values())))
            return wrapped(*args, **kwargs)

        return bounded

    def call(self, context, obj, /, *args, **kwargs) -> Any:
        self._check_args(args, kwargs)
        receiver = getattr(obj, "__self__", None)
        if isinstance(receiver, str) and obj.__name__ == "replace":
            self._check_replace(receiver, *args)
        if isinstance(receiver, str) and obj.__name__ == "join" and args:
            args = (list(args[0]), *args[1:])  # measured as a list: a generator would be used up
            self._check_join(receiver, args[0])
        return self.bounded(super().call(context, obj, *args, **kwargs))


def render_template(template: str, *, name: str, messages: list[dict], add_generation_prompt: bool,
                    bos_token: str, eos_token: str, max_chars: int = MAX_CHARS) -> str:
    """Render a chat template in a sandbox that bounds its work; SpecsError (one line, naming
    the model file ``name``) for a template that fails, raises, or grows past ``max_chars``."""
    env = _BoundedSandbox(name, max_chars)  # per render: it holds this render's range() budget
    chunks, length = [], 0
    try:
        compiled = env.template_class.from_code(env, _compile(template), env.make_globals(None))
        stream = compiled.generate(
            messages=messages, add_generation_prompt=add_generation_prompt, bos_token=bos_token, eos_token=eos_token)
        for chunk in stream:
            length += len(chunk)
            if length > max_chars:
                raise env.refuse(f"renders more than {max_chars} characters")
            chunks.append(chunk)
    except SpecsError:
        raise
    except Exception as error:  # the template is data from the model file: whatever it raises is the file's fault
        detail = str(error).splitlines()[0] if str(error) else ""
        raise SpecsError(f"chat template of {name} fails: {type(error).__name__}: {detail}") from None
    return "".join(chunks)


@functools.lru_cache(maxsize=16)
def _compile(template: str):
    """The template's Python code. Compiling takes milliseconds and a server renders one
    template per request; the code holds no render state, so every render can share it."""
    return _BoundedSandbox("", MAX_CHARS).compile(template)


# -- the policy prompt --------------------------------------------------------

SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."
_SLOT = "\u2063SOLUTION\u2063"  # a marker no template produces, to cut a rendered chat at the solution


def problem_messages(problem: str, system: str | None = None) -> list[dict]:
    return [{"role": "system", "content": SYSTEM_PROMPT if system is None else system},
            {"role": "user", "content": problem}]


def solution_prompt(model: Model, problem: str, system: str | None = None) -> str:
    """The policy prompt: system (ours unless given), problem, then the model's generation prompt."""
    return model.render_chat(problem_messages(problem, system), add_generation_prompt=True)


def question_suffix(model: Model, problem: str, question: str) -> str:
    """What follows a partial solution to ask ``question`` as a new user turn."""
    chat = problem_messages(problem) + [
        {"role": "assistant", "content": _SLOT},
        {"role": "user", "content": question},
    ]
    rendered = model.render_chat(chat, add_generation_prompt=True)
    head, sep, tail = rendered.partition(_SLOT)
    if not sep:
        raise SpecsError(f"chat template of {model.name} drops the assistant turn; cannot ask a verifier question")
    return tail
