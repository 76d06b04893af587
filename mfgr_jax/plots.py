"""The report's charts, drawn with matplotlib: a line chart and a grouped bar chart.

Both return uint8 HxWx3 arrays of the given pixel size, as `files.write_png`
takes (and TensorBoard's image summaries would). Matplotlib draws off screen
(the Agg canvas), so no display is needed.
"""

from typing import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np

_DPI = 100
# A shape as well as a colour keeps the lines apart where they cross, and in greyscale.
_MARKERS = ('o', 's', '^', 'D', 'v', 'P')


def _figure(size: tuple[int, int]) -> tuple[Figure, object]:
  figure = Figure(figsize=(size[0] / _DPI, size[1] / _DPI), dpi=_DPI, layout='constrained')
  FigureCanvasAgg(figure)
  axes = figure.add_subplot()
  axes.grid(axis='y', color='#e2e2e2')
  axes.set_axisbelow(True)
  axes.spines[['top', 'right']].set_visible(False)
  return figure, axes


def _pixels(figure: Figure, axes, title: str, x_label: str, y_label: str,
            y_range: tuple[float, float]) -> np.ndarray:
  axes.set(title=title, xlabel=x_label, ylabel=y_label, ylim=y_range)
  axes.legend(frameon=False)
  figure.canvas.draw()
  return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()


def line_chart(x: Sequence[float], series: dict[str, Sequence[float | None]], title: str,
               x_label: str, y_label: str, y_range: tuple[float, float] = (0.0, 100.0),
               size: tuple[int, int] = (900, 560)) -> np.ndarray:
  """One line with markers per series over the shared `x`, with a tick at every x.

  A None value leaves that point out (e.g. a task that an unfinished run has not reached).
  """
  figure, axes = _figure(size)
  for i, (label, values) in enumerate(series.items()):
    shown = [(a, b) for a, b in zip(x, values) if b is not None]
    axes.plot([a for a, _ in shown], [b for _, b in shown], marker=_MARKERS[i % len(_MARKERS)],
              linewidth=2, label=label)
  axes.set_xticks(list(x), [f'{value:g}' for value in x])
  return _pixels(figure, axes, title, x_label, y_label, y_range)


def bar_chart(categories: Sequence[str], series: dict[str, Sequence[float | None]], title: str,
              x_label: str, y_label: str, y_range: tuple[float, float] = (0.0, 100.0),
              size: tuple[int, int] = (900, 560)) -> np.ndarray:
  """Per category, one bar per series, side by side and labelled with its value.

  A None value leaves that bar out.
  """
  figure, axes = _figure(size)
  width = 0.8 / len(series)  # in category widths
  for s, (label, values) in enumerate(series.items()):
    shown = [(c + (s - (len(series) - 1) / 2) * width, v) for c, v in enumerate(values)
             if v is not None]
    bars = axes.bar([c for c, _ in shown], [v for _, v in shown], width * 0.95, label=label)
    axes.bar_label(bars, fmt='%.1f', padding=2)
  slanted = max(map(len, categories), default=0) > 10  # long names would overlap
  axes.set_xticks(range(len(categories)), categories, rotation=30 if slanted else 0,
                  ha='right' if slanted else 'center')
  return _pixels(figure, axes, title, x_label, y_label, y_range)
