"""The layout rule of issue 18: an ``__init__.py`` only re-exports. Every package's ``__init__.py`` under
``src/nextbest`` (except the generated ``api/``) holds a docstring, imports and ``__all__``, nothing else,
so that a reader knows where an implementation is not."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "nextbest"
GENERATED = PACKAGE / "api"
# Package metadata the top-level package may declare (a literal), besides the re-exports.
METADATA = frozenset({"__version__"})


def _init_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("__init__.py") if GENERATED not in p.parents)


def _assigned_name(node: ast.stmt) -> str | None:
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
        return node.targets[0].id
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
        return node.target.id
    return None


def _allowed(node: ast.stmt, index: int) -> bool:
    if index == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
        return isinstance(node.value.value, str)  # the module docstring
    if isinstance(node, ast.Import | ast.ImportFrom):
        return True
    name = _assigned_name(node)
    value = getattr(node, "value", None)
    if name == "__all__":
        return isinstance(value, ast.List | ast.Tuple) and all(
            isinstance(e, ast.Constant) and isinstance(e.value, str) for e in value.elts
        )
    return name in METADATA and isinstance(value, ast.Constant)


def _offences(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        f"line {node.lineno}: {type(node).__name__}"
        for index, node in enumerate(tree.body)
        if not _allowed(node, index)
    ]


def test_the_rule_sees_every_package() -> None:
    names = {p.parent.name for p in _init_files()}
    assert {"nextbest", "decision", "catalog", "store", "simulate", "training"} <= names
    assert "api" not in names and "v1" not in names


@pytest.mark.parametrize("path", _init_files(), ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_init_files_only_re_export(path: Path) -> None:
    offences = _offences(path)
    assert not offences, (
        f"{path.relative_to(PACKAGE.parent)} holds more than a docstring, imports and __all__ "
        f"({', '.join(offences)}): move the implementation into a module and re-export it"
    )


def test_the_rule_catches_an_implementation(tmp_path: Path) -> None:
    module = tmp_path / "__init__.py"
    module.write_text('"""Doc."""\n\nfrom a import b\n\n__all__ = ["b"]\n\n\ndef run() -> None:\n    pass\n')
    assert _offences(module) == ["line 8: FunctionDef"]
    module.write_text('"""Doc."""\n\nimport a\n\n__all__ = ["a"]\nLIMIT = 3\n')
    assert _offences(module) == ["line 6: Assign"]
