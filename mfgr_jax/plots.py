"""Charts drawn with PIL alone: a line chart and a grouped bar chart.

Matplotlib is not a dependency of this project; these cover what the reports
need. Both charts return uint8 HxWx3 arrays, as `report.write_png` takes.
"""

import dataclasses
import functools
import math
from typing import Sequence

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont

# Tableau 10: stays distinguishable for the handful of methods a report compares.
COLOURS = ('#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2',
           '#7f7f7f', '#bcbd22', '#17becf')
# Sides of each series' marker (0: a circle): a shape as well as a colour keeps the
# lines apart where they cross or overlap, and in greyscale.
_MARKERS = (0, 4, 3, 5)
_TEXT, _AXIS, _GRID = '#222222', '#555555', '#e2e2e2'
_TITLE_SIZE, _LABEL_SIZE, _TICK_SIZE, _VALUE_SIZE = 22, 18, 15, 14
_PAD = 16  # pixels between the figure's edge, its texts and the plot area
_SWATCH = 34  # width of a legend entry's line or box


@functools.cache
def _font(size: int) -> PIL.ImageFont.FreeTypeFont:
  return PIL.ImageFont.load_default(size=size)


@dataclasses.dataclass(frozen=True)
class _Axes:
  """The plot area in pixels and the data ranges it spans."""
  box: tuple[int, int, int, int]  # left, top, right, bottom
  x_range: tuple[float, float]
  y_range: tuple[float, float]

  def x(self, value: float) -> float:
    left, _, right, _ = self.box
    low, high = self.x_range
    return left + (value - low) / (high - low) * (right - left)

  def y(self, value: float) -> float:
    _, top, _, bottom = self.box
    low, high = self.y_range
    return bottom - (value - low) / (high - low) * (bottom - top)


@dataclasses.dataclass(frozen=True)
class _Key:
  """A series' legend entry: a line with a marker of `sides` sides, or a box for None."""
  label: str
  colour: str
  sides: int | None


def _keys(labels: Sequence[str], lines: bool) -> list[_Key]:
  return [_Key(label, COLOURS[i % len(COLOURS)], _MARKERS[i % len(_MARKERS)] if lines else None)
          for i, label in enumerate(labels)]


def _ticks(low: float, high: float, most: int = 10) -> list[float]:
  """Round tick values in [low, high]: steps of 1, 2 or 5 x 10^k, at most `most` intervals."""
  power = 10.0 ** math.floor(math.log10((high - low) / most))
  step = next(power * m for m in (1, 2, 5, 10) if (high - low) / (power * m) <= most)
  first = math.ceil(low / step)
  return [i * step for i in range(first, math.floor(high / step + 1e-9) + 1)]


def _marker(draw: PIL.ImageDraw.ImageDraw, centre: tuple[float, float], sides: int, colour: str,
            radius: float = 7) -> None:
  # A white rim keeps markers visible where lines cross them.
  if sides == 0:
    x, y = centre
    draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour, outline='white')
  else:
    draw.regular_polygon((centre, radius * 1.15), sides, fill=colour, outline='white')


def _vertical_text(image: PIL.Image.Image, centre: tuple[float, float], text: str,
                   size: int) -> None:
  """Draws `text` rotated to read bottom to top (ImageDraw only writes horizontally)."""
  left, top, right, bottom = _font(size).getbbox(text)
  strip = PIL.Image.new('RGB', (right + 2, bottom + 2), 'white')
  PIL.ImageDraw.Draw(strip).text((0, 0), text, font=_font(size), fill=_TEXT)
  strip = strip.crop((left, top, right + 2, bottom + 2)).rotate(90, expand=True)
  image.paste(strip, (round(centre[0] - strip.width / 2), round(centre[1] - strip.height / 2)))


def _legend(draw: PIL.ImageDraw.ImageDraw, keys: Sequence[_Key], corner: tuple[int, int]) -> None:
  x, y = corner
  for i, key in enumerate(keys):
    middle = y + 14 + 28 * i
    if key.sides is not None:
      draw.line((x, middle, x + _SWATCH, middle), fill=key.colour, width=3)
      _marker(draw, (x + _SWATCH / 2, middle), key.sides, key.colour)
    else:
      draw.rectangle((x + 6, middle - 10, x + _SWATCH - 6, middle + 10), fill=key.colour)
    draw.text((x + _SWATCH + 8, middle), key.label, font=_font(_LABEL_SIZE), fill=_TEXT,
              anchor='lm')


def _canvas(size: tuple[int, int], title: str, x_label: str, y_label: str,
            x_range: tuple[float, float], y_range: tuple[float, float],
            keys: Sequence[_Key]) -> tuple[PIL.Image.Image, PIL.ImageDraw.ImageDraw, _Axes]:
  """A white figure with the title, axis labels, horizontal grid and legend drawn.

  Returns the axes that place the data; the legend sits right of the plot area so
  that it never hides data.
  """
  image = PIL.Image.new('RGB', size, 'white')
  draw = PIL.ImageDraw.Draw(image)
  width, height = size
  legend_width = max(draw.textlength(k.label, font=_font(_LABEL_SIZE)) for k in keys) + _SWATCH + 8
  # Left: the y label and tick labels; top: the title; bottom: the x tick labels and label.
  axes = _Axes((86, 64, round(width - legend_width - 2 * _PAD), height - 78), x_range, y_range)
  left, top, right, bottom = axes.box
  draw.text((width / 2, _PAD), title, font=_font(_TITLE_SIZE), fill=_TEXT, anchor='mt')
  for value in _ticks(*y_range):
    y = axes.y(value)
    draw.line((left, y, right, y), fill=_GRID)
    draw.text((left - 8, y), f'{value:g}', font=_font(_TICK_SIZE), fill=_TEXT, anchor='rm')
  draw.line((left, top, left, bottom, right, bottom), fill=_AXIS, width=2)
  _vertical_text(image, (_PAD + _LABEL_SIZE / 2, (top + bottom) / 2), y_label, _LABEL_SIZE)
  draw.text(((left + right) / 2, height - _PAD), x_label, font=_font(_LABEL_SIZE), fill=_TEXT,
            anchor='md')
  _legend(draw, keys, (right + _PAD, top))
  return image, draw, axes


def _x_tick(draw: PIL.ImageDraw.ImageDraw, axes: _Axes, value: float, label: str,
            grid: bool) -> None:
  x = axes.x(value)
  _, top, _, bottom = axes.box
  if grid:
    draw.line((x, top, x, bottom - 1), fill=_GRID)
  draw.line((x, bottom, x, bottom + 5), fill=_AXIS, width=2)
  draw.text((x, bottom + 9), label, font=_font(_TICK_SIZE), fill=_TEXT, anchor='mt')


def line_chart(x: Sequence[float], series: dict[str, Sequence[float | None]], title: str,
               x_label: str, y_label: str, y_range: tuple[float, float] = (0.0, 100.0),
               size: tuple[int, int] = (900, 560)) -> np.ndarray:
  """One line with markers per series over the shared `x`, with a tick at every x.

  A None value leaves that point out (e.g. a task that an unfinished run has not reached).
  """
  pad = 0.04 * (max(x) - min(x)) or 1.0
  keys = _keys(list(series), lines=True)
  image, draw, axes = _canvas(size, title, x_label, y_label, (min(x) - pad, max(x) + pad),
                              y_range, keys)
  for value in x:
    _x_tick(draw, axes, value, f'{value:g}', grid=True)
  for values, key in zip(series.values(), keys):
    points = [(axes.x(a), axes.y(b)) for a, b in zip(x, values) if b is not None]
    if len(points) > 1:
      draw.line(points, fill=key.colour, width=3, joint='curve')
    for point in points:
      _marker(draw, point, key.sides, key.colour)
  return np.asarray(image)


def bar_chart(categories: Sequence[str], series: dict[str, Sequence[float | None]], title: str,
              x_label: str, y_label: str, y_range: tuple[float, float] = (0.0, 100.0),
              size: tuple[int, int] = (900, 560)) -> np.ndarray:
  """Per category, one bar per series, side by side and labelled with its value.

  A None value leaves that bar out.
  """
  keys = _keys(list(series), lines=False)
  image, draw, axes = _canvas(size, title, x_label, y_label, (0.0, float(len(categories))),
                              y_range, keys)
  bar = 0.7 / len(series)  # in category widths; 0.3 is left between categories
  for c, category in enumerate(categories):
    _x_tick(draw, axes, c + 0.5, category, grid=False)
    for s, (values, key) in enumerate(zip(series.values(), keys)):
      if values[c] is None:
        continue
      start = c + 0.15 + s * bar
      top = axes.y(values[c])
      draw.rectangle((axes.x(start) + 1, top, axes.x(start + bar) - 1, axes.y(y_range[0])),
                     fill=key.colour)
      draw.text((axes.x(start + bar / 2), top - 3), f'{values[c]:.1f}',
                font=_font(_VALUE_SIZE), fill=_TEXT, anchor='md')
  return np.asarray(image)
