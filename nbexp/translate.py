"""IPython syntax → plain Python, for exported scripts; nbexp's own magics out, for notebooks.

A script runs without IPython, so every `%magic` and `!command` line is either translated to
the Python that does the same (`%time x = f()` → `x = f()`, `!mkdir d` → subprocess,
`%matplotlib inline` → the Agg backend) or commented out with a note saying why. Lines are
found the way jupytext finds them: a line that starts a statement (not inside brackets or a
string) and begins with `%` or `!`. Everything else is left exactly as typed.

Translations keep one output line per input line, so a statement found by parsing the Python
version sits on the same lines of the IPython version.
"""

from __future__ import annotations

import ast
import re
import shlex
from collections.abc import Callable

NOTE = "nbexp:"
_IDENTIFIER = r"[A-Za-z_][\w.]*"
_ASSIGNED = re.compile(
    rf"^(?P<indent>\s*)(?P<target>{_IDENTIFIER}(?:\s*,\s*{_IDENTIFIER})*)\s*=\s*(?P<magic>[%!].*)$"
)
_MAGIC = re.compile(r"^(?P<indent>\s*)(?P<escape>%{1,2}|!{1,2})(?P<rest>.*)$")
_NBEXP_MAGICS = {
    "experiments",
    "exp_show",
    "exp_diff",
    "exp_restore",
    "exp_export",
    "exp_plot",
    "exp_tag",
    "exp_rm",
}
_TIMING = {"time", "timeit", "prun"}
_DISPLAY_LINES = {
    "pwd", "ls", "who", "whos", "who_ls", "history", "hist", "lsmagic", "pinfo", "pinfo2",
    "pdoc", "pdef", "psource", "pfile", "precision", "pprint", "xmode", "colors", "page",
    "pycat", "less", "more", "cat", "dhist", "dirs", "env", "magic", "quickref",
}  # fmt: skip
_INSTALLERS = {"pip", "conda", "mamba", "micromamba"}
_DISPLAY_CELLS = {"html", "markdown", "latex", "javascript", "js", "svg", "capture"}
_SHELL_CELLS = {"bash", "sh", "script", "system", "!"}


def split_experiment_line(cell: str) -> tuple[str | None, str]:
    """(the `%%experiment` line's arguments or None, the body) of a cell as typed."""
    first, _, rest = cell.partition("\n")
    if first.lstrip().startswith("%%experiment"):
        return first.strip()[len("%%experiment") :].strip(), rest
    return None, cell


def to_python(cell: str) -> str:
    """The cell as plain Python: magics translated, or commented out with a note."""
    return _translate(cell, _python_line, _python_cell)


def to_ipython(cell: str) -> str:
    """The cell for a notebook: as typed, but without nbexp's own magics (they would record
    or display experiments while the export runs)."""
    return _translate(cell, _ipython_line, _ipython_cell)


CellRule = Callable[[str, str, list[str]], tuple[str, list[str] | None]]


def _translate(
    cell: str, line_rule: Callable[[str, str, str | None], str], cell_rule: CellRule
) -> str:
    lines = cell.split("\n")
    first = lines[0].lstrip()
    if first.startswith("%%"):
        name, _, argument = first[2:].partition(" ")
        head, body = cell_rule(name.strip(), argument.strip(), lines[1:])
        if body is None:  # the body runs as typed: its own lines may hold magics
            body = _translate("\n".join(lines[1:]), line_rule, cell_rule).split("\n")
        return "\n".join([head, *body]) if len(lines) > 1 else head
    out: list[str] = []
    depth, quote, continued = 0, None, False
    for line in lines:
        out.append(line if continued else _line(line, line_rule))
        depth, quote, continued = _advance(line, depth, quote)
    return "\n".join(out)


def _line(line: str, rule: Callable[[str, str, str | None], str]) -> str:
    """One line that starts a statement: translated by `rule` when it is IPython syntax."""
    assigned = _ASSIGNED.match(line)
    if assigned and not line.lstrip().startswith(("%", "!")):
        return rule(assigned["indent"], assigned["magic"], assigned["target"])
    stripped = line.strip()
    if _MAGIC.match(line) and not stripped.startswith("!="):
        return rule(line[: len(line) - len(line.lstrip())], stripped, None)
    if _is_help(stripped):
        indent = line[: len(line) - len(line.lstrip())]
        return f"{indent}# {stripped}  # {NOTE} IPython help, display only"
    return line


def _is_help(stripped: str) -> bool:
    """`obj?`, `obj??`, `?obj`: IPython's help syntax (never valid Python)."""
    if stripped.startswith("?") and len(stripped) > 1:
        return True
    return (
        stripped.endswith("?")
        and "#" not in stripped
        and re.fullmatch(r"[\w.\[\]'\"()*]+\?{1,2}", stripped) is not None
    )


def _advance(line: str, depth: int, quote: str | None) -> tuple[int, str | None, bool]:
    """Bracket depth and open string after `line`, and whether the next line continues it."""
    index = 0
    while index < len(line):
        char = line[index]
        if quote:
            if char == "\\":
                index += 2
                continue
            if line.startswith(quote, index):
                index += len(quote)
                quote = None
                continue
            index += 1
            continue
        if char == "#":
            break
        if char in "\"'":
            quote = line[index : index + 3] if line[index : index + 3] in ('"""', "'''") else char
            index += len(quote)
            continue
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth = max(0, depth - 1)
        index += 1
    backslash = line.rstrip().endswith("\\") and quote not in ('"', "'")
    if quote in ('"', "'") and not backslash:
        quote = None  # an unterminated one-line string: a syntax error, not a continuation
    return depth, quote, depth > 0 or quote is not None or backslash


# -- plain Python -------------------------------------------------------------------------


def _commented(indent: str, text: str, why: str) -> str:
    return f"{indent}# {text}  # {NOTE} {why}"


def _string(text: str) -> str:
    """A Python string for text that IPython would have expanded (`{expr}` → an f-string)."""
    if re.search(r"(?<![{$])\{[^{}]+\}(?!\})", text):
        return "f" + repr(text)
    return repr(text)


def _python_line(indent: str, magic: str, target: str | None) -> str:
    """One `%magic …` / `!command` (optionally `target = …`) as one line of Python."""
    assign = f"{target} = " if target else ""
    if magic.startswith("!"):
        command = magic.lstrip("!").strip()
        return _shell(indent, magic, command, assign)
    if magic.startswith("%%"):
        return _commented(indent, magic, "a cell magic in the middle of a cell did not run")
    name, _, argument = magic[1:].partition(" ")
    argument = argument.strip()
    if name in _TIMING:
        statement = _timed_statement(name, argument)
        if statement is None or (target and name != "time"):
            return _commented(indent, f"{assign}{magic}", "IPython timing result, no equivalent")
        return f"{indent}{assign}{statement}"
    if target:
        if name in ("sx", "system"):
            return _shell(indent, magic, argument, assign)
        return _commented(indent, f"{assign}{magic}", "IPython magic, no Python equivalent")
    if name == "matplotlib":
        return f'{indent}import matplotlib; matplotlib.use("Agg")'
    if name in ("load_ext", "reload_ext", "unload_ext") and argument == "nbexp":
        return ""
    if name in _NBEXP_MAGICS:
        return _commented(indent, magic, "nbexp's own magic, IPython only")
    if name in _INSTALLERS:
        return _commented(indent, magic, "install packages before running (see the header)")
    if name in ("sx", "system"):
        return _shell(indent, magic, argument, "")
    if name == "cd" and argument:
        path = _single_word(argument)
        if path is not None:
            return f"{indent}import os; os.chdir(os.path.expanduser({_string(path)}))"
    if name == "env":
        return _environment(indent, magic, argument)
    if name == "run":
        return _run(indent, magic, argument)
    if name in _DISPLAY_LINES:
        return _commented(indent, magic, "display only")
    return _commented(indent, magic, "IPython magic, no Python equivalent")


def _shell(indent: str, magic: str, command: str, assign: str) -> str:
    words = command.split()
    if words[:1] in (["pip"], ["conda"], ["mamba"]) or words[1:3] == ["-m", "pip"]:
        return _commented(
            indent, assign + magic, "install packages before running (see the header)"
        )
    if not command:
        return _commented(indent, assign + magic, "empty shell command")
    run = f"subprocess.run({_string(command)}, shell=True, check=False"
    if assign:
        return f"{indent}import subprocess; {assign}{run}, capture_output=True, text=True).stdout.splitlines()"
    return f"{indent}import subprocess; {run})"


def _timed_statement(name: str, argument: str) -> str | None:
    """The statement `%time`/`%timeit`/`%prun` runs, without their options; None for -o."""
    valued = {"timeit": "nrp", "prun": "lDTs"}.get(name)
    rest = argument.strip()
    while valued is not None and (option := re.match(r"-(\w)(\S*)\s*", rest)):
        flag, attached = option.group(1), option.group(2)
        if flag == "o":
            return None
        rest = rest[option.end() :]
        if flag in valued and not attached:
            rest = rest.split(None, 1)[1] if len(rest.split(None, 1)) == 2 else ""
    return rest.strip() or None


def _single_word(argument: str) -> str | None:
    try:
        words = shlex.split(argument)
    except ValueError:
        return None
    return words[0] if len(words) == 1 and not words[0].startswith("-") else None


def _environment(indent: str, magic: str, argument: str) -> str:
    if "=" in argument:
        name, _, value = argument.partition("=")
    else:
        name, _, value = argument.partition(" ")
    name, value = name.strip(), value.strip()
    if not name or not value or not name.isidentifier():
        return _commented(indent, magic, "display only")
    return f"{indent}import os; os.environ[{name!r}] = {_string(value)}"


def _run(indent: str, magic: str, argument: str) -> str:
    try:
        words = shlex.split(argument)
    except ValueError:
        words = []
    shared = words[:1] == ["-i"]
    words = words[1:] if shared else words
    if len(words) != 1 or words[0].startswith("-"):
        return _commented(indent, magic, "%run with options or arguments, no Python equivalent")
    init = ", init_globals=globals()" if shared else ""
    return (
        f"{indent}import runpy; globals().update(runpy.run_path({_string(words[0])}"
        f'{init}, run_name="__main__"))'
    )


def _python_cell(name: str, argument: str, body: list[str]) -> tuple[str, list[str] | None]:
    """A cell magic's cell as Python: its first line, and its body (None: run as typed)."""
    header = f"%%{name}" + (f" {argument}" if argument else "")
    if name in _TIMING or name == "experiment" or (name == "capture" and not argument):
        if name == "timeit" and argument and not argument.startswith("-"):
            return argument, None  # %%timeit SETUP: the setup line runs first
        return f"# {header}  # {NOTE} the cell runs as plain code", None
    if name == "writefile":
        words = argument.split()
        mode = "a" if words[:1] in (["-a"], ["--append"]) else "w"
        if words:
            opened = f"open({_string(words[-1])}, {mode!r})"
            return _string_call(f"with {opened} as _nbexp_file: _nbexp_file.write(", body, ")")
    if name in _SHELL_CELLS and (name != "script" or argument in ("bash", "sh")):
        return _string_call(
            'import subprocess; subprocess.run(["bash", "-c", ', body, "], check=False)"
        )
    why = "display only" if name in _DISPLAY_CELLS else "IPython cell magic, no Python equivalent"
    return f"# {header}  # {NOTE} {why}", [f"# {line}" for line in body]


def _string_call(prefix: str, body: list[str], suffix: str) -> tuple[str, list[str]]:
    """`prefix` + the body as one string + `suffix`, one source line per body line."""
    if not body:
        return f"{prefix}''{suffix}", []
    pieces = [repr(line + ("\n" if i < len(body) - 1 else "")) for i, line in enumerate(body)]
    return prefix.rstrip(), [*pieces[:-1], pieces[-1] + suffix]


# -- IPython (notebooks) ------------------------------------------------------------------


def _ipython_line(indent: str, magic: str, target: str | None) -> str:
    name = magic.lstrip("%").partition(" ")[0] if magic.startswith("%") else ""
    argument = magic.lstrip("%").partition(" ")[2].strip()
    if name in ("load_ext", "reload_ext", "unload_ext") and argument == "nbexp":
        return ""
    if name in _NBEXP_MAGICS and not target:
        return _commented(indent, magic, "nbexp's own magic, not rerun")
    prefix = f"{target} = " if target else ""
    return f"{indent}{prefix}{magic}"


def _ipython_cell(name: str, argument: str, body: list[str]) -> tuple[str, list[str] | None]:
    if name == "experiment":
        return f"# %%experiment {argument}".rstrip() + f"  # {NOTE} runs as plain code", None
    return f"%%{name}" + (f" {argument}" if argument else ""), body


# -- back from IPython's transformed source ---------------------------------------------


def untransform(source: str) -> str:
    """IPython's transformed source with its `get_ipython().run_line_magic(...)`,
    `.system(...)` and `.getoutput(...)` calls written back as magics, for `to_python`."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source
    lines = source.split("\n")
    for node in ast.walk(tree):
        if not isinstance(node, ast.stmt):
            continue
        magic = None
        target = None
        if isinstance(node, ast.Expr):
            magic = _magic_of(node.value)
        elif (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
        ):
            magic = _magic_of(node.value)
            target = node.targets[0].id
        if magic is None or node.lineno != node.end_lineno:
            continue
        line = lines[node.lineno - 1]
        if line.strip() != ast.get_source_segment(source, node):
            continue
        indent = line[: len(line) - len(line.lstrip())]
        lines[node.lineno - 1] = f"{indent}{target} = {magic}" if target else f"{indent}{magic}"
    return "\n".join(lines)


def _magic_of(value: ast.expr) -> str | None:
    if not (
        isinstance(value, ast.Call)
        and isinstance(value.func, ast.Attribute)
        and isinstance(value.func.value, ast.Call)
        and isinstance(value.func.value.func, ast.Name)
        and value.func.value.func.id == "get_ipython"
        and all(isinstance(arg, ast.Constant) and isinstance(arg.value, str) for arg in value.args)
    ):
        return None
    args = [str(arg.value) for arg in value.args if isinstance(arg, ast.Constant)]
    method = value.func.attr
    if method == "run_line_magic" and len(args) == 2:
        return f"%{args[0]} {args[1]}".rstrip()
    if method in ("system", "getoutput") and len(args) == 1:
        return f"!{args[0]}"
    return None
