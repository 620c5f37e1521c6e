"""The architecture, checked from the source's imports: layers (the order is written once, below), no cycles, and
each heavy framework imported by its one owner only. Lazy imports inside functions count too."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "imgsearch"

# Lowest first. A module may import modules of its own layer or lower, never higher. Packages count as one unit.
LAYERS = [
    ("foundations", {"errors", "config", "failures", "vectors", "progress", "filters", "procmem"}),
    ("files and pixels", {"layout", "imaging", "buckets", "sources", "samples", "milvus_standalone", "s3_standalone"}),
    ("formats and models", {"dataset", "models"}),
    ("shared core", {"core", "catalog", "reduce", "jobs", "duplicates", "samepicture"}),
    ("vector store", {"store"}),
    ("engines and queries", {"engines", "query", "browse"}),
    ("use cases", {"pipeline", "evaluation", "service", "doctor", "quantize"}),
    ("edges", {"server", "cli", "testing", "__main__"}),
]
LAYER_OF = {unit: i for i, (_, units) in enumerate(LAYERS) for unit in units}

OWNERS = {  # third-party package -> the only place in imgsearch that may import it
    "pyspark": "engines/spark/",
    "fastapi": "server/", "starlette": "server/", "uvicorn": "server/", "prometheus_client": "server/",
    "pymilvus": "store.py", "milvus_lite": "store.py",
    "onnxruntime": "models/",
    "faiss": "duplicates.py",
    "cv2": "samepicture.py",
    "open_clip": "models/",
}


def modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).with_suffix("")
        parts = list(rel.parts[:-1]) if rel.name == "__init__" else list(rel.parts)
        out[".".join(["imgsearch", *parts])] = path
    return out


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Every imgsearch module and third-party top-level package this file imports (at any depth)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    return found


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports(p, m, set(mods)) for m, p in mods.items()}


def test_every_module_has_a_layer(graph):
    missing = {unit_of(m) for m in graph} - set(LAYER_OF) - {"__init__"}
    assert not missing, f"add these to LAYERS: {missing}"


def test_no_module_imports_a_higher_layer(graph):
    bad = []
    for mod, deps in graph.items():
        if unit_of(mod) == "__init__":
            continue
        for dep in deps:
            if dep.startswith("imgsearch.") and unit_of(dep) != unit_of(mod) and unit_of(dep) != "__init__":
                if LAYER_OF[unit_of(dep)] > LAYER_OF[unit_of(mod)]:
                    bad.append(f"{mod} ({LAYERS[LAYER_OF[unit_of(mod)]][0]}) imports {dep} "
                               f"({LAYERS[LAYER_OF[unit_of(dep)]][0]})")
    assert not bad, "\n".join(bad)


def test_no_import_cycle(graph):
    internal = {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(internal[m]):
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(d):] + [d]))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(internal):
        if m not in state:
            visit(m)


def test_frameworks_are_imported_by_their_owner_only(graph):
    mods = modules()
    bad = []
    for mod, deps in graph.items():
        rel = mods[mod].relative_to(SRC).as_posix()
        for dep in deps:
            owner = OWNERS.get(dep.split(".")[0])
            if owner and not rel.startswith(owner):
                bad.append(f"{rel} imports {dep} (only {owner} may)")
    assert not bad, "\n".join(bad)


def test_the_checks_see_violations(tmp_path):
    """The checker itself: a module importing upward and a cycle are found (so the tests above can fail)."""
    fake = {"imgsearch.config": {"imgsearch.cli"}, "imgsearch.cli": {"imgsearch.config"}}
    assert LAYER_OF[unit_of("imgsearch.cli")] > LAYER_OF[unit_of("imgsearch.config")]
    with pytest.raises(AssertionError, match="import cycle"):
        test_no_import_cycle(fake)
    src = tmp_path / "x.py"
    src.write_text("def f():\n    from imgsearch.pipeline import embed\n    import pyspark.sql\n")
    assert imports(src, "imgsearch.x", {"imgsearch.pipeline"}) == {"imgsearch.pipeline", "pyspark.sql"}
