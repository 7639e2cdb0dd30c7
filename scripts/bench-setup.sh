# Sourced by the scripts/bench-*.sh wrappers (not run on its own): the setup they share.
#
#   source "$(dirname "${BASH_SOURCE[0]}")/bench-setup.sh"
#   bench_setup IMPORT:PACKAGE...
#
# bench_setup changes to the repository root ($bench_repo), makes .venv there if it is missing, pip-installs
# into it each PACKAGE whose IMPORT fails in .venv/bin/python (IMPORT may name several modules, comma-separated:
# `pyarrow,pyarrow.json:pyarrow`), builds whet (`cargo build --release --bin whet`, with $BENCH_FEATURES) and sets
# $whet to the binary.
# bench_node_llama_cpp (below) puts node-llama-cpp, pinned, into .cache/node for bench_generate.py's llama.cpp row.

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

    # faiss-cpu's wheel bundles OpenBLAS 0.3.15, which does not know newer Xeons and falls back to its generic
    # "Prescott" kernels: faiss's k-means ran 4.5 times slower here (4.5 s against 1.0 s). Peers run at their best, so
    # name the AVX-512 kernels where the processor has them (the user may still set their own).
    if [[ -z "${OPENBLAS_CORETYPE:-}" ]] && grep -qw avx512f /proc/cpuinfo 2>/dev/null; then
        export OPENBLAS_CORETYPE=SkylakeX
    fi

    # BENCH_FEATURES: cargo features whet needs for this benchmark (`cluster`).
    cargo build --release --bin whet ${BENCH_FEATURES:+--features "$BENCH_FEATURES"}
    whet="${CARGO_TARGET_DIR:-target}/release/whet"
}

# node-llama-cpp, pinned: llama.cpp, the contestant that scripts/bench_generate.py runs through
# scripts/llama_cpp_generate.mjs on the GGUF file.
bench_node_llama_cpp_version=3.22.1

# bench_node_llama_cpp: installs node-llama-cpp $bench_node_llama_cpp_version into .cache/node (ignored by git) with
# npm, once, together with its prebuilt CPU build of llama.cpp (@node-llama-cpp/linux-x64 or linux-arm64, an npm
# package of the same version). Nothing else comes down: --omit=optional skips the other platforms' and the
# CUDA/Vulkan binaries, and --ignore-scripts (with NODE_LLAMA_CPP_SKIP_DOWNLOAD) keeps node-llama-cpp's postinstall
# from downloading llama.cpp's source from GitHub or compiling it. Never fails: where node or npm is missing, the
# platform has no prebuilt binary or npm fails, it says so on stderr and returns 0 (bench_generate.py then reports
# the llama.cpp row as not run). bench-generate.sh calls it.
bench_node_llama_cpp() {
    local prefix="$bench_repo/.cache/node" v="$bench_node_llama_cpp_version" bin
    case "$(uname -s)-$(uname -m)" in
        Linux-x86_64) bin=@node-llama-cpp/linux-x64 ;;
        Linux-aarch64) bin=@node-llama-cpp/linux-arm64 ;;
        *) echo "bench-setup: no prebuilt CPU llama.cpp for $(uname -s)-$(uname -m) in node-llama-cpp here" >&2; return 0 ;;
    esac
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        echo "bench-setup: node or npm not found: the llama.cpp contestant needs Node.js >= 20 and npm" >&2
        return 0
    fi
    local have
    have=$(cd "$prefix" 2>/dev/null && node -p "[require('./node_modules/node-llama-cpp/package.json').version,
        require('./node_modules/$bin/package.json').version].join(' ')" 2>/dev/null) || have=""
    [[ "$have" == "$v $v" ]] && return 0
    echo "bench-setup: npm install node-llama-cpp@$v $bin@$v into ${prefix#"$bench_repo"/}" >&2
    mkdir -p "$prefix"
    if ! NODE_LLAMA_CPP_SKIP_DOWNLOAD=true npm install --prefix "$prefix" --save-exact --omit=optional \
            --ignore-scripts --no-audit --no-fund --loglevel=error "node-llama-cpp@$v" "$bin@$v" >&2; then
        echo "bench-setup: npm install of node-llama-cpp failed: the llama.cpp contestant will be skipped" >&2
    fi
    return 0
}
