"""The tables: where they are, how they are read and kept.

- `catalog`: the job's Iceberg catalog, its tables' names and properties, the tags of its appends.
- `warehouse`: a warehouse folder (its SQLite catalog) read without Spark, with pyiceberg.
- `read`: an output read with Spark as one table (`read_table`).
- `committed`: a Parquet output's committed files, read with pyarrow.
- `maintain`: Iceberg's maintenance procedures, safe beside the running stream.
- `duplicates`: a Kafka record written more than once kept once (`fink-spark audit --repair`).
"""
