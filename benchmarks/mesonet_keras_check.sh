#!/usr/bin/env bash
# Faithfulness check of dfray's MesoNet port: Keras (tensorflow-cpu, in a throwaway venv
# under /tmp) vs dfray's converted builtins on the authors' four test images and seeded
# random inputs. Not part of CI (it installs TensorFlow). Usage:
#   bash benchmarks/mesonet_keras_check.sh [MESONET_DIR]   (default ../shared/third_party/mesonet)
# VENV=/path reuses an existing venv that has tensorflow-cpu.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
mesonet="${1:-$here/../../shared/third_party/mesonet}"
venv="${VENV:-/tmp/dfray-mesonet-tf}"
work="$(mktemp -d /tmp/dfray-mesonet-check.XXXXXX)"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q tensorflow-cpu h5py numpy
fi
python3 "$here/mesonet_keras_check.py" inputs "$work/inputs.npz" "$mesonet"
TF_CPP_MIN_LOG_LEVEL=2 "$venv/bin/python" "$here/mesonet_keras_check.py" keras \
  "$work/inputs.npz" "$work/keras.json" "$mesonet"
python3 "$here/mesonet_keras_check.py" compare "$work/inputs.npz" "$work/keras.json"
echo "Keras outputs: $work/keras.json"
