"""The runs: the live stream and reprocessing, one pipeline for both.

- `pipeline`: read, decode, check the filters, filter and shape, write (`start_pipeline`).
- `stream`: the live job on Kafka topics: batch sizing, restarts at new writer schemas.
- `reprocess`: saved streams: Avro files, Parquet or Iceberg tables, Kafka offset ranges.
- `progress`: the micro-batch log line, from the queries' progress.
"""
