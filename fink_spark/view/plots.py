"""Pictures of kept alerts: cutouts, light curves, an alert card and a summary of an output.

Every function takes alerts as plain dicts (rows of an output, as `explore` reads them)
and returns a matplotlib Figure; `save_png` writes it. The survey registry decides
which fields are read, so ZTF and LSST share the code.
"""

from __future__ import annotations

import gzip
import io
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fink_spark.errors import ConfigError

try:
    from astropy.io import fits
    from astropy.io.fits.verify import VerifyWarning
    from astropy.visualization import AsinhStretch, ImageNormalize, ZScaleInterval
    from matplotlib.figure import Figure  # figures drawn without pyplot need no backend
except ImportError as missing:
    package = (missing.name or "a module").split(".")[0]
    raise ConfigError(f"Pictures need matplotlib and astropy ({package} is not installed): pip install 'fink-spark[plots]'.") from None

from fink_spark.display import Summary, format_value  # noqa: E402
from fink_spark.surveys import Survey  # noqa: E402

STAMPS = ("Science", "Template", "Difference")
BAND_COLOURS = {"u": "#56b4e9", "g": "#009e73", "r": "#d55e00", "i": "#cc79a7", "z": "#666666", "y": "#e69f00"}


@dataclass(frozen=True)
class Point:
    """One light-curve point: time (MJD), band, value (mag or nJy), error; `limit` for upper limits."""

    mjd: float
    band: str
    value: float
    error: float | None
    limit: bool = False
    forced: bool = False


def _stamp_bytes(alert: dict[str, Any], name: str) -> bytes | None:
    stamp = alert.get(f"cutout{name}")
    if isinstance(stamp, dict):  # ZTF: {fileName, stampData}
        stamp = stamp.get("stampData")
    return bytes(stamp) if stamp else None


def stamp_image(data: bytes) -> tuple[np.ndarray, fits.Header]:
    """The 2-D image of a cutout (FITS, gzipped or not), oriented north up and east left
    when its header says how the pixels lie on the sky."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    with warnings.catch_warnings():  # ZTF's cutouts pad their SIMPLE card off-standard; the pixels read fine
        warnings.simplefilter("ignore", VerifyWarning)
        with fits.open(io.BytesIO(data)) as hdus:
            hdu = next(h for h in hdus if h.data is not None and np.ndim(h.data) == 2)
            image, header = np.array(hdu.data, dtype=float), hdu.header.copy()
    cd11 = header.get("CD1_1", header.get("CDELT1"))
    cd22 = header.get("CD2_2", header.get("CDELT2"))
    if cd22 is not None and cd22 < 0:
        image = image[::-1, :]
    if cd11 is not None and cd11 > 0:
        image = image[:, ::-1]
    return image, header


def _show_stamp(axes: Any, data: bytes | None, title: str) -> None:
    axes.set_title(title, fontsize=9)
    axes.set_xticks([])
    axes.set_yticks([])
    if data is None:
        axes.text(0.5, 0.5, "no cutout", ha="center", va="center", transform=axes.transAxes)
        return
    image, _ = stamp_image(data)
    finite = np.nan_to_num(image, nan=float(np.nanmedian(image)))
    norm = ImageNormalize(finite, interval=ZScaleInterval(), stretch=AsinhStretch())
    axes.imshow(finite, origin="lower", cmap="gray", norm=norm)


def cutouts(alert: dict[str, Any], survey: Survey) -> Figure:
    figure = Figure(figsize=(9, 3.4), dpi=100)
    for index, name in enumerate(STAMPS):
        _show_stamp(figure.add_subplot(1, 3, index + 1), _stamp_bytes(alert, name), name)
    figure.suptitle(survey.describe(alert), fontsize=9)
    return figure


def lightcurve_points(alerts: Iterable[dict[str, Any]], survey: Survey) -> list[Point]:
    """Every measurement of the alerts, each once, sorted by time (`Survey.photometry`).

    ZTF: magpsf ± sigmapsf of candidate and prv_candidates, and diffmaglim as an upper
    limit where there is no detection. LSST: psfFlux ± psfFluxErr (nJy) of diaSource and
    prvDiaSources, and of prvDiaForcedSources as forced photometry.
    """
    photometry = survey.photometry
    points: dict[tuple[Any, ...], Point] = {}

    def place(source: dict[str, Any]) -> tuple[float, str]:
        band = source[photometry.band]
        names = photometry.band_names or {}
        return source[photometry.time] - photometry.time_offset, names.get(band, str(band))

    for alert in alerts:
        for source in [alert[photometry.current], *(alert.get(photometry.previous) or [])]:
            mjd, band = place(source)
            key = ("source", source[photometry.source_id]) if photometry.source_id else (mjd, band)
            if source.get(photometry.value) is not None:
                points[key] = Point(mjd, band, source[photometry.value], source.get(photometry.error))
            elif photometry.upper_limit and source.get(photometry.upper_limit) is not None:
                points.setdefault(key, Point(mjd, band, source[photometry.upper_limit], None, limit=True))
        for forced in (alert.get(photometry.forced) or []) if photometry.forced else []:
            if forced.get(photometry.value) is not None:
                mjd, band = place(forced)
                key = ("forced", forced.get(photometry.forced_id or "", (mjd, band)))
                points[key] = Point(mjd, band, forced[photometry.value], forced.get(photometry.error), forced=True)
    return sorted(points.values(), key=lambda p: (p.mjd, p.band, p.forced))


def _draw_lightcurve(axes: Any, points: Sequence[Point], survey: Survey) -> None:
    for band in sorted({p.band for p in points}):
        colour = BAND_COLOURS.get(band, "black")
        for forced, limit, marker, label in ((False, False, "o", band), (True, False, "s", f"{band} forced"),
                                             (False, True, "v", f"{band} upper limit")):
            chosen = [p for p in points if p.band == band and p.forced == forced and p.limit == limit]
            if not chosen:
                continue
            errors = [p.error or 0.0 for p in chosen] if not limit else None
            axes.errorbar([p.mjd for p in chosen], [p.value for p in chosen], yerr=errors, fmt=marker,
                          color=colour, alpha=0.5 if limit or forced else 1.0, label=label, markersize=5)
    axes.set_xlabel("MJD")
    axes.set_ylabel(survey.photometry.unit)
    if survey.photometry.magnitudes:
        axes.invert_yaxis()
    else:
        axes.axhline(0, color="grey", linewidth=0.5)
    if points:
        axes.legend(fontsize=7, loc="best")


def lightcurve(alerts: Sequence[dict[str, Any]], survey: Survey) -> Figure:
    figure = Figure(figsize=(8, 4.5), dpi=100)
    axes = figure.add_subplot(1, 1, 1)
    points = lightcurve_points(alerts, survey)
    _draw_lightcurve(axes, points, survey)
    newest = max(alerts, key=survey.mjd_of)
    axes.set_title(f"{survey.describe(newest)}\n{len(alerts)} alert(s), {len(points)} point(s)", fontsize=8)
    figure.tight_layout()
    return figure


def card(alert: dict[str, Any], history: Sequence[dict[str, Any]], survey: Survey) -> Figure:
    """Cutouts, the object's light curve and the key Fink fields of one alert, on one picture."""
    figure = Figure(figsize=(11, 7.5), dpi=100)
    grid = figure.add_gridspec(2, 3, height_ratios=[1, 1.2])
    for index, name in enumerate(STAMPS):
        _show_stamp(figure.add_subplot(grid[0, index]), _stamp_bytes(alert, name), name)
    curve = figure.add_subplot(grid[1, :2])
    _draw_lightcurve(curve, lightcurve_points(history or [alert], survey), survey)
    text = figure.add_subplot(grid[1, 2])
    text.axis("off")
    lines = [f"{name}: {format_value(value)}" for name, value in survey.card_values(alert)]
    text.text(0, 1, "\n".join(lines), va="top", family="monospace", fontsize=8)
    figure.suptitle(survey.describe(alert), fontsize=10)
    return figure


def summary_figure(summary: Summary) -> Figure:
    """Bars per topic, night and class, and the magnitudes' histogram."""
    figure = Figure(figsize=(11, 7), dpi=100)
    panels = [("alerts per topic", summary.per_topic), ("alerts per night", summary.per_night),
              ("alerts per Fink class", summary.per_class)]
    for index, (title, counts) in enumerate(panels):
        axes = figure.add_subplot(2, 2, index + 1)
        axes.barh(list(counts)[:15], list(counts.values())[:15], color="#0072b2")
        axes.set_title(title, fontsize=9)
        axes.tick_params(labelsize=7)
    axes = figure.add_subplot(2, 2, 4)
    axes.hist(summary.magnitudes, bins=20, color="#d55e00")
    axes.set_title("magnitude", fontsize=9)
    axes.set_xlabel("mag")
    figure.suptitle(f"{summary.total} alerts", fontsize=11)
    figure.tight_layout()
    return figure


def save_png(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path
