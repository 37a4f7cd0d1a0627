#!/usr/bin/env python3
'Reproduces the nbexp experiment params (<short-id>).'

# experiment:  params (id <id>)
# recorded:    <time>, status ok
# working dir: <cwd>
#              (run from there: the code's paths are relative to it)
# git:         not recorded inside a git repository
# needs:       Python <version>
# cells:       the record holds no earlier cells; the experiment needs none
#
# usage: python run.py [--injected 7] [--no-check-data] [--help]
# The last line printed holds the metrics: NBEXP_METRICS {...} (JSON).

# %% parameters (override any on the command line: --NAME VALUE)
big = float("inf")
config = {'depth': 4, 'nested': {'list': [1, 'two', None], 'on': False}}
flag = True
injected = 7
label = 'it\'s "quoted"'
layers = [64, 32, [1.5, -2]]
n = 5
nothing = None
pair = (1, 'a')
rate = 0.25
small = -float("inf")
tolerance = float("nan")

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


NBEXP_PARAMS, _nbexp_check = _nbexp_arguments({
    'big': big,
    'config': config,
    'flag': flag,
    'injected': injected,
    'label': label,
    'layers': layers,
    'n': n,
    'nothing': nothing,
    'pair': pair,
    'rate': rate,
    'small': small,
    'tolerance': tolerance,
})
globals().update(NBEXP_PARAMS)


# %% the experiment, In [1]: params
score = n * rate + len(layers) + config['depth'] + (injected if flag else 0)
n_chars = len(label) + (nothing or 0) + (1 if big > small else 0) + len(pair)


# %% nbexp: the metrics, as one JSON line
_nbexp_report(['n_chars', 'score'])
