"""A picture of a model: its layers and blocks top to bottom (the paths of a block side by side,
each layer's output shape and parameters in its box) beside its receptive field growing layer by
layer, against the image size and the budget's minimum RF. What ``python -m archsearch.validate
format=svg|png|html`` writes and a training run logs as ``model_diagram.svg``.

The layout is computed once, as a list of shapes; :func:`to_svg` writes them as SVG text (pure
Python), :func:`to_png` paints them with PIL, :func:`to_html` wraps the SVG and the per-layer table
in a page. Nothing here builds the model or imports torch.
"""

from __future__ import annotations

from html import escape

from archsearch.grammar.analysis import Analysis, LayerAnalysis
from archsearch.grammar.budget import Budget, Violation
from archsearch.grammar.table import format_table

__all__ = ["FORMATS", "draw", "render", "to_html", "to_png", "to_svg"]

FORMATS = ("svg", "png", "html")

# layout, in pixels (DejaVu Sans Mono: a character is 0.6 of the font size wide)
_FONT, _SMALL = 11, 10
_CHAR = 0.61 * _FONT
_BOX_H = 34  # a layer's box: two lines
_GAP = 16  # between boxes, an arrow
_PAD = 10  # inside a block's frame
_HEAD = 34  # a block's title and the fan-out to its paths
_MERGE = 34  # a block's merge node and the space around it
_IDENTITY_W = 70
_CHART_W = 280  # the receptive-field chart
_MARGIN = 16
_TITLE_H = 78  # title, verdict and legend

_FILL = {"conv": "#dbe8f6", "dilated": "#fde3c0", "sepconv": "#d9f0d3", "maxpool": "#f6c9c9",
         "gap": "#e6e6e6", "avgpool": "#e6e6e6", "linear": "#e6e6e6"}
_LEGEND = (("conv", "conv"), ("dilated", "dilated conv"), ("sepconv", "separable"),
           ("maxpool", "maxpool"), ("gap", "pooling / linear"))
_INK, _GREY, _GOOD, _BAD, _BAR = "#222222", "#888888", "#2e7d32", "#c62828", "#4a78b0"


def _shape(s) -> str:
    return "x".join(str(x) for x in s)


def _fill(r: LayerAnalysis) -> str:
    if r.op == "conv":
        a = r.layer.args
        if a["groups"] > 1 and a["groups"] == r.in_shape[0]:
            return _FILL["sepconv"]
        return _FILL["dilated"] if a["d"] > 1 else _FILL["conv"]
    return _FILL.get(r.op, _FILL["conv"])


def _leaf_lines(r: LayerAnalysis, order: tuple[str, ...]) -> tuple[str, str]:
    kernel, _, extras = r.layer.describe(order).partition(" | ")  # extras in the model's order
    first = " ".join(x for x in (r.op, kernel.strip(), f"· {extras}" if extras else "") if x)
    return first, f"-> {_shape(r.out_shape)}  ·  {r.params:,} p"


# ------------------------------------------------------------------ measuring
def _size(r: LayerAnalysis, order: tuple[str, ...]) -> tuple[float, float]:
    if not r.is_block:
        return max(120.0, max(map(len, _leaf_lines(r, order))) * _CHAR + 16), float(_BOX_H)
    cols = [_path_size(p, order) for p in r.children]
    w = sum(c[0] for c in cols) + _PAD * (len(cols) + 1)
    title = len(_block_title(r)) * _CHAR + 2 * _PAD
    merged = 2 * (14 + len(_merge_label(r)) * 0.61 * _SMALL + _PAD)  # the label right of the centred merge node
    return max(w + 30, title, merged, 160.0), _HEAD + max(c[1] for c in cols) + _MERGE + 6


def _merge_label(r: LayerAnalysis) -> str:
    return f"-> {_shape(r.out_shape)}  ·  {r.params:,} p"


def _path_size(rows, order: tuple[str, ...]) -> tuple[float, float]:
    if not rows:
        return float(_IDENTITY_W), float(_BOX_H)
    sizes = [_size(r, order) for r in rows]
    return max(s[0] for s in sizes), sum(s[1] for s in sizes) + _GAP * (len(sizes) - 1)


def _block_title(r: LayerAnalysis) -> str:
    act = f", then {r.layer.act}" if r.layer.act != "none" else ""
    return f"{r.op} ({r.layer.merge}{act})"


# ------------------------------------------------------------------ placing
class _Canvas:
    """The shapes of a picture, in drawing order: ("rect", x, y, w, h, fill, stroke, dashed),
    ("line", x1, y1, x2, y2, colour, width, dashed), ("circle", cx, cy, r, fill, stroke),
    ("text", x, y, text, size, colour, bold, anchor), anchor "start" | "middle" | "end"."""

    def __init__(self, order: tuple[str, ...]) -> None:
        self.shapes: list[tuple] = []
        self.order = order  # the model's order of op and extras, as the layer texts print them

    def rect(self, x, y, w, h, fill="white", stroke=_INK, dashed=False):
        self.shapes.append(("rect", x, y, w, h, fill, stroke, dashed))

    def line(self, x1, y1, x2, y2, colour=_INK, width=1.0, dashed=False):
        self.shapes.append(("line", x1, y1, x2, y2, colour, width, dashed))

    def circle(self, cx, cy, r, fill="white", stroke=_INK):
        self.shapes.append(("circle", cx, cy, r, fill, stroke))

    def text(self, x, y, s, size=_FONT, colour=_INK, bold=False, anchor="start"):
        self.shapes.append(("text", x, y, s, size, colour, bold, anchor))


def _place(c: _Canvas, r: LayerAnalysis, x: float, y: float, w: float) -> float:
    """Draws ``r`` centred in [x, x + w] from ``y``; -> the y of its output (for the RF chart)."""
    bw, bh = _size(r, c.order)
    x0 = x + (w - bw) / 2
    if not r.is_block:
        c.rect(x0, y, bw, bh, _fill(r))
        first, second = _leaf_lines(r, c.order)
        c.text(x0 + 8, y + 14, first, bold=True)
        c.text(x0 + 8, y + 28, second, _SMALL, "#444444")
        return y + bh / 2
    c.rect(x0, y, bw, bh, "none", _GREY, dashed=True)
    c.text(x0 + _PAD, y + 13, _block_title(r), _SMALL, _GREY, bold=True)
    cols = [_path_size(p, c.order) for p in r.children]
    inner = sum(col[0] for col in cols) + _PAD * (len(cols) - 1)
    cx, top = x0 + (bw - inner) / 2, y + _HEAD
    merge_y = y + bh - _MERGE / 2 - 4
    mid = x0 + bw / 2
    bus = y + _HEAD - 9  # the input fans out along this line to every path
    centres = [cx + sum(col[0] + _PAD for col in cols[:i]) + cols[i][0] / 2 for i in range(len(cols))]
    c.line(min(centres[0], mid), bus, max(centres[-1], mid), bus, _GREY)
    c.line(mid, y, mid, bus, _GREY)
    for rows, (pw, _), name, centre in zip(r.children, cols, r.layer.path_names, centres):
        c.line(centre, bus, centre, top, _GREY)
        if rows:
            end = _place_path(c, rows, cx, top, pw)
        else:
            c.text(centre, top + _BOX_H / 2 + 4, "identity", _SMALL, _GREY, anchor="middle")
            end = top + _BOX_H
        c.line(centre, end, centre, merge_y - 9, _GREY)
        c.line(centre, merge_y - 9, mid, merge_y, _GREY)
        if len(cols) > 1 and name:
            c.text(centre + 4, top - 2, name, 9, _GREY)
        cx += pw + _PAD
    c.circle(mid, merge_y, 9)
    add = r.layer.merge == "add"
    c.text(mid, merge_y + (5 if add else 3), "+" if add else "cat", 13 if add else 8, anchor="middle", bold=True)
    c.text(mid + 14, merge_y + 4, _merge_label(r), _SMALL, "#444444")
    return merge_y


def _place_path(c: _Canvas, rows, x: float, y: float, w: float, outs: list | None = None) -> float:
    """Rows of one path top to bottom with arrows between them; -> the y of its bottom edge.
    ``outs`` (the model's own list) collects (row, y of its output, top, bottom) for the RF chart."""
    for i, r in enumerate(rows):
        h = _size(r, c.order)[1]
        if i:
            c.line(x + w / 2, y - _GAP, x + w / 2, y)
            c.line(x + w / 2 - 3, y - 5, x + w / 2, y, _INK)
            c.line(x + w / 2 + 3, y - 5, x + w / 2, y, _INK)
        out = _place(c, r, x, y, w)
        if outs is not None:
            outs.append((r, out, y, y + h))
        y += h + _GAP
    return y - _GAP


# ------------------------------------------------------------------ the picture
def draw(analysis: Analysis, budget: Budget, violations: list[Violation]) -> tuple[list[tuple], float, float]:
    """The picture of ``analysis`` as shapes (see :class:`_Canvas`) and its width and height."""
    spec, rows = analysis.spec, list(analysis.top or analysis.layers)
    stages = [_stage(r.path) for r in rows]
    label_w = (max(len(s) for s in stages) * _CHAR + 18) if any(stages) else 0.0
    net_w = max(_path_size(rows, spec.order)[0], 160.0)
    x_net = _MARGIN + label_w
    x_chart = x_net + net_w + 48
    width = x_chart + _CHART_W + 150
    c = _Canvas(spec.order)
    _title(c, analysis, budget, violations, width)
    y = _TITLE_H + 14 * len(violations) + 40
    c.rect(x_net + net_w / 2 - 60, y, 120, 24, "white", _GREY)
    c.text(x_net + net_w / 2, y + 16, f"input {_shape(spec.input_shape)}", anchor="middle")
    c.line(x_net + net_w / 2, y + 24, x_net + net_w / 2, y + 24 + _GAP)
    outs: list = []
    bottom = _place_path(c, rows, x_net, y + 24 + _GAP, net_w, outs)
    _stage_labels(c, outs, stages, _MARGIN)
    _rf_chart(c, outs, analysis, budget, x_chart, y, bottom)
    return c.shapes, width, bottom + _MARGIN + 10


def _stage(path: str) -> str:
    return path.split(".")[2].split("[")[0] if path.startswith("model.stages.") else ""


def _title(c: _Canvas, a: Analysis, budget: Budget, violations: list[Violation], width: float) -> None:
    s = a.spec
    c.text(_MARGIN, 22, f"{s.name}: {a.params:,} params · {a.macs / 1e6:.1f}M MACs · receptive field {a.rf} · "
                        f"input {_shape(s.input_shape)}, {s.num_classes} classes", 13, bold=True)
    if violations:
        c.text(_MARGIN, 42, f"REJECTED: {len(violations)} budget violation(s)", _FONT, _BAD, bold=True)
        for i, v in enumerate(violations):
            c.text(_MARGIN, 58 + 14 * i, f"- {v.message}", _SMALL, _BAD)
    else:
        limits = [f"params <= {budget.max_params:,}" if budget.max_params is not None else "",
                  f"RF >= {budget.min_rf}" if budget.min_rf is not None else "",
                  f"MACs <= {budget.max_macs:,}" if budget.max_macs is not None else ""]
        c.text(_MARGIN, 42, "within budget: " + ", ".join(x for x in limits if x), _FONT, _GOOD, bold=True)
    x, y = _MARGIN, 54 + 14 * len(violations)
    for key, label in _LEGEND:
        c.rect(x, y, 14, 12, _FILL[key], _GREY)
        c.text(x + 19, y + 10, label, _SMALL, "#444444")
        x += 19 + len(label) * 0.61 * _SMALL + 16
    c.rect(x, y, 14, 12, "none", _GREY, dashed=True)
    c.text(x + 19, y + 10, "block: paths side by side, merged", _SMALL, "#444444")


def _stage_labels(c: _Canvas, outs: list, stages: list[str], x: float) -> None:
    i = 0
    while i < len(outs):
        j = i
        while j + 1 < len(outs) and stages[j + 1] == stages[i]:
            j += 1
        if stages[i]:
            top, bottom = outs[i][2], outs[j][3]
            c.line(x + 2, top, x + 2, bottom, _GREY, 2)
            c.text(x + 8, (top + bottom) / 2 + 4, stages[i], _FONT, "#555555", bold=True)
        i = j + 1


def _rf_chart(c: _Canvas, outs: list, a: Analysis, budget: Budget, x0: float, top: float, bottom: float) -> None:
    """One bar per entry of the model's list at the height of its output: the RF there, in pixels."""
    size = a.spec.input_shape[1]
    most = max([a.rf, size, budget.min_rf or 0] + [r.rf for r, *_ in outs if r.spatial])
    scale = _CHART_W / (most * 1.08)
    c.text(x0, top - 22, "receptive field (pixels of the input)", _FONT, bold=True)
    c.text(x0, top - 8, "green: at least the budget's minimum", _SMALL, _GOOD)
    c.line(x0, top, x0, bottom, _GREY)
    marks = [(size, f"image {size}", _GREY)]
    if budget.min_rf is not None:
        marks.append((budget.min_rf, f"min RF {budget.min_rf}", _BAD))
    for k, (v, label, colour) in enumerate(marks):
        c.line(x0 + v * scale, top, x0 + v * scale, bottom, colour, 1.2, dashed=True)
        c.text(x0 + v * scale + 4, top + 12 + 13 * k, label, _SMALL, colour)
    last = max((i for i, (r, *_) in enumerate(outs) if r.spatial), default=-1)
    for i, (r, y, *_) in enumerate(outs):
        if not r.spatial:
            c.text(x0 + 6, y + 4, "pooled: no map", _SMALL, _GREY)
            continue
        ok = budget.min_rf is None or r.rf >= budget.min_rf
        c.rect(x0, y - 6, max(r.rf * scale, 1.0), 12, _GOOD if ok else _BAR, "none")
        label = f"RF {r.rf} (the model's)" if i == last else str(r.rf)
        c.text(x0 + r.rf * scale + 5, y + 4, label, _SMALL, _INK, bold=i == last)


# ------------------------------------------------------------------ writing
def to_svg(shapes: list[tuple], width: float, height: float) -> str:
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
           f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="DejaVu Sans Mono, Menlo, Consolas, monospace">',
           f'<rect x="0" y="0" width="{width:.0f}" height="{height:.0f}" fill="white"/>']
    for s in shapes:
        kind = s[0]
        if kind == "rect":
            _, x, y, w, h, fill, stroke, dashed = s
            dash = ' stroke-dasharray="5 3"' if dashed else ""
            out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" rx="4" fill="{fill}" '
                       f'stroke="{stroke}"{dash}/>')
        elif kind == "line":
            _, x1, y1, x2, y2, colour, width_, dashed = s
            dash = ' stroke-dasharray="5 3"' if dashed else ""
            out.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{colour}" '
                       f'stroke-width="{width_}"{dash}/>')
        elif kind == "circle":
            _, cx, cy, r, fill, stroke = s
            out.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{r}" fill="{fill}" stroke="{stroke}"/>')
        else:
            _, x, y, text, size, colour, bold, anchor = s
            weight = ' font-weight="bold"' if bold else ""
            out.append(f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" fill="{colour}" '
                       f'text-anchor="{anchor}"{weight}>{escape(text)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def to_png(shapes: list[tuple], width: float, height: float, scale: int = 2) -> bytes:
    # PIL loads here, only when a PNG is asked for: validate's table and SVG need none of it
    import io

    from PIL import Image, ImageDraw, ImageFont

    def font(size, bold):
        name = "DejaVuSansMono-Bold.ttf" if bold else "DejaVuSansMono.ttf"
        try:
            return ImageFont.truetype(name, size * scale)
        except OSError:  # no DejaVu on this machine: PIL's own font
            return ImageFont.load_default(size * scale)

    img = Image.new("RGB", (int(width * scale), int(height * scale)), "white")
    d = ImageDraw.Draw(img)
    for s in shapes:
        kind, pts = s[0], [v * scale for v in s[1:5]]
        if kind == "rect":
            fill = None if s[5] == "none" else s[5]
            outline = None if s[6] == "none" else s[6]
            box = [pts[0], pts[1], pts[0] + pts[2], pts[1] + pts[3]]
            d.rounded_rectangle(box, 4 * scale, fill=fill, outline=None if s[7] else outline, width=scale)
            if s[7] and outline:
                x0, y0, x1, y1 = box
                for a, b in (((x0, y0), (x1, y0)), ((x1, y0), (x1, y1)), ((x0, y1), (x1, y1)), ((x0, y0), (x0, y1))):
                    _dashed(d, *a, *b, outline, scale)
        elif kind == "line":
            if s[7]:
                _dashed(d, *pts, s[5], max(1, round(s[6] * scale)))
            else:
                d.line(pts, fill=s[5], width=max(1, round(s[6] * scale)))
        elif kind == "circle":
            cx, cy, r = pts[0], pts[1], s[3] * scale
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=s[4], outline=s[5], width=scale)
        else:
            anchor = {"start": "ls", "middle": "ms", "end": "rs"}[s[7]]
            d.text((s[1] * scale, s[2] * scale), s[3], fill=s[5], font=font(s[4], s[6]), anchor=anchor)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _dashed(d, x1, y1, x2, y2, colour, width, on: float = 10, off: float = 6) -> None:
    length = ((x2 - x1) ** 2 + (y2 - y1) ** 2) ** 0.5 or 1.0
    t = 0.0
    while t < length:
        e = min(t + on, length)
        d.line([x1 + (x2 - x1) * t / length, y1 + (y2 - y1) * t / length,
                x1 + (x2 - x1) * e / length, y1 + (y2 - y1) * e / length], fill=colour, width=width)
        t += on + off


def to_html(analysis: Analysis, budget: Budget, violations: list[Violation], svg: str) -> str:
    name = escape(analysis.spec.name)
    table = escape(format_table(analysis, budget, violations))
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{name}</title></head>\n"
            f"<body style=\"font-family: sans-serif\">\n<h1>{name}</h1>\n{svg}<pre>{table}</pre>\n</body></html>\n")


def render(analysis: Analysis, budget: Budget, violations: list[Violation], fmt: str) -> bytes:
    """The picture in ``fmt`` (svg, png or html) as bytes, ready to write."""
    shapes, w, h = draw(analysis, budget, violations)
    if fmt == "png":
        return to_png(shapes, w, h)
    svg = to_svg(shapes, w, h)
    return (to_html(analysis, budget, violations, svg) if fmt == "html" else svg).encode()
