"""What a good Python engineer writes instead of fink-spark: confluent-kafka + fastavro + pyarrow.

    python bench/lean_consumer.py SERVERS TOPIC PARTITIONS COUNT OUTDIR USER PASSWORD_ENV

Reads COUNT alerts from the start of the listed PARTITIONS of TOPIC (e.g. `0,1`, or `0`
for one process of a pair), in batches of 1,000 messages; decodes each with the writer
schema from its key (parsed once per distinct key) and writes a zstd Parquet file every
5,000 alerts. Run one process per partition to use several cores.
"""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
from confluent_kafka import Consumer, TopicPartition

BATCH = 5000


def main() -> None:
    servers, topic, partitions, count, outdir, user, password_env = sys.argv[1:8]
    consumer = Consumer({
        "bootstrap.servers": servers, "group.id": f"lean-{os.getpid()}", "enable.auto.commit": False,
        "security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": user, "sasl.password": os.environ[password_env], "fetch.max.bytes": 104857600,
    })
    consumer.assign([TopicPartition(topic, int(p), 0) for p in partitions.split(",")])
    schemas: dict[bytes, object] = {}
    records: list[dict] = []
    done, part, wanted = 0, 0, int(count)
    Path(outdir).mkdir(parents=True, exist_ok=True)
    while done < wanted:
        for message in consumer.consume(1000, timeout=10):
            if message.error():
                continue
            key = message.key()
            if key not in schemas:
                schemas[key] = fastavro.parse_schema(json.loads(key))
            records.append(fastavro.schemaless_reader(io.BytesIO(message.value()), schemas[key]))
            done += 1
        if len(records) >= BATCH or (done >= wanted and records):
            pq.write_table(pa.Table.from_pylist(records), f"{outdir}/part-{os.getpid()}-{part:05d}.parquet",
                           compression="zstd")
            records, part = [], part + 1
    consumer.close()
    print(f"lean consumer: {done} alerts")


if __name__ == "__main__":
    main()
