"""Charts as server-side SVG, drawn by hand (a few rectangles and text need no library).

- No script, no inline style: colours come from classes in admin.css, so they follow
  the dark scheme, and the CSP stays strict.
- Every chart is `role="img"` with a <title> and a <desc> summing it up in words; the
  page puts the same figures in a <table> beside it (the text alternative).
- Time series are regrouped into at most MAX_BARS buckets (1, 5, 15, 30 minutes, hours,
  days), with empty buckets kept, so a pause shows as a gap rather than disappearing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

from markupsafe import Markup, escape

MAX_BARS = 48
_STEPS_MINUTES = (1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440, 2880, 10080)


@dataclass(frozen=True, slots=True)
class Bucket:
    start: datetime
    label: str
    """The bucket's start in the organiser's zone, as short as its size allows."""
    count: int


def regroup(
    series: Sequence[tuple[str, int]], *, zone: tzinfo, key_format: str
) -> tuple[list[Bucket], timedelta]:
    """Buckets for a series keyed by UTC 'YYYY-MM-DD HH:MM' (or 'YYYY-MM-DD HH'): at most
    MAX_BARS of them from the first key to the last, and the size chosen."""
    if not series:
        return [], timedelta(minutes=1)
    points = [(datetime.strptime(k, key_format).replace(tzinfo=UTC), n) for k, n in series]
    first, last = points[0][0], points[-1][0]
    unit = timedelta(hours=1) if key_format.endswith("%H") else timedelta(minutes=1)
    span = last - first + unit
    step = unit
    for minutes in _STEPS_MINUTES:
        step = max(timedelta(minutes=minutes), unit)
        if span / step <= MAX_BARS:
            break
    count = int(span / step) + (1 if span % step else 0)
    totals = [0] * max(count, 1)
    for when, n in points:
        totals[min(int((when - first) / step), len(totals) - 1)] += n
    pattern = "%d %b" if step >= timedelta(days=1) else "%H:%M"
    if step < timedelta(days=1) and last - first >= timedelta(days=1):
        pattern = "%d %b %H:%M"
    return [
        Bucket(first + i * step, (first + i * step).astimezone(zone).strftime(pattern), n)
        for i, n in enumerate(totals)
    ], step


def describe_step(step: timedelta) -> str:
    minutes = int(step.total_seconds() // 60)
    if minutes % 1440 == 0:
        days = minutes // 1440
        return "day" if days == 1 else f"{days} days"
    if minutes % 60 == 0:
        hours = minutes // 60
        return "hour" if hours == 1 else f"{hours} hours"
    return "minute" if minutes == 1 else f"{minutes} minutes"


def bar_chart(buckets: Sequence[Bucket], *, chart_id: str, title: str, description: str) -> Markup:
    """Vertical bars, one per bucket, with the largest value and a few time labels."""
    width, height, left, bottom, top = 640, 220, 44, 28, 12
    plot_w, plot_h = width - left - 8, height - bottom - top
    peak = max((b.count for b in buckets), default=0) or 1
    slot = plot_w / max(len(buckets), 1)
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-labelledby="{chart_id}-t {chart_id}-d" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{chart_id}-t">{escape(title)}</title>',
        f'<desc id="{chart_id}-d">{escape(description)}</desc>',
        f'<line class="axis" x1="{left}" y1="{top + plot_h}" x2="{width - 8}" '
        f'y2="{top + plot_h}"/>',
        f'<line class="grid-line" x1="{left}" y1="{top}" x2="{width - 8}" y2="{top}"/>',
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end">{peak:,}</text>',
        f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end">0</text>',
    ]
    label_every = max(1, len(buckets) // 6)
    for i, bucket in enumerate(buckets):
        bar_h = plot_h * bucket.count / peak
        x = left + i * slot + slot * 0.1
        parts.append(
            f'<rect class="bar" x="{x:.1f}" y="{top + plot_h - bar_h:.1f}" '
            f'width="{slot * 0.8:.1f}" height="{bar_h:.1f}"/>'
        )
        if i % label_every == 0:
            parts.append(
                f'<text x="{x + slot * 0.4:.1f}" y="{height - 8}" text-anchor="middle">'
                f"{escape(bucket.label)}</text>"
            )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text above is escaped


@dataclass(frozen=True, slots=True)
class Part:
    label: str
    value: int
    css_class: str


def share_bar(parts: Sequence[Part], *, chart_id: str, title: str) -> Markup:
    """One horizontal bar split by share (the outcome breakdown), described in words."""
    width, height = 640, 36
    total = sum(p.value for p in parts)
    words = ", ".join(f"{p.label} {p.value:,}" for p in parts) if total else "nothing yet"
    out = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-labelledby="{chart_id}-t {chart_id}-d" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{chart_id}-t">{escape(title)}</title>',
        f'<desc id="{chart_id}-d">{escape(words)}</desc>',
        f'<rect class="track" x="0" y="0" width="{width}" height="{height}" rx="4"/>',
    ]
    x = 0.0
    for part in parts:
        if not total or not part.value:
            continue
        w = width * part.value / total
        out.append(
            f'<rect class="{escape(part.css_class)}" x="{x:.1f}" y="0" width="{w:.1f}" '
            f'height="{height}"/>'
        )
        x += w
    out.append("</svg>")
    return Markup("".join(out))  # noqa: S704 - every text above is escaped
