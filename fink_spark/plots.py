"""Pictures of kept alerts: cutouts, light curves, an alert card and a summary of an output.

Every function takes alerts as plain dicts (a Spark Row's `asDict(recursive=True)`)
and returns a matplotlib Figure; `save_png` writes it. The survey registry decides
which fields are read, so ZTF and LSST share the code.
"""

from __future__ import annotations

import gzip
import io
import math
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
from astropy.io import fits  # noqa: E402
from astropy.io.fits.verify import VerifyWarning  # noqa: E402
from astropy.visualization import AsinhStretch, ImageNormalize, ZScaleInterval  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from fink_spark.surveys import JD_MINUS_MJD, Survey  # noqa: E402

STAMPS = ("Science", "Template", "Difference")
ZTF_BANDS = {1: "g", 2: "r", 3: "i"}
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


def describe(alert: dict[str, Any], survey: Survey) -> str:
    """Ids, coordinates and time of an alert, for titles."""
    if survey.name == "ztf":
        c = alert["candidate"]
        return f"{alert['objectId']}  candid {alert['candid']}  ra {c['ra']:.5f} dec {c['dec']:+.5f}  MJD {c['jd'] - JD_MINUS_MJD:.5f}"
    s = alert["diaSource"]
    return (f"diaObject {s['diaObjectId']}  diaSource {alert['diaSourceId']}  ra {s['ra']:.5f} dec {s['dec']:+.5f}"
            f"  MJD {s['midpointMjdTai']:.5f}")


def cutouts(alert: dict[str, Any], survey: Survey) -> Figure:
    figure = Figure(figsize=(9, 3.4), dpi=100)
    for index, name in enumerate(STAMPS):
        _show_stamp(figure.add_subplot(1, 3, index + 1), _stamp_bytes(alert, name), name)
    figure.suptitle(describe(alert, survey), fontsize=9)
    return figure


def lightcurve_points(alerts: Iterable[dict[str, Any]], survey: Survey) -> list[Point]:
    """Every measurement of the alerts, each once, sorted by time.

    ZTF: magpsf ± sigmapsf of candidate and prv_candidates, and diffmaglim as an upper
    limit where there is no detection. LSST: psfFlux ± psfFluxErr (nJy) of diaSource and
    prvDiaSources, and of prvDiaForcedSources as forced photometry.
    """
    points: dict[tuple[Any, ...], Point] = {}
    for alert in alerts:
        if survey.name == "ztf":
            for c in [alert["candidate"], *(alert.get("prv_candidates") or [])]:
                band = ZTF_BANDS.get(c["fid"], str(c["fid"]))
                mjd = c["jd"] - JD_MINUS_MJD
                if c.get("magpsf") is not None:
                    points[(mjd, band)] = Point(mjd, band, c["magpsf"], c.get("sigmapsf"))
                elif c.get("diffmaglim") is not None:
                    points.setdefault((mjd, band), Point(mjd, band, c["diffmaglim"], None, limit=True))
        else:
            for s in [alert["diaSource"], *(alert.get("prvDiaSources") or [])]:
                if s.get("psfFlux") is not None:
                    points[("source", s["diaSourceId"])] = Point(s["midpointMjdTai"], s["band"], s["psfFlux"], s.get("psfFluxErr"))
            for f in alert.get("prvDiaForcedSources") or []:
                if f.get("psfFlux") is not None:
                    key = ("forced", f.get("diaForcedSourceId", (f["midpointMjdTai"], f["band"])))
                    points[key] = Point(f["midpointMjdTai"], f["band"], f["psfFlux"], f.get("psfFluxErr"), forced=True)
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
    if survey.name == "ztf":
        axes.set_ylabel("magnitude (PSF)")
        axes.invert_yaxis()
    else:
        axes.set_ylabel("PSF flux (nJy)")
        axes.axhline(0, color="grey", linewidth=0.5)
    if points:
        axes.legend(fontsize=7, loc="best")


def lightcurve(alerts: Sequence[dict[str, Any]], survey: Survey) -> Figure:
    figure = Figure(figsize=(8, 4.5), dpi=100)
    axes = figure.add_subplot(1, 1, 1)
    points = lightcurve_points(alerts, survey)
    _draw_lightcurve(axes, points, survey)
    newest = max(alerts, key=survey.mjd_of)
    axes.set_title(f"{describe(newest, survey)}\n{len(alerts)} alert(s), {len(points)} point(s)", fontsize=8)
    figure.tight_layout()
    return figure


def key_fields(alert: dict[str, Any], survey: Survey) -> list[tuple[str, Any]]:
    """Fink's classification scores and cross-matches worth reading on a card."""
    if survey.name == "ztf":
        names = ["finkclass", "cdsxmatch", "rf_snia_vs_nonia", "snn_snia_vs_nonia", "snn_sn_vs_all", "rf_kn_vs_nonkn",
                 "mulens", "roid", "tns", "gaiaClass", "anomaly_score", "DR3Name"]
        fields = [(name, alert.get(name)) for name in names if name in alert]
        fields.append(("ndethist", alert["candidate"].get("ndethist")))
        return fields
    fields = []
    for group in ("pred", "clf", "xm"):
        for name, value in (alert.get(group) or {}).items():
            fields.append((f"{group}.{name}", value))
    return fields[:16]


def _format(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return "—" if value is None else str(value)


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
    lines = [f"{name}: {_format(value)}" for name, value in key_fields(alert, survey)]
    text.text(0, 1, "\n".join(lines), va="top", family="monospace", fontsize=8)
    figure.suptitle(describe(alert, survey), fontsize=10)
    return figure


@dataclass(frozen=True)
class Summary:
    """What a whole output holds."""

    total: int
    per_topic: dict[str, int]
    per_night: dict[str, int]
    per_class: dict[str, int]
    magnitudes: list[float]

    def text(self) -> str:
        def block(title: str, counts: dict[str, int]) -> list[str]:
            width = max([len(k) for k in counts] + [1])
            return [title] + [f"  {key.ljust(width)}  {value}" for key, value in counts.items()]

        lines = [f"{self.total} alerts"]
        lines += block("per topic:", self.per_topic) + block("per night:", self.per_night)
        lines += block("per Fink class:", self.per_class)
        if self.magnitudes:
            lines.append(f"magnitude: min {min(self.magnitudes):.2f}, median {float(np.median(self.magnitudes)):.2f}, "
                         f"max {max(self.magnitudes):.2f}")
        return "\n".join(lines)


def summarize(rows: Iterable[dict[str, Any]], survey: Survey) -> Summary:
    """Counts per topic, night and Fink class, and the magnitudes, from rows holding
    topic, year, month, day, the class and the magnitude (see `fink_spark.explore`)."""
    rows = list(rows)
    topics = Counter(str(row["topic"]) for row in rows)
    nights = Counter(f"{row['year']:04d}-{row['month']:02d}-{row['day']:02d}" for row in rows)
    classes = Counter(_format(row["fink_class"]) for row in rows)
    magnitudes = [row["magnitude"] for row in rows if row["magnitude"] is not None and math.isfinite(row["magnitude"])]
    return Summary(len(rows), dict(sorted(topics.items())), dict(sorted(nights.items())),
                   dict(classes.most_common()), magnitudes)


def summary_figure(summary: Summary) -> Figure:
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
