"""Looking at what a job kept, without Spark.

- `explore`: selections of alerts, tables in the terminal, summaries (`fink-spark explore`).
- `plots`: cutouts, light curves, cards and summaries as pictures (the `plots` extra).
"""
