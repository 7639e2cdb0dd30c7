#!/usr/bin/env bash
# Executes the notebooks with the whetstone kernel through the real Jupyter client, as the test command does:
# installs evcxr_jupyter 0.22 (into .cache/evcxr) and nbclient/nbconvert (into .venv) when missing, installs
# the kernel warm into a Jupyter path under $TMPDIR, then runs scripts/run-notebooks.py on notebooks/*.ipynb.
# The executed notebooks, their HTML and the kernels' stderr land in target/notebook-test/out.
set -euo pipefail
cd "$(dirname "$0")/.."
# Without --locked evcxr_jupyter 0.22 does not compile (newer salsa breaks ra_ap_span). At opt-level 1: it only
# drives cargo and rustc, and a cold CI spends less time building it (336 s so measured, 2026-12-06).
CARGO_PROFILE_RELEASE_OPT_LEVEL=1 cargo install --locked --quiet evcxr_jupyter --version 0.22.0 --root .cache/evcxr
[[ -x .venv/bin/python ]] || python3 -m venv .venv
if ! .venv/bin/python -c 'import nbclient, nbconvert, nbformat' 2>/dev/null; then
    .venv/bin/pip install -q 'nbclient>=0.10,<0.12' 'nbconvert>=7,<8' 'nbformat>=5.9,<6'
fi
# The whole workspace, every target, with the test command's features, as it builds it: `-p whetstone-kernel` alone would resolve
# other features for the dependencies and compile them again (6 minutes of CI).
cargo build --workspace --all-targets --features whetstone/cluster
# Outside the checkout: under a cargo project, cargo would take Evcxr's crate for part of it. Kept between runs
# (keyed by the checkout's path), so only the first run compiles.
jupyter="${TMPDIR:-/tmp}/whetstone-notebook-test-$(pwd | cksum | cut -d' ' -f1)/jupyter"
./target/debug/whetstone-kernel install --jupyter-path "$jupyter" --evcxr .cache/evcxr/bin/evcxr_jupyter --warm
JUPYTER_PATH="$jupyter" .venv/bin/python scripts/run-notebooks.py --out target/notebook-test/out --expect-warm \
    notebooks/*.ipynb
