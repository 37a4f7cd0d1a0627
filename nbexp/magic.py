"""The IPython magics: parse arguments, delegate, print. No logic of their own."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from traitlets import Bool

from . import api
from .errors import ExpectationFailed, NbexpError
from .recorder import Recorder, RunOptions, RunResult
from .show import summary_line

# (parser, line) → the parsed arguments: the same line (often an empty one) is parsed once
_parsed: dict[tuple[Any, str], dict[str, Any]] = {}


def _parse(magic: Any, line: str) -> Any:
    """Parse a magic's line with POSIX quoting, so --expect "f1 >= 0.9" arrives unquoted.
    Each call gets its own arguments (lists included), though a line is parsed once."""
    key = (magic.parser, line)
    known = _parsed.get(key)
    if known is None:
        try:
            words = shlex.split(line)
        except ValueError as error:
            raise UsageError(f"cannot parse the magic's arguments: {error}") from None
        known = vars(magic.parser.parse_args(words))
        if len(_parsed) >= 256:
            _parsed.clear()
        _parsed[key] = known
    return argparse.Namespace(
        **{name: list(value) if isinstance(value, list) else value for name, value in known.items()}
    )


@magics_class
class ExperimentMagics(Magics):
    """`%%experiment` and the line magics that read what it recorded."""

    state = Bool(
        True,
        help="Snapshot the kernel's variables at the end of every experiment (--no-state skips).",
    ).tag(config=True)
    summary = Bool(True, help="Print the one-line summary after each experiment.").tag(config=True)

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self._recorder = Recorder(shell)

    @magic_arguments()
    @argument("name", nargs="?", help="a human name for the run, e.g. rf-baseline")
    @argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override (or inject) the param KEY; VALUE is a Python literal",
    )
    @argument(
        "-d",
        "--data",
        action="append",
        default=[],
        metavar="PATH",
        help="record a file or folder as input data",
    )
    @argument(
        "-m",
        "--metric",
        action="append",
        default=[],
        metavar="NAME",
        help="record the variable NAME as a metric (any JSON-able value)",
    )
    @argument("-t", "--tag", action="append", default=[], metavar="TAG", help="tag the run")
    @argument("--note", default=None, metavar="TEXT", help="a free-text note")
    @argument(
        "--expect",
        action="append",
        default=[],
        metavar="EXPR",
        help='a condition checked after the run, e.g. "f1 >= 0.9"',
    )
    @argument(
        "--strict",
        action="store_true",
        help="a failed --expect raises ExpectationFailed after the run is recorded, so a "
        "headless run (papermill, jupyter execute) fails; NBEXP_STRICT=1 sets it for every run",
    )
    @argument(
        "--params-file",
        action="append",
        default=[],
        metavar="PATH",
        help="a params file (YAML, JSON, TOML) whose keys the body reads are params "
        "(params.yaml|json|toml here are found without it)",
    )
    @argument("--no-state", action="store_true", help="do not snapshot the kernel's variables")
    @argument(
        "--cache",
        action="store_true",
        help="skip the body when an earlier successful run had the same code, params, "
        "input data and input variables; restore its state instead",
    )
    @argument(
        "--sweep",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help="run the body once per combination (grid product of all --sweep options), "
        "one record each, e.g. --sweep max_depth=2,4,8 --sweep lr=0.1,0.01",
    )
    @argument(
        "--max-runs",
        type=int,
        default=None,
        metavar="N",
        help="allow a --sweep of up to N combinations (default 1000)",
    )
    @argument(
        "--search",
        action="append",
        default=[],
        metavar="KEY=DIST",
        help="an Optuna study over KEY: loguniform(a,b), uniform(a,b), int(a,b) or "
        'choice(x,y,...), e.g. --search "lr=loguniform(1e-4,1e-1)"; one record per trial',
    )
    @argument("--trials", type=int, default=None, metavar="N", help="--search: N trials (20)")
    @argument("--maximize", metavar="METRIC", help="--search: the metric to maximise")
    @argument("--minimize", metavar="METRIC", help="--search: the metric to minimise")
    @argument("--sampler", default="tpe", choices=("tpe", "random", "grid"), help="--search: (tpe)")
    @argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="run the sweep's or search's trials on a Dask LocalCluster of N worker processes "
        "(0: in the kernel)",
    )
    @argument(
        "--cluster",
        default=None,
        metavar="ADDRESS",
        help="run them on the Dask scheduler at ADDRESS (default: $NBEXP_DASK_SCHEDULER, "
        "else a distributed.Client connected in the kernel)",
    )
    @argument(
        "--allow-secret",
        action="append",
        default=[],
        metavar="VAR",
        help="snapshot VAR although its keys or columns look like credentials (password, token)",
    )
    @cell_magic
    def experiment(self, line: str, cell: str) -> Any:
        """Run the cell as usual and record it as an experiment.

        Params are the cell's top-level literal assignments, metrics the numbers it computes,
        data the files and frames it reads, artifacts the files it writes.
        """
        __tracebackhide__ = True
        args = _parse(self.experiment, line)
        options = RunOptions(
            name=args.name,
            params=args.param,
            data=args.data,
            metrics=args.metric,
            tags=args.tag,
            note=args.note,
            expect=args.expect,
            no_state=args.no_state or not self.state,
            cache=args.cache,
            allow_secrets=args.allow_secret,
            max_runs=args.max_runs,
            line=line,
            params_files=args.params_file,
            strict=args.strict
            or os.environ.get("NBEXP_STRICT", "").lower() in ("1", "true", "yes"),
        )
        if args.sweep or args.search:
            return self._sweep(cell, options, args)
        if args.workers or args.cluster or args.trials or args.maximize or args.minimize:
            raise UsageError(
                "--workers/--cluster/--trials/--maximize/--minimize go with a --sweep or a "
                "--search, e.g. --sweep depth=2,4,8 --workers 2"
            )
        try:
            result = self._recorder.run(cell, options)
        except NbexpError as error:
            raise UsageError(str(error)) from None
        self._report(result)
        if result.error is not None:
            raise result.error
        if options.strict and result.failed_expectations and result.experiment is not None:
            failed = "; ".join(item["expr"] for item in result.failed_expectations)
            raise ExpectationFailed(
                f"{result.experiment.name} ({result.experiment.short_id}) is recorded, but "
                f"its expectation failed: {failed}"
            )
        return result.value

    def _report(self, result: RunResult) -> None:
        if result.reused is not None:
            reused = result.reused
            print(
                f"↺ reused {reused.name} ({reused.short_id}): same code, params, data and inputs; "
                f"body not run, {len(result.restore_report.restored)} variables restored"
            )
            return
        if result.not_recorded:
            print(f"nbexp: this run was NOT recorded: {result.not_recorded}", file=sys.stderr)
        elif result.experiment is not None and self.summary:
            print(summary_line(result.experiment, result.recording_seconds))
        if result.experiment is not None:
            for name in result.experiment.links.get("missing_metrics", ()):
                print(
                    f"nbexp: -m {name}: no variable {name!r} after the run, so no such metric",
                    file=sys.stderr,
                )
            for path, why in result.experiment.links.get("unstored_artifacts", {}).items():
                print(f"nbexp: the file {path} the run wrote {why}", file=sys.stderr)
            for path, why in result.experiment.links.get("dvc_problems", {}).items():
                print(f"nbexp: {path}: {why}", file=sys.stderr)
            for name, fields in result.experiment.links.get("credential_containers", {}).items():
                print(
                    f"nbexp: {name} was not snapshotted: it holds credential-looking keys "
                    f"({', '.join(fields[:5])}); pass --allow-secret {name} to store it anyway",
                    file=sys.stderr,
                )
        for item in result.failed_expectations:
            shown = ", ".join(f"{k} = {v}" for k, v in item.get("values", {}).items())
            why = item.get("error") or shown
            print(
                f"✗ EXPECTATION FAILED: {item['expr']}" + (f"  ({why})" if why else ""),
                file=sys.stderr,
            )

    @line_magic
    def exp_show(self, line: str) -> Any:
        """Show one experiment: %exp_show REF (an id prefix, name, tag, last or last~N)."""
        ref = line.strip() or "last"
        return self._call(api.get, ref)

    @line_magic
    def experiments(self, line: str) -> Any:
        """The experiments in this store: %experiments [QUERY]. In a notebook, a table to
        sort, filter, compare, plot, restore, export, tag and delete; in a terminal, text."""
        from .widgets import has_widget_frontend
        from .widgets.render import text_listing

        query = line.strip() or None
        if has_widget_frontend(self.shell):
            return self._call(api.compare, query=query)

        print(self._call(text_listing, query))
        return None

    @magic_arguments()
    @argument("ref", help="id prefix, name, tag, last or last~N")
    @argument("names", nargs="*", metavar="VAR", help="restore only these variables")
    @argument("--code", action="store_true", help="put the experiment's cell into the next input")
    @argument(
        "--recompute",
        action="store_true",
        help="rebuild variables that could not be stored by replaying their statement",
    )
    @line_magic
    def exp_restore(self, line: str) -> Any:
        """Put an experiment's variables back into the kernel, verified against their hashes."""
        shell = self.shell
        if shell is None:
            raise UsageError("%exp_restore needs a running IPython shell")
        args = _parse(self.exp_restore, line)
        experiment = self._call(api.get, args.ref, salvage=True)
        report = self._call(
            api.restore,
            experiment,
            args.names or None,
            recompute=args.recompute,
            namespace=shell.user_ns,
        )
        if args.code:
            shell.set_next_input(experiment.code.cell, replace=False)
        print(report)

    @line_magic
    def exp_tag(self, line: str) -> None:
        """Tag an experiment: %exp_tag REF TAG."""
        parts = line.split()
        if len(parts) != 2:
            raise UsageError("usage: %exp_tag REF TAG, e.g. %exp_tag last best")
        from .secrets import Redactor, secret_values

        namespace = self.shell.user_ns if self.shell is not None else {}
        if Redactor(secret_values(namespace)).text(parts[1]) != parts[1]:
            raise UsageError(
                "this tag holds the value of a credential variable; tags are shown everywhere "
                "and pushed to remotes, so choose another tag"
            )
        experiment = self._call(api.tag, parts[0], parts[1])
        print(f"tagged {experiment.name} ({experiment.short_id}): {', '.join(experiment.tags)}")

    @line_magic
    def exp_rm(self, line: str) -> None:
        """Delete an experiment's record: %exp_rm REF (objects are freed by `nbexp gc`)."""
        if not line.strip():
            raise UsageError("usage: %exp_rm REF, e.g. %exp_rm last")
        experiment = self._call(api.remove, line.strip())
        print(f"deleted {experiment.name} ({experiment.short_id})")

    @magic_arguments()
    @argument("ref", nargs="?", default="last", help="id prefix, name, tag, last or last~N")
    @argument("-o", "--output", metavar="PATH", help="the file (default: NAME.py / NAME.ipynb)")
    @argument(
        "--format",
        choices=("script", "notebook", "dvc"),
        help="default: from PATH's suffix, else script; dvc: the script and its dvc.yaml stage",
    )
    @argument("--force", action="store_true", help="overwrite PATH when it exists")
    @line_magic
    def exp_export(self, line: str) -> None:
        """Write a standalone script (or papermill notebook) that reproduces an experiment:
        %exp_export REF [-o PATH] [--format script|notebook] [--force]."""
        from .exporter import infer_format

        args = _parse(self.exp_export, line)
        fmt = infer_format(args.output, args.format)
        path = self._call(api.export, args.ref, args.output, fmt, force=args.force)
        experiment = self._call(api.get, args.ref)
        print(f"wrote {path}: {experiment.name} ({experiment.short_id}) as a {fmt}")

    def _sweep(self, cell: str, options: RunOptions, args: Any) -> Any:
        """`--sweep` / `--search`: the body once per grid point or trial (in the kernel or on
        Dask), each run recorded and reported, then the sweep's table as the cell's value (and
        a search's parallel-coordinates plot). The cell fails only when every run did."""
        __tracebackhide__ = True
        from .sweep import Where, parse_grid, run_sweep, show_sweep

        namespace = self.shell.user_ns if self.shell is not None else None
        where = Where(args.workers, args.cluster)
        try:
            if args.search:
                from .search import objective, parse_space, run_search

                if args.sweep:
                    raise UsageError("--sweep and --search do not mix; give one of them")
                sweep = run_search(
                    self._recorder,
                    cell,
                    options,
                    parse_space(args.search),
                    objective(args.maximize, args.minimize),
                    trials=args.trials,
                    sampler=args.sampler,
                    where=where,
                    report=self._report,
                    namespace=namespace,
                )
            else:
                sweep = run_sweep(
                    self._recorder,
                    cell,
                    options,
                    parse_grid(args.sweep),
                    report=self._report,
                    namespace=namespace,
                    where=where,
                )
        except NbexpError as error:
            raise UsageError(str(error)) from None
        if sweep.figure is not None:
            from IPython.display import display

            display(sweep.figure)
        errors = [result.error for result in sweep.results if result.error is not None]
        if errors and len(errors) == len(sweep.results):
            raise errors[-1]
        return self._call(show_sweep, sweep.ids)

    @line_magic
    def exp_diff(self, line: str) -> Any:
        """Compare two experiments: %exp_diff REF_A REF_B (one REF: it against `last`; none:
        last~1 against last). Params, metrics, code, data drift, environment, git, state."""
        refs = line.split()
        if len(refs) > 2:
            raise UsageError("usage: %exp_diff REF_A REF_B, e.g. %exp_diff rf-baseline last")
        a, b = [*(["last~1"] if not refs else []), *refs, *(["last"] if len(refs) < 2 else [])]
        return self._call(api.diff, a, b)

    @magic_arguments()
    @argument("metric", help="a metric, or with --step a series logged with nbexp.log")
    @argument("refs", nargs="*", metavar="REF", help="only these experiments (default: all)")
    @argument("--by", metavar="PARAM", help="plot the metric against this param")
    @argument("--color", metavar="PARAM", help="with --by: one line per value of this param")
    @argument("--step", action="store_true", help="overlay each experiment's logged series")
    @argument("--parallel", action="store_true", help="parallel coordinates of params vs metric")
    @argument("-q", "--query", metavar="QUERY", help="only matching ones, e.g. 'metrics.f1 > 0.8'")
    @argument("--sweep", metavar="ID", help="only the experiments of this sweep (or `last`)")
    @line_magic
    def exp_plot(self, line: str) -> Any:
        """A matplotlib figure: %exp_plot METRIC [REF ...] [--by PARAM [--color PARAM]]
        [--step] [--parallel] [-q QUERY] [--sweep ID|last]."""
        args = _parse(self.exp_plot, line)
        return self._call(
            api.plot,
            args.metric,
            args.refs or None,
            by=args.by,
            color=args.color,
            step=args.step,
            kind="parallel" if args.parallel else None,
            query=args.query,
            sweep=args.sweep,
        )

    @staticmethod
    def _call(function: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except NbexpError as error:
            raise UsageError(str(error)) from None
