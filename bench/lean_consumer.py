"""The best one Python process does: confluent-kafka + fastavro + pyarrow, batched into Parquet.

    python bench/lean_consumer.py SERVERS TOPIC COUNT OUTDIR USER PASSWORD_ENV

Reads COUNT alerts from the start of TOPIC, decodes each with the writer schema from its
key (parsed once per distinct key), and writes a Parquet file every 5,000 alerts.
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
from confluent_kafka import Consumer

BATCH = 5000


def main() -> None:
    servers, topic, count, outdir, user, password_env = sys.argv[1:7]
    consumer = Consumer({
        "bootstrap.servers": servers, "group.id": f"lean-{os.getpid()}", "auto.offset.reset": "earliest",
        "enable.auto.commit": False, "security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": user, "sasl.password": os.environ[password_env], "fetch.max.bytes": 104857600,
    })
    consumer.subscribe([topic])
    schemas: dict[bytes, object] = {}
    records: list[dict] = []
    done, part = 0, 0
    Path(outdir).mkdir(parents=True, exist_ok=True)
    while done < int(count):
        for message in consumer.consume(500, timeout=10):
            if message.error():
                continue
            key = message.key()
            if key not in schemas:
                schemas[key] = fastavro.parse_schema(json.loads(key))
            records.append(fastavro.schemaless_reader(io.BytesIO(message.value()), schemas[key]))
            done += 1
        if len(records) >= BATCH or (done >= int(count) and records):
            pq.write_table(pa.Table.from_pylist(records), f"{outdir}/part-{part:05d}.parquet")
            records, part = [], part + 1
    consumer.close()
    print(f"lean consumer: {done} alerts")


if __name__ == "__main__":
    main()
