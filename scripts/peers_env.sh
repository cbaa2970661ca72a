#!/usr/bin/env bash
# The benchmark-only environment of the pruning/deployment peers (experiments/prune_peers.py):
# Torch-Pruning, OpenVINO and NNCF, pinned in scripts/requirements-peers.txt. Idempotent.
#
# It is a virtual environment ($RMNET_PEERS_VENV, default ~/.cache/rmnet/peers-venv) layered over
# the project's ($RMNET_VENV): a .pth file puts the project venv's site-packages on its sys.path
# (after its own), so torch, torchvision, numpy, onnx... are the project's and are not installed
# again. Every package of the project venv is passed to pip as a constraint at its installed
# version, so pip either reuses it or fails; it never pulls a second torch. The project venv is
# only read, never written.
#   scripts/peers_env.sh          # prints the path of the peers' python at the end
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
: "${RMNET_PEERS_VENV:=$HOME/.cache/rmnet/peers-venv}"
PEERS_PY="$RMNET_PEERS_VENV/bin/python"
REQ="$RMNET_ROOT/scripts/requirements-peers.txt"

[ -x "$RMNET_PYTHON" ] || { echo "peers_env: no project venv at $RMNET_VENV (run scripts/setup.sh first)" >&2; exit 1; }
BASE_SITE=$("$RMNET_PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
"$RMNET_PYTHON" -c 'import torch' || { echo "peers_env: the project venv has no torch" >&2; exit 1; }

if [ ! -x "$PEERS_PY" ]; then
  echo "[peers] creating $RMNET_PEERS_VENV over $RMNET_VENV"
  mkdir -p "$(dirname "$RMNET_PEERS_VENV")"
  "$RMNET_PYTHON" -m venv "$RMNET_PEERS_VENV"  # the same interpreter (venv resolves the base python)
fi
PEERS_SITE=$("$PEERS_PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
[ "$PEERS_SITE" != "$BASE_SITE" ] || { echo "peers_env: the peers venv resolves to the project venv" >&2; exit 1; }
echo "$BASE_SITE" >"$PEERS_SITE/_rmnet_project_venv.pth"

# The layering must hold before pip runs: torch comes from the project venv and pip sees it.
"$PEERS_PY" - "$BASE_SITE" <<'EOF'
import sys, importlib.metadata as md, torch
base = sys.argv[1]
assert torch.__file__.startswith(base), f"torch is {torch.__file__}, not from {base}"
print(f"[peers] torch {md.version('torch')} from {base}")
EOF

# Constraints: every distribution of the project venv at its installed version (pip, setuptools
# and wheel excepted: the peers venv has its own).
CONSTRAINTS="$RMNET_PEERS_VENV/project-constraints.txt"
"$RMNET_PYTHON" -m pip list --format=freeze --disable-pip-version-check 2>/dev/null \
  | grep -viE '^(pip|setuptools|wheel)==' | grep '==' >"$CONSTRAINTS"

STAMP="$RMNET_PEERS_VENV/.rmnet-peers-requirements"
if ! cat "$REQ" "$CONSTRAINTS" | cmp -s - "$STAMP"; then
  echo "[peers] pip install -r $REQ (project packages constrained to their versions)"
  "$PEERS_PY" -m pip install --progress-bar off --disable-pip-version-check -c "$CONSTRAINTS" -r "$REQ"
  cat "$REQ" "$CONSTRAINTS" >"$STAMP"
fi

# After: torch is still the project's, only once, and the peers import.
"$PEERS_PY" - "$BASE_SITE" "$PEERS_SITE" <<'EOF'
import sys, pathlib, importlib.metadata as md
base, own = sys.argv[1], sys.argv[2]
assert not list(pathlib.Path(own).glob("torch-*.dist-info")), f"a second torch was installed into {own}"
assert not list(pathlib.Path(own).glob("numpy-*.dist-info")), f"a second numpy was installed into {own}"
import torch, torch_pruning, openvino, nncf
assert torch.__file__.startswith(base), torch.__file__
print(f"[peers] torch {torch.__version__} (project venv), torch-pruning {md.version('torch-pruning')}, "
      f"openvino {md.version('openvino')}, nncf {md.version('nncf')}")
EOF
echo "$PEERS_PY"
