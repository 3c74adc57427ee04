"""A warehouse folder of fink-spark's Iceberg tables, read without Spark or Java.

`<path>/catalog.db` is the SQLite catalog (Iceberg's JDBC catalog tables, which pyiceberg's
SQL catalog reads as they are); the tables' files are under `<path>/<namespace>/<table>/`.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from fink_spark.errors import ConfigError

CATALOG = "fink"  # the Spark and pyiceberg name of a warehouse's own catalog
CATALOG_FILE = "catalog.db"
ALERTS, QUARANTINE, REJECTED = "alerts", "quarantine", "rejected"


def is_warehouse(path: str | Path) -> bool:
    """Whether a folder is a warehouse of fink-spark's Iceberg tables."""
    return "://" not in str(path) and (Path(path) / CATALOG_FILE).is_file()


def warehouse_tables(path: str | Path) -> dict[str, str]:
    """The tables of a warehouse's catalog: name -> namespace (without Spark)."""
    with sqlite3.connect(f"file:{Path(path).resolve() / CATALOG_FILE}?mode=ro", uri=True) as connection:
        rows = connection.execute("SELECT table_namespace, table_name FROM iceberg_tables WHERE catalog_name = ?",
                                  (CATALOG,)).fetchall()
    return {name: namespace for namespace, name in rows}


def metadata_location(path: str | Path, table: str = ALERTS) -> str:
    """The current metadata file of a warehouse's table: what Spark's Iceberg source loads by
    path, without a catalog."""
    namespace = warehouse_table(path, table).split(".")[0]
    with sqlite3.connect(f"file:{Path(path).resolve() / CATALOG_FILE}?mode=ro", uri=True) as connection:
        (location,) = connection.execute(
            "SELECT metadata_location FROM iceberg_tables WHERE catalog_name = ? AND table_namespace = ? AND table_name = ?",
            (CATALOG, namespace, table)).fetchone()
    return str(location)


def check_one_table(path: str | Path, table: str) -> None:
    """A Parquet folder holds one table, `alerts`: a clear error for any other asked of it."""
    if table != ALERTS and not is_warehouse(path):
        raise ConfigError(f"{path} is a Parquet folder, of one table: --table {table} names a table of an Iceberg "
                          "warehouse (filters with 'table' write Iceberg tables).")


def warehouse_table(path: str | Path, table: str = ALERTS) -> str:
    """`<namespace>.<table>` of a warehouse's one table of that name, or a clear error."""
    tables = warehouse_tables(path)
    if table not in tables:
        raise ConfigError(f"{path} holds no table {table!r} (it holds {', '.join(sorted(tables)) or 'none'}).")
    return f"{tables[table]}.{table}"


def load_pyiceberg(path: str | Path, table: str = ALERTS) -> Any:
    """A warehouse's table as pyiceberg reads it (no Spark, no Java), nulls kept (`keep_null_lists`)."""
    from pyiceberg.catalog.sql import SqlCatalog

    keep_null_lists()
    root = Path(path).resolve()
    catalog = SqlCatalog(CATALOG, uri=f"sqlite:///{root / CATALOG_FILE}", warehouse=root.as_uri())
    return catalog.load_table(warehouse_table(root, table))


def keep_null_lists() -> None:
    """Make pyiceberg's reader return a null list of structs as null, not [].

    pyiceberg 0.12 rebuilds each list of structs it reads without the list's validity
    (apache/iceberg-python #3833; the fix, #3834, is not released): an LSST alert without
    previous sources, or a ZTF alert without history, would read as one with an empty
    history. This puts the nulls back where the file had them, in every pyiceberg read of
    this process; where pyiceberg keeps them already, it changes nothing.
    """
    from pyiceberg.io.pyarrow import ArrowProjectionVisitor

    rebuild = ArrowProjectionVisitor.list
    if getattr(rebuild, "keeps_nulls", False):
        return

    def list_with_nulls(self: Any, list_type: Any, list_array: Any, value_array: Any) -> Any:
        result = rebuild(self, list_type, list_array, value_array)
        if result is None or list_array is None or list_array.null_count == result.null_count:
            return result
        return type(result).from_arrays(result.offsets, result.values, type=result.type, mask=list_array.is_null())

    list_with_nulls.keeps_nulls = True  # type: ignore[attr-defined]
    ArrowProjectionVisitor.list = list_with_nulls  # type: ignore[method-assign]
