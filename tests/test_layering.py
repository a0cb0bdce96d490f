"""The layer order of docs/architecture.md holds: every module of recsys_emb (read with ast, nothing
imported) imports only from its own layer or lower ones, and no modules import each other in a cycle; and
the torch-only modules it lists load no TorchRec, FBGEMM or Optuna, directly or through what they import."""

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


HEAVY = ("torchrec", "fbgemm_gpu", "optuna")
"""What the torch-only modules must not load (the GPU machines' image has none of them)."""


def torch_only_modules(doc: Path) -> List[str]:
    """The module names of docs/architecture.md's torch-only block (``__init__`` is the package)."""
    block = re.search(r"<!-- torch-only:begin -->(.*?)<!-- torch-only:end -->", doc.read_text(), re.S)
    assert block, f"{doc} has no <!-- torch-only:begin --> ... <!-- torch-only:end --> block"
    names = block.group(1).replace("```text", "").replace("```", "").split()
    return [PACKAGE if n == "__init__" else f"{PACKAGE}.{n}" for n in names]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _load_time_imports(body: List[ast.stmt]) -> List[ast.stmt]:
    """The import statements that run when a module is loaded: at module level and in class bodies,
    ``if`` / ``try`` / ``with`` blocks included; not in functions, nor under ``if TYPE_CHECKING:``."""
    out: List[ast.stmt] = []
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.append(node)
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                out += _load_time_imports(node.body)
            out += _load_time_imports(node.orelse)
        elif isinstance(node, ast.Try):
            for part in (node.body, node.orelse, node.finalbody, *[h.body for h in node.handlers]):
                out += _load_time_imports(part)
        elif isinstance(node, (ast.With, ast.ClassDef)):
            out += _load_time_imports(node.body)
    return out


def _module_file(module: str, root: Path) -> Path:
    path = root.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def loaded_with(module: str, root: Path) -> Dict[str, str]:
    """Every module that importing ``module`` loads, its parent packages and what they import included:
    ``{module: the package module that imports it first}`` (``module`` itself and outside packages too)."""
    found: Dict[str, str] = {}
    todo = [(module, "")]
    while todo:
        name, by = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts)):  # a submodule's import runs its packages' __init__ first
            if ".".join(parts[:i]) not in found:
                todo.append((".".join(parts[:i]), by))
        if name in found:
            continue
        found[name] = by
        if parts[0] != PACKAGE:
            continue
        path = _module_file(name, root)
        is_package = path.name == "__init__.py"
        for node in _load_time_imports(ast.parse(path.read_text(), filename=str(path)).body):
            if isinstance(node, ast.Import):
                todo += [(a.name, name) for a in node.names]
                continue
            assert isinstance(node, ast.ImportFrom)
            base = node.module or ""
            if node.level:
                anchor = parts[: len(parts) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            todo.append((base, name))
            if base.split(".")[0] == PACKAGE:
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    sub_path = root.joinpath(*sub.split("."))
                    if sub_path.with_suffix(".py").exists() or sub_path.is_dir():
                        todo.append((sub, name))
    return found


def heavy_imports(modules: List[str], root: Path) -> List[str]:
    """Every load of TorchRec, FBGEMM or Optuna by one of ``modules``, as readable lines."""
    problems = []
    for module in modules:
        assert _module_file(module, root).exists(), f"{module} (docs/architecture.md's torch-only block) does not exist"
        for name, by in sorted(loaded_with(module, root).items()):
            if name.split(".")[0] in HEAVY:
                problems.append(f"{module} loads {name} (imported by {by})")
    return problems


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


def test_the_torch_only_modules_load_no_torchrec_fbgemm_or_optuna():
    modules = torch_only_modules(ROOT / "docs" / "architecture.md")
    assert {"recsys_emb", "recsys_emb.layer", "recsys_emb.tables.table_batched"} <= set(modules)
    problems = heavy_imports(modules, ROOT)
    assert not problems, "\n".join(problems)


def test_the_torch_only_check_follows_imports_through_packages_and_skips_deferred_ones(tmp_path):
    pkg = tmp_path / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import optuna\n")
    (pkg / "sub" / "__init__.py").write_text("from . import heavy\n")
    (pkg / "sub" / "heavy.py").write_text("try:\n    from torchrec.sparse import jagged_tensor\nexcept ImportError:\n    pass\n")
    (pkg / "sub" / "light.py").write_text("import torch\n")
    (pkg / "lazy.py").write_text("def f():\n    import fbgemm_gpu\n")
    (pkg / "top.py").write_text("from recsys_emb.lazy import f\n")
    assert heavy_imports(["recsys_emb", "recsys_emb.top"], tmp_path) == []
    assert heavy_imports(["recsys_emb.sub.light"], tmp_path) == [
        "recsys_emb.sub.light loads torchrec (imported by recsys_emb.sub.heavy)",
        "recsys_emb.sub.light loads torchrec.sparse (imported by recsys_emb.sub.heavy)"]


def test_training_serving_and_the_cli_load_no_sklearn_or_scipy():
    """What a `recsys-emb train` / `evaluate` process imports holds no scikit-learn or SciPy (seconds of
    start-up in every process): the AUC and log loss are recsys_emb.data.metrics' own."""
    problems = [f"{m} loads {name} (imported by {by})"
                for m in ("recsys_emb.cli", "recsys_emb.training", "recsys_emb.serving", "recsys_emb.data.metrics")
                for name, by in sorted(loaded_with(m, ROOT).items()) if name.split(".")[0] in ("sklearn", "scipy")]
    assert not problems, "\n".join(problems)
