"""The `nbexp` command line: a thin layer over the store and the API.

Every subcommand is one small function registered with its parser; a user error prints one
line and exits 1, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from . import api
from .errors import NbexpError
from .record import SHORT_ID_LENGTH, encode_value

if TYPE_CHECKING:
    from .store import Store

Command = Callable[[argparse.Namespace, "Store"], int]


def _write(text: str) -> None:
    """Print a whole answer with one write: with PYTHONUNBUFFERED (common in containers) a
    write per row is a system call per row, seconds for 100,000 rows."""
    sys.stdout.write(text)


def cmd_list(args: argparse.Namespace, store: Store) -> int:
    if args.format == "json":
        rows = api.rows(args.query, sort=args.sort, limit=args.limit, store=store)
        _write(json.dumps(encode_value(rows), indent=1, allow_nan=False) + "\n")
        return 0
    text = api.listing_text(
        args.query, sort=args.sort, limit=args.limit, fmt=args.format, store=store
    )
    _write_utf8(text)
    return 0


def _write_utf8(data: bytes) -> None:
    """Print UTF-8 text as it is when stdout takes UTF-8 (no decoding and encoding again of
    megabytes), else through stdout's own encoding."""
    buffer = getattr(sys.stdout, "buffer", None)
    encoding = (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "")
    if buffer is not None and encoding == "utf8" and os.linesep == "\n":
        sys.stdout.flush()
        buffer.write(data)
        buffer.flush()
    else:
        _write(data.decode("utf-8", "replace"))


def cmd_show(args: argparse.Namespace, store: Store) -> int:
    experiment = api.get(args.ref, store=store)
    if args.json:
        json.dump(experiment.to_dict(), sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        from .show import text_view

        print(text_view(experiment))
    return 0


def cmd_rm(args: argparse.Namespace, store: Store) -> int:
    for ref in args.refs:
        experiment = api.remove(ref, store=store)
        print(f"deleted {experiment.name} ({experiment.short_id})")
    return 0


def cmd_tag(args: argparse.Namespace, store: Store) -> int:
    experiment = api.tag(args.ref, args.tag, remove=args.remove, store=store)
    if args.remove:
        left = ", ".join(experiment.tags) or "no tags left"
        print(f"untagged {args.tag} from {experiment.name} ({experiment.short_id}): {left}")
        return 0
    print(f"tagged {experiment.name} ({experiment.short_id}): {', '.join(experiment.tags)}")
    return 0


def cmd_reindex(args: argparse.Namespace, store: Store) -> int:
    count = api.reindex(store=store)
    print(f"indexed {count} experiment{'' if count == 1 else 's'} from the records in {store.root}")
    return 0


def cmd_fsck(args: argparse.Namespace, store: Store) -> int:
    problems = api.fsck(store=store)
    for problem in problems:
        print(problem)
    if problems:
        print(
            f"{len(problems)} problem{'' if len(problems) == 1 else 's'} in {store.root}",
            file=sys.stderr,
        )
        return 1
    print(f"ok: every record and object in {store.root} verified")
    return 0


def cmd_gc(args: argparse.Namespace, store: Store) -> int:
    from .show import human_bytes

    if args.remote:
        return _gc_remote(args, store)
    collected = api.gc(delete=args.yes, store=store)
    found = f"{len(collected.objects)} unreferenced objects ({human_bytes(collected.size)})"
    if collected.temporary:  # what killed processes left in tmp/ (see Store.clean_tmp)
        found += (
            f" and {collected.temporary} leftover temporary files "
            f"({human_bytes(collected.temporary_size)}) in tmp/"
        )
    if not collected.objects and not collected.temporary:
        print("nothing to collect: every object is referenced by a record")
    elif args.yes:
        print(f"deleted {found}")
    else:
        print(f"{found} would be deleted; run `nbexp gc --yes` to delete them")
    if collected.small_packs:
        print(
            f"merged {collected.small_packs} small pack files into one"
            if args.yes
            else f"{collected.small_packs} small pack files would be merged into one"
        )
    return 0


def _gc_remote(args: argparse.Namespace, store: Store) -> int:
    from .remote import GC_GRACE_SECONDS
    from .show import human_bytes

    found = api.gc(delete=args.yes, remote=args.remote, store=store)
    where = f"on remote {args.remote}"
    if not args.yes:
        for digest in found.objects[:20]:
            print(f"would delete object {digest[:12]}")
        if len(found.objects) > 20:
            print(f"... and {len(found.objects) - 20} more")
    if found.young:
        print(
            f"kept {found.young} unreferenced objects ({human_bytes(found.young_size)}) {where} "
            f"written in the last {GC_GRACE_SECONDS / 3600:g} h: a push may still be writing "
            "the records that need them"
        )
    if not found.objects and not found.temporary:
        print(f"nothing to collect {where}: every object is referenced by a record there")
    elif args.yes:
        print(
            f"deleted {len(found.objects)} unreferenced objects ({human_bytes(found.size)}) "
            f"and {len(found.temporary)} leftover temporary files {where}"
        )
    else:
        print(
            f"{len(found.objects)} unreferenced objects ({human_bytes(found.size)}) and "
            f"{len(found.temporary)} leftover temporary files {where} would be deleted; "
            f"run `nbexp gc --remote {args.remote} --yes` to delete them"
        )
    return 0


def cmd_remote_add(args: argparse.Namespace, store: Store) -> int:
    remote = api.remote_add(
        args.name,
        args.url,
        args.option or (),
        trusted=args.trusted,
        default=args.default,
        store=store,
    )
    notes = [word for word, on in (("trusted", remote.trusted), ("default", args.default)) if on]
    print(f"added remote {remote.name}: {remote.url}" + (f" ({', '.join(notes)})" if notes else ""))
    return 0


def cmd_remote_list(args: argparse.Namespace, store: Store) -> int:
    configured, default = api.remotes(store=store)
    if not configured:
        print("no remotes; add one with `nbexp remote add NAME URL`")
        return 0
    for remote in configured.values():
        notes = [
            w for w, on in (("trusted", remote.trusted), ("default", remote.name == default)) if on
        ]
        options = " ".join(f"{k}={json.dumps(v)}" for k, v in remote.options.items())
        print(" ".join(filter(None, [remote.name, remote.url, ",".join(notes), options])))
    return 0


def cmd_remote_remove(args: argparse.Namespace, store: Store) -> int:
    remote = api.remote_remove(args.name, store=store)
    print(f"removed remote {remote.name} ({remote.url}); experiments pulled from it stay")
    return 0


def cmd_remote_trust(args: argparse.Namespace, store: Store) -> int:
    remote = api.remote_trust(args.name, True, store=store)
    print(f"remote {remote.name} is trusted: state pulled from it can be restored")
    return 0


def cmd_remote_untrust(args: argparse.Namespace, store: Store) -> int:
    remote = api.remote_trust(args.name, False, store=store)
    print(f"remote {remote.name} is not trusted: state pulled from it will not be restored")
    return 0


def _remote_and_refs(store: Store, words: list[str]) -> tuple[str | None, list[str]]:
    """`[REMOTE] [REF...]`: the first word is a remote when one has that name."""
    if words and words[0] in api.remotes(store=store)[0]:
        return words[0], words[1:]
    return None, words


def cmd_push(args: argparse.Namespace, store: Store) -> int:
    name, refs = _remote_and_refs(store, args.words)
    print(api.push(name, refs, workers=args.jobs, progress=not args.quiet, store=store))
    return 0


def cmd_pull(args: argparse.Namespace, store: Store) -> int:
    name, refs = _remote_and_refs(store, args.words)
    print(api.pull(name, refs, workers=args.jobs, progress=not args.quiet, store=store))
    return 0


def cmd_export(args: argparse.Namespace, store: Store) -> int:
    from .exporter import infer_format

    experiment = api.get(args.ref, store=store)
    fmt = infer_format(args.output, args.format)
    if fmt == "dvc":
        script, dvc_yaml, stage = api.export_stage(experiment, args.output, force=args.force)
        print(f"wrote {script} and stage {stage!r} in {dvc_yaml}: `dvc repro {stage}` runs it")
        return 0
    if args.output is None:
        _write(api.export_text(experiment, fmt))
        return 0
    path = api.export(experiment, args.output, fmt, force=args.force)
    print(f"wrote {path}: {experiment.name} ({experiment.short_id}) as a {fmt}")
    return 0


def cmd_artifact(args: argparse.Namespace, store: Store) -> int:
    where, experiment = api.artifact(
        args.ref, args.path, args.output, force=args.force, store=store
    )
    if where != "-":
        print(f"wrote {where}: {args.path} of {experiment.name} ({experiment.short_id})")
    return 0


def cmd_rerun(args: argparse.Namespace, store: Store) -> int:
    from .rerun import report

    result = api.rerun(
        args.ref, rtol=args.rtol, atol=args.atol,
        check_data=not args.no_check_data, timeout=args.timeout, store=store,
    )  # fmt: skip
    print(report(result, args.rtol, args.atol))
    return result.exit_code


def cmd_branch(args: argparse.Namespace, store: Store) -> int:
    made = api.branch(args.ref, args.name, store=store)
    changes = " + the recorded uncommitted changes" if made.diff_applied else ""
    print(
        f"branch {made.name} at {made.commit[:12]} (on {made.base[:12]}{changes}): "
        + ", ".join(made.files)
    )
    return 0


def cmd_diff(args: argparse.Namespace, store: Store) -> int:
    from .comparison import as_data

    found = api.diff(args.a, args.b, store=store)
    if args.format == "json":
        json.dump(encode_value(as_data(found)), sys.stdout, indent=1, allow_nan=False)
        sys.stdout.write("\n")
        return 0
    print(found)
    return 0


def cmd_drift(args: argparse.Namespace, store: Store) -> int:
    """Drift of new data from an experiment's input, nothing recorded; exit 3 at --fail-on."""
    from . import datadrift as drift

    drift.check_level(args.fail_on)
    checked = api.drift_check(args.ref, args.paths, input=args.input, store=store)
    experiment, found = checked.experiment, checked.found
    if args.format == "json":
        json.dump(encode_value(drift.as_json(experiment, found)), sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(drift.text(experiment, found))
    return drift.DRIFT_EXIT if drift.reaches(found, args.fail_on) else 0


def cmd_status(args: argparse.Namespace, store: Store) -> int:
    """Stale experiments and what changed; exit 1 when any is stale, so it can gate a pipeline."""
    checked = api.status(args.ref, store=store)
    rows, found = checked.rows, checked.changes
    for row in rows:
        changes = found.get(row["id"])
        if changes:
            print(f"stale  {row['name']} ({row['id'][:SHORT_ID_LENGTH]})")
            print("\n".join(f"  {change}" for change in changes))
        elif args.ref:
            origin = checked.origins.get(row["id"])
            unchecked = (
                f"; pulled from {origin}, so inputs not on this machine are not checked"
                if origin
                else ""
            )
            print(
                f"fresh  {row['name']} ({row['id'][:SHORT_ID_LENGTH]}): inputs and cell "
                f"unchanged{unchecked}"
            )
    if not args.ref:
        count = len(rows)
        print(
            f"{len(found)} of {count} experiment{'' if count == 1 else 's'} stale"
            if found
            else f"ok: {count} experiment{'' if count == 1 else 's'}, none stale"
        )
    return 1 if found else 0


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is one `nbexp:` line and exit code 1 (SPEC §8)."""

    def error(self, message: str) -> NoReturn:
        self.exit(1, f"nbexp: {message}; see `{self.prog} --help`\n")


def _sort_values_may_start_with_dash(argv: Sequence[str]) -> list[str]:
    """`--sort -metrics.f1` means a reversed sort, not a flag: pass it as `--sort=-metrics.f1`."""
    words: list[str] = []
    rest = iter(argv)
    for word in rest:
        if word == "--":
            words.extend([word, *rest])
        elif word == "--sort" and (value := next(rest, None)) is not None:
            words.append(f"--sort={value}")
        else:
            words.append(word)
    return words


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nbexp", description="Experiments recorded by %%experiment.")
    parser.add_argument(
        "--store", help="the store folder (default: .nbexp/ of this project, or $NBEXP_STORE)"
    )
    parser.add_argument("--version", action="version", version=f"nbexp {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    def add(
        name: str, function: Command, help_text: str, *, reads_only: bool = False
    ) -> argparse.ArgumentParser:
        """A subcommand; `reads_only` ones open the store read-only (nothing created or
        written, and a store the user may not write still answers)."""
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(func=function, reads_only=reads_only)
        return sub

    listing = add("list", cmd_list, "list experiments, newest first", reads_only=True)
    listing.add_argument(
        "query", nargs="?", help='a filter, e.g. "metrics.f1 > 0.8 and params.depth < 10"'
    )
    listing.add_argument(
        "--sort", help="created, name, status, duration, params.X or metrics.X; prefix - to reverse"
    )
    listing.add_argument("--format", choices=("table", "csv", "json"), default="table")
    listing.add_argument("--limit", type=int, default=None, help="show at most N experiments")
    show = add("show", cmd_show, "show one experiment", reads_only=True)
    show.add_argument("ref", nargs="?", default="last", help="id prefix, name, tag, last or last~N")
    show.add_argument("--json", action="store_true", help="print the record as JSON")
    remove = add("rm", cmd_rm, "delete experiments (objects are freed by `nbexp gc`)")
    remove.add_argument("refs", nargs="+", metavar="REF")
    tag = add("tag", cmd_tag, "tag an experiment (or remove a tag with --remove)")
    tag.add_argument("ref")
    tag.add_argument("tag")
    tag.add_argument("--remove", action="store_true", help="take the tag off instead")
    add("reindex", cmd_reindex, "rebuild the index from the records")
    add("fsck", cmd_fsck, "verify every record and object")
    compare = add(
        "diff",
        cmd_diff,
        "what differs between two experiments (data drift included)",
        reads_only=True,
    )
    compare.add_argument("a", metavar="REF_A", help="id prefix, name, tag, last or last~N")
    compare.add_argument("b", metavar="REF_B", nargs="?", default="last", help="default: last")
    compare.add_argument("--format", choices=("text", "json"), default="text")
    moved = add(
        "drift",
        cmd_drift,
        "how far new data drifted from what an experiment read (no record)",
        reads_only=True,
    )
    moved.add_argument("ref", help="id prefix, name, tag, last or last~N")
    moved.add_argument("paths", nargs="+", metavar="PATH", help="new data (.csv, .tsv, .parquet)")
    moved.add_argument("--input", help="the recorded input to compare with (path or variable)")
    moved.add_argument("--format", choices=("text", "json"), default="text")
    moved.add_argument("--fail-on", choices=("moderate", "major"), help="exit 3 at this level")
    moved.epilog = "exit codes: 0 compared, 3 a column reached --fail-on, 1 a user error"
    status = add(
        "status", cmd_status, "which experiments are stale (an input file or their cell changed)"
    )
    status.add_argument("ref", nargs="?", help="check only this experiment")
    status.epilog = "exit codes: 0 nothing stale, 1 something stale (or a user error)"
    export = add("export", cmd_export, "write a script (or notebook) that reproduces an experiment")
    export.add_argument("ref", help="id prefix, name, tag, last or last~N")
    export.add_argument("-o", "--output", help="the file to write (default: print the export)")
    export.add_argument(
        "--format",
        choices=("script", "notebook", "dvc"),
        help="default: from -o's suffix; dvc: the script plus its stage in dvc.yaml",
    )
    export.add_argument("--force", action="store_true", help="overwrite the output file")
    artifact = add(
        "artifact", cmd_artifact, "write a file an experiment wrote back out, byte-identical"
    )
    artifact.add_argument("ref", help="id prefix, name, tag, last or last~N")
    artifact.add_argument("path", help="the file as recorded (`nbexp show REF` lists them)")
    artifact.add_argument(
        "-o", "--output", help="where to write it (default: its recorded path; - for stdout)"
    )
    artifact.add_argument("--force", action="store_true", help="overwrite a different file")
    again = add("rerun", cmd_rerun, "run an experiment's export afresh and compare its metrics")
    again.add_argument("ref", help="id prefix, name, tag, last or last~N")
    again.add_argument("--rtol", type=float, default=1e-6, help="relative tolerance (1e-6)")
    again.add_argument("--atol", type=float, default=1e-9, help="absolute tolerance (1e-9)")
    again.add_argument("--no-check-data", action="store_true", help="run even if inputs changed")
    again.add_argument("--timeout", type=float, default=None, help="stop after SECONDS")
    again.epilog = "exit codes: 0 metrics agree, 2 input data changed, 3 differ, 4 script failed"
    fork = add("branch", cmd_branch, "a git branch holding an experiment's code, export and record")
    fork.add_argument("ref", help="id prefix, name, tag, last or last~N")
    fork.add_argument("name", help="the new branch's name")
    collect = add(
        "gc",
        cmd_gc,
        "delete objects no record references, and temp files killed processes left in tmp/ "
        "over an hour ago (dry run unless --yes)",
    )
    collect.add_argument("--yes", action="store_true", help="really delete them")
    collect.add_argument(
        "--remote", metavar="NAME", help="collect on this remote (its records define what is used)"
    )
    _add_remote_commands(commands)
    return parser


def _add_remote_commands(commands: Any) -> None:
    """`remote add/list/remove/trust/untrust`, `push`, `pull` (SPEC §9)."""
    remote = commands.add_parser("remote", help="manage remotes", description="manage remotes")
    actions = remote.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    def action(name: str, function: Command, help_text: str) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(func=function)
        return sub

    add = action("add", cmd_remote_add, "name a remote: any fsspec URL (file://, s3://, gs://...)")
    add.add_argument("name")
    add.add_argument("url", help="e.g. s3://bucket/prefix or /shared/folder")
    add.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="an fsspec storage option, e.g. endpoint_url=http://127.0.0.1:9000 (credentials "
        "are refused: use the back end's environment variables, e.g. AWS_*)",
    )
    add.add_argument(
        "--trusted",
        action="store_true",
        help="restore state pulled from it (unpickling runs code: trust who can write there)",
    )
    add.add_argument("--default", action="store_true", help="use it when no remote is named")
    action("list", cmd_remote_list, "list remotes")
    action("remove", cmd_remote_remove, "forget a remote").add_argument("name")
    action("trust", cmd_remote_trust, "restore state pulled from a remote").add_argument("name")
    action("untrust", cmd_remote_untrust, "refuse state pulled from a remote").add_argument("name")
    for name, function, help_text in (
        ("push", cmd_push, "send experiments and the objects the remote lacks"),
        ("pull", cmd_pull, "fetch experiments and the objects this store lacks"),
    ):
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(func=function)
        sub.add_argument(
            "words",
            nargs="*",
            metavar="[REMOTE] [REF]",
            help="a remote (default: the default remote), then experiments (default: all)",
        )
        sub.add_argument(
            "-j", "--jobs", type=int, default=None, help="parallel transfers (default 16)"
        )
        sub.add_argument("-q", "--quiet", action="store_true", help="no progress line")


def _version() -> str:
    from . import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    words = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(_sort_values_may_start_with_dash(words))
    try:
        from .store import open_store

        # a missing or damaged index is rebuilt on open (by readers too, where they may write)
        store = open_store(args.store, read_only=getattr(args, "reads_only", False))
        code: int = args.func(args, store)
        return code
    except NbexpError as error:
        print(f"nbexp: {error}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `nbexp list | head`: the reader has all it wanted
        _silence_stdout()
        return 0


def _silence_stdout() -> None:
    """Point stdout at /dev/null: the text still buffered would otherwise fail again as the
    interpreter exits, and print a traceback after all."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real stdout (e.g. captured in tests)
        pass


if __name__ == "__main__":
    sys.exit(main())
