"""The table reads of bench/comet.py, run by spark-submit.sh (with Comet or without).

    ./spark-submit.sh bench/comet_queries.py WAREHOUSE SURVEY

Prints one JSON line: each read's seconds (second run of each: the first warms the JVM) and a
digest of its whole result, to compare Spark's answers with Comet's value by value.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time

from fink_spark.config.session import build_session
from fink_spark.surveys import get_survey
from fink_spark.table.catalog import catalog_conf
from fink_spark.table.warehouse import warehouse_table


def main() -> None:
    warehouse, survey = sys.argv[1], get_survey(sys.argv[2])
    spark = build_session("fink-spark comet reads", conf=catalog_conf(warehouse))
    table = f"fink.{warehouse_table(warehouse)}"
    position = "candidate" if survey.name == "ztf" else "diaSource"
    reads = {
        # every value of every alert, folded into one hash per alert (the whole table would not fit the driver)
        "full scan, every column": "SELECT count(*) AS n, bit_xor(xxhash64(to_json(struct(* EXCEPT (ingest_time))))) AS h "
                                   f"FROM {table}",
        # a box of 10 degrees around a position, as a cone search's first step
        "position box, 4 columns": f"SELECT kafka_offset, {position}.ra, {position}.dec, obs_time FROM {table} "
                                   f"WHERE {position}.ra BETWEEN 150 AND 160 AND {position}.dec BETWEEN -10 AND 10 "
                                   "ORDER BY kafka_offset",
        "count per night and topic": f"SELECT topic, date(obs_time) AS night, count(*) AS n FROM {table} "
                                     "GROUP BY 1, 2 ORDER BY 1, 2",
    }
    seconds, digests = {}, {}
    for name, query in reads.items():
        for _ in range(2):
            started = time.monotonic()
            rows = spark.sql(query).collect()
            seconds[name] = round(time.monotonic() - started, 3)
        digests[name] = hashlib.sha256(repr([row.asDict(recursive=True) for row in rows]).encode()).hexdigest()
    print(json.dumps({"seconds": seconds, "digests": digests, "rows": len(rows)}))


if __name__ == "__main__":
    main()
