"""A metric series never grows beyond its cap, stays evenly spread over the run, and keeps the final value."""

from __future__ import annotations

from datetime import datetime

import pytest

from kd_plugin.tracking.metric_series import MetricSeries

T0 = datetime(2026, 1, 1)


def _log(series: MetricSeries, steps) -> None:
    for step in steps:
        series.append(step, float(step), T0)


def test_under_the_cap_every_point_is_kept_and_appended():
    series = MetricSeries("loss", max_points=100)
    _log(series, range(1, 51))
    write = series.pending_write()
    assert not write.full and write.steps == list(range(1, 51))
    series.mark_written()
    _log(series, range(51, 61))
    write = series.pending_write()
    assert not write.full and write.steps == list(range(51, 61))  # only the new points
    series.mark_written()
    assert series.pending_write() is None and not series.thinned


def test_over_the_cap_thins_evenly_and_keeps_the_last_point():
    series = MetricSeries("loss", max_points=100)
    _log(series, range(0, 10_001))
    assert len(series) <= 100
    assert series.steps[0] == 0
    gaps = {b - a for a, b in zip(series.steps, series.steps[1:], strict=False)}
    assert gaps == {series.stride}  # evenly spaced over the whole run
    series.finish()
    assert series.steps[-1] == 10_000 and series.values[-1] == 10_000.0
    assert len(series) <= 101
    assert series.summary() == {"logged": 10_001, "stored": len(series), "kept_every": series.stride}
    assert series.pending_write().full  # thinning removed points: the stored copy must be replaced


def test_uncertain_write_forces_full_rewrite():
    series = MetricSeries("loss", max_points=100)
    _log(series, range(5))
    series.mark_written()
    _log(series, range(5, 8))
    series.mark_uncertain()
    write = series.pending_write()
    assert write.full and write.steps == list(range(8))


def test_state_round_trip():
    series = MetricSeries("loss", max_points=10)
    _log(series, range(37))
    copy = MetricSeries.from_state(series.to_state())
    _log(series, range(37, 50))
    _log(copy, range(37, 50))
    assert (copy.steps, copy.values, copy.stride, copy.doc_id) == (series.steps, series.values, series.stride, series.doc_id)


def test_cap_must_allow_thinning():
    with pytest.raises(ValueError):
        MetricSeries("loss", max_points=1)
