"""A Kafka record written more than once into an Iceberg table, kept once.

The partitions that hold a (topic, partition, offset) twice are rewritten with one copy of
each record, in one commit: a dynamic partition overwrite validated against the snapshot
read, so that a commit into those partitions meanwhile (the running stream's) fails it
rather than being overwritten. Rows with no Kafka position (alerts reprocessed from files)
are kept as they are.
"""

from __future__ import annotations

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from fink_spark.transform.decode import KAFKA_POSITION

POSITION = list(KAFKA_POSITION)  # as Spark's joins and dropDuplicates take column names


def remove_duplicate_records(spark: SparkSession, name: str) -> int:
    """Keep one row of each Kafka record of table `name`; returns the rows removed."""
    snapshot = spark.sql(f"SELECT snapshot_id FROM {name}.snapshots ORDER BY committed_at DESC LIMIT 1").first()
    if snapshot is None:
        return 0
    rows = spark.sql(f"SELECT *, _partition FROM {name} VERSION AS OF {snapshot.snapshot_id}")
    doubled = rows.groupBy(*POSITION).count().where("count > 1 AND kafka_offset IS NOT NULL").cache()
    try:
        extra = doubled.agg(F.sum(F.col("count") - 1)).first()[0] or 0
        if not extra:
            return 0
        partitions = rows.join(F.broadcast(doubled.select(*POSITION)), POSITION, "left_semi").select("_partition").distinct()
        chosen = rows.join(F.broadcast(partitions), "_partition", "left_semi")
        positioned = F.col("kafka_offset").isNotNull()
        kept = chosen.where(positioned).dropDuplicates(POSITION).unionByName(chosen.where(~positioned))
        (kept.drop("_partition").writeTo(name).option("check-ordering", "false")
         .option("isolation-level", "serializable").option("validate-from-snapshot-id", str(snapshot.snapshot_id))
         .overwritePartitions())
        return int(extra)
    finally:
        doubled.unpersist()
