"""The one-pass scan of what is installed (`installed.Installed`) answers as
`importlib.metadata` does — which distributions provide a top-level module, each one's
version — on distributions laid out the ways installers leave them, odd ones included."""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

import pytest

from nbexp import environment
from nbexp.installed import Installed


def _dist_info(site: Path, folder: str, metadata_text: str, **files: str) -> None:
    info = site / folder
    info.mkdir()
    (info / "METADATA").write_text(metadata_text)
    for name, text in files.items():
        (info / name.replace("_txt", ".txt")).write_text(text)


def _version(name: str) -> str | None:
    """What nbexp recorded before the scan: `metadata.version`, None when not found."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "site"
    folder.mkdir()
    _dist_info(  # setuptools: top_level.txt
        folder,
        "Alpha_Pkg-1.2.dist-info",
        "Metadata-Version: 2.1\nName: Alpha-Pkg\nVersion: 1.2\n\nName: not this\n",
        top_level_txt="alpha\nalpha_extra\n",
    )
    _dist_info(  # hatch / flit: no top_level.txt, modules inferred from RECORD
        folder,
        "beta-3.0.dist-info",
        "Metadata-Version: 2.3\nname: beta\nversion: 3.0\nSummary: folded\n  summary line\n",
        RECORD="beta/__init__.py,sha256=x,1\nbeta/sub/m.py,,\nbeta_single.py,,\n"
        '"odd,name.py",,\n./dotted/mod.py,,\nbeta-3.0.dist-info/METADATA,,\n'
        "data/.py,,\nnotes.txt,,\n../outside.py,,\n",
    )
    # the files exist, as installed (importlib_metadata, once imported, skips missing ones)
    for name in ("beta/__init__.py", "beta/sub/m.py", "beta_single.py", "odd,name.py",
                 "dotted/mod.py", "data/.py", "notes.txt"):  # fmt: skip
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("")
    (tmp_path / "outside.py").write_text("")
    _dist_info(  # a folded Version: read by the email parser, as importlib does
        folder,
        "gamma-0.1.dist-info",
        "Metadata-Version: 2.1\nName: gamma\nVersion: 0.1\n  .post1\n",
        top_level_txt="gamma\n",
    )
    _dist_info(  # a second copy of Alpha further down sys.path: the first one wins
        tmp_path,
        "Alpha_Pkg-0.9.dist-info",
        "Metadata-Version: 2.1\nName: Alpha-Pkg\nVersion: 0.9\n",
        top_level_txt="alpha\n",
    )
    monkeypatch.setattr(sys, "path", [str(folder), str(tmp_path)])
    return folder


def test_the_scan_names_the_same_distributions_and_versions_as_importlib_metadata(
    site: Path,
) -> None:
    installed = Installed()

    expected = {top: sorted(names) for top, names in metadata.packages_distributions().items()}
    assert {top: sorted(names) for top, names in installed.tops.items()} == expected
    assert expected["beta_single"] == ["beta"]  # the case the RECORD path reading must get
    assert "odd,name" in expected and "dotted" in expected and ".." in expected
    for names in expected.values():
        for name in names:
            assert installed.version(name) == _version(name), name
    assert installed.version("alpha-pkg") == installed.version("ALPHA_PKG") == "1.2"
    assert installed.version("gamma") == _version("gamma") != "0.1"
    assert installed.base("beta") == site.resolve()
    assert installed.version("not-installed") is None


def _words(found: dict[str, list[str | None]]) -> dict[str, list[str | None]]:
    """A scan's versions with their white space collapsed: `gamma`'s folded Version header
    parses as `'      0.1\\n.post1'` in a fresh interpreter and as `'0.1\\n  .post1'` once
    dask is imported (it changes how importlib.metadata reads headers), so the child and the
    test process may differ there and nowhere else."""
    return {
        name: [" ".join(version.split()) if version else version, *rest]
        for name, (version, *rest) in found.items()
    }


def test_the_scan_in_a_child_process_answers_as_the_scan_in_process(site: Path) -> None:
    from nbexp import installed

    child = installed.Scan(list(sys.path)).result()

    here = Installed()
    assert child is not None
    assert child.tops == here.tops and _words(child.found) == _words(here.found)
    assert child.version("alpha-pkg") == "1.2"
    assert child.base("beta") == site.resolve()


def test_the_first_record_reads_the_scan_started_at_load(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(environment, "_installed", None)
    monkeypatch.setattr(environment, "_pending", None)
    environment.start_scan()
    pending = environment._pending
    assert pending is not None

    scan = environment._installed_now()

    assert environment._pending is None and pending[1].process.returncode == 0
    assert _words(scan.found) == _words(Installed().found)
    assert scan.version("beta") == "3.0"


def test_a_child_that_fails_leaves_the_scan_to_the_kernel(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nbexp import installed

    monkeypatch.setattr(installed.sys, "executable", str(site / "no-such-python"))
    monkeypatch.setattr(environment, "_installed", None)
    monkeypatch.setattr(environment, "_pending", None)
    environment.start_scan()  # the child cannot start: nothing pending, no error

    assert environment._pending is None
    assert environment._installed_now().version("alpha-pkg") == "1.2"
