"""Where each rule lives: every rule id of SPEC.md is named in a docstring or comment under guanhao/ (so
`grep -rn R-41 guanhao` finds the places that hold it), and in the README's index, where every place named
exists and its own source names the rule."""

import ast
import importlib
import inspect
import io
import re
import tokenize
from types import ModuleType

import pytest

from tests.conftest import ROOT

# The rule ids of SPEC.md (/work/shared/spec/SPEC.md), copied: the specification is not in this repository.
RULES = [
    "R-01", "R-02", "R-03", "R-04", "R-05",
    "R-10", "R-11", "R-12", "R-13", "R-14", "R-15", "R-16", "R-17", "R-18", "R-19", "R-20",
    "R-21", "R-22", "R-23", "R-24",
    "R-30", "R-31", "R-32", "R-33", "R-34",
    "R-40", "R-41", "R-42",
    "R-50",
    "R-60", "R-61", "R-62", "R-63",
]  # fmt: skip
RULE = re.compile(r"R-\d\d")
INDEX_HEADING = "## Where each rule lives"
INDEX_LINE = re.compile(r"^- \*\*(R-\d\d)\*\* ")


def named_in_code() -> dict[str, set[str]]:
    """Rule id → the files under guanhao/ whose docstrings or comments name it."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "guanhao").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        notes = [
            ast.get_docstring(node) or ""
            for node in ast.walk(ast.parse(text))
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        ]
        notes += [t.string for t in tokenize.generate_tokens(io.StringIO(text).readline) if t.type == tokenize.COMMENT]
        for rule in RULE.findall("\n".join(notes)):
            found.setdefault(rule, set()).add(str(path.relative_to(ROOT)))
    return found


def index() -> list[tuple[str, list[str]]]:
    """The README's index: (rule id, the places its line names), in the order of the lines."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert INDEX_HEADING in readme
    section = readme.split(INDEX_HEADING, 1)[1].split("\n## ", 1)[0]
    return [
        (match.group(1), re.findall(r"`([A-Za-z_.]+)`", line))
        for line in section.splitlines()
        if (match := INDEX_LINE.match(line))
    ]


def resolve(dotted: str) -> tuple[object, ModuleType]:
    """`upgrades.service.submit` → (the function, its module): the longest importable prefix under guanhao,
    then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            module = importlib.import_module("guanhao." + ".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        obj: object = module
        for name in parts[cut:]:
            obj = inspect.getattr_static(obj, name)
        return obj, module
    raise AssertionError(f"{dotted}: no such module under guanhao")


def source_of(obj: object, module: ModuleType) -> str:
    """The source of a module, class or function (decorators seen through); a constant's whole module."""
    for attribute in ("__func__", "wrapped", "fget"):
        obj = getattr(obj, attribute, obj)
    if inspect.ismodule(obj) or inspect.isclass(obj) or inspect.isfunction(obj):
        return inspect.getsource(obj)
    return inspect.getsource(module)


def test_every_rule_is_named_in_a_docstring_or_comment_under_guanhao():
    found = named_in_code()
    assert [r for r in RULES if r not in found] == []
    assert sorted(set(found) - set(RULES)) == [], "an id that is not a rule of SPEC.md"


def test_the_readme_index_lists_every_rule_once_in_order():
    assert [rule for rule, _ in index()] == RULES


@pytest.mark.parametrize("rule, places", index(), ids=[rule for rule, _ in index()])
def test_each_place_the_index_names_exists_and_names_its_rule(rule, places):
    assert places, f"{rule}: the index names no place"
    for dotted in places:
        obj, module = resolve(dotted)
        assert rule in source_of(obj, module), f"{dotted} does not name {rule}"
