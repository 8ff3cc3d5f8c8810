"""Size and layering rules of the package, read from its source with ``ast`` (nothing is imported).

- No function longer than 80 lines and no class longer than 250, docstrings not counted (any bare string
  statement: module, class, function and attribute docstrings).
- The package's import graph has no cycle. Edges are the module-level imports between ``st_mnr_plus`` modules
  (those inside ``if TYPE_CHECKING:`` and inside functions are left out, as are the implicit imports of a
  module's parent packages, which Python runs first and which cannot form a cycle at import time).
- The plugin layer goes one way: nothing under ``st_mnr_plus.plugins`` imports the registry, and the components
  import neither the registry nor the plugins.
- No import of another package's private names (``_name``, ``pkg._module``): where one cannot be avoided, the
  dependency's version range is pinned in ``pyproject.toml`` and a test fails when the name moves; list it in
  ``ALLOWED_PRIVATE_IMPORTS`` with that test's name.
- No block of code written twice: no run of ``MIN_DUPLICATE_LINES`` or more identical lines (normalised: blank
  lines, comments, imports and lone punctuation passed over, white space folded) in two places of the package, but
  for the pairs of files in ``ALLOWED_DUPLICATES`` (at most three, each by design).

Each failure lists every offender (file, line, name, size), so that the message says what to fix.
"""

from __future__ import annotations

import ast
import importlib.metadata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "st_mnr_plus"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE
MAX_FUNCTION_LINES = 80
MAX_CLASS_LINES = 250

MAX_MODULE_LINES = 700

#: Components: they must not know of the registry or the plugin layer.
COMPONENTS = (
    "st_mnr_plus.common",
    "st_mnr_plus.losses",
    "st_mnr_plus.sampler",
    "st_mnr_plus.datasets",
    "st_mnr_plus.evaluation",
    "st_mnr_plus.callbacks",
    "st_mnr_plus.models",
)
#: The only modules that may stand loose at the top of the package; every other top-level name is a folder.
TOP_LEVEL_FILES = {"__init__.py", "__main__.py", "cli.py"}
#: Folders of the package that hold data, not code (their tests' twin is the data they hold).
DATA_FOLDERS = {"data"}

#: (module, imported private name) -> the test that fails when the name moves (its range pinned in pyproject.toml).
ALLOWED_PRIVATE_IMPORTS: dict[tuple[str, str], str] = {
    # Whether a wrapper loss (AdaptiveLayerLoss) asked for per-column forwards: sentence-transformers exposes the
    # context manager that sets it (column_merging_disabled) but no reader.
    ("st_mnr_plus.losses.grouping", "_MERGING_DISABLED"): (
        "tests/losses/test_grouping.py::test_falls_back_inside_column_merging_disabled"
    ),
    # The base class of a __torch_dispatch__ mode: torch documents it there and has no public path for it.
    ("st_mnr_plus.bench.trace", "TorchDispatchMode"): (
        "tests/losses/test_gpu_path.py::test_mnrl_does_three_products_counted_the_same_way"
    ),
}


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    tree: ast.Module

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"

    @property
    def relative(self) -> str:
        return str(self.path.relative_to(ROOT.parent))


def load_modules() -> dict[str, Module]:
    modules = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        name = ".".join(parts)
        modules[name] = Module(name, path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    return modules


MODULES = load_modules()


# ------------------------------------------------------------------------------------------------- sizes


def docstring_lines(node: ast.AST) -> int:
    """Lines taken by bare string statements (docstrings) anywhere inside ``node``."""
    return sum(
        sub.end_lineno - sub.lineno + 1
        for sub in ast.walk(node)
        if isinstance(sub, ast.Expr) and isinstance(sub.value, ast.Constant) and isinstance(sub.value.value, str)
    )


def definitions(node: ast.AST, prefix: str = "") -> Iterator[tuple[str, ast.AST]]:
    """Every function and class inside ``node``, nested ones included, with its qualified name."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            name = f"{prefix}{child.name}"
            yield name, child
            yield from definitions(child, f"{name}.")
        else:
            yield from definitions(child, prefix)


def size(node: ast.AST) -> int:
    """Lines from the ``def``/``class`` line to the last line of the body, docstrings not counted."""
    return node.end_lineno - node.lineno + 1 - docstring_lines(node)


def oversized() -> list[str]:
    found = []
    for module in MODULES.values():
        for name, node in definitions(module.tree):
            is_class = isinstance(node, ast.ClassDef)
            limit = MAX_CLASS_LINES if is_class else MAX_FUNCTION_LINES
            lines = size(node)
            if lines > limit:
                kind = "class" if is_class else "function"
                found.append(f"{module.relative}:{node.lineno} {kind} {name}: {lines} lines (limit {limit})")
    return found


def test_no_function_over_80_lines_and_no_class_over_250():
    offenders = oversized()
    assert not offenders, "Too long (docstrings not counted):\n  " + "\n  ".join(offenders)


def test_no_module_over_700_lines():
    offenders = [
        f"{module.relative}: {lines} lines"
        for module in MODULES.values()
        if (lines := len(module.path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    ]
    assert not offenders, f"Modules over {MAX_MODULE_LINES} lines (split them by what they do):\n  " + "\n  ".join(
        offenders
    )


def test_the_top_level_holds_folders_and_three_files_and_each_folder_has_its_tests_twin():
    tests = Path(__file__).resolve().parent
    loose = sorted(p.name for p in ROOT.iterdir() if p.suffix == ".py" and p.name not in TOP_LEVEL_FILES)
    folders = sorted(p.name for p in ROOT.iterdir() if p.is_dir() and p.name != "__pycache__")
    missing = [name for name in folders if name not in DATA_FOLDERS and not (tests / name).is_dir()]
    assert not loose, f"Loose modules at the top of the package (only {sorted(TOP_LEVEL_FILES)}): {loose}"
    assert not missing, f"Package folders without a tests/ twin: {missing}"
    assert all((ROOT / name / "__init__.py").is_file() for name in folders if name not in DATA_FOLDERS)


def test_size_counts_lines_without_docstrings():
    tree = ast.parse(
        'def f():\n    """Doc\n    string."""\n    x = 1\n\n    return x\n\n\nclass C:\n    """Doc."""\n\n    a: int = 1\n    """Attribute doc."""\n'
    )
    (f_name, f), (c_name, c) = definitions(tree)
    assert (f_name, size(f)) == ("f", 4)  # def, x = 1, blank, return
    assert (c_name, size(c)) == ("C", 3)  # class, blank, a: int = 1


# ------------------------------------------------------------------------------------------------ imports


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def module_level_statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements run at import: into ``if``/``try``/``with`` blocks, not into functions, classes or TYPE_CHECKING."""
    for statement in body:
        yield statement
        if isinstance(statement, ast.If):
            if not is_type_checking(statement.test):
                yield from module_level_statements(statement.body)
            yield from module_level_statements(statement.orelse)
        elif isinstance(statement, ast.Try):
            for block in (
                statement.body,
                *(h.body for h in statement.handlers),
                statement.orelse,
                statement.finalbody,
            ):
                yield from module_level_statements(block)
        elif isinstance(statement, ast.With):
            yield from module_level_statements(statement.body)


def imported(module: Module, node: ast.Import | ast.ImportFrom) -> Iterator[tuple[str, str | None]]:
    """(module imported, name taken from it or ``None``) for one import statement, relative ones resolved."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name, None
        return
    base = node.module or ""
    if node.level:
        package = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
        package = package[: len(package) - node.level + 1]
        base = ".".join([*package, *([base] if base else [])])
    for alias in node.names:
        yield base, alias.name


def internal_targets(module: Module, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The package's modules one import statement loads (``from pkg import submodule`` counts the submodule)."""
    targets = set()
    for base, name in imported(module, node):
        if name is not None and f"{base}.{name}" in MODULES:
            targets.add(f"{base}.{name}")
        elif base in MODULES:
            targets.add(base)
    return targets


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module in MODULES.values():
        edges = set()
        for statement in module_level_statements(module.tree.body):
            if isinstance(statement, ast.Import | ast.ImportFrom):
                edges |= internal_targets(module, statement)
        graph[module.name] = edges - {module.name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as a cycle through them."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [cycle_through(graph, component) for component in components]


def cycle_through(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One import cycle inside a strongly connected component, from its first module back to it."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for target in sorted(graph[node] & members):
            if target == start:
                return [*paths[node], start]
            if target not in paths:
                paths[target] = [*paths[node], target]
                queue.append(target)
    return component


def test_the_import_graph_has_no_cycle():
    found = cycles(import_graph())
    assert not found, "Import cycles (module-level imports):\n  " + "\n  ".join(" -> ".join(c) for c in found)


def test_cycle_detection_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_the_package_imports():
    # Guards the rules above from passing on an empty graph.
    graph = import_graph()
    assert "st_mnr_plus.plugins.manager" in graph["st_mnr_plus.plugins.registry"]
    assert "st_mnr_plus.evaluation.readers" in graph["st_mnr_plus.evaluation.presets"]
    assert "st_mnr_plus.callbacks" not in graph["st_mnr_plus"]  # under TYPE_CHECKING only


# ---------------------------------------------------------------------------------------------- layering


def all_imports(module: Module) -> Iterator[tuple[int, str, str | None]]:
    """Every import of a module, at any depth (functions and TYPE_CHECKING included): (line, module, name)."""
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            for base, name in imported(module, node):
                yield node.lineno, base, name


def imports_of(module: Module, targets: tuple[str, ...]) -> list[str]:
    found = []
    for line, base, name in all_imports(module):
        full = f"{base}.{name}" if name else base
        for target in targets:
            if any(candidate == target or candidate.startswith(f"{target}.") for candidate in (base, full)):
                found.append(f"{module.relative}:{line} imports {full}")
                break
    return found


def under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(f"{prefix}.") for prefix in prefixes)


def test_nothing_under_the_registry_imports_it_back():
    offenders = [
        line
        for module in MODULES.values()
        if under(module.name, ("st_mnr_plus.plugins",)) and module.name != "st_mnr_plus.plugins.registry"
        for line in imports_of(module, ("st_mnr_plus.plugins.registry",))
    ]
    assert not offenders, "The plugin layer must not import the registry:\n  " + "\n  ".join(offenders)


def test_components_know_nothing_of_the_registry_or_the_plugins():
    offenders = [
        line
        for module in MODULES.values()
        if under(module.name, COMPONENTS)
        for line in imports_of(module, ("st_mnr_plus.plugins", "st_mnr_plus.recipe", "st_mnr_plus.cli"))
    ]
    assert not offenders, "Components must not import the registry or the plugins:\n  " + "\n  ".join(offenders)


def private_imports() -> tuple[list[str], set[tuple[str, str]]]:
    """(the private imports not allowed, the allowed ones seen)."""
    found, allowed = [], set()
    for module in MODULES.values():
        for line, base, name in all_imports(module):
            if not base or base.split(".")[0] in (PACKAGE, "__future__"):
                continue
            parts = [*base.split("."), name or ""]
            if not any(part.startswith("_") and not part.startswith("__") for part in parts):
                continue
            key = (module.name, name or base)
            if key in ALLOWED_PRIVATE_IMPORTS:
                allowed.add(key)
            else:
                found.append(f"{module.relative}:{line} imports {base}{f' -> {name}' if name else ''}")
    return found, allowed


def test_no_private_names_of_other_packages():
    offenders, allowed = private_imports()
    assert not offenders, (
        "Private names of other packages (use public API, or pin the range and list them in "
        "ALLOWED_PRIVATE_IMPORTS with a test that fails when they move):\n  " + "\n  ".join(offenders)
    )
    stale = set(ALLOWED_PRIVATE_IMPORTS) - allowed
    assert not stale, f"ALLOWED_PRIVATE_IMPORTS lists imports the package no longer makes: {sorted(stale)}"


# ---------------------------------------------------------------------------------------------- duplicates

MIN_DUPLICATE_LINES = 6
#: Pairs of files (relative to the repository) allowed to share a run of MIN_DUPLICATE_LINES lines, and why: each
#: by design. Keep it to three at most; a pair listed here that no longer shares a run fails the test too.
ALLOWED_DUPLICATES: dict[tuple[str, str], str] = {
    # The constructors' signatures: CachedMNRPlus takes CMNRL's arguments in CMNRL's order, MNRPlus MNRL's, and
    # both then ours; a drop-in must spell them out (tests/losses/test_options.py checks them against the table).
    ("st_mnr_plus/losses/cached.py", "st_mnr_plus/losses/mnr_plus.py"): "constructor signatures mirroring ST's",
}


def normalised_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) for the lines that count: white space folded; blank lines, comments, import lines and
    lines of punctuation alone (a closing bracket) left out."""
    kept = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = " ".join(raw.split())
        if not line or line.startswith("#") or not any(c.isalnum() for c in line):
            continue
        if line.startswith(("import ", "from ")) and " import" in f"{line} ":
            continue
        kept.append((number, line))
    return kept


def duplicate_pairs(files: dict[str, str], min_lines: int = MIN_DUPLICATE_LINES) -> dict[tuple[str, str], str]:
    """The pairs of files (a file with itself included) that share a run of ``min_lines`` identical normalised
    lines, each with one place it stands: ``{(a, b): "a:10 ~ b:40"}``."""
    places: dict[tuple[str, ...], list[tuple[str, int, int]]] = {}
    for name, text in sorted(files.items()):
        lines = normalised_lines(text)
        for start in range(len(lines) - min_lines + 1):
            window = tuple(line for _, line in lines[start : start + min_lines])
            places.setdefault(window, []).append((name, start, lines[start][0]))
    pairs: dict[tuple[str, str], str] = {}
    for found in places.values():
        for i, (name_a, index_a, line_a) in enumerate(found):
            for name_b, index_b, line_b in found[i + 1 :]:
                if name_a == name_b and abs(index_a - index_b) < min_lines:
                    continue  # a run overlapping itself (a repeated line), not a block written twice
                pairs.setdefault((name_a, name_b), f"{name_a}:{line_a} ~ {name_b}:{line_b}")
    return pairs


def package_duplicates() -> dict[tuple[str, str], str]:
    files = {module.relative: module.path.read_text(encoding="utf-8") for module in MODULES.values()}
    return duplicate_pairs(files)


def test_no_block_is_written_twice_but_the_pairs_allowed_by_design():
    assert len(ALLOWED_DUPLICATES) <= 3, "At most three pairs of duplicated blocks, each by design"
    found = package_duplicates()
    unexpected = {pair: where for pair, where in found.items() if pair not in ALLOWED_DUPLICATES}
    assert not unexpected, (
        f"Runs of {MIN_DUPLICATE_LINES} or more identical lines in two places (write it once, or list the pair in "
        "ALLOWED_DUPLICATES with why it is by design):\n  " + "\n  ".join(sorted(unexpected.values()))
    )
    stale = set(ALLOWED_DUPLICATES) - set(found)
    assert not stale, f"ALLOWED_DUPLICATES lists pairs that no longer share a run: {sorted(stale)}"


def test_the_duplicate_check_finds_a_block_written_twice():
    # Guards the rule above from passing on a detector that finds nothing.
    block = "\n".join(f"value_{i} = compute({i}, scale)  # step {i}" for i in range(6))
    files = {
        "a.py": f"import os\n{block}\n",
        "b.py": f"def f():\n    pass\n\n{block.replace('scale', '  scale')}\n",
        "c.py": f"{block}\nother = 1\n\n{block}\n",
        "d.py": "\n".join(block.splitlines()[:5]) + "\n",  # five lines only
        "e.py": "\n".join(["x = 1"] * 8) + "\n",  # one line repeated: overlaps itself
    }
    assert set(duplicate_pairs(files)) == {("a.py", "b.py"), ("a.py", "c.py"), ("b.py", "c.py"), ("c.py", "c.py")}
    assert duplicate_pairs(files)[("a.py", "b.py")] == "a.py:2 ~ b.py:4"


# ------------------------------------------------------------------------------------------------ packaging


def test_installed_versions_are_inside_the_declared_ranges():
    # The ranges in pyproject.toml are the ones the suite runs against: a run on a version outside one is a
    # run that could widen it (see the README's Development section), not a pass of the declared range.
    tomllib = pytest.importorskip("tomllib")
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT.parent / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = [Requirement(line) for line in project["dependencies"]]
    outside = []
    for requirement in requirements:
        installed = importlib.metadata.version(requirement.name)
        if not requirement.specifier.contains(installed, prereleases=True):
            outside.append(f"{requirement.name} {installed} is outside {requirement.specifier}")
    assert {r.name for r in requirements} >= {"sentence-transformers", "transformers", "datasets", "pyarrow"}
    assert not outside, "Installed versions outside pyproject.toml's ranges:\n  " + "\n  ".join(outside)


def test_ci_pins_every_lower_bound_in_constraints_oldest():
    # .ci/run tests the oldest admitted versions by installing under .ci/constraints-oldest.txt: a lower bound
    # moved in pyproject.toml without its pin would leave CI testing another version as "the oldest".
    tomllib = pytest.importorskip("tomllib")
    from packaging.requirements import Requirement
    from packaging.version import Version

    project = tomllib.loads((ROOT.parent / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    lower_bounds = {
        requirement.name: Version(spec.version)
        for requirement in map(Requirement, project["dependencies"])
        for spec in requirement.specifier
        if spec.operator == ">=" and requirement.name != "torch"  # torch==2.13.0 is installed first, at both ends
    }
    lines = (ROOT.parent / ".ci" / "constraints-oldest.txt").read_text(encoding="utf-8").splitlines()
    pins = {}
    for requirement in (Requirement(line) for line in lines if line.strip() and not line.startswith("#")):
        (spec,) = requirement.specifier
        assert spec.operator == "==", f"{requirement} in .ci/constraints-oldest.txt is not an == pin"
        pins[requirement.name] = Version(spec.version)
    assert pins == lower_bounds
