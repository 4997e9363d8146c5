#!/usr/bin/env bash
# Makes (or repairs) the Python environment of the interop tests and prints its
# interpreter: $MT_CI_VENV (default $HOME/.cache/mt-ci-venv) from requirements.txt.
# A venv is reused only when every package imports and it was built from this very
# requirements.txt; otherwise `pip install -r` brings it up to date (a broken
# interpreter means a new venv). Exits non-zero when that fails.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
req="$here/requirements.txt"
venv="${MT_CI_VENV:-$HOME/.cache/mt-ci-venv}"
py="$venv/bin/python"
stamp="$venv/.mt-requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"
imports='import torch, transformers, tokenizers, peft, safetensors, datasets, pyarrow, huggingface_hub, numpy, PIL, openai, gguf, pydicom, pylibjpeg, openjpeg, libjpeg, rle, nibabel'
probe() {
  "$py" -c "$imports" >/dev/null 2>&1 && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]
}
if probe; then
  echo "$py"
  exit 0
fi
start=$SECONDS
if ! "$py" -c '' >/dev/null 2>&1; then
  echo "interop venv: creating $venv" >&2
  python3 -m venv --clear "$venv" >&2
else
  echo "interop venv: repairing $venv (a package is missing or requirements.txt changed)" >&2
fi
"$py" -m pip install -q --no-cache-dir --disable-pip-version-check -r "$req" >&2
"$py" -c "$imports" >&2
echo "$want" >"$stamp"
echo "interop venv: ready in $((SECONDS - start)) s ($(du -sh "$venv" | cut -f1))" >&2
echo "$py"
