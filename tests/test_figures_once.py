"""A figure is recorded once per change: open figures an experiment leaves alone are neither
re-rendered nor recorded again, even after `savefig` left them stale. Real IPython shell,
real matplotlib (Agg)."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

import nbexp
from tests.conftest import run


@pytest.fixture
def renders(ip, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Every figure matplotlib renders to a file (the user's savefig and nbexp's alike)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    plt.close("all")
    was_interactive = plt.isinteractive()
    plt.ioff()  # an earlier test may have turned interactive mode on: it redraws stale figures
    seen: list[Any] = []
    original = Figure.savefig

    def counting(self: Figure, *args: Any, **kwargs: Any) -> Any:
        seen.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", counting)
    yield seen
    plt.close("all")
    plt.interactive(was_interactive)


def record(ip, name: str, body: str):
    result = run(ip, f"%%experiment {name}\n" + textwrap.dedent(body).strip("\n") + "\n")
    assert result.success, result.error_in_exec
    return nbexp.get("last")


def test_saved_figures_left_alone_are_not_rendered_or_recorded_again(ip, renders, tmp_path):
    run(
        ip,
        textwrap.dedent(
            f"""
            import matplotlib.pyplot as plt
            figs = []
            for i in range(5):
                fig, ax = plt.subplots()
                ax.plot([0, i, 2 * i])
                fig.savefig({str(tmp_path)!r} + f"/fig{{i}}.png")
                figs.append(fig)
            """
        ),
    )
    assert all(figure.stale for figure in ip.user_ns["figs"])  # what savefig leaves behind
    renders.clear()
    for index in range(3):
        experiment = record(ip, f"untouched-{index}", f"score = {index}")
        assert experiment.outcome.figures == (), index
    assert renders == []  # not even rendered to find out
    # the user's stale flags are as they were
    assert all(figure.stale for figure in ip.user_ns["figs"])

    drawn = record(ip, "draw-on-one", "figs[2].axes[0].plot([3, 2, 1])")
    assert len(drawn.outcome.figures) == 1
    assert renders == [ip.user_ns["figs"][2]]

    renders.clear()
    again = record(ip, "after-drawing", "score = 9")
    assert again.outcome.figures == () and renders == []


def test_a_figure_the_body_creates_is_recorded_once_then_left_alone(ip, renders):
    created = record(
        ip,
        "create",
        """
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots()
        ax.plot([1, 2, 3])
        """,
    )
    assert len(created.outcome.figures) == 1
    assert record(ip, "next", "x = 1").outcome.figures == ()
    changed = record(ip, "change", "ax.set_title('new')")
    assert len(changed.outcome.figures) == 1
    assert changed.outcome.figures != created.outcome.figures


def test_a_body_that_only_saves_an_unchanged_figure_records_nothing_new(ip, renders, tmp_path):
    record(
        ip,
        "made",
        """
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots()
        ax.plot([1, 2, 3])
        """,
    )
    saved = record(ip, "saved", f"fig.savefig({str(tmp_path / 'out.png')!r})")
    assert saved.outcome.figures == ()
    assert (tmp_path / "out.png").exists()
