"""Hot-path reads compiled once and run on a raw DBAPI cursor.

A decision reads the customer row and the contact history. Through SQLAlchemy's execution machinery
those two reads cost a quarter of the server's CPU per decision, most of it outside the database; here the
statement is compiled once per dialect and values still pass through SQLAlchemy's own type processors
(UTC datetimes, JSON), so what comes back is exactly what ``Connection.execute`` would return.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import CompoundSelect, Dialect, Insert, Select, Update, bindparam

__all__ = ["PreparedInsert", "PreparedSelect", "PreparedUpdate"]

_Processor = Callable[[Any], Any] | None


class PreparedSelect:
    def __init__(self, statement: Select[Any] | CompoundSelect[Any], dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        self.columns = tuple(c.name for c in statement.selected_columns)
        self._defaults = dict(compiled.params)
        self._order: Sequence[str] | None = compiled.positiontup if compiled.positional else None
        self._binds: dict[str, _Processor] = {
            name: compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
            for name in self._defaults
        }
        self._types = [c.type.dialect_impl(dialect) for c in statement.selected_columns]
        self._dialect = dialect
        # Result processors may depend on the driver's column type codes: built at the first fetch.
        self._results: list[_Processor] | None = None

    def fetch(self, dbapi_connection: Any, **params: Any) -> list[tuple[Any, ...]]:
        cursor = dbapi_connection.cursor()
        try:
            self.execute(cursor, **params)
            return self.rows(cursor)
        finally:
            cursor.close()

    def execute(self, cursor: Any, options: dict[str, Any] | None = None, **params: Any) -> None:
        """Runs the statement on ``cursor`` (``rows`` then reads its results: between the two, in
        psycopg's pipeline mode, other statements can be sent in the same round trip). ``options``
        go to the driver's ``execute`` (psycopg's ``prepare``)."""
        values = {**self._defaults, **params}
        for name, process in self._binds.items():
            if process is not None:
                values[name] = process(values[name])
        if self._order is None:
            cursor.execute(self.sql, values, **(options or {}))
        else:
            cursor.execute(self.sql, tuple(values[name] for name in self._order), **(options or {}))

    def rows(self, cursor: Any) -> list[tuple[Any, ...]]:
        """The results of ``execute`` on ``cursor``, through the columns' result processors."""
        rows = cursor.fetchall()
        if self._results is None:
            codes = [d[1] for d in cursor.description]
            self._results = [
                t.result_processor(self._dialect, code) for t, code in zip(self._types, codes, strict=True)
            ]
        processors = self._results
        if not any(processors):
            return [tuple(row) for row in rows]
        return [tuple(p(v) if p else v for p, v in zip(processors, row, strict=True)) for row in rows]


class PreparedInsert:
    """``INSERT`` of the given columns, compiled once, run with the driver's ``executemany``; values pass
    through SQLAlchemy's bind processors for their column types."""

    def __init__(self, statement: Insert, columns: Sequence[str], dialect: Dialect) -> None:
        table = statement.table
        compiled = statement.values({c: bindparam(c) for c in columns}).compile(dialect=dialect)
        self.sql = str(compiled)
        self._order: Sequence[str] | None = compiled.positiontup if compiled.positional else None
        processors = {c: table.c[c].type.dialect_impl(dialect).bind_processor(dialect) for c in columns}
        # In the driver's parameter order (positional) or the columns' (named): one pass per row.
        self._binds = [(c, processors[c]) for c in (self._order if self._order is not None else columns)]

    def params(self, rows: Sequence[dict[str, Any]]) -> list[Any]:
        """The driver parameters of each row, in the statement's order."""
        binds = self._binds
        if self._order is not None:
            return [tuple([row[c] if p is None else p(row[c]) for c, p in binds]) for row in rows]
        return [{c: row[c] if p is None else p(row[c]) for c, p in binds} for row in rows]

    def execute_many(self, dbapi_connection: Any, rows: Sequence[dict[str, Any]]) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.executemany(self.sql, self.params(rows))
        finally:
            cursor.close()

    def returning_many(self, dbapi_connection: Any, rows: Sequence[dict[str, Any]]) -> list[Any]:
        """For an ``INSERT ... RETURNING x``: the x of every row actually inserted."""
        cursor = dbapi_connection.cursor()
        out: list[Any] = []
        try:
            if self._order is None:  # psycopg: one pipelined round trip for the whole batch
                cursor.executemany(self.sql, self.params(rows), returning=True)
                while True:
                    out += [r[0] for r in cursor.fetchall()]
                    if not cursor.nextset():
                        break
            else:  # sqlite3: in-process, a statement per row costs microseconds
                for params in self.params(rows):
                    cursor.execute(self.sql, params)
                    out += [r[0] for r in cursor.fetchall()]
        finally:
            cursor.close()
        return out


class PreparedUpdate:
    """An ``UPDATE`` (or any statement without results) with named bind parameters, compiled once; runs
    one row at a time and returns the driver's row count."""

    def __init__(self, statement: Update, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        self._order: Sequence[str] | None = compiled.positiontup if compiled.positional else None
        self._binds: dict[str, _Processor] = {
            name: bind.type.dialect_impl(dialect).bind_processor(dialect)
            for name, bind in compiled.binds.items()
        }
        self._defaults = {k: v for k, v in compiled.params.items() if v is not None}

    def values(self, params: dict[str, Any]) -> Any:
        """The driver parameters of one execution."""
        # Literals in the statement (``version + 1``) are bind parameters with their values compiled in.
        params = {**self._defaults, **params}
        values = {n: (p(params[n]) if p else params[n]) for n, p in self._binds.items() if n in params}
        return values if self._order is None else tuple(values[n] for n in self._order)

    def execute_many(self, dbapi_connection: Any, rows: Sequence[dict[str, Any]]) -> None:
        """Runs the statement once per row with the driver's ``executemany``."""
        cursor = dbapi_connection.cursor()
        try:
            cursor.executemany(self.sql, [self.values(row) for row in rows])
        finally:
            cursor.close()

    def execute(self, dbapi_connection: Any, **params: Any) -> int:
        values = {n: (p(params[n]) if p else params[n]) for n, p in self._binds.items() if n in params}
        cursor = dbapi_connection.cursor()
        try:
            if self._order is None:
                cursor.execute(self.sql, values)
            else:
                cursor.execute(self.sql, tuple(values[n] for n in self._order))
            return int(cursor.rowcount)
        finally:
            cursor.close()
