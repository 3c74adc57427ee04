"""fink-spark's Python API on saved alerts: read them as the job decodes them, keep the
bright ones, look at a few.

    python examples/saved_alerts.py data/sample/ztf-2026 data/sample/ztf-0p2
"""

from __future__ import annotations

import sys

from fink_spark import apply_filters, local_session, read_saved

spark = local_session("fink-spark-example", "local[2]")
alerts = read_saved(spark, sys.argv[1:], {"survey": "ztf"})
bright = apply_filters(alerts, [{"preset": "magnitude", "max": 18.0}])
print(f"{alerts.count()} alerts, {bright.count()} brighter than magnitude 18")
for row in bright.orderBy("candidate.magpsf").select("objectId", "candidate.magpsf", "cdsxmatch").take(3):
    print(f"{row.objectId} {row.magpsf:.2f} {row.cdsxmatch}")
spark.stop()
