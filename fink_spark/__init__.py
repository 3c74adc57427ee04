"""fink-spark: receive, filter, keep and reprocess Fink alert streams with Apache Spark.

    from fink_spark import local_session, read_alerts, read_saved, read_table, apply_filters, cone, xmatch

The names are imported on first use, so that Spark's executors, which import the
package's modules, need none of the driver's dependencies.
"""

from __future__ import annotations

import importlib
from typing import Any

_API = {"read_alerts": "fink_spark.api", "read_saved": "fink_spark.api", "apply_filters": "fink_spark.api",
        "read_table": "fink_spark.table.read", "local_session": "fink_spark.config.session", "cone": "fink_spark.view.sky",
        "xmatch": "fink_spark.view.xmatch"}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:  # noqa: ANN401
    if name not in _API:
        raise AttributeError(f"module 'fink_spark' has no attribute {name!r}")
    return getattr(importlib.import_module(_API[name]), name)
