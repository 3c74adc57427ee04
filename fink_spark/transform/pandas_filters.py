"""Python functions over pandas Series in the stream: Fink's filters unchanged, and the user's own.

`{fink_filter: fink_filters.rubin.livestream.filter_in_tns.filter.in_tns}` runs the function
as Fink runs it (fink-utils' `expand_function_from_string`, then a pandas UDF): each of its
arguments names a column of the flattened alert, the one whose dotted path ends with the
argument's name; of several, the one whose last part is the name exactly, and of several
of those the top-level one. Anything else is an error at start-up, naming the candidates.
Fink's light curves (`cjdc`, `cmagpsfc`, ... over a ZTF alert's history, which its pipeline
adds before its filters) are made for a function that names them (`finks_light_curves`).
The function is given only the columns it names, in Arrow batches (Spark's pandas UDF: a
struct comes as a DataFrame, a number or a string as a Series), and returns a boolean
Series: true keeps the alert; false or null rejects it. A function decorated as a pandas
UDF (fink-filters' ZTF ones) is run through the Python function it wraps. A function that
raises on a batch stops nothing: that batch's alerts get no verdict but the error's type
and first line, and go to the quarantine with it (`fink_spark.sink.outputs`).

`{udf: package.module:function, columns: [candidate.magpsf, ...], returns: boolean}` runs
the user's own function on the columns named, in that order, the same way; with `returns:
{score: double, ...}` it filters nothing and adds the columns it returns (a DataFrame, or a
Series for one column), which the table gains.
"""

from __future__ import annotations

import difflib
import importlib
import re
from collections.abc import Callable
from typing import Any

import pandas as pd
from pyspark import cloudpickle
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    BooleanType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
)

from fink_spark.errors import ConfigError


def load_function(path: str, where: str) -> Callable[..., Any]:
    """The function a path names (`package.module.function`, or `package.module:function`),
    or an error that says why not."""
    module_name, _, name = path.rpartition(":") if ":" in path else path.rpartition(".")
    if not module_name or not name:
        raise ConfigError(f"{where} must be a dotted path package.module.function, e.g. "
                          f"fink_filters.rubin.livestream.filter_in_tns.filter.in_tns, not {path!r}.")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(f"{where}: cannot import {module_name} ({type(error).__name__}: {error}). Install the "
                          "package that provides it, with its dependencies, where the job runs (for Fink's filters: "
                          "pip install fink-filters), or, for a module of your own, put the folder that holds it on "
                          "PYTHONPATH.") from None
    if not any(folder in (getattr(module, "__file__", None) or "") for folder in ("site-packages", "dist-packages")):
        cloudpickle.register_pickle_by_value(module)  # the user's own code reaches the executors with the function
    function = getattr(module, name, None)
    if not callable(function):
        names = [n for n, value in vars(module).items() if callable(value) and not n.startswith("_")]
        close = difflib.get_close_matches(name, names, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; it has {', '.join(sorted(names)[:10]) or 'none'}"
        raise ConfigError(f"{where}: {module_name} has no function {name}{hint}")
    return function


def python_function(function: Callable[..., Any]) -> Callable[..., Any]:
    """The Python function itself (a pandas UDF keeps it as `func`)."""
    return getattr(function, "func", function)


def argument_names(function: Callable[..., Any]) -> tuple[str, ...]:
    code = python_function(function).__code__
    return code.co_varnames[:code.co_argcount]


def flattened_names(schema: StructType, prefix: str = "") -> list[str]:
    """Every column's dotted path, through structs (not arrays), as Fink lists them."""
    names = []
    for field in schema.fields:
        names.append(prefix + field.name)
        if isinstance(field.dataType, StructType):
            names += flattened_names(field.dataType, f"{prefix}{field.name}.")
    return names


def column_for(argument: str, names: list[str], where: str) -> str:
    """The column an argument names, by Fink's rule (see the module's docstring)."""
    ending = [name for name in names if name.endswith(argument)]
    if len(ending) == 1:
        return ending[0]
    exact = [name for name in ending if name.split(".")[-1] == argument]
    if len(exact) == 1:
        return exact[0]
    top = [name for name in exact if "." not in name]
    if len(top) == 1:
        return top[0]
    if not ending:
        close = difflib.get_close_matches(argument, [name.split(".")[-1] for name in names], n=3)
        hint = f"; the alerts have {', '.join(close)}" if close else ""
        raise ConfigError(f"{where}: the function's argument {argument!r} names no column of the alerts{hint}.")
    raise ConfigError(f"{where}: the function's argument {argument!r} could be any of {', '.join(exact or ending)}: "
                      "no single column is meant.")


VERDICT = StructType([StructField("passed", BooleanType()), StructField("error", StringType())])


def keeps(function: Callable[..., Any]) -> Callable[..., pd.DataFrame]:
    """The function as a pandas UDF's body: its boolean Series, by position, or, where it
    raises on a batch, no verdict and the error's type and first line for each alert of it."""
    run = python_function(function)

    def body(*columns: pd.Series) -> pd.DataFrame:
        try:
            return pd.DataFrame({"passed": pd.Series(run(*columns)).reset_index(drop=True), "error": None})
        except Exception as error:  # noqa: BLE001 - any failure: the alerts go to the quarantine
            return pd.DataFrame({"passed": [None] * len(columns[0]), "error": _said(error)})

    return body


RETURN_TYPES = {"boolean": BooleanType(), "double": DoubleType(), "float": FloatType(), "int": IntegerType(),
                "long": LongType(), "bigint": LongType(), "string": StringType()}


def returned_columns(returns: Any, where: str) -> StructType | None:
    """A user function's `returns`: None for `boolean` (it filters), else the columns it adds."""
    if returns == "boolean":
        return None
    if not isinstance(returns, dict) or not returns:
        raise ConfigError(f"{where}.returns must be boolean (the function filters) or a mapping of the columns it "
                          f"adds to their types, e.g. {{score: double}}; the types: {', '.join(RETURN_TYPES)}.")
    fields = []
    for name, type_name in returns.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(name)) or type_name not in RETURN_TYPES:
            raise ConfigError(f"{where}.returns.{name}: a column name of letters, digits and _, and one of the types "
                              f"{', '.join(RETURN_TYPES)} (not {type_name!r}).")
        fields.append(StructField(str(name), RETURN_TYPES[type_name]))
    return StructType(fields)


def adds(function: Callable[..., Any], columns: StructType) -> Callable[..., pd.DataFrame]:
    """A function that returns columns (a DataFrame, or a Series for one column) as a pandas
    UDF's body: every alert passes, with those columns; where it raises, the error instead."""
    names = columns.fieldNames()

    def body(*inputs: pd.Series) -> pd.DataFrame:
        try:
            result = function(*inputs)
            frame = result.to_frame(names[0]) if isinstance(result, pd.Series) else pd.DataFrame(result)
            out = frame.reset_index(drop=True)[names]
            out.insert(0, "passed", True)
            out.insert(1, "error", None)
            return out
        except Exception as error:  # noqa: BLE001 - any failure: the alerts go to the quarantine
            return pd.DataFrame({"passed": [None] * len(inputs[0]), "error": _said(error), **dict.fromkeys(names)})

    return body


def _said(error: Exception) -> str:
    first_line = next(iter(str(error).strip().splitlines()), "")
    return f"{type(error).__name__}: {first_line}"


def user_function_column(alerts: DataFrame, function: Callable[..., Any], columns: list[str],
                         returns: StructType | None) -> Any:
    """A user function's verdict on each alert, over the columns named (`VERDICT`, with the
    columns it returns after `passed` and `error`)."""
    inputs = [F.col(".".join(f"`{part}`" for part in name.split("."))) for name in columns]
    if returns is None:
        return _once(keeps(function), VERDICT)(*inputs)
    return _once(adds(python_function(function), returns), StructType(VERDICT.fields + returns.fields))(*inputs)


def _once(body: Callable[..., Any], verdict: StructType) -> Any:
    """A pandas UDF that Spark runs once per alert: marked nondeterministic, so that the
    optimizer neither pushes the filter on its verdict below it nor evaluates it again for
    each column read from its result (it did both: twice the Python work)."""
    return F.pandas_udf(body, verdict).asNondeterministic()  # type: ignore[call-overload]


def fink_filter_column(alerts: DataFrame, function: Callable[..., Any], where: str) -> Any:
    """The function's verdict on each alert, as a column (`VERDICT`: a pandas UDF over the columns
    it names, or that Fink's pipeline adds before its filters: `finks_light_curves`)."""
    names = flattened_names(alerts.schema)
    added = finks_light_curves(alerts)
    columns = [added[argument] if argument in added and argument not in names else
               F.col(".".join(f"`{part}`" for part in column_for(argument, names, where).split(".")))
               for argument in argument_names(function)]
    return _once(keeps(function), VERDICT)(*columns)


# the quantities fink-filters 7.45 reads as light curves (its doctests list them as Fink's pipeline makes them)
LIGHT_CURVE = ("jd", "fid", "magpsf", "sigmapsf", "diffmaglim", "magnr", "sigmagnr", "magzpsci", "isdiffpos")


def finks_light_curves(alerts: DataFrame) -> dict[str, Any]:
    """The columns Fink's ZTF pipeline adds before its filters, which some of them read:
    `c<name>c`, each light-curve quantity over the history then the alert (fink-utils'
    `concat_col`, renamed with a trailing c: fink-broker #457), and `cstampDatac`, the
    science cutout. None for alerts without a ZTF history."""
    top = set(alerts.columns)
    if not {"candidate", "prv_candidates"} <= top:
        return {}
    columns = {}
    for name in LIGHT_CURVE:
        history, current = F.col(f"prv_candidates.{name}"), F.array(F.col(f"candidate.{name}"))
        columns[f"c{name}c"] = F.when(history.isNotNull(), F.concat(history, current)).otherwise(current)
    if "cutoutScience" in top:
        columns["cstampDatac"] = F.col("cutoutScience.stampData")
    return columns


def scratch_column(where: str) -> str:
    """The column a filter's verdict is held in while it is applied (`filters[3]` -> `_filter_3`)."""
    return "_filter_" + "_".join(re.findall(r"\d+", where))
