"""nextbest beyond its own database: the Parquet export, reports on DuckDB and Spark over it, and
experiments that nextbest did not run, analysed from the user's own files or tables."""

from nextbest.warehouse.exporter import ExportError, ExportResult, export
from nextbest.warehouse.tables import EXPORTED, arrow_schema, schema_document

__all__ = ["EXPORTED", "ExportError", "ExportResult", "arrow_schema", "export", "schema_document"]
