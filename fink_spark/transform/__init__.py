"""Transformations, DataFrame -> DataFrame, the same for the stream and for reprocessing.

- `decode`: Kafka records -> the alert struct and a reject reason; the alert flattened to columns.
- `filters`: the configuration's filters parsed, applied, and checked against the columns.
- `presets`: Fink's filters as named presets, in Spark SQL.
- `dedup`: one row per alert, whatever the topics it came in.
- `sky`: where an alert is: `ra`, `dec` and its HEALPix index `_healpix_29`, in the JVM.
"""
