"""Figures a body showed and that were closed before it ended.

Under Jupyter's inline backend `plt.show()` displays every open figure, then closes them all:
a body ending in `plt.show()` (common in gallery examples) left no open figure for the
recorder to render, so its record had none. While the body runs, the shell's display
formatter is watched: the PNG it makes of a matplotlib figure (the image the user saw, so
nothing is rendered twice) is kept, and recorded when that figure is gone at the end.
"""

from __future__ import annotations

import base64
import contextlib
import sys
import weakref
from collections.abc import Iterator
from typing import Any


class ShownFigures:
    """The last image displayed of each figure the body showed, in the order first shown."""

    def __init__(self, before: set[int]) -> None:
        self._before = before  # ids of figures open before the body (marked not stale)
        self._images: dict[int, tuple[Any, bytes]] = {}  # id → (weak ref, PNG)

    def changed(self, value: Any) -> bool:
        """Whether `value` is a figure the body created or drew on (checked before display:
        rendering it clears its stale flag)."""
        figure_module = sys.modules.get("matplotlib.figure")
        if figure_module is None or not isinstance(value, figure_module.Figure):
            return False
        return id(value) not in self._before or bool(getattr(value, "stale", False))

    def note(self, figure: Any, data: Any) -> None:
        png = data.get("image/png") if isinstance(data, dict) else None
        if isinstance(png, str):
            png = base64.b64decode(png)
        if isinstance(png, bytes) and png:
            self._images[id(figure)] = (weakref.ref(figure), png)

    def closed(self) -> list[bytes]:
        """PNGs of the shown figures no longer open (those still open are rendered, once per
        change, with the others)."""
        if not self._images:
            return []
        from matplotlib._pylab_helpers import Gcf

        still_open = {id(manager.canvas.figure) for manager in Gcf.get_all_fig_managers()}
        return [
            png
            for key, (ref, png) in self._images.items()
            if key not in still_open or ref() is None
        ]


@contextlib.contextmanager
def watching(shell: Any, before: set[int]) -> Iterator[ShownFigures]:
    """Keep, while inside, what the shell's display formatter makes of changed figures."""
    shown = ShownFigures(before)
    formatter = getattr(shell, "display_formatter", None)
    if formatter is None or not hasattr(formatter, "format"):
        yield shown
        return
    own = vars(formatter)
    had, previous = "format" in own, own.get("format")
    original = formatter.format

    def format(value: Any, *args: Any, **kwargs: Any) -> Any:
        changed = shown.changed(value)
        formatted = original(value, *args, **kwargs)
        if changed:
            with contextlib.suppress(Exception):  # never the user's display's problem
                shown.note(value, formatted[0])
        return formatted

    formatter.format = format
    try:
        yield shown
        _show_inline_figures_now(shell)
    finally:
        if had:
            formatter.format = previous
        else:
            own.pop("format", None)


def _show_inline_figures_now(shell: Any) -> None:
    """Show, now, the figures Jupyter's inline backend would show (and close) when this cell
    ends, so the PNG the display makes is the one recorded: the recorder would otherwise
    render each figure the body drew a second time, for the record alone (tens to hundreds
    of milliseconds a figure). Done only when the backend's own end-of-cell display
    (`flush_figures`, a `post_execute` callback of this shell) is due in this cell — it then
    finds nothing left to do — and makes PNGs; the images appear before the summary line."""
    inline = sys.modules.get("matplotlib_inline.backend_inline")
    if inline is None or not getattr(inline.show, "_draw_called", False):
        return
    try:
        callbacks = shell.events.callbacks.get("post_execute", [])
        result = getattr(shell.displayhook, "exec_result", None)
        if inline.flush_figures not in callbacks or result is None or result.info.silent:
            return  # no end-of-cell display in this cell (a silent execution runs none)
        config = inline.InlineBackend.instance()
        if not config.close_figures or not {"png", "retina", "png2x"} & set(config.figure_formats):
            return
    except Exception:  # another IPython or backend: leave the figures to the recorder
        return
    inline.flush_figures()
