"""`nbexp export REF --format dvc`: the script, plus one stage for it in `dvc.yaml`.

The stage is written from the record: `cmd` runs the script with `--no-check-data` (DVC owns
the inputs: it reruns the stage because they changed, so the script must not refuse them);
`deps` are the script and the input files; `params` the params-file keys the body read;
`outs` the files it wrote; `metrics` a JSON file the script writes at its end. The stage is
marked (`meta: {nbexp: ...}`), so a stage of the same name that nbexp did not write is never
replaced; other stages are kept as they were (their content: PyYAML does not keep comments).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from .errors import NbexpError
from .record import Experiment


class StageError(NbexpError):
    """The stage cannot be written as asked."""


_METRICS_FILE = """

# %% nbexp: the metrics file DVC reads (dvc.yaml: metrics)
def _nbexp_metrics_file(path, names):
    import json
    import math
    import numbers
    import os

    found = {}
    for name in names:
        value = globals().get(name)
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            value = float(value) if not isinstance(value, numbers.Integral) else int(value)
            if isinstance(value, int) or math.isfinite(value):
                found[name] = value
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(found, handle, indent=2, sort_keys=True)


_nbexp_metrics_file(__PATH__, __NAMES__)
"""


def slug(experiment: Experiment) -> str:
    """The stage's name: the experiment's name as DVC accepts it."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", experiment.name).strip("-") or experiment.short_id


def _relative(path: str, root: str) -> str | None:
    absolute = os.path.abspath(path)
    if absolute != root and not absolute.startswith(root + os.sep):
        return None
    return os.path.relpath(absolute, root).replace(os.sep, "/")


def stage(experiment: Experiment, script: str, root: str) -> dict[str, Any]:
    """The dvc.yaml stage for the experiment, paths relative to the project `root`."""
    params_files: dict[str, list[str]] = experiment.links.get("params_files") or {}
    param_paths = {os.path.abspath(p) for p in params_files}
    deps = [_relative(script, root)]
    for item in experiment.data:
        if not item.is_file:
            continue
        path = str(item.abspath or item.path)
        shown = _relative(path, root)
        if shown and os.path.abspath(path) not in param_paths and ".nbexp/" not in shown:
            deps.append(shown)
    params: list[Any] = []
    for path, keys in params_files.items():
        shown = _relative(path, root)
        if shown is None:
            continue
        if shown == "params.yaml":
            params.extend(sorted(keys))
        else:
            params.append({shown: sorted(keys)})
    outs = [
        shown
        for item in experiment.artifacts
        if (shown := _relative(item.abspath or item.path, root))
    ]
    metrics_file = f"metrics/{slug(experiment)}.json"
    body: dict[str, Any] = {
        "cmd": f"python {deps[0]} --no-check-data",
        "deps": list(dict.fromkeys(d for d in deps if d)),
    }
    if params:
        body["params"] = params
    if outs:
        body["outs"] = outs
    body["metrics"] = [{metrics_file: {"cache": False}}]
    body["meta"] = {"nbexp": {"experiment": experiment.id, "name": experiment.name}}
    return body


def project_root(start: str | None = None) -> str:
    """Where dvc.yaml goes: the DVC project holding the working directory, else the latter."""
    from .dvc import find_root

    here = os.path.abspath(start or os.getcwd())
    return find_root(here) or here


def write(
    experiment: Experiment, script_path: str | os.PathLike[str] | None, *, force: bool = False
) -> tuple[Path, Path, str]:
    """Write the script and the stage; (script, dvc.yaml, stage name)."""
    import yaml

    from .exporter import to_script

    root = project_root()
    name = slug(experiment)
    script = Path(script_path) if script_path else Path(root) / f"{name}.py"
    if script.suffix == ".ipynb":
        raise StageError(f"{script}: a DVC stage runs a script; give a .py path")
    dvc_yaml = Path(root) / "dvc.yaml"
    document: dict[str, Any] = {}
    if dvc_yaml.exists():
        try:
            loaded = yaml.safe_load(dvc_yaml.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            raise StageError(
                f"{dvc_yaml} does not parse ({str(error).splitlines()[0]}); fix it first"
            ) from error
        if loaded is not None and not isinstance(loaded, dict):
            raise StageError(f"{dvc_yaml} is not a mapping of stages; fix it first")
        document = loaded or {}
    stages = document.setdefault("stages", {}) or {}
    document["stages"] = stages
    existing = stages.get(name)
    if existing is not None and not (
        isinstance(existing, dict) and isinstance(existing.get("meta"), dict)
        and "nbexp" in existing["meta"]
    ):  # fmt: skip
        raise StageError(
            f"{dvc_yaml} already has a stage {name!r} that nbexp did not write; rename the "
            "experiment (nbexp tag is not enough: the stage is named after it) or remove that stage"
        )
    if script.exists() and not force and existing is None:
        raise StageError(f"{script} already exists; pass --force (force=True) to overwrite it")
    text = to_script(experiment, script.name)
    metrics_file = f"metrics/{name}.json"
    numbers = [
        key
        for key, value in experiment.metrics.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    ]
    text += _METRICS_FILE.replace("__PATH__", repr(metrics_file)).replace(
        "__NAMES__", repr(numbers)
    )
    stages[name] = stage(experiment, str(script), root)
    _atomic(script, text)
    _atomic(dvc_yaml, yaml.safe_dump(document, sort_keys=False, default_flow_style=False))
    return script, dvc_yaml, name


def _atomic(target: Path, text: str) -> None:
    from .exporter import write_text_atomically

    write_text_atomically(target, text, StageError)
