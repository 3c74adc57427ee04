"""Transformations, DataFrame -> DataFrame, the same for the stream and for reprocessing.

- `decode`: Kafka records -> the alert struct and a reject reason; the alert flattened to columns.
- `filters`: the configuration's filters parsed, applied, and checked against the columns.
- `presets`: Fink's filters as named presets, in Spark SQL.
- `pandas_filters`: Fink's filters as they are, Python functions over pandas Series, in a pandas UDF.
- `dedup`: one row per alert, whatever the topics it came in.
- `sky`: where an alert is: `ra`, `dec` and its HEALPix index `_healpix_29`, in the JVM.
"""
