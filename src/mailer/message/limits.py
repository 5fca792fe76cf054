"""How big a template's values may get and how much one render may do; the estimates.

Jinja2's sandbox keeps templates away from Python internals, but not from asking for
`'a' * 300000000` (2 GB) or for loops inside loops that run for minutes. A wall-clock
timeout would make a render's outcome depend on the machine's load (and tests flaky), so
every way a template can make work is counted instead, deterministically:

- size: no string, list or dict a template builds may hold more than MAX_LENGTH
  characters or items, no integer more than MAX_INT_BITS bits. Operations that could
  multiply sizes (`*`, `**`, `%`, `+`, `~`, str.format, and the filters and string
  methods that take a width or insert a string) are estimated from their operands
  *before* they run (the functions here), and every result is measured after;
- steps: each loop iteration and each call (macros, methods) costs one of MAX_STEPS;
- work: every character a template builds or outputs (including the static text of
  loop and macro bodies, which runs again and again) is charged to MAX_WORK.

Together this bounds one render's time and memory by the template's size times
constants. sandbox.py applies these to Jinja; a template that reaches a limit gets a
TemplateLimitError, reported with its file and line like any other render error.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any

import jinja2

MAX_LENGTH = 100_000  # characters in a string, items in a list (nested items included)
MAX_INT_BITS = 4_096
MAX_STEPS = 20_000  # loop iterations plus calls, per render (a macro call costs ~10 µs)
MAX_WORK = 2_000_000  # characters built or output, per render
# A check made before an operation may let it build up to this much, then the result is
# checked against MAX_LENGTH; estimates can then be simple upper bounds.
ESTIMATE_LIMIT = 10 * MAX_LENGTH


class TemplateLimitError(jinja2.TemplateRuntimeError):
    """A template went past one of the limits above."""


class Budget:
    """What one render may still spend."""

    def __init__(self) -> None:
        self.steps = MAX_STEPS
        self.work = MAX_WORK

    def step(self) -> None:
        self.steps -= 1
        if self.steps < 0:
            raise TemplateLimitError(
                f"the template loops or calls more than {MAX_STEPS:,} times for one message"
            )

    def spend(self, amount: int) -> None:
        self.work -= amount
        if self.work < 0:
            raise TemplateLimitError(
                f"the template produces more than {MAX_WORK:,} characters for one message"
            )


BUDGET: ContextVar[Budget | None] = ContextVar("mailer_template_budget", default=None)


def current_budget() -> Budget:
    # Outside `render` (Jinja folding constants at compile time) each operation gets a
    # fresh budget: the size limits still hold, and compile-time work is once per template.
    return BUDGET.get() or Budget()


# -- sizes -------------------------------------------------------------------------------


def weight(value: object, limit: int = ESTIMATE_LIMIT) -> int:
    """Characters and items in `value`, nested ones included; stops counting past `limit`.

    Shared parts count each time they occur, as they would when the value is printed.
    """
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, bool | float) or item is None:
            total += 1
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 1
        elif isinstance(item, list | tuple | set | frozenset):
            total += len(item)
            if total <= limit:
                stack.extend(item)
        elif isinstance(item, dict):
            total += len(item)
            if total <= limit:
                stack.extend(item.keys())
                stack.extend(item.values())
        else:
            total += 1
        if total > limit:
            break
    return total


def too_big(what: str) -> TemplateLimitError:
    return TemplateLimitError(
        f"{what} would make a value of more than {MAX_LENGTH:,} characters or items "
        "(the limit for one value in a template)"
    )


def check_estimate(estimate: int, what: str) -> None:
    if estimate > ESTIMATE_LIMIT:
        raise too_big(what)


def checked(value: Any, what: str) -> Any:
    """`value`, if it is not too big; its size is charged to the render's work."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value.bit_length() > MAX_INT_BITS:
            raise TemplateLimitError(f"{what} gives a number of more than {MAX_INT_BITS} bits")
        return value
    size = weight(value, MAX_LENGTH)
    if size > MAX_LENGTH:
        raise too_big(what)
    current_budget().spend(size)
    return value


def int_or_zero(value: object) -> int:
    return value if isinstance(value, int) else 0


def check_width(width: object, what: str) -> None:
    if isinstance(width, int) and width > MAX_LENGTH:
        raise too_big(what)


# printf-style conversions: %[(key)][flags][width][.precision][length]type
_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?([a-zA-Z%])")


def printf_estimate(template: str, args: object) -> int:
    """An upper bound on the length of `template % args`."""
    values = list(args.values()) if isinstance(args, Mapping) else args
    values = list(values) if isinstance(values, tuple | list) else [values]
    widest_value = max((weight(v) for v in values), default=0)
    widest_number = max((int_or_zero(v) for v in values), default=0)
    total = len(template)
    for match in _PRINTF.finditer(template):
        sizes = [widest_value]
        for part in match.group(1, 2):
            if part == "*":
                sizes.append(widest_number)
            elif part is not None:
                sizes.append(int(part) if len(part) < 12 else ESTIMATE_LIMIT + 1)
        total += max(sizes) + 32  # a float may print ~310 digits; 32 a conversion is ample
        if match.group(3) in "eEfFgG":
            total += 310
    return total


# -- filters ---------------------------------------------------------------------------
# Checks made before a built-in filter runs, for those whose result can be much larger
# than their input. Each gets the filter's value and its arguments (after the value).


def arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name)


def replace_estimate(text: str, old: object, new: object, count: object) -> int:
    old_text, new_text = str(old), str(new)
    found = text.count(old_text) if old_text else len(text) + 1
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return len(text) + found * len(new_text)


def join_estimate(items: list[Any], separator: object) -> int:
    return sum(weight(item) for item in items) + len(items) * len(str(separator))


def _pre_center(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    check_width(arg(args, kwargs, 0, "width"), "the 'center' filter")


def _pre_indent(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    width = arg(args, kwargs, 0, "width")
    per_line = width if isinstance(width, int) else len(str(width or ""))
    text = str(value)
    check_estimate(len(text) + (text.count("\n") + 1) * per_line, "the 'indent' filter")


def _pre_wordwrap(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    wrap = arg(args, kwargs, 2, "wrapstring")
    check_estimate(len(str(value)) * (1 + len(str(wrap or "\n"))), "the 'wordwrap' filter")


def _pre_batch(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    check_width(arg(args, kwargs, 0, "linecount"), "the 'batch' filter")


def _pre_slice(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    check_width(arg(args, kwargs, 0, "slices"), "the 'slice' filter")


def _pre_tojson(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    indent = int_or_zero(arg(args, kwargs, 0, "indent"))
    check_estimate(weight(value) * (8 + indent), "the 'tojson' filter")


def _pre_format(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    check_estimate(printf_estimate(str(value), kwargs or args), "the 'format' filter")


def _pre_replace(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    old, new = arg(args, kwargs, 0, "old"), arg(args, kwargs, 1, "new")
    count = arg(args, kwargs, 2, "count")
    check_estimate(replace_estimate(str(value), old, new, count), "the 'replace' filter")


def _pre_urlize(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    extra = len(str(arg(args, kwargs, 2, "target") or "")) + len(
        str(arg(args, kwargs, 3, "rel") or "")
    )
    check_estimate(len(str(value)) * (4 + extra), "the 'urlize' filter")


def _pre_round(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    # round(5, -10**9) computes 10**(10**9) first.
    if abs(int_or_zero(arg(args, kwargs, 0, "precision"))) > 1_000:
        raise TemplateLimitError("the 'round' filter takes a precision of at most 1000")


def _pre_sum(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    # Adding up lists copies the growing total each time: quadratic, and never needed.
    if not isinstance(arg(args, kwargs, 1, "start") or 0, int | float):
        raise TemplateLimitError("the 'sum' filter adds up numbers only")


FILTER_CHECKS: dict[str, Callable[[Any, tuple[Any, ...], dict[str, Any]], None]] = {
    "center": _pre_center,
    "indent": _pre_indent,
    "wordwrap": _pre_wordwrap,
    "batch": _pre_batch,
    "slice": _pre_slice,
    "tojson": _pre_tojson,
    "format": _pre_format,
    "replace": _pre_replace,
    "urlize": _pre_urlize,
    "round": _pre_round,
    "sum": _pre_sum,
}


def check_str_call(text: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Size checks for the string methods that can grow; returns args (a join's, listed)."""
    what = f"str.{name}()"
    if name in ("center", "ljust", "rjust", "zfill"):
        check_width(arg(args, kwargs, 0, "width"), what)
    elif name == "replace":
        old, new, count = (arg(args, kwargs, i, n) for i, n in enumerate(("old", "new", "count")))
        check_estimate(replace_estimate(text, old, new, count), what)
    elif name == "join" and args:
        items = list(args[0])
        check_estimate(join_estimate(items, text), what)
        return (items, *args[1:])
    return args


def check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse `*`, `**`, `+` or `%` when its result would be too big, before computing it."""
    what = f"'{operator}'"
    sequences = (str, list, tuple)
    if operator == "*" and isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > MAX_INT_BITS + 1:
            raise TemplateLimitError(f"'*' gives a number of more than {MAX_INT_BITS} bits")
    elif operator == "*":
        sequence, times = (right, left) if isinstance(left, int) else (left, right)
        if isinstance(sequence, sequences) and isinstance(times, int):
            check_estimate(weight(sequence) * max(times, 0), what)
    elif operator == "**" and isinstance(left, int) and isinstance(right, int):
        # |left| ** right has about bits(|left|) * right bits; 0, 1 and -1 stay small.
        if right > 0 and abs(left) > 1 and (abs(left) - 1).bit_length() * right > MAX_INT_BITS:
            raise TemplateLimitError(f"'**' gives a number of more than {MAX_INT_BITS} bits")
    elif operator == "+" and isinstance(left, sequences) and isinstance(right, sequences):
        check_estimate(weight(left) + weight(right), what)
    elif operator == "%" and isinstance(left, str):
        check_estimate(printf_estimate(left, right), what)
