"""Migrations: the head read off the files' names is Alembic's, and a database already at the head is
recognised with one query, without importing Alembic (a quarter of a second of every start)."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory

from nextbest.store import Database, upgrade
from nextbest.store.migrate import alembic_head_revision, current_revision, head_revision

VERSIONS = Path(__file__).resolve().parents[2] / "src" / "nextbest" / "store" / "migrations" / "versions"


def test_the_head_from_the_file_names_is_alembics() -> None:
    assert head_revision() == alembic_head_revision() is not None


def test_each_migration_is_named_by_its_revision_and_revises_the_one_before() -> None:
    config = Config()
    config.set_main_option("script_location", str(VERSIONS.parent))
    scripts = list(ScriptDirectory.from_config(config).walk_revisions())
    for script in scripts:
        assert script.path is not None and Path(script.path).name.startswith(f"{script.revision}_")
    revisions = sorted(s.revision for s in scripts)
    for before, after in itertools.pairwise(revisions):
        (script,) = [s for s in scripts if s.revision == after]
        assert script.down_revision == before


def test_a_fresh_database_has_no_revision_then_the_head(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/m.db")
    try:
        assert current_revision(db) is None
        upgrade(db)
        assert current_revision(db) == head_revision()
        upgrade(db)  # again: nothing to do
        assert current_revision(db) == head_revision()
    finally:
        db.dispose()


def test_a_database_at_the_head_is_upgraded_without_importing_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/h.db"
    db = Database(url)
    upgrade(db)
    db.dispose()
    code = (
        "import sys\n"
        "from nextbest.store import Database, upgrade\n"
        f"db = Database({url!r}); upgrade(db); db.dispose()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"
    # And one that is not at the head is migrated (Alembic imported then).
    fresh = f"sqlite:///{tmp_path}/f.db"
    code = code.replace(repr(url), repr(fresh))
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "alembic" in done.stdout
