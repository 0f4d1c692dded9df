#!/usr/bin/env bash
# Create or refresh the virtual environment the Makefile runs everything in.
#
#   scripts/venv.sh PYTHON VENV demo   the library's demo extras and the demo group only
#   scripts/venv.sh PYTHON VENV dev    everything: extras, plot, and the dev group (test, lint,
#                                      demo, docs, bench), plus pip (the install tests use it)
#
# The installer is uv when it can be had (on PATH, or from PyPI into the venv: one ~20 MB
# wheel, then every install is several times faster than pip's), else pip >= 25.1 (which
# installs dependency groups with --group). Set USE_PIP=1 to force pip.
set -euo pipefail
python=$1 venv=$2 what=$3
bin=$venv/bin

"$python" -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
case $what in
  demo) spec=(-e '.[grpc,httpx]' --group demo) ;;
  dev) spec=(-e '.[all,plot]' --group dev) ;;
  *) echo "usage: $0 PYTHON VENV demo|dev" >&2; exit 2 ;;
esac

uv=""
if [ -z "${USE_PIP:-}" ]; then
  if command -v uv >/dev/null 2>&1; then
    uv=$(command -v uv)
  elif [ -x "$bin/uv" ]; then
    uv=$bin/uv
  fi
fi

if [ -n "${USE_PIP:-}" ]; then
  "$python" -m venv "$venv"
else
  # without pip: its bootstrap (ensurepip) is the slow part of creating a venv; the pip
  # fallback below bootstraps it after all when uv cannot be had
  "$python" -m venv --without-pip "$venv"
fi

if [ -z "$uv" ] && [ -z "${USE_PIP:-}" ]; then
  # uv from PyPI, installed into the venv by the interpreter's own pip (pip >= 22.3: --python)
  if "$python" -m pip --python "$bin/python" install --quiet --disable-pip-version-check uv \
      >/dev/null 2>&1 && "$bin/uv" --version >/dev/null 2>&1; then
    uv=$bin/uv
  else
    echo "venv.sh: uv could not be installed; installing with pip" >&2
  fi
fi

if [ -n "$uv" ]; then
  install=("$uv" pip install --quiet --python "$bin/python")
  # a venv made before the rename still holds the editable install under the old name
  if "$uv" pip show --quiet --python "$bin/python" resilience >/dev/null 2>&1; then
    "$uv" pip uninstall --quiet --python "$bin/python" resilience
  fi
  if [ "$what" = dev ]; then
    spec+=(pip)
  fi
else
  [ -x "$bin/pip" ] || "$bin/python" -m ensurepip --upgrade --default-pip >/dev/null
  "$bin/python" -m pip install --quiet --upgrade 'pip>=25.1'
  install=("$bin/python" -m pip install --quiet)
  if "$bin/python" -m pip show --quiet resilience >/dev/null 2>&1; then
    "$bin/python" -m pip uninstall --quiet --yes resilience
  fi
fi
"${install[@]}" "${spec[@]}"
