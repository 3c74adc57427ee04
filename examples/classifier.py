"""A ten-line classifier added to the live stream: how young and bright each ZTF alert is.

    filters:
      - {udf: "examples.classifier:young_and_bright", columns: [candidate.magpsf, candidate.jd, candidate.jdstarthist],
         returns: {young_score: double, young: boolean}}

Every alert is kept, with two more columns in the table (PYTHONPATH must reach `examples`).
"""

import numpy as np
import pandas as pd


def young_and_bright(magpsf: pd.Series, jd: pd.Series, jdstarthist: pd.Series) -> pd.DataFrame:
    """A score in [0, 1]: high for alerts first seen days ago and brighter than magnitude 19."""
    age = jd - jdstarthist  # days since the object's first detection
    score = 1 / (1 + np.exp(age / 5 - 1)) / (1 + np.exp(magpsf - 19))
    return pd.DataFrame({"young_score": score, "young": score > 0.25})
