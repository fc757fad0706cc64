"""Dependencies run downward: verbs → steps → library → base, with no import cycles.

Every import in src/tunekit is read with `ast`, at module level or inside a function (a function-local
import is a real dependency, only a later one), and so is every "tunekit.module:attr" string (how the CLI,
the prep registry and `_target_` defaults name code they import lazily). Three rules:

- no import cycle between modules;
- no import from a lower layer into a higher one (a model loader never reaches into a step or a verb);
- no import between two different steps: prep, train, eval and export share code through the library.

`LAYERS` places each module by its longest matching name. `tunekit.corpus` is library, not a step: its
licence normalisation and metadata readers are used by prep, train (model cards) and export alike; only
its two commands (`corpus synth`, `corpus fma|jamendo`) are verbs. `tunekit.config` (Hydra composition)
is base; each step's own `<step>/config.py` schema belongs to its step.
"""

from __future__ import annotations

import ast
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

BASE, LIBRARY, STEP, VERB = 0, 1, 2, 3
LAYER_NAMES = {BASE: "base", LIBRARY: "library", STEP: "step", VERB: "verb"}

LAYERS: dict[str, int] = {
    # base: no tunekit dependency beyond each other
    "tunekit": BASE,  # the package itself (__version__); matches only `tunekit`, not its submodules
    "tunekit.atomic": BASE,
    "tunekit.errors": BASE,
    "tunekit.paths": BASE,
    "tunekit.file_digest": BASE,
    "tunekit.config": BASE,
    # library: audio, models, data formats, corpora, experiment loggers
    "tunekit.audio": LIBRARY,
    "tunekit.models": LIBRARY,
    "tunekit.data": LIBRARY,
    "tunekit.corpus": LIBRARY,
    "tunekit.loggers": LIBRARY,
    # steps: each one a package; never importing each other
    "tunekit.prep": STEP,
    "tunekit.train": STEP,
    "tunekit.eval": STEP,
    "tunekit.export": STEP,
    # verbs: the CLI and each verb's runner module
    "tunekit.cli": VERB,
    "tunekit.__main__": VERB,
    "tunekit.generate": VERB,
    "tunekit.families": VERB,  # the family registry the verbs consult (its parts are named, imported on use)
    "tunekit.corpus.synth": VERB,
    "tunekit.corpus.convert": VERB,
    "tunekit.prep.run": VERB,
    "tunekit.train.run": VERB,
    "tunekit.eval.run": VERB,
    "tunekit.export.run": VERB,
}

SRC = Path(__file__).resolve().parents[1] / "src"

# "tunekit.prep.ingest:ingest_track" (registry, CLI) or "tunekit.loggers.WandbLogger" (`_target_`).
_CODE_REF = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+(:[A-Za-z_]\w*)?$")


@dataclass(frozen=True)
class Edge:
    """One dependency of `source` on `target`, at `file:line`: an import statement or a "module:attr" string."""

    source: str
    target: str
    file: str
    line: int
    lazy: bool = False  # named in a string: imported when used, so it cannot take part in an import cycle

    def where(self) -> str:
        return f"{self.file}:{self.line}"


def module_names(root: Path, package: str) -> dict[str, Path]:
    """{dotted module name: file} for every .py file of `package` under `root` (a package is its __init__)."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """`name` if it is a module, else its nearest enclosing module (for `import pkg.mod.attr`-like names)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imports(module: str, path: Path, modules: dict[str, Path], package: str, shown: str) -> list[Edge]:
    """Every dependency of `module` on another module of `package`: imports anywhere in the file, and
    "module:attr" / "module.Attr" strings that name a module of the package. `shown` is the file as reported."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    out: list[Edge] = []

    def add(target: str | None, node: ast.AST, lazy: bool = False) -> None:
        if target is not None and target != module:
            out.append(Edge(module, target, shown, node.lineno, lazy))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == package or alias.name.startswith(package + "."):
                    add(_known(alias.name, modules), node)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if not (base == package or base.startswith(package + ".")):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                add(sub if sub in modules else _known(base, modules), node)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _CODE_REF.match(node.value):
            name = node.value.partition(":")[0]
            if ":" not in node.value and name not in modules:
                name = name.rpartition(".")[0]  # "module.Attr", as in a `_target_`
            if name in modules:
                add(name, node, lazy=True)
    return out


def layer_of(module: str, layers: dict[str, int], package: str) -> tuple[str, int] | None:
    """(matching layer key, layer) by the longest key that is the module or a package above it."""
    best = None
    for key, layer in layers.items():
        hit = module == key or (key != package and module.startswith(key + "."))
        if hit and (best is None or len(key) > len(best[0])):
            best = (key, layer)
    return best


def find_cycles(edges: list[Edge]) -> list[list[Edge]]:
    """One cycle (as its edges) per strongly connected group of modules, found with Tarjan's algorithm."""
    graph: dict[str, dict[str, Edge]] = {}
    for e in edges:
        graph.setdefault(e.source, {}).setdefault(e.target, e)
        graph.setdefault(e.target, {})
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            connect(v)

    cycles = []
    for group in groups:
        start = min(group)
        # Breadth-first from `start` inside the group back to `start`: the shortest cycle through it.
        previous: dict[str, Edge] = {}
        frontier = [start]
        while frontier and start not in previous:
            nxt = []
            for v in frontier:
                for w, e in sorted(graph[v].items()):
                    if w in group and w not in previous:
                        previous[w] = e
                        nxt.append(w)
            frontier = nxt
        path, v = [], start
        while True:
            e = previous[v]
            path.append(e)
            v = e.source
            if v == start:
                break
        cycles.append(path[::-1])
    return cycles


def violations(root: Path, package: str, layers: dict[str, int], steps: set[str], prefix: str = "") -> list[str]:
    """Every broken rule in `package` under `root`, one line each with file:line (paths shown with `prefix`)."""
    modules = module_names(root, package)
    edges = sorted({
        e for m, p in modules.items() for e in imports(m, p, modules, package, prefix + p.relative_to(root).as_posix())
    }, key=lambda e: (e.file, e.line, e.target))
    out = []
    unplaced = sorted(m for m in modules if layer_of(m, layers, package) is None)
    out += [f"{m}: not in any layer; add it to LAYERS in tests/test_layers.py" for m in unplaced]
    for cycle in find_cycles([e for e in edges if not e.lazy]):
        chain = " -> ".join([cycle[0].source] + [e.target for e in cycle])
        out.append(f"import cycle {chain} ({', '.join(e.where() for e in cycle)})")
    for e in edges:
        src, dst = layer_of(e.source, layers, package), layer_of(e.target, layers, package)
        if src is None or dst is None:
            continue
        if dst[1] > src[1]:
            out.append(
                f"{e.where()}: {e.source} ({LAYER_NAMES[src[1]]}) imports {e.target} ({LAYER_NAMES[dst[1]]}): "
                "dependencies run downward"
            )
        elif src[1] == dst[1] == STEP and src[0] in steps and dst[0] in steps and src[0] != dst[0]:
            out.append(f"{e.where()}: step {src[0]} imports step {dst[0]} ({e.target}): steps share code through the library")
    return out


STEPS = {k for k, v in LAYERS.items() if v == STEP}


def test_tunekit_dependencies_run_downward_without_cycles():
    found = violations(SRC, "tunekit", LAYERS, STEPS, prefix="src/")
    assert not found, f"{len(found)} layering problem(s):\n" + "\n".join(found)


def test_every_layer_key_names_a_module():
    """A renamed or removed module must leave LAYERS too, or its rule silently stops applying."""
    modules = module_names(SRC, "tunekit")
    stale = sorted(k for k in LAYERS if k not in modules)
    assert not stale, f"LAYERS keys that are no module of tunekit: {stale}"


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def test_the_checker_catches_cycles_upward_and_cross_step_imports(tmp_path):
    _write(tmp_path, {
        "fake/__init__.py": "",
        "fake/base.py": """\
            def helper():
                from fake.lib import thing  # upward, inside a function
                return thing
            """,
        "fake/lib/__init__.py": "",
        "fake/lib/thing.py": "from ..base import helper\n",
        "fake/lib/other.py": "import fake.lib.thing\nTARGET = 'fake.a.x:run'\n",
        "fake/a/__init__.py": "",
        "fake/a/x.py": "from fake.b import y\n\ndef run():\n    pass\n",
        "fake/b/__init__.py": "",
        "fake/b/y.py": "from fake.lib import other\n",
        "fake/cli.py": "import fake.a.x\nfrom fake.b.y import *\n",
    })
    layers = {"fake": BASE, "fake.base": BASE, "fake.lib": LIBRARY, "fake.a": STEP, "fake.b": STEP, "fake.cli": VERB}
    found = violations(tmp_path, "fake", layers, {"fake.a", "fake.b"})
    text = "\n".join(found)
    assert "import cycle fake.base -> fake.lib.thing -> fake.base (fake/base.py:2, fake/lib/thing.py:1)" in found, text
    assert any(f.startswith("fake/base.py:2: fake.base (base) imports fake.lib.thing (library)") for f in found), text
    assert any(f.startswith("fake/a/x.py:1: step fake.a imports step fake.b (fake.b.y)") for f in found), text
    assert any(f.startswith("fake/lib/other.py:2: fake.lib.other (library) imports fake.a.x (step)") for f in found), text
    assert len(found) == 4, text  # the verb's imports and the library's own imports are allowed

    # The same package with the three problems fixed passes.
    _write(tmp_path, {
        "fake/base.py": "def helper():\n    return 1\n",
        "fake/a/x.py": "from fake.lib import other\n",
        "fake/lib/other.py": "import fake.lib.thing\n",
    })
    assert violations(tmp_path, "fake", layers, {"fake.a", "fake.b"}) == []


def test_unplaced_modules_are_reported(tmp_path):
    _write(tmp_path, {"fake/__init__.py": "", "fake/new.py": "", "fake/base.py": ""})
    found = violations(tmp_path, "fake", {"fake": BASE, "fake.base": BASE}, set())
    assert found == ["fake.new: not in any layer; add it to LAYERS in tests/test_layers.py"]
