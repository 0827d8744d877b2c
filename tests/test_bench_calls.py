"""Duet calls cut from recorded performances for the duet benchmarks."""

from livepiano.tools.bench.common import CALL_SECONDS, cut_calls


def _steady(start: float, end: float, every: float = 0.25):
    n = int((end - start) / every)
    return [(start + i * every, start + i * every + 0.2, 60 + i % 12, 80) for i in range(n)]


def test_calls_start_at_zero_cycle_their_lengths_and_keep_ends_close():
    calls = cut_calls([_steady(0.0, 60.0)], wait=0.6, count=4)
    assert len(calls) == 4
    for call, length in zip(calls, CALL_SECONDS):
        assert call[0][0] == 0.0
        assert max(s for s, _, _, _ in call) < length
        assert max(e for _, e, _, _ in call) <= length + 0.4 + 1e-9


def test_a_window_with_a_silence_as_long_as_the_wait_is_passed_over():
    notes = _steady(0.0, 0.5) + _steady(1.5, 30.0)  # a 1.3-s hole after the first notes
    calls = cut_calls([notes], wait=0.6, count=1)
    gaps = [b[0] - a[1] for a, b in zip(calls[0], calls[0][1:])]
    assert max(gaps) < 0.5 and len(calls[0]) >= 3


def test_seconds_stop_when_calls_and_answers_fill_them_and_sources_alternate():
    a, b = _steady(0.0, 120.0), [(s, e, 40, v) for s, e, _, v in _steady(0.0, 120.0)]
    calls = cut_calls([a, b], wait=0.6, seconds=20.0, between=0.3)
    filled = sum(2 * max(e for _, e, _, _ in c) + 0.6 + 0.3 for c in calls)
    assert filled >= 20.0 and filled - (2 * max(e for _, e, _, _ in calls[-1]) + 0.9) < 20.0
    assert [c[0][2] == 40 for c in calls[:4]] == [False, True, False, True]


def test_performances_that_run_out_end_the_cutting():
    assert len(cut_calls([_steady(0.0, 5.0)], wait=0.6, count=100)) < 5
