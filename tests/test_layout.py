"""The package's layout: folders by stage, imports that point down the data flow only
(cli -> book -> runs -> training -> models -> data), no circle, no module over 400 lines.
The test reads every module's imports (top-level and inside functions) from its source."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ifm"
STAGES = ["data", "models", "training", "runs", "book", "cli"]      # the data flow, bottom first
MAX_LINES = 400


def stage_of(module: str) -> str:
    """'ifm.runs.fill' -> 'runs'; 'ifm.cli', 'ifm.api' and 'ifm' (the package's face: ifm.fit, ifm.load)
    -> 'cli'; 'ifm._version' -> 'data' (a constant every stage may read)."""
    parts = module.split(".")
    if module == "ifm._version":
        return "data"
    if len(parts) == 1:
        return "cli"
    return parts[1] if parts[1] in STAGES else "cli"


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        out[name] = path
    return out


def imports_of(name: str, path: Path) -> set[str]:
    """The ifm modules `name` imports, wherever in its source (relative imports resolved)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("ifm")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base.startswith("ifm"):
                known = modules()
                found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}
    return found - {name}


def test_every_import_points_down_the_data_flow():
    upward = []
    for name, path in modules().items():
        for other in imports_of(name, path):
            if STAGES.index(stage_of(other)) > STAGES.index(stage_of(name)):
                upward.append(f"{name} imports {other} ({stage_of(name)} -> {stage_of(other)})")
    assert not upward, "\n".join(sorted(upward))


def test_no_import_circle():
    graph = {name: {o for o in imports_of(name, path) if o in modules()} for name, path in modules().items()}
    state, circles = {}, []

    def visit(node, trail):
        state[node] = "open"
        for nxt in graph.get(node, ()):
            if state.get(nxt) == "open":
                circles.append(" -> ".join(trail[trail.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = "done"

    for node in graph:
        if node not in state:
            visit(node, [node])
    # a package's __init__ importing its own submodules is no circle of meaning
    circles = [c for c in circles if not all(part.startswith(c.split(" -> ")[0]) for part in c.split(" -> "))]
    assert not circles, "\n".join(circles)


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_module_over_400_lines(name):
    lines = len(modules()[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines"


def test_the_checker_catches_an_upward_import():
    assert STAGES.index(stage_of("ifm.book.studies")) > STAGES.index(stage_of("ifm.runs.fill"))
    assert stage_of("ifm.cli") == "cli" and stage_of("ifm.data.registry") == "data"


def defined_objects(path: Path) -> set[str]:
    """'f', 'Class' and 'Class.method' for every function and class a module defines at top level."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            if isinstance(node, ast.ClassDef):
                names |= {f"{node.name}.{item.name}" for item in node.body
                          if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))}
    return names


def book_includes():
    """Every (page, file, object) of a ```{literalinclude} file``` with `:pyobject: object` in book/."""
    book = PACKAGE.parent / "book"
    for page in sorted(book.glob("*.md")):
        lines = page.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.startswith("```{literalinclude}"):
                target = (book / line.split("}", 1)[1].strip()).resolve()
                options = [x for x in lines[i + 1:i + 5] if x.startswith(":pyobject:")]
                if options:
                    yield page.name, target, options[0].split(":", 2)[2].strip()


@pytest.mark.parametrize("page,target,obj", list(book_includes()))
def test_book_includes_name_code_that_exists(page, target, obj):
    """A moved method breaks the book build (-W) only at its end; this names the page at once."""
    assert target.exists(), f"book/{page} includes {target.name}, which does not exist"
    assert obj in defined_objects(target), f"book/{page} includes {obj} from {target.name}, which does not define it"


def test_book_includes_are_found():
    assert len(list(book_includes())) >= 8
