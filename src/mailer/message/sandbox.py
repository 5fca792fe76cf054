"""The Jinja2 environment for organiser templates: the immutable sandbox, bounded.

On top of Jinja2's ImmutableSandboxedEnvironment (no Python internals, no mutation):
the limits of limits.py, applied where Jinja lets an environment take part — intercepted
operators, calls, str.format, every filter — and, for what Jinja runs without asking the
environment (loops, `~`, output), by rewriting the parsed template (`bound`) so that
those go through filters that pay into the render's budget. Only methods that cannot
grow a value out of proportion may be called. `range` is not offered at all
(make_environment clears the globals), so there is no range to cap.
`{% autoescape false %}` is refused: it would print subscriber data unescaped.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator
from string import Formatter
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context, LoopContext, Macro, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter
from markupsafe import EscapeFormatter, Markup

from mailer.message.limits import (
    BUDGET,
    ESTIMATE_LIMIT,
    FILTER_CHECKS,
    MAX_LENGTH,
    Budget,
    arg,
    check_binop,
    check_estimate,
    check_str_call,
    checked,
    current_budget,
    join_estimate,
    too_big,
    weight,
)

# What a template can raise from ordinary operations on the values it is given (a
# format_map() missing a key, an index out of range, ...): a TemplateError for this one
# message, never a crash of the sender. Anything else is a bug of ours and propagates.
# AssertionError: Jinja's own filters assert on their arguments (`truncate(1)`: "expected
# length >= 3"), which a template chooses; `mailer validate` ended in a traceback on it.
RENDER_FAILURES = (
    jinja2.TemplateError,
    LookupError,
    AttributeError,
    TypeError,
    ValueError,
    ArithmeticError,
    RecursionError,
    AssertionError,
)

# Names of the filters the compiler inserts (see `bound`); a template cannot spell them.
LOOP_FILTER = "mailer:loop"
OUTPUT_FILTER = "mailer:output"
REPEATED_OUTPUT_FILTER = "mailer:repeated-output"
CONCAT_FILTER = "mailer:concat"
TEMPLATE_FILENAME = "<mailer template>"


def render(template: jinja2.Template, *args: Any, **kwargs: Any) -> str:
    """`template.render(...)` with a fresh budget for this one message."""
    token = BUDGET.set(Budget())
    try:
        return template.render(*args, **kwargs)
    finally:
        BUDGET.reset(token)


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
            raise too_big("a format field")
        result = super().format_field(value, format_spec)
        self._made += len(result)
        if self._made > ESTIMATE_LIMIT:
            raise too_big("the formatted string")
        return result


class _Formatter(_LimitedFields, SandboxedFormatter):
    pass


class _EscapeFormatter(_LimitedFields, SandboxedFormatter, EscapeFormatter):
    pass


def _guard_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """`function` with its size checks; Jinja's pass_context/... marks are kept (wraps)."""
    passes_first = getattr(function, "jinja_pass_arg", None) is not None
    check = FILTER_CHECKS.get(name)
    what = f"the {name!r} filter"

    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        lead, rest = (args[:1], args[1:]) if passes_first else ((), args)
        if rest and name == "join":
            items = list(rest[0])  # a generator (map, select) must be measured, then joined
            check_estimate(join_estimate(items, arg(rest[1:], kwargs, 0, "d") or ""), what)
            rest = (items, *rest[1:])
        elif rest and check is not None:
            check(rest[0], rest[1:], kwargs)
        return checked(function(*lead, *rest, **kwargs), what)

    return guarded


@jinja2.pass_context  # pass_context also keeps Jinja from running it at compile time
def _loop_filter(context: Context, iterable: Iterable[Any]) -> Iterator[Any]:
    """Every loop iteration is a step."""
    return _stepping(iterable)


def _stepping(iterable: Iterable[Any]) -> Iterator[Any]:
    budget = current_budget()
    for item in iterable:
        budget.step()
        yield item


def _output_filter(value: Any) -> Any:
    """Output is charged as built (escaping adds a few characters); Undefined is left to
    raise its usual error when printed.

    Hot: ~30 calls per message with the default layout, so the common case is inlined.
    Used at the top level, where Jinja may run it at compile time on a constant, which
    then is template text.
    """
    budget = BUDGET.get()
    if budget is None:
        return value
    if isinstance(value, str):
        budget.work -= len(value)
    elif not isinstance(value, jinja2.Undefined):
        budget.work -= weight(value, MAX_LENGTH)
    if budget.work < 0:
        budget.spend(0)  # raises
    return value


@jinja2.pass_context  # so that Jinja cannot fold it into a constant: it must run each time
def _repeated_output_filter(context: Context, value: Any) -> Any:
    """Output in a loop or macro body, static text and constants included."""
    return _output_filter(value)


@jinja2.pass_eval_context
def _concat_filter(eval_ctx: nodes.EvalContext, first: Any, *rest: Any) -> str:
    """`a ~ b ~ c`, as Jinja joins it, measured first."""
    parts = [first, *rest]
    check_estimate(sum(weight(p) for p in parts), "joining strings with '~'")
    joined = (markup_join if eval_ctx.autoescape else str_join)(parts)
    return str(checked(joined, "joining strings with '~'"))


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


# Every name a plain dict has as an attribute (its methods, object's dunders): for those the
# sandbox's own lookup has to run, since Jinja prefers the attribute to the item.
_DICT_ATTRIBUTES = frozenset(dir(dict))


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox with the limits of this module."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.filters = {name: _guard_filter(name, f) for name, f in self.filters.items()}
        self.filters[LOOP_FILTER] = _loop_filter
        self.filters[OUTPUT_FILTER] = _output_filter
        self.filters[REPEATED_OUTPUT_FILTER] = _repeated_output_filter
        self.filters[CONCAT_FILTER] = _concat_filter

    def compile_template(self, source: str) -> jinja2.Template:
        """Like `from_string`, with the loops, calls and output made to pay (`bound`)."""
        tree = bound(self.parse(source))
        tree.set_environment(self)
        code = self.compile(tree, filename=TEMPLATE_FILENAME)
        return self.template_class.from_code(self, code, self.make_globals(None))

    def getattr(self, obj: Any, attribute: str) -> Any:
        """`obj.attribute` in a template. The contexts we pass are plain dicts, and for a
        dict whose type has no such attribute the sandbox's lookup always ends in the item
        (Python's getattr raises AttributeError first: ~1 µs, 44 times a message). Only
        that case is short-cut: the item or Undefined, as the sandbox gives; any other
        object or name goes through the sandbox's own checks."""
        if type(obj) is dict and type(attribute) is str and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        check_binop(operator, left, right)
        return checked(super().call_binop(context, operator, left, right), f"'{operator}'")

    def call(
        self, context: Context, function: Any, /, *args: Any, **kwargs: Any
    ) -> Any:  # the base class spells these __context, __obj: positional only
        """Call from template code: a step each, and only callables that keep sizes bounded."""
        current_budget().step()
        if isinstance(function, jinja2.Undefined | Macro):
            return super().call(context, function, *args, **kwargs)
        if isinstance(function, _BoundedFormat):
            return checked(super().call(context, function, *args, **kwargs), "str.format()")
        if isinstance(function, LoopContext):  # `loop(children)` in a recursive loop
            iterable, *more = args
            return super().call(context, function, _stepping(iterable), *more, **kwargs)
        owner, name = getattr(function, "__self__", None), getattr(function, "__name__", "")
        if not _allowed_method(owner, name):
            raise SecurityError(f"calling {name or function!r} is not allowed in templates")
        if isinstance(owner, str):
            args = check_str_call(owner, name, args, kwargs)
        return checked(super().call(context, function, *args, **kwargs), f"{name}()")

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
            if repeats is not None:
                expr = _bound_node(child, repeats)
                assert isinstance(expr, nodes.Expr)
                line = repeats if isinstance(child, nodes.TemplateData) else child.lineno
                charged.append(_filter(expr, REPEATED_OUTPUT_FILTER, lineno=line))
            elif isinstance(child, nodes.TemplateData):
                charged.append(child)
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
