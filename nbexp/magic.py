"""The IPython magics: parse arguments, delegate, print. No logic of their own."""

from __future__ import annotations

import shlex
import sys
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from traitlets import Bool

from . import api
from .errors import NbexpError
from .recorder import Recorder, RunOptions, RunResult
from .show import summary_line


def _parse(magic: Any, line: str) -> Any:
    """Parse a magic's line with POSIX quoting, so --expect "f1 >= 0.9" arrives unquoted."""
    try:
        words = shlex.split(line)
    except ValueError as error:
        raise UsageError(f"cannot parse the magic's arguments: {error}") from None
    return magic.parser.parse_args(words)


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
    @argument("--no-state", action="store_true", help="do not snapshot the kernel's variables")
    @argument(
        "--cache",
        action="store_true",
        help="skip the body when an earlier successful run had the same code, params, "
        "input data and input variables; restore its state instead",
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
            line=line,
        )
        try:
            result = self._recorder.run(cell, options)
        except NbexpError as error:
            raise UsageError(str(error)) from None
        self._report(result)
        if result.error is not None:
            raise result.error
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
        """The experiments in this store as a table: %experiments [QUERY]."""
        return self._call(api.experiments, line.strip() or None)

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
        experiment = self._call(api.get, args.ref)
        report = self._call(
            api.restore,
            experiment.id,
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
        experiment = self._call(api.tag, parts[0], parts[1])
        print(f"tagged {experiment.name} ({experiment.short_id}): {', '.join(experiment.tags)}")

    @line_magic
    def exp_rm(self, line: str) -> None:
        """Delete an experiment's record: %exp_rm REF (objects are freed by `nbexp gc`)."""
        if not line.strip():
            raise UsageError("usage: %exp_rm REF, e.g. %exp_rm last")
        experiment = self._call(api.remove, line.strip())
        print(f"deleted {experiment.name} ({experiment.short_id})")

    @staticmethod
    def _call(function: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except NbexpError as error:
            raise UsageError(str(error)) from None
