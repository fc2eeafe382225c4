"""The package's layers: every import inside vpt_explore points down (or sideways within one
subpackage), there is no import cycle, and only the package root has a module-level __getattr__.

Imports are read with ``ast`` from the source, including imports inside functions, so a lazy
import cannot hide an upward dependency.
"""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "vpt_explore"
# the README's flow, bottom to top: a module may import its own layer or any layer below it
LAYERS = ["versions", "errors", "config", "data", "backbones", "model", "methods", "analysis", "training", "apps",
          "__main__"]
# (importer, imported): each upward import, with the reason it is kept
ALLOWED_UP: dict = {}


def _modules():
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def _imports(name: str, path: Path):
    """Every vpt_explore module that ``name`` imports, anywhere in its source."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    known = {m for m, _ in _modules()}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # `from . import x` / `from .pkg import mod`: the names may be modules themselves
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        else:
            continue
        yield from (t for t in targets if t.startswith("vpt_explore.") or t == "vpt_explore")


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 else len(LAYERS)  # the root sits on top


def _graph():
    return {name: sorted(set(_imports(name, path)) - {name}) for name, path in _modules()}


def test_every_module_belongs_to_a_layer():
    for name, _ in _modules():
        if name != "vpt_explore":
            assert name.split(".")[1] in LAYERS, f"{name}: add its folder to LAYERS (and to the README)"


def test_imports_point_down():
    bad = []
    for name, targets in _graph().items():
        if name == "vpt_explore":
            continue  # the lazy map of the public API sits above everything
        for t in targets:
            if _layer(t) > _layer(name) and (name, t) not in ALLOWED_UP:
                bad.append(f"{name} -> {t}")
    assert not bad, "imports that point up the layers:\n" + "\n".join(bad)


def test_no_import_cycles():
    graph = {n: [t for t in ts if (n, t) not in ALLOWED_UP and t != "vpt_explore"]
             for n, ts in _graph().items() if n != "vpt_explore"}
    # a package's __init__ re-exporting its own modules is not a cycle with them
    graph = {n: [t for t in ts if not n.startswith(t + ".")] for n, ts in graph.items()}
    state, stack = {}, []

    def visit(n):
        state[n] = "open"
        stack.append(n)
        for t in graph.get(n, []):
            if state.get(t) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(t):] + [t]))
            if t not in state:
                visit(t)
        stack.pop()
        state[n] = "done"
    for n in graph:
        if n not in state:
            visit(n)


def test_only_the_root_has_a_module_getattr():
    for name, path in _modules():
        tree = ast.parse(path.read_text())
        defs = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
        if name != "vpt_explore":
            assert "__getattr__" not in defs, f"{name} defines a module-level __getattr__"


def test_the_checker_sees_lazy_imports():
    """PromptedViT imports the prompt-file module only inside save_prompts / load_prompts; the
    checker must still find it (an upward import hidden that way would fail test_imports_point_down)."""
    source = (PKG / "model" / "prompted.py").read_text()
    assert "\nfrom .prompt_file" not in source and "        from .prompt_file import" in source
    assert "vpt_explore.model.prompt_file" in _graph()["vpt_explore.model.prompted"]


def test_readme_layout_names_every_module_under_its_folder():
    """The README's Layout block lists each module of a subpackage in that folder's entry (and no
    folder that does not exist), so the map a new contributor reads matches the tree."""
    import re
    text = (PKG.parent / "README.md").read_text()
    block = text[text.index("## Layout"):]
    block = block[block.index("```") + 3:]
    block = block[:block.index("```")]
    entries, current = {}, None
    for line in block.splitlines():
        m = re.match(r"^  (\w+)/\s+(.*)", line)
        if m:
            current = m.group(1)
            entries[current] = m.group(2)
        elif current and line.startswith(" " * 17):
            entries[current] += " " + line.strip()
        else:
            current = None
    folders = sorted(p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    assert sorted(entries) == folders
    missing = [f"{d}/{f.stem}" for d in folders for f in sorted((PKG / d).rglob("*.py"))
               if f.stem != "__init__" and not re.search(rf"\b{f.stem}\b", entries[d])]
    assert not missing, f"README Layout does not mention: {missing}"
