# Sourced by the scripts/bench-*.sh wrappers (not run on its own): the setup they share.
#
#   source "$(dirname "${BASH_SOURCE[0]}")/bench-setup.sh"
#   bench_setup IMPORT:PACKAGE...
#
# bench_setup changes to the repository root ($bench_repo), makes .venv there if it is missing, pip-installs
# into it each PACKAGE whose IMPORT fails in .venv/bin/python (IMPORT may name several modules, comma-separated:
# `pyarrow,pyarrow.json:pyarrow`), builds whet (`cargo build --release --bin whet`) and sets $whet to the binary.

bench_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

bench_setup() {
    cd "$bench_repo"

    if [[ ! -x .venv/bin/python ]]; then
        python3 -m venv .venv
    fi
    local pair missing=()
    for pair in "$@"; do
        if ! .venv/bin/python -c "import ${pair%%:*}" 2>/dev/null; then
            missing+=("${pair#*:}")
        fi
    done
    if ((${#missing[@]})); then
        .venv/bin/pip install -q "${missing[@]}"
    fi

    cargo build --release --bin whet
    whet="${CARGO_TARGET_DIR:-target}/release/whet"
}
