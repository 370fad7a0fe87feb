"""The structure docs/architecture.md §3 and §11 ask for, checked on the source: one unit of
work owns every transaction, SQL stays in storage/, and `make lint`'s import
contracts fail on a cycle or a layer crossing."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ehr_service.config import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "ehr_service"
# The only modules that begin, commit or roll back: the unit of work, the engine it
# drives, and schema migration (DDL, before any unit of work can run).
TRANSACTION_OWNERS = {"storage/unit_of_work.py", "storage/database.py", "storage/migrate.py"}
TRANSACTION_CALLS = {"begin", "begin_nested", "commit", "rollback", "transaction"}


def _sources() -> list[tuple[str, ast.Module]]:
    return [
        (str(path.relative_to(PACKAGE)), ast.parse(path.read_text(encoding="utf-8")))
        for path in sorted(PACKAGE.rglob("*.py"))
    ]


def test_only_the_unit_of_work_begins_commits_or_takes_savepoints() -> None:
    offenders = []
    for name, tree in _sources():
        if name in TRANSACTION_OWNERS:
            continue
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in TRANSACTION_CALLS
            ):
                offenders.append(f"{name}:{node.lineno} .{node.func.attr}()")
    assert offenders == []


def test_sql_only_in_storage() -> None:
    """Outside storage/, SQLAlchemy is a type (Connection) and its errors, never SQL."""
    offenders = []
    for name, tree in _sources():
        if name.startswith("storage/"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
                allowed = node.module == "sqlalchemy.exc" or all(
                    a.name == "Connection" for a in node.names
                )
                if not allowed:
                    offenders.append(f"{name}:{node.lineno} from {node.module} import ...")
            if isinstance(node, ast.Import) and any(
                a.name.startswith("sqlalchemy") for a in node.names
            ):
                offenders.append(f"{name}:{node.lineno} import sqlalchemy")
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in {"execute", "exec_driver_sql"}
            ):
                offenders.append(f"{name}:{node.lineno} .{node.func.attr}()")
    assert offenders == []


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    binary = Path(sys.executable).with_name("lint-imports")
    return subprocess.run(
        [str(binary), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": str(binary.parent)},
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("storage/tables.py", "import ehr_service.api.fhir", "Layers point downwards"),
        ("interactions/read.py", "import ehr_service.interactions.bundle", "No import cycles"),
        ("storage/resources.py", "import fastapi", "FastAPI and Starlette"),
        ("recognition/rules.py", "import ehr_service.audit.events", "do not depend on one"),
    ],
)
def test_make_lint_fails_on_a_crossing(tmp_path: Path, module: str, line: str, broken: str) -> None:
    root = tmp_path / "tree"
    shutil.copytree(PACKAGE, root / "ehr_service", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROJECT_ROOT / "pyproject.toml", root / "pyproject.toml")
    assert _lint_imports(root).returncode == 0, "the tree as it is keeps every contract"
    target = root / "ehr_service" / module
    target.write_text(target.read_text(encoding="utf-8") + f"\n{line}  # noqa\n", encoding="utf-8")
    result = _lint_imports(root)
    assert result.returncode != 0
    assert broken in result.stdout
