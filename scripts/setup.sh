#!/usr/bin/env bash
# Create .venv and install nbexp with its test extras and a Jupyter kernel for it.
# Needs only python3 (≥3.10), git and network access to PyPI; building the JupyterLab panel
# (labextension/, during the install) also needs Node.js ≥ 18 and the npm registry.
set -euo pipefail
cd "$(dirname "$0")/.."
# The panel is built by jlpm (it comes with jupyterlab in pip's build environment) on node,
# unless a build is already there (nbexp/labextension/).
if [ ! -f nbexp/labextension/package.json ] && ! command -v node >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs; } \
      >/dev/null 2>&1 || true
  fi
  command -v node >/dev/null \
    || { echo "setup failed: Node.js (≥ 18) is needed to build the JupyterLab panel" >&2; exit 1; }
fi
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -m pip install -q -e ".[test]" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import nbexp, IPython, nbclient, sklearn" \
  || { echo "setup failed: nbexp or its test dependencies did not install" >&2; exit 1; }
# The kernel the example notebooks run on is this venv's interpreter.
.venv/bin/python -m ipykernel install --sys-prefix --name python3 >/dev/null
# The widget's browser tests (tests/browser) drive JupyterLab in Debian's Chromium through
# playwright (never `playwright install`: it downloads a browser). Installed when we are root
# and it is missing; otherwise those tests skip and say why.
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      chromium chromium-driver fonts-liberation; } >/dev/null 2>&1 \
    || echo "setup: could not install chromium; the browser tests will be skipped" >&2
fi
# No "Jupyter news?" prompt over the notebook in those tests.
.venv/bin/jupyter labextension disable --level=sys_prefix \
  "@jupyterlab/apputils-extension:announcements" >/dev/null 2>&1 || true
git config --global user.email >/dev/null 2>&1 || git config --global user.email "ci@nbexp.invalid"
git config --global user.name >/dev/null 2>&1 || git config --global user.name "nbexp CI"
