"""Limits on organiser templates: no template may compute for ever or fill the memory.

Jinja2's sandbox keeps templates away from Python internals, but not from asking for
`'a' * 300000000` (2 GB) or for loops inside loops that run for minutes. A wall-clock
timeout would make a render's outcome depend on the machine's load (and tests flaky), so
every way a template can make work is counted instead, deterministically:

- size: no string, list or dict a template builds may hold more than MAX_LENGTH
  characters or items, no integer more than MAX_INT_BITS bits. Operations that could
  multiply sizes (`*`, `**`, `%`, `+`, `~`, str.format, and the filters and string
  methods that take a width or insert a string) are checked from their operands
  *before* they run, and every result is checked after;
- steps: each loop iteration and each call (macros, methods) costs one of MAX_STEPS;
- work: every character a template builds or outputs (including the static text of
  loop and macro bodies, which runs again and again) is charged to MAX_WORK.

`range` is not offered at all (make_environment clears the globals), so there is no range
to cap. Only methods that cannot grow a value out of proportion may be called. Together
this bounds one render's time and memory by the template's size times constants. A
template that reaches a limit gets a TemplateLimitError, reported with its file and line
like any other render error.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from string import Formatter
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context, LoopContext, Macro, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter
from markupsafe import EscapeFormatter, Markup

MAX_LENGTH = 100_000  # characters in a string, items in a list (nested items included)
MAX_INT_BITS = 4_096
MAX_STEPS = 20_000  # loop iterations plus calls, per render (a macro call costs ~10 µs)
MAX_WORK = 2_000_000  # characters built or output, per render
# A check made before an operation may let it build up to this much, then the result is
# checked against MAX_LENGTH; estimates can then be simple upper bounds.
_ESTIMATE_LIMIT = 10 * MAX_LENGTH

# Names of the filters the compiler inserts (see `bound`); a template cannot spell them.
LOOP_FILTER = "mailer:loop"
OUTPUT_FILTER = "mailer:output"
STATIC_FILTER = "mailer:static"
CONCAT_FILTER = "mailer:concat"
TEMPLATE_FILENAME = "<mailer template>"


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


_BUDGET: ContextVar[Budget | None] = ContextVar("mailer_template_budget", default=None)


def _budget() -> Budget:
    # Outside `render` (Jinja folding constants at compile time) each operation gets a
    # fresh budget: the size limits still hold, and compile-time work is once per template.
    return _BUDGET.get() or Budget()


def render(template: jinja2.Template, *args: Any, **kwargs: Any) -> str:
    """`template.render(...)` with a fresh budget for this one message."""
    token = _BUDGET.set(Budget())
    try:
        return template.render(*args, **kwargs)
    finally:
        _BUDGET.reset(token)


# -- sizes -------------------------------------------------------------------------------


def weight(value: object, limit: int = _ESTIMATE_LIMIT) -> int:
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


def _too_big(what: str) -> TemplateLimitError:
    return TemplateLimitError(
        f"{what} would make a value of more than {MAX_LENGTH:,} characters or items "
        "(the limit for one value in a template)"
    )


def _check_estimate(estimate: int, what: str) -> None:
    if estimate > _ESTIMATE_LIMIT:
        raise _too_big(what)


def _checked(value: Any, what: str) -> Any:
    """`value`, if it is not too big; its size is charged to the render's work."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value.bit_length() > MAX_INT_BITS:
            raise TemplateLimitError(f"{what} gives a number of more than {MAX_INT_BITS} bits")
        return value
    size = weight(value, MAX_LENGTH)
    if size > MAX_LENGTH:
        raise _too_big(what)
    _budget().spend(size)
    return value


def _number(value: object) -> int:
    return value if isinstance(value, int) else 0


def _width_limit(width: object, what: str) -> None:
    if isinstance(width, int) and width > MAX_LENGTH:
        raise _too_big(what)


# printf-style conversions: %[(key)][flags][width][.precision][length]type
_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?([a-zA-Z%])")


def _printf_estimate(template: str, args: object) -> int:
    """An upper bound on the length of `template % args`."""
    values = list(args.values()) if isinstance(args, Mapping) else args
    values = list(values) if isinstance(values, tuple | list) else [values]
    widest_value = max((weight(v) for v in values), default=0)
    widest_number = max((_number(v) for v in values), default=0)
    total = len(template)
    for match in _PRINTF.finditer(template):
        sizes = [widest_value]
        for part in match.group(1, 2):
            if part == "*":
                sizes.append(widest_number)
            elif part is not None:
                sizes.append(int(part) if len(part) < 12 else _ESTIMATE_LIMIT + 1)
        total += max(sizes) + 32  # a float may print ~310 digits; 32 a conversion is ample
        if match.group(3) in "eEfFgG":
            total += 310
    return total


class _BoundedFormat:
    """`str.format` / `str.format_map` for templates: sandboxed, and no field too wide."""

    def __init__(self, text: str, formatter: Formatter, *, mapping: bool) -> None:
        self.text = text
        self.formatter = formatter
        self.mapping = mapping

    def __call__(self, *args: Any, **kwargs: Any) -> str:
        if self.mapping:
            if kwargs or len(args) != 1:
                raise TypeError("format_map() takes exactly one argument")
            return type(self.text)(self.formatter.vformat(self.text, (), args[0]))
        return type(self.text)(self.formatter.vformat(self.text, args, kwargs))


class _LimitedFields(Formatter):
    """Mixed into the sandbox's formatters: refuses wide fields and long results."""

    _made = 0

    def vformat(self, format_string: str, args: Any, kwargs: Any) -> str:
        self._made = len(format_string)
        return super().vformat(format_string, args, kwargs)

    def format_field(self, value: Any, format_spec: str) -> Any:
        # Nested fields ({:{width}}) are already filled in here, so every width is seen.
        if any(len(d) > 6 or int(d) > MAX_LENGTH for d in re.findall(r"\d+", format_spec)):
            raise _too_big("a format field")
        result = super().format_field(value, format_spec)
        self._made += len(result)
        if self._made > _ESTIMATE_LIMIT:
            raise _too_big("the formatted string")
        return result


class _Formatter(_LimitedFields, SandboxedFormatter):
    pass


class _EscapeFormatter(_LimitedFields, SandboxedFormatter, EscapeFormatter):
    pass


# -- filters ---------------------------------------------------------------------------
# Checks made before a built-in filter runs, for those whose result can be much larger
# than their input. Each gets the filter's value and its arguments (after the value).


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name)


def _replace_estimate(text: str, old: object, new: object, count: object) -> int:
    old_text, new_text = str(old), str(new)
    found = text.count(old_text) if old_text else len(text) + 1
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return len(text) + found * len(new_text)


def _join_estimate(items: list[Any], separator: object) -> int:
    return sum(weight(item) for item in items) + len(items) * len(str(separator))


def _pre_center(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    _width_limit(_arg(args, kwargs, 0, "width"), "the 'center' filter")


def _pre_indent(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    width = _arg(args, kwargs, 0, "width")
    per_line = width if isinstance(width, int) else len(str(width or ""))
    text = str(value)
    _check_estimate(len(text) + (text.count("\n") + 1) * per_line, "the 'indent' filter")


def _pre_wordwrap(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    wrap = _arg(args, kwargs, 2, "wrapstring")
    _check_estimate(len(str(value)) * (1 + len(str(wrap or "\n"))), "the 'wordwrap' filter")


def _pre_batch(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    _width_limit(_arg(args, kwargs, 0, "linecount"), "the 'batch' filter")


def _pre_slice(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    _width_limit(_arg(args, kwargs, 0, "slices"), "the 'slice' filter")


def _pre_tojson(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    indent = _number(_arg(args, kwargs, 0, "indent"))
    _check_estimate(weight(value) * (8 + indent), "the 'tojson' filter")


def _pre_format(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    _check_estimate(_printf_estimate(str(value), kwargs or args), "the 'format' filter")


def _pre_replace(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    old, new = _arg(args, kwargs, 0, "old"), _arg(args, kwargs, 1, "new")
    count = _arg(args, kwargs, 2, "count")
    _check_estimate(_replace_estimate(str(value), old, new, count), "the 'replace' filter")


def _pre_urlize(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    extra = len(str(_arg(args, kwargs, 2, "target") or "")) + len(
        str(_arg(args, kwargs, 3, "rel") or "")
    )
    _check_estimate(len(str(value)) * (4 + extra), "the 'urlize' filter")


def _pre_round(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    # round(5, -10**9) computes 10**(10**9) first.
    if abs(_number(_arg(args, kwargs, 0, "precision"))) > 1_000:
        raise TemplateLimitError("the 'round' filter takes a precision of at most 1000")


def _pre_sum(value: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    # Adding up lists copies the growing total each time: quadratic, and never needed.
    if not isinstance(_arg(args, kwargs, 1, "start") or 0, int | float):
        raise TemplateLimitError("the 'sum' filter adds up numbers only")


_FILTER_CHECKS: dict[str, Callable[[Any, tuple[Any, ...], dict[str, Any]], None]] = {
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


def _guard_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """`function` with its size checks; Jinja's pass_context/... marks are kept (wraps)."""
    passes_first = getattr(function, "jinja_pass_arg", None) is not None
    check = _FILTER_CHECKS.get(name)
    what = f"the {name!r} filter"

    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        lead, rest = (args[:1], args[1:]) if passes_first else ((), args)
        if rest and name == "join":
            items = list(rest[0])  # a generator (map, select) must be measured, then joined
            _check_estimate(_join_estimate(items, _arg(rest[1:], kwargs, 0, "d") or ""), what)
            rest = (items, *rest[1:])
        elif rest and check is not None:
            check(rest[0], rest[1:], kwargs)
        return _checked(function(*lead, *rest, **kwargs), what)

    return guarded


@jinja2.pass_context  # pass_context also keeps Jinja from running it at compile time
def _loop_filter(context: Context, iterable: Iterable[Any]) -> Iterator[Any]:
    """Every loop iteration is a step."""
    return _stepping(iterable)


def _stepping(iterable: Iterable[Any]) -> Iterator[Any]:
    budget = _budget()
    for item in iterable:
        budget.step()
        yield item


def _output_filter(value: Any) -> Any:
    """Every piece of output is charged (as built: escaping adds a few characters).

    Hot: ~30 calls per message with the default layout, so the common case is inlined.
    Jinja may run it at compile time on a constant, which is then template text.
    """
    budget = _BUDGET.get()
    if budget is None:
        return value
    if isinstance(value, str):
        budget.work -= len(value)
    elif not isinstance(value, jinja2.Undefined):  # printing it raises the usual error
        budget.work -= weight(value, MAX_LENGTH)
    if budget.work < 0:
        budget.spend(0)  # raises
    return value


@jinja2.pass_context  # so that Jinja cannot fold it into a constant: it must run each time
def _static_filter(context: Context, text: str) -> str:
    """Static text inside a loop or macro body is charged each time it is output."""
    _budget().spend(len(text))
    return text


@jinja2.pass_eval_context
def _concat_filter(eval_ctx: nodes.EvalContext, first: Any, *rest: Any) -> str:
    """`a ~ b ~ c`, as Jinja joins it, measured first."""
    parts = [first, *rest]
    _check_estimate(sum(weight(p) for p in parts), "joining strings with '~'")
    joined = (markup_join if eval_ctx.autoescape else str_join)(parts)
    return str(_checked(joined, "joining strings with '~'"))


# -- calls -------------------------------------------------------------------------------

# Methods that cannot grow a value out of proportion, or whose growth is checked below.
_STR_METHODS = frozenset(
    {
        *("capitalize", "casefold", "center", "count", "endswith", "find", "index"),
        *("isalnum", "isalpha", "isascii", "isdecimal", "isdigit", "islower", "isnumeric"),
        *("isspace", "istitle", "isupper", "join", "ljust", "lower", "lstrip", "partition"),
        *("removeprefix", "removesuffix", "replace", "rfind", "rindex", "rjust"),
        *("rpartition", "rsplit", "rstrip", "split", "splitlines", "startswith", "strip"),
        *("swapcase", "title", "upper", "zfill"),
    }
)
_DICT_METHODS = frozenset({"get", "items", "keys", "values"})
_SEQUENCE_METHODS = frozenset({"count", "index"})
_LOOP_METHODS = frozenset({"cycle", "changed"})


def _allowed_method(owner: object, name: str) -> bool:
    if isinstance(owner, str):
        return name in _STR_METHODS
    if isinstance(owner, dict):
        return name in _DICT_METHODS
    if isinstance(owner, list | tuple):
        return name in _SEQUENCE_METHODS
    return isinstance(owner, LoopContext) and name in _LOOP_METHODS


def _check_str_call(text: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Size checks for the string methods that can grow; returns args (a join's, listed)."""
    what = f"str.{name}()"
    if name in ("center", "ljust", "rjust", "zfill"):
        _width_limit(_arg(args, kwargs, 0, "width"), what)
    elif name == "replace":
        old, new, count = (_arg(args, kwargs, i, n) for i, n in enumerate(("old", "new", "count")))
        _check_estimate(_replace_estimate(text, old, new, count), what)
    elif name == "join" and args:
        items = list(args[0])
        _check_estimate(_join_estimate(items, text), what)
        return (items, *args[1:])
    return args


def _check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse `*`, `**`, `+` or `%` when its result would be too big, before computing it."""
    what = f"'{operator}'"
    sequences = (str, list, tuple)
    if operator == "*" and isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > MAX_INT_BITS + 1:
            raise TemplateLimitError(f"'*' gives a number of more than {MAX_INT_BITS} bits")
    elif operator == "*":
        sequence, times = (right, left) if isinstance(left, int) else (left, right)
        if isinstance(sequence, sequences) and isinstance(times, int):
            _check_estimate(weight(sequence) * max(times, 0), what)
    elif operator == "**" and isinstance(left, int) and isinstance(right, int):
        # |left| ** right has about bits(|left|) * right bits; 0, 1 and -1 stay small.
        if right > 0 and abs(left) > 1 and (abs(left) - 1).bit_length() * right > MAX_INT_BITS:
            raise TemplateLimitError(f"'**' gives a number of more than {MAX_INT_BITS} bits")
    elif operator == "+" and isinstance(left, sequences) and isinstance(right, sequences):
        _check_estimate(weight(left) + weight(right), what)
    elif operator == "%" and isinstance(left, str):
        _check_estimate(_printf_estimate(left, right), what)


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox with the limits of this module."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.filters = {name: _guard_filter(name, f) for name, f in self.filters.items()}
        self.filters[LOOP_FILTER] = _loop_filter
        self.filters[OUTPUT_FILTER] = _output_filter
        self.filters[STATIC_FILTER] = _static_filter
        self.filters[CONCAT_FILTER] = _concat_filter

    def compile_template(self, source: str) -> jinja2.Template:
        """Like `from_string`, with the loops, calls and output made to pay (`bound`)."""
        tree = bound(self.parse(source))
        tree.set_environment(self)
        code = self.compile(tree, filename=TEMPLATE_FILENAME)
        return self.template_class.from_code(self, code, self.make_globals(None))

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _check_binop(operator, left, right)
        return _checked(super().call_binop(context, operator, left, right), f"'{operator}'")

    def call(
        self, context: Context, function: Any, /, *args: Any, **kwargs: Any
    ) -> Any:  # the base class spells these __context, __obj: positional only
        """Call from template code: a step each, and only callables that keep sizes bounded."""
        _budget().step()
        if isinstance(function, jinja2.Undefined | Macro):
            return super().call(context, function, *args, **kwargs)
        if isinstance(function, _BoundedFormat):
            return _checked(super().call(context, function, *args, **kwargs), "str.format()")
        if isinstance(function, LoopContext):  # `loop(children)` in a recursive loop
            iterable, *more = args
            return super().call(context, function, _stepping(iterable), *more, **kwargs)
        owner, name = getattr(function, "__self__", None), getattr(function, "__name__", "")
        if not _allowed_method(owner, name):
            raise SecurityError(f"calling {name or function!r} is not allowed in templates")
        if isinstance(owner, str):
            args = _check_str_call(owner, name, args, kwargs)
        return _checked(super().call(context, function, *args, **kwargs), f"{name}()")

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """`"...".format` and `.format_map`, as the sandbox does, with field widths bounded."""
        name = getattr(value, "__name__", None)
        text = getattr(value, "__self__", None)
        if name not in ("format", "format_map") or not isinstance(text, str):
            return None
        formatter: Formatter
        if isinstance(text, Markup):
            formatter = _EscapeFormatter(self, escape=text.escape)
        else:
            formatter = _Formatter(self)
        return _BoundedFormat(text, formatter, mapping=name == "format_map")


# -- compiling ---------------------------------------------------------------------------


def autoescape_lines(tree: nodes.Template) -> list[int]:
    """Lines of `{% autoescape %}` tags that could turn escaping off."""
    lines = []
    for node in tree.find_all((nodes.ScopedEvalContextModifier, nodes.EvalContextModifier)):
        for option in node.options:
            switched_on = isinstance(option.value, nodes.Const) and option.value.value is True
            if option.key == "autoescape" and not switched_on:
                lines.append(node.lineno)
    return lines


AUTOESCAPE_REFUSED = (
    "{% autoescape %} is not allowed: subscriber data in the HTML part is always escaped"
)


def bound(tree: nodes.Template) -> nodes.Template:
    """Refuse `{% autoescape false %}`; make loop iterations, concatenation and output pay.

    Output at the top level runs once per render, so only its expressions are charged;
    in loop, macro and call-block bodies, which can run many times, the static text too.
    """
    if lines := autoescape_lines(tree):
        raise jinja2.TemplateSyntaxError(AUTOESCAPE_REFUSED, lines[0])
    _bound_children(tree, repeats=None)
    return tree


def _filter(node: nodes.Expr, name: str, *args: nodes.Expr, lineno: int) -> nodes.Filter:
    return nodes.Filter(node, name, list(args), [], None, None, lineno=lineno)


def _bound_node(node: nodes.Node, repeats: int | None) -> nodes.Node:
    """`node`, rewritten; `repeats` is the line of the innermost loop or macro, if any."""
    if isinstance(node, nodes.For):
        assert isinstance(node.iter, nodes.Expr)  # typed Node in Jinja, always an Expr
        node.iter = _filter(node.iter, LOOP_FILTER, lineno=node.lineno)
        _bound_children(node, repeats=node.lineno)
        return node
    if isinstance(node, nodes.Macro | nodes.CallBlock):
        _bound_children(node, repeats=node.lineno)
        return node
    if isinstance(node, nodes.Output):
        charged: list[nodes.Expr] = []
        for child in node.nodes:
            if isinstance(child, nodes.TemplateData):
                if repeats is None:
                    charged.append(child)
                else:
                    charged.append(_filter(child, STATIC_FILTER, lineno=repeats))
            else:
                expr = _bound_node(child, repeats)
                assert isinstance(expr, nodes.Expr)
                charged.append(_filter(expr, OUTPUT_FILTER, lineno=child.lineno))
        node.nodes = charged
        return node
    _bound_children(node, repeats)
    if isinstance(node, nodes.Concat):
        first, *rest = node.nodes
        return _filter(first, CONCAT_FILTER, *rest, lineno=node.lineno)
    return node


def _bound_children(node: nodes.Node, repeats: int | None) -> None:
    for field, value in node.iter_fields():
        if isinstance(value, nodes.Node):
            setattr(node, field, _bound_node(value, repeats))
        elif isinstance(value, list):
            setattr(
                node,
                field,
                [_bound_node(v, repeats) if isinstance(v, nodes.Node) else v for v in value],
            )
