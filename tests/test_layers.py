"""The house's walls (ARCHITECTURE.md): only `nbexp/store/` touches the store's files, and
the server and the widgets read experiments through the API's verbs, never the store's
methods. Read from the source, so a module that starts reaching through a wall fails here
with the line that does."""

from __future__ import annotations

import re
from pathlib import Path

import nbexp

PACKAGE = Path(nbexp.__file__).parent

# the store's folders and files, and the attributes that build their paths
_STORE_FILES = re.compile(
    r"\b(records_dir|objects_dir|tmp_dir|packs_dir|tags_dir|origins_dir|index_path|"
    r"record_path|object_path|_temp_path|temp_path|listing_cache_path)\b"
    r"|[\"'](index\.sqlite|gc\.lock|gc\.generation|config\.json)[\"']"
    r"|/\s*[\"'](records|objects|packs|tags|origins|tmp|sync|cache)[\"']"
)
# the Store's reading methods, called on anything but the API module (`api.rows(...)`)
_STORE_READS = re.compile(
    r"(?<!\bapi)(?<!model)(?<!\bself)\.(rows|count|listing|listed_keys|metric_bounds|resolve|load|change_token|"
    r"origin_name|origin)\("
)


def _lines(paths: list[Path], pattern: re.Pattern[str]) -> list[str]:
    found = []
    for path in paths:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if pattern.search(code) and not code.lstrip().startswith(('"', "'")):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}")
    return found


def test_only_the_store_package_touches_the_store_files() -> None:
    outside = [p for p in PACKAGE.rglob("*.py") if "store" not in p.relative_to(PACKAGE).parts]
    assert len(outside) > 40
    assert _lines(outside, _STORE_FILES) == []
    inside = list((PACKAGE / "store").glob("*.py"))
    assert _lines(inside, _STORE_FILES)  # the pattern does find them where they belong


def test_the_server_and_the_widgets_read_through_the_api() -> None:
    readers = [PACKAGE / "server_extension.py", *sorted((PACKAGE / "widgets").glob("*.py"))]
    assert _lines(readers, _STORE_READS) == []
    assert _lines([PACKAGE / "api.py"], _STORE_READS)  # where the verbs call the store
