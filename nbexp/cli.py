"""The `nbexp` command line: a thin layer over the store and the API.

Every subcommand is one small function registered with its parser; a user error prints one
line and exits 1, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from .errors import NbexpError, StoreError
from .record import SHORT_ID_LENGTH, encode_value
from .store import Store, discard_index, open_store, store_root

Command = Callable[[argparse.Namespace, Store], int]


def _flatten(
    row: dict[str, Any], param_names: list[str], metric_names: list[str]
) -> dict[str, Any]:
    flat = {
        "id": row["id"][:SHORT_ID_LENGTH],
        "name": row["name"],
        "created": row["created"][:19].replace("T", " "),
        "status": row["status"],
        "duration": row["duration"],
        "tags": ",".join(row["tags"]),
    }
    flat.update({f"params.{k}": row["params"].get(k) for k in param_names})
    flat.update({f"metrics.{k}": row["metrics"].get(k) for k in metric_names})
    return flat


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def cmd_list(args: argparse.Namespace, store: Store) -> int:
    rows = store.rows(args.query, sort=args.sort, limit=args.limit)
    if args.format == "json":
        json.dump(encode_value(rows), sys.stdout, indent=1, allow_nan=False)
        sys.stdout.write("\n")
        return 0
    param_names = list(dict.fromkeys(k for row in rows for k in row["params"]))
    metric_names = list(dict.fromkeys(k for row in rows for k in row["metrics"]))
    table = [_flatten(row, param_names, metric_names) for row in rows]
    header = ["id", "name", "created", "status", "duration", "tags"]
    header += [f"params.{k}" for k in param_names] + [f"metrics.{k}" for k in metric_names]
    if args.format == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=header)
        writer.writeheader()
        writer.writerows(table)
        return 0
    if not table:
        print("no experiments" + (f" match `{args.query}`" if args.query else " yet"))
        return 0
    cells = [[_cell(row[column]) for column in header] for row in table]
    widths = [
        max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(header)
    ]
    out = [" ".join(c.ljust(w) for c, w in zip(header, widths, strict=False)).rstrip()]
    out.extend(
        " ".join(c.ljust(w) for c, w in zip(line, widths, strict=False)).rstrip() for line in cells
    )
    sys.stdout.write("\n".join(out) + "\n")
    return 0


def cmd_show(args: argparse.Namespace, store: Store) -> int:
    experiment = store.get(args.ref)
    if args.json:
        json.dump(experiment.to_dict(), sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        from .show import text_view

        print(text_view(experiment))
    return 0


def cmd_rm(args: argparse.Namespace, store: Store) -> int:
    for ref in args.refs:
        experiment = store.get(ref)
        store.delete(experiment.id)
        print(f"deleted {experiment.name} ({experiment.short_id})")
    return 0


def cmd_tag(args: argparse.Namespace, store: Store) -> int:
    experiment = store.add_tag(store.resolve(args.ref), args.tag)
    print(f"tagged {experiment.name} ({experiment.short_id}): {', '.join(experiment.tags)}")
    return 0


def cmd_reindex(args: argparse.Namespace, store: Store) -> int:
    count = store.reindex()
    print(f"indexed {count} experiment{'' if count == 1 else 's'} from {store.records_dir}")
    return 0


def cmd_fsck(args: argparse.Namespace, store: Store) -> int:
    problems = store.fsck()
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

    garbage, size = store.gc(delete=args.yes)
    if not garbage:
        print("nothing to collect: every object is referenced by a record")
    elif args.yes:
        print(f"deleted {len(garbage)} unreferenced objects ({human_bytes(size)})")
    else:
        print(
            f"{len(garbage)} unreferenced objects ({human_bytes(size)}) would be deleted; "
            "run `nbexp gc --yes` to delete them"
        )
    return 0


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

    def add(name: str, function: Command, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(func=function)
        return sub

    listing = add("list", cmd_list, "list experiments, newest first")
    listing.add_argument(
        "query", nargs="?", help='a filter, e.g. "metrics.f1 > 0.8 and params.depth < 10"'
    )
    listing.add_argument(
        "--sort", help="created, name, status, duration, params.X or metrics.X; prefix - to reverse"
    )
    listing.add_argument("--format", choices=("table", "csv", "json"), default="table")
    listing.add_argument("--limit", type=int, default=None, help="show at most N experiments")
    show = add("show", cmd_show, "show one experiment")
    show.add_argument("ref", nargs="?", default="last", help="id prefix, name, tag, last or last~N")
    show.add_argument("--json", action="store_true", help="print the record as JSON")
    remove = add("rm", cmd_rm, "delete experiments (objects are freed by `nbexp gc`)")
    remove.add_argument("refs", nargs="+", metavar="REF")
    tag = add("tag", cmd_tag, "tag an experiment")
    tag.add_argument("ref")
    tag.add_argument("tag")
    add("reindex", cmd_reindex, "rebuild the index from the records")
    add("fsck", cmd_fsck, "verify every record and object")
    collect = add("gc", cmd_gc, "delete objects no record references (dry run unless --yes)")
    collect.add_argument("--yes", action="store_true", help="really delete them")
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    words = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(_sort_values_may_start_with_dash(words))
    try:
        try:
            store = open_store(args.store)
        except StoreError:
            if args.func is not cmd_reindex:
                raise
            # an index SQLite cannot open must not stop its own rebuild; an unusable
            # store fails again just below, with its own message
            with contextlib.suppress(OSError):
                discard_index(store_root(args.store))
            store = open_store(args.store)
        code: int = args.func(args, store)
        return code
    except NbexpError as error:
        print(f"nbexp: {error}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
