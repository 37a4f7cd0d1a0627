#!/usr/bin/env python3
'Reproduces the nbexp experiment unused-dropped (<short-id>).'

# experiment:  unused-dropped (id <id>)
# recorded:    <time>, status ok
# working dir: <cwd>
#              (run from there: the code's paths are relative to it)
# git:         not recorded inside a git repository
# needs:       Python <version>
# cells:       3 of 5 earlier cells kept (In [1], In [3], In [4]); the others define nothing
#              the experiment uses
#
# usage: python run.py [--factor 2] [--no-check-data] [--help]
# The last line printed holds the metrics: NBEXP_METRICS {...} (JSON).

# %% parameters (override any on the command line: --NAME VALUE)
factor = 2

# %% nbexp: command-line overrides and the input-data check
def _nbexp_arguments(params):
    """The params with command-line overrides, each typed like its recorded value (lists,
    dicts and None as Python literals); and whether to check the input data."""
    import argparse
    import ast

    def typed(recorded):
        def convert(text):
            if isinstance(recorded, bool):
                if text.lower() in ("true", "1", "yes"):
                    return True
                if text.lower() in ("false", "0", "no"):
                    return False
                raise ValueError(text)
            if isinstance(recorded, (int, float, str)):
                return type(recorded)(text)
            try:
                return ast.literal_eval(text)
            except (ValueError, SyntaxError):
                if recorded is None:
                    return text
                raise ValueError(text) from None

        convert.__name__ = "literal" if recorded is None else type(recorded).__name__
        return convert

    parser = argparse.ArgumentParser(description=__doc__)
    for name, recorded in params.items():
        flags = dict.fromkeys(["--" + name, "--" + name.replace("_", "-")])
        parser.add_argument(
            *flags, dest=name, type=typed(recorded), default=recorded, metavar="VALUE",
            help=f"default (recorded): {recorded!r}",
        )
    parser.add_argument(
        "--no-check-data", action="store_true",
        help="run even when an input file is missing or changed",
    )
    arguments = vars(parser.parse_args())
    return {name: arguments[name] for name in params}, not arguments["no_check_data"]


def _nbexp_report(names, logged=None, logged_only=()):
    """Print the recorded metrics' new values as one JSON line (`nbexp rerun` reads it)."""
    import json
    import math
    import numbers

    def plain(value):
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, numbers.Integral):
            return int(value)
        if isinstance(value, numbers.Real):
            value = float(value)
            if math.isfinite(value):
                return value
            return {"$float": "nan" if value != value else ("inf" if value > 0 else "-inf")}
        if isinstance(value, (list, tuple)):
            return [plain(item) for item in value]
        if isinstance(value, dict):
            return {str(key): plain(item) for key, item in value.items()}
        if hasattr(value, "tolist"):
            return plain(value.tolist())
        return repr(value)[:500]

    found = dict(logged or {})
    found.update(
        {name: globals()[name] for name in names if name in globals() and name not in logged_only}
    )
    metrics = {name: plain(found[name]) for name in names if name in found}
    print("NBEXP_METRICS " + json.dumps(metrics), flush=True)


NBEXP_PARAMS, _nbexp_check = _nbexp_arguments({'factor': factor})
globals().update(NBEXP_PARAMS)


# %% an earlier cell, In [1]
import math


# %% an earlier cell, In [3]
base = 10


# %% an earlier cell, In [4]
def helper(x):
    return math.sqrt(x) + base


# %% the experiment, In [6]: unused-dropped
score = helper(factor * base)


# %% nbexp: the metrics, as one JSON line
_nbexp_report(['score'])
