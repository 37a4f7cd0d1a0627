"""What the browser's buttons do, as plain functions over the API's verbs (no widgets here).

Each returns something to show: an object with `_repr_html_`, a matplotlib Figure, or a line
of text. Features that live in other modules (the diff, plots, staleness, export) are reached
through small adapters that say plainly when the module is not there.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import api
from ..errors import NbexpError
from ..record import Experiment
from ..store import Store


class Unavailable(NbexpError):
    """A feature whose module is not part of this nbexp yet."""


def _unavailable(what: str, error: ImportError) -> Unavailable:
    return Unavailable(f"{what} is not available yet in this version of nbexp ({error})")


def diff(store: Store, first: str, second: str) -> Any:
    """The diff view of two experiments (an object with `_repr_html_`)."""
    try:
        from ..api import diff as api_diff
    except ImportError as error:
        raise _unavailable("Compare", error) from None
    return api_diff(first, second, store=store)


PLOT_RUNS = "runs"
PLOT_PARALLEL = "parallel"
PLOT_SERIES = "series"


def plot(store: Store, rows: Sequence[Mapping[str, Any]], metric: str, x: str) -> Any:
    """A matplotlib Figure: `x` is PLOT_RUNS (metric across experiments), "params.NAME"
    (metric against a param), PLOT_PARALLEL (params against the metric) or PLOT_SERIES
    (the logged series named `metric`, overlaid; read from the records)."""
    try:
        from ..plots import plot as plots_plot
    except ImportError as error:
        raise _unavailable("Plot", error) from None
    if x == PLOT_SERIES:
        records = [api.get(row["id"], store=store) for row in rows]
        return plots_plot(records, metric, step=True)
    if x.startswith("params."):
        return plots_plot(list(rows), metric, by=x[len("params.") :])
    return plots_plot(list(rows), metric, kind="parallel" if x == PLOT_PARALLEL else "runs")


def series_names(store: Store, ids: Iterable[str]) -> list[str]:
    """The logged series (nbexp.log) of some experiments; reads their records."""
    names: dict[str, None] = {}
    for experiment_id in ids:
        try:
            names.update(dict.fromkeys(api.get(experiment_id, store=store).series))
        except NbexpError:
            continue
    return list(names)


def stale(store: Store, ids: Sequence[str]) -> dict[str, str]:
    """id → why it is stale, for the stale ones among `ids`; empty when staleness is not
    available or cannot be checked (the table must still draw)."""
    try:
        from ..staleness import stale as find_stale
    except ImportError:
        return {}
    try:
        found = find_stale(store, ids)
    except (NbexpError, OSError):
        return {}
    return {key: "; ".join(str(change) for change in changes) for key, changes in found.items()}


def restore(store: Store, experiment_id: str, namespace: dict[str, Any] | None = None) -> Any:
    """Put an experiment's variables into the running kernel; returns the restore report."""
    if namespace is None:
        from IPython import get_ipython

        shell = get_ipython()
        if shell is None:
            raise NbexpError("Restore needs a running IPython kernel")
        namespace = shell.user_ns
    return api.restore(experiment_id, namespace=namespace, store=store)


def export(store: Store, ids: Sequence[str], folder: str | os.PathLike[str] | None = None) -> str:
    """Write a reproducing script per experiment into `folder` (default: the working
    directory); returns one line per experiment saying where it went or why not."""
    try:
        from ..exporter import default_path
    except ImportError as error:
        raise _unavailable("Export", error) from None
    lines = []
    for experiment_id in ids:
        experiment = api.get(experiment_id, store=store)
        plain = default_path(experiment, "script")  # <name>.py; names repeat, ids do not
        target = Path(folder or ".") / f"{plain.stem}-{experiment.short_id}{plain.suffix}"
        try:
            written = api.export(experiment, target, "script", store=store)
        except NbexpError as error:
            lines.append(f"{experiment.name} ({experiment.short_id}): not exported: {error}")
            continue
        lines.append(f"{experiment.name} ({experiment.short_id}) → {written}")
    return "\n".join(lines)


def tag(store: Store, ids: Sequence[str], name: str) -> list[Experiment]:
    name = name.strip()
    if not name or any(ch.isspace() for ch in name):
        raise NbexpError("a tag is one word, e.g. best or baseline")
    return [api.tag(experiment_id, name, store=store) for experiment_id in ids]


def delete(store: Store, ids: Sequence[str]) -> list[str]:
    """Delete the experiments' records (objects stay until `nbexp gc`); their labels."""
    labels = []
    for experiment_id in ids:
        experiment = api.remove(experiment_id, store=store)
        labels.append(f"{experiment.name} ({experiment.short_id})")
    return labels


def bundle(value: Any) -> dict[str, Any]:
    """A display_data output for an Output widget, built without a display hook: figures
    become PNG, objects with `_repr_html_` HTML, anything else text."""
    data: dict[str, Any] = {"text/plain": str(value)}
    if hasattr(value, "savefig"):  # a matplotlib Figure
        buffer = io.BytesIO()
        value.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
        data = {
            "image/png": base64.b64encode(buffer.getvalue()).decode("ascii"),
            "text/plain": "<Figure>",
        }
        _close_figure(value)
    elif hasattr(value, "_repr_html_"):
        data["text/html"] = value._repr_html_()
    else:
        data["text/html"] = f"<pre>{html.escape(str(value))}</pre>"
    return {"output_type": "display_data", "data": data, "metadata": {}}


def _close_figure(figure: Any) -> None:
    """Close a pyplot-managed figure so the inline backend does not show it again later."""
    import sys

    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close(figure)
