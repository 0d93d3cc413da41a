"""Small inline SVG charts for the dashboard: loss curves, the phase timeline, confusion
matrices and reliability diagrams. Server-side, so the pages need no chart library."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

# One palette for states and phases everywhere on the dashboard (colour-blind safe, Okabe-Ito).
STATE_COLOURS = {"queued": "#999999", "annotating": "#E69F00", "distilling": "#0072B2",
                 "evaluating": "#009E73", "registering": "#CC79A7", "succeeded": "#009E73",
                 "failed": "#D55E00", "cancelled": "#F0E442"}
INK, GRID, ACCENT = "#222", "#ddd", "#0072B2"
LABEL_CHARS = 14  # axis labels are cut here; the full name is in the <title> tooltip


def _svg(width: float, height: float, body: str, label: str) -> Markup:
    return Markup(f'<svg class="chart" role="img" aria-label="{escape(label)}" '
                  f'viewBox="0 0 {width:.0f} {height:.0f}" width="{width:.0f}" '
                  f'height="{height:.0f}" xmlns="http://www.w3.org/2000/svg">'
                  f'<title>{escape(label)}</title>{body}</svg>')


def _text(x: float, y: float, text: object, anchor: str = "start", size: int = 11,
          extra: str = "", colour: str = INK) -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
            f'fill="{colour}" {extra}>{escape(str(text))}</text>')


def _short(name: str) -> str:
    return name if len(name) <= LABEL_CHARS else name[:LABEL_CHARS - 1] + "…"


def line_chart(values: Sequence[float], label: str, width: int = 300, height: int = 120
               ) -> Markup:
    """A loss curve: steps on x, value on y, first and last values written at the ends."""
    pad_l, pad_r, pad_t, pad_b = 44, 10, 10, 20
    w, h = width - pad_l - pad_r, height - pad_t - pad_b
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    n = len(values)
    pts = [(pad_l + (w * i / (n - 1) if n > 1 else w / 2), pad_t + h * (hi - v) / span)
           for i, v in enumerate(values)]
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
    body = (f'<rect x="{pad_l}" y="{pad_t}" width="{w}" height="{h}" fill="none" '
            f'stroke="{GRID}"/>'
            + _text(pad_l - 4, pad_t + 9, f"{hi:.3g}", "end", 10)
            + _text(pad_l - 4, pad_t + h, f"{lo:.3g}", "end", 10)
            + _text(pad_l, height - 5, "step 1", "start", 10)
            + _text(pad_l + w, height - 5, f"step {n}", "end", 10)
            + f'<polyline points="{path}" fill="none" stroke="{ACCENT}" stroke-width="1.6"/>'
            + "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2" fill="{ACCENT}"/>'
                      for x, y in (pts if n <= 40 else [pts[-1]])))
    return _svg(width, height, body, label)


@dataclass(frozen=True)
class Segment:
    label: str
    state: str
    start: float  # seconds since the job was created
    end: float


def timeline(segments: Sequence[Segment], label: str, width: int = 1080, height: int = 46
             ) -> Markup:
    """The job's phases as one horizontal bar, each phase as wide as it took."""
    total = max((s.end for s in segments), default=0.0) or 1.0
    body = []
    for seg in segments:
        x = width * seg.start / total
        w = max(2.0, width * (seg.end - seg.start) / total)
        colour = STATE_COLOURS.get(seg.state, ACCENT)
        tip = f"{seg.label} ({seg.state}): {seg.end - seg.start:.1f} s"
        body.append(f'<g><title>{escape(tip)}</title><rect x="{x:.1f}" y="4" width="{w:.1f}" '
                    f'height="24" fill="{colour}" stroke="#fff"/></g>')
        if w > 8 * len(seg.label):
            body.append(_text(x + w / 2, 20, seg.label, "middle", 11, 'fill-opacity="0.9"'))
    body.append(_text(0, height - 4, "0 s", "start", 10))
    body.append(_text(width, height - 4, f"{total:.1f} s", "end", 10))
    return _svg(width, height, "".join(body), label)


def confusion_matrix(labels: Sequence[str], matrix: Sequence[Sequence[int]], label: str
                     ) -> Markup:
    """Rows are the true labels, columns the predictions; shade is the row share."""
    n = len(labels)
    cell = max(14, min(44, 440 // max(n, 1)))
    margin = 8 + 7 * min(LABEL_CHARS, max((len(x) for x in labels), default=1))
    size = margin + cell * n
    body = [_text(margin + cell * n / 2, 11, "predicted", "middle", 10),
            _text(10, margin + cell * n / 2, "true", "middle", 10,
                  f'transform="rotate(-90 10 {margin + cell * n / 2:.1f})"')]
    for j, name in enumerate(labels):
        x = margin + cell * j + cell / 2
        body.append(f'<g><title>{escape(name)}</title>'
                    + _text(x, margin - 6, _short(name), "start", 10,
                            f'transform="rotate(-45 {x:.1f} {margin - 6})"') + "</g>")
        body.append(f'<g><title>{escape(name)}</title>'
                    + _text(margin - 6, margin + cell * j + cell / 2 + 4, _short(name), "end", 10)
                    + "</g>")
    for i, row in enumerate(matrix):
        total = sum(row) or 1
        for j, count in enumerate(row):
            share = count / total
            fill = f"rgba(0,114,178,{0.08 + 0.92 * share:.3f})" if count else "#f7f7f7"
            x, y = margin + cell * j, margin + cell * i
            tip = f"true {labels[i]}, predicted {labels[j]}: {count}"
            body.append(f'<g class="cell"><title>{escape(tip)}</title><rect x="{x}" y="{y}" '
                        f'width="{cell}" height="{cell}" fill="{fill}" stroke="#fff"/>')
            if cell >= 22:
                body.append(_text(x + cell / 2, y + cell / 2 + 4, count, "middle", 11,
                                  colour="#fff" if share > 0.55 else INK))
            body.append("</g>")
    return _svg(size + 4, size + 4, "".join(body), label)


def reliability(edges: Sequence[float], confidence: Sequence[float | None],
                accuracy: Sequence[float | None], count: Sequence[int], label: str,
                size: int = 260) -> Markup:
    """Reliability diagram: per confidence bin, how often the model was right (bars) against
    how sure it was (the diagonal); the red part of a bar is the calibration gap."""
    pad = 34
    w = size - pad - 8
    total = sum(count) or 1

    def x(v: float) -> float:
        return pad + w * v

    def y(v: float) -> float:
        return 8 + w * (1 - v)

    body = [f'<rect x="{pad}" y="8" width="{w}" height="{w}" fill="none" stroke="{GRID}"/>',
            f'<line x1="{x(0):.1f}" y1="{y(0):.1f}" x2="{x(1):.1f}" y2="{y(1):.1f}" '
            f'stroke="#888" stroke-dasharray="4 3"/>']
    for lo, hi, conf, acc, n in zip(edges[:-1], edges[1:], confidence, accuracy, count,
                                    strict=True):
        if not n or acc is None:
            continue
        opacity = 0.35 + 0.65 * min(1.0, 4 * n / total)
        tip = (f"confidence {lo:.2f}–{hi:.2f}: {n} texts, accuracy {acc:.2f}"
               + (f", mean confidence {conf:.2f}" if conf is not None else ""))
        bar = (f'<rect x="{x(lo):.1f}" y="{y(acc):.1f}" width="{x(hi) - x(lo):.1f}" '
               f'height="{y(0) - y(acc):.1f}" fill="{ACCENT}" fill-opacity="{opacity:.2f}" '
               f'stroke="#fff"/>')
        gap = ""
        if conf is not None and abs(conf - acc) > 1e-9:
            top = max(conf, acc)
            gap = (f'<rect x="{x(lo):.1f}" y="{y(top):.1f}" width="{x(hi) - x(lo):.1f}" '
                   f'height="{abs(y(conf) - y(acc)):.1f}" fill="#D55E00" fill-opacity="0.35"/>')
        body.append(f'<g class="bin"><title>{escape(tip)}</title>{bar}{gap}</g>')
    body += [_text(x(0), size - 6, "0", "middle", 10), _text(x(1), size - 6, "1", "middle", 10),
             _text(x(0.5), size - 6, "confidence", "middle", 10),
             _text(pad - 4, y(1) + 9, "1", "end", 10), _text(pad - 4, y(0), "0", "end", 10),
             _text(12, y(0.5), "accuracy", "middle", 10,
                   f'transform="rotate(-90 12 {y(0.5):.1f})"')]
    return _svg(size, size + 8, "".join(body), label)
