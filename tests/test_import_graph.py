"""The import graph points one way: zoo_ref <- compile_passes <- zoo (no arrows back up), and no module of
zoo_ref imports a module that imports it back."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"zoo_ref": set(), "compile_passes": {"zoo_ref"}, "zoo": {"zoo_ref", "compile_passes"}}


def imports(path: Path, package: str):
    """Absolute module names a file imports (relative imports resolved)."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    here = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = list(here[:len(here) - node.level + 1]) if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names}
    return out


def test_layers_import_only_downwards():
    for package, allowed in LAYERS.items():
        for path in (ROOT / package).rglob("*.py"):
            for name in imports(path, package):
                top = name.split(".")[0]
                if top in LAYERS and top != package:
                    assert top in allowed, f"{path.relative_to(ROOT)} imports {name} ({package} may import {allowed})"


def test_zoo_ref_modules_have_no_cycles():
    files = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
             for p in (ROOT / "zoo_ref").rglob("*.py")}
    graph = {m: {i for i in imports(p, "zoo_ref") if i in files and i != m} for m, p in files.items()}

    def reaches(a, b, seen=()):
        return any(n == b or (n not in seen and reaches(n, b, (*seen, n))) for n in graph[a])
    cycles = [(a, b) for a in graph for b in graph[a] if not a.startswith(b) and reaches(b, a)
              and not b == a.rsplit(".", 1)[0]]
    assert not cycles, cycles
