"""Looking at what a job kept, without Spark.

- `explore`: selections of alerts, tables in the terminal, summaries (`fink-spark explore`).
- `plots`: cutouts, light curves, cards and summaries as pictures (the `plots` extra).
- `sky`: the alerts within a radius of a position, by the HEALPix index (`fink-spark cone`).
"""
