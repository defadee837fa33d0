"""Home Assistant `value_template`s, compiled once and rendered in a bounded sandbox.

Templates arrive in discovery configs from anyone who can publish on the broker. Jinja2's
`ImmutableSandboxedEnvironment` (the engine Home Assistant uses) keeps them away from
Python's internals (`{{ ''.__class__ }}` is a SecurityError) but puts no limit on time or
memory: `{{ 9 ** 9 ** 9 }}`, `{{ 'x' * 10 ** 9 }}`, a loop over a `range`, a recursive macro
or a chain of `replace`s each stall or fill the process. So a template is refused at compile
time unless it is made of the node types below (no loops, no macros, no `set`, no imports,
no names but `value` and `value_json`), and what is left is bounded at render time:

- each node of a template runs at most once per render and the expression tree shares no
  sub-results (no `set`), so a render costs O(template size x payload size), as long as no
  single operation amplifies its input: repetition (`*` on text or lists), big-integer
  products and powers, `%`-formatting widths and `replace` are capped (`MAX_OUTPUT`
  characters, `MAX_BITS` bits), and the filters, tests and methods are allowlists of
  operations linear in their input (no `regex_*`: backtracking; no `range`, `lipsum`, …:
  there are no globals at all);
- the caller measures each render against a time budget anyway (homeassistant.py), a
  second line for what this analysis missed.

Filters follow Home Assistant's semantics where they differ from Jinja2's: `float` and
`int` without a default raise on a value that is not a number (Jinja2's return 0, a false
reading), so a missing field is a skipped reading, never a zero.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import BuiltinMethodType
from typing import Any

from jinja2 import Template, Undefined, nodes
from jinja2.exceptions import SecurityError
from jinja2.filters import FILTERS
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.tests import TESTS

MAX_OUTPUT = 4096  # characters one repetition, replace or %-format may add
MAX_BITS = 8192  # bits of an integer product or power
MAX_DEPTH = 48  # nesting of the template's syntax tree
MAX_FORMAT_WIDTH = 64  # width and precision of a %-format conversion

NAMES = frozenset({"value", "value_json"})

# the syntax a value template may use: expressions, `if`, text; nothing that loops, defines
# (macros, `set`, blocks) or loads (include, import, extends)
_NODES: frozenset[type[nodes.Node]] = frozenset(
    {
        nodes.Template,
        nodes.Output,
        nodes.TemplateData,
        nodes.If,
        nodes.Name,
        nodes.Const,
        nodes.Tuple,
        nodes.List,
        nodes.Dict,
        nodes.Pair,
        nodes.Keyword,
        nodes.CondExpr,
        nodes.Filter,
        nodes.Test,
        nodes.Call,
        nodes.Getitem,
        nodes.Getattr,
        nodes.Slice,
        nodes.Concat,
        nodes.Compare,
        nodes.Operand,
        nodes.Mul,
        nodes.Div,
        nodes.FloorDiv,
        nodes.Add,
        nodes.Sub,
        nodes.Mod,
        nodes.Pow,
        nodes.And,
        nodes.Or,
        nodes.Not,
        nodes.Neg,
        nodes.Pos,
    }
)

# methods a template may call, each linear in its input; on str, dict and list only
METHODS = frozenset(
    {
        "capitalize",
        "casefold",
        "count",
        "endswith",
        "find",
        "get",
        "index",
        "isalnum",
        "isalpha",
        "isdecimal",
        "isdigit",
        "isnumeric",
        "items",
        "keys",
        "lower",
        "lstrip",
        "partition",
        "removeprefix",
        "removesuffix",
        "rfind",
        "rpartition",
        "rsplit",
        "rstrip",
        "split",
        "startswith",
        "strip",
        "title",
        "upper",
        "values",
    }
)

_JINJA_FILTERS = (
    "abs",
    "capitalize",
    "count",
    "d",
    "default",
    "first",
    "join",
    "last",
    "length",
    "list",
    "lower",
    "max",
    "min",
    "string",
    "sum",
    "title",
    "tojson",
    "trim",
    "upper",
)

_MISSING: Any = object()

# a %-conversion: mapping key, flags, width, precision, length modifier, type
_CONVERSION = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d*))?[hlL]?(.)", re.DOTALL)


class TemplateRefused(ValueError):  # noqa: N818 - a refusal, raised to the config parser
    """A template sensord will not compile; the text says why."""


def _percent(fmt: str, args: object) -> str:
    """`fmt % args` with every width and precision at most MAX_FORMAT_WIDTH."""
    for match in _CONVERSION.finditer(fmt):
        for size in (match.group(1), match.group(2)):
            if size and (size == "*" or int(size) > MAX_FORMAT_WIDTH):
                raise SecurityError(f"format width or precision {size!r} is over the cap")
    return fmt % args


def _format(value: object, *args: object, **kwargs: object) -> str:
    return _percent(str(value), kwargs or args)


def _replace(value: object, old: str, new: str, count: int | None = None) -> str:
    text, old, new = str(value), str(old), str(new)
    times = text.count(old)
    if count is not None:
        times = min(times, max(count, 0))
    if times * (len(new) - len(old)) > MAX_OUTPUT:
        raise SecurityError("replace would grow the text over the cap")
    return text.replace(old, new, -1 if count is None else count)


def _float(value: object, default: object = _MISSING) -> object:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        if default is _MISSING:
            raise ValueError(f"float got invalid input {value!r}") from None
        return default


def _int(value: object, default: object = _MISSING, base: int = 10) -> object:
    try:
        if isinstance(value, str):
            return int(value, base)
        return int(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        if default is _MISSING:
            raise ValueError(f"int got invalid input {value!r}") from None
        return default


def _round(
    value: object, precision: int = 0, method: str = "common", default: object = _MISSING
) -> object:
    number = _float(value, default)
    if not isinstance(number, float):
        return number
    if method == "ceil":
        scale = 10.0**precision
        number = math.ceil(number * scale) / scale
    elif method == "floor":
        scale = 10.0**precision
        number = math.floor(number * scale) / scale
    elif method == "half":
        number = round(number * 2.0) / 2.0
    else:
        number = round(number, precision)
    return int(number) if precision == 0 else number


def _multiply(value: object, amount: float, default: object = _MISSING) -> object:
    number = _float(value, default)
    return number * amount if isinstance(number, float) else number


_TRUE_WORDS = frozenset({"true", "yes", "on", "enable", "1"})
_FALSE_WORDS = frozenset({"false", "no", "off", "disable", "0"})


def _bool(value: object, default: object = _MISSING) -> object:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    if default is _MISSING:
        raise ValueError(f"bool got invalid input {value!r}")
    return default


def _is_defined(value: object) -> object:
    if isinstance(value, Undefined):
        raise ValueError("is_defined: the value is undefined")
    return value


def _iif(
    value: object, if_true: object = True, if_false: object = False, if_none: object = _MISSING
) -> object:
    if value is None and if_none is not _MISSING:
        return if_none
    return if_true if value else if_false


def _from_json(value: object) -> object:
    return json.loads(str(value))


class _Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox with the amplifying operators capped and an allowlist of methods."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "%":
            if isinstance(left, str):
                return _percent(left, right)
            return left % right
        if operator == "*":
            seq, times = (left, right) if isinstance(left, str | list | tuple) else (right, left)
            if isinstance(seq, str | list | tuple):
                if isinstance(times, int) and len(seq) * times > MAX_OUTPUT:
                    raise SecurityError("repetition over the cap")
            elif (
                isinstance(left, int)
                and isinstance(right, int)
                and left.bit_length() + right.bit_length() > MAX_BITS
            ):
                raise SecurityError("integer product over the cap")
            return left * right
        if operator == "**":
            if (
                isinstance(left, int)
                and isinstance(right, int)
                and right > 0
                and abs(left) > 1
                and abs(left).bit_length() * right > MAX_BITS
            ):
                raise SecurityError("integer power over the cap")
            return left**right
        return super().call_binop(context, operator, left, right)

    def is_safe_callable(self, obj: Any) -> bool:
        return (
            isinstance(obj, BuiltinMethodType)
            and type(obj.__self__) in (str, dict, list)
            and obj.__name__ in METHODS
        )


def _environment() -> _Sandbox:
    env = _Sandbox(autoescape=False, cache_size=0, auto_reload=False)
    env.globals.clear()  # no range, lipsum, cycler, joiner, namespace, dict
    env.filters = {name: FILTERS[name] for name in _JINJA_FILTERS}
    env.filters.update(
        {
            "bool": _bool,
            "float": _float,
            "format": _format,
            "from_json": _from_json,
            "iif": _iif,
            "int": _int,
            "is_defined": _is_defined,
            "multiply": _multiply,
            "replace": _replace,
            "round": _round,
        }
    )
    env.tests = dict(TESTS)
    return env


ENV = _environment()


@dataclass(frozen=True, slots=True)
class ValueTemplate:
    """A compiled value template; `uses_json` says whether it reads `value_json`."""

    source: str
    render: Callable[[Mapping[str, object]], str]
    uses_json: bool


def _check(tree: nodes.Template) -> bool:
    """Refuse what the sandbox cannot bound (TemplateRefused); True if it reads value_json."""
    uses_json = False
    stack: list[tuple[nodes.Node, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        kind = type(node)
        if kind not in _NODES:
            raise TemplateRefused(f"{kind.__name__.lower()} is not allowed in a value template")
        if depth > MAX_DEPTH:
            raise TemplateRefused(f"nested deeper than {MAX_DEPTH}")
        if isinstance(node, nodes.Name):
            if node.ctx != "load" or node.name not in NAMES:
                raise TemplateRefused(f"name {node.name!r}: only value and value_json")
            uses_json = uses_json or node.name == "value_json"
        elif isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
            raise TemplateRefused(f"attribute {node.attr!r} is not allowed")
        elif isinstance(node, nodes.Call | nodes.Filter):
            if node.dyn_args is not None or node.dyn_kwargs is not None:
                raise TemplateRefused("*args and **kwargs are not allowed")
            if isinstance(node, nodes.Call) and not (
                isinstance(node.node, nodes.Getattr) and node.node.attr in METHODS
            ):
                raise TemplateRefused("only calls of the allowed str/dict/list methods")
        stack.extend((child, depth + 1) for child in node.iter_child_nodes())
    return uses_json


def compile_template(source: str, max_size: int) -> ValueTemplate:
    """Parse, check and compile once; TemplateRefused says why a template is refused."""
    if len(source) > max_size:
        raise TemplateRefused(f"{len(source)} characters > {max_size}")
    try:
        tree = ENV.parse(source)
    except Exception as exc:  # noqa: BLE001 - syntax errors and parser recursion alike
        raise TemplateRefused(f"does not parse: {type(exc).__name__}: {exc}") from None
    uses_json = _check(tree)
    try:
        template = ENV.from_string(tree)
    except Exception as exc:  # noqa: BLE001 - unknown filter/test, compiler limits
        raise TemplateRefused(f"does not compile: {type(exc).__name__}: {exc}") from None
    return ValueTemplate(source, _renderer(template), uses_json)


def _renderer(template: Template) -> Callable[[Mapping[str, object]], str]:
    """`template.render`, minus a new Context per call (measured 16 of its 27 us here).

    Jinja2 internals (CONVENTIONS 12; Jinja2 3.1): one Context per template, its `parent`
    dict (where names resolve, after the template's own `vars`) refilled per render, and
    the compiled `root_render_func` joined as `render` does. Safe because a checked
    template assigns nothing (no `set`, no blocks, no loops: `vars` stays empty) and one
    format object renders from one thread. Without Jinja2's traceback rewriting: the
    caller counts the error, it never shows it. test_homeassistant compares both paths."""
    context = template.new_context({})
    names = context.parent
    root = template.root_render_func

    def render(values: Mapping[str, object]) -> str:
        names.clear()
        names.update(values)
        return "".join(root(context))

    return render
