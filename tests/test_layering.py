"""The layer order of docs/architecture.md holds: every module of recsys_emb (read with ast, nothing
imported) imports only from its own layer or lower ones, and no modules import each other in a cycle."""

import ast
import re
from pathlib import Path
from typing import Dict, List, Set, Tuple

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "recsys_emb"


def layer_order(doc: Path) -> Dict[str, int]:
    """``{top-level module or package: layer}`` from the marked block of docs/architecture.md."""
    text = doc.read_text()
    block = re.search(r"<!-- layers:begin -->(.*?)<!-- layers:end -->", text, re.S)
    assert block, f"{doc} has no <!-- layers:begin --> ... <!-- layers:end --> block"
    order: Dict[str, int] = {}
    for line in block.group(1).splitlines():
        m = re.match(r"\s*(\d+)\s+(.+)$", line)
        if m:
            for name in m.group(2).split():
                order[name] = int(m.group(1))
    return order


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: Path, root: Path) -> List[Tuple[str, int]]:
    """``(imported module of the package, line)`` for every import in the file, at any depth."""
    tree = ast.parse(path.read_text(), filename=str(path))
    me = module_name(path, root)
    is_package = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == PACKAGE]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = me.split(".")[: len(me.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != PACKAGE:
                continue
            for a in node.names:  # "from pkg import sub" names a module when the file exists
                sub = f"{base}.{a.name}"
                sub_path = root.joinpath(*sub.split("."))
                out.append((sub if sub_path.with_suffix(".py").exists() or sub_path.is_dir() else base, node.lineno))
    return out


def layer_of(module: str, order: Dict[str, int]) -> Tuple[str, int]:
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else "__init__"
    assert key in order, f"module {module}: {key!r} is in no layer of docs/architecture.md; add it there"
    return key, order[key]


def check(root: Path, order: Dict[str, int]) -> List[str]:
    """Every violation of the layer order and every import cycle, as readable lines."""
    problems = []
    graph: Dict[str, Set[str]] = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        me = module_name(path, root)
        key, mine = layer_of(me, order)
        graph.setdefault(me, set())
        for target, line in imports(path, root):
            if target == me:
                continue
            tkey, theirs = layer_of(target, order)
            if theirs > mine:
                problems.append(f"{path.relative_to(root)}:{line}: {me} (layer {mine}, {key}) imports {target} "
                                f"(layer {theirs}, {tkey})")
            graph[me].add(target)
    # cycles among modules (an edge to a package counts as an edge to its __init__)
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                problems.append("import cycle: " + " -> ".join(stack[stack.index(n):] + [n]))
            elif n in graph and not state.get(n):
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if not state.get(m):
            visit(m)
    return problems


def test_modules_import_only_their_layer_or_lower_and_form_no_cycle():
    order = layer_order(ROOT / "docs" / "architecture.md")
    problems = check(ROOT, order)
    assert not problems, "\n".join(problems)


def test_the_check_finds_an_upward_import_and_a_cycle(tmp_path):
    pkg = tmp_path / PACKAGE
    (pkg / "low").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low" / "__init__.py").write_text("")
    (pkg / "low" / "a.py").write_text("from recsys_emb.low import b\n")
    (pkg / "low" / "b.py").write_text("def f():\n    from recsys_emb.low.a import x\n")
    (pkg / "high.py").write_text("import recsys_emb.low.a\n")
    (pkg / "low" / "c.py").write_text("from recsys_emb.high import y\n")
    problems = check(tmp_path, {"low": 1, "high": 2, "__init__": 3})
    assert any("recsys_emb.low.c (layer 1, low) imports recsys_emb.high (layer 2, high)" in p for p in problems)
    assert any(p.startswith("import cycle: recsys_emb.low.a -> recsys_emb.low.b -> recsys_emb.low.a") for p in problems)
    assert len(problems) == 2
