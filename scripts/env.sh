# Sourced by the other scripts: where things live. Override with environment variables.
# The virtual environment lives outside the checkout so a fresh clone (CI) reuses it.
RMNET_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
: "${RMNET_VENV:=$HOME/.cache/rmnet/venv}"
: "${RMNET_BUILD_DIR:=$RMNET_ROOT/build}"
: "${CCACHE_DIR:=$HOME/.cache/rmnet/ccache}"
export RMNET_ROOT RMNET_VENV RMNET_BUILD_DIR CCACHE_DIR
export CCACHE_BASEDIR="$RMNET_ROOT"
export CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
RMNET_PYTHON="$RMNET_VENV/bin/python"
export RMNET_PYTHON
