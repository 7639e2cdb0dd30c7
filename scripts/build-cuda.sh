#!/usr/bin/env bash
# Builds `whet` with the `cuda` feature on a machine without a GPU or a CUDA toolkit, for NVIDIA H100/H200
# (compute capability 90 unless CUDA_COMPUTE_CAP says otherwise), and packs it for a GPU machine.
#
#   scripts/build-cuda.sh            -> target/cuda/release/whet and target/cuda/whet.gz (stripped, gzip -9)
#
# 1. nvcc: $CUDA_ROOT if it has bin/nvcc, else CUDA 13.0's nvcc from PyPI wheels into .cache/cuda (≈270 MB).
# 2. The CUDA kernels of candle, mistralrs-quant and mistralrs-paged-attn compile with it.
# 3. The link wants libcuda, libcudart, libnvrtc, libcurand, libcublas, libcublasLt: empty stub libraries
#    with the real sonames stand in for them here (the binary loads the real ones on the GPU machine, from
#    the driver and the CUDA 13 runtime that PyTorch cu130 carries), and the link keeps them as NEEDED.
# 4. mistral.rs 0.8.1 patched (scripts/patches/mistralrs-core-0.8.1.patch; every result stays the same): a
#    batch's logits reach the host in one copy, not one copy of the whole batch per sequence (256 sequences ×
#    32k vocabulary: 4 GB a step); sequences at one position get their rotary embedding in one call, not a
#    loop over the sequences in every layer; the fused rotary kernel, which takes CUDA tensors only, is not
#    called on the CPU (`--cpu` in this build failed with "query must be a cuda tensor"). The CPU build is
#    not patched: it decodes one sequence at a time. The patched crate is a copy in .cache/cuda; Cargo.lock
#    is put back afterwards.
# Where nvcc cannot be had it says so and exits 1. Recipe: ../shared/notes/cuda-build.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
cache=$PWD/.cache/cuda
if [[ -n "${CUDA_ROOT:-}" && -x "$CUDA_ROOT/bin/nvcc" ]]; then
    root=$CUDA_ROOT
else
    root=$cache/toolkit/nvidia/cu13
    if [[ ! -x "$root/bin/nvcc" ]]; then
        echo "build-cuda: installing nvcc 13.0 from PyPI into $cache/toolkit" >&2
        if ! python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$cache/toolkit.part" \
            nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-cuda-cccl==13.0.85 \
            nvidia-cuda-runtime==13.0.96 nvidia-nvvm==13.0.88; then
            echo "build-cuda: no nvcc: set CUDA_ROOT to a CUDA toolkit (11.4-13.2), or allow pip to reach PyPI" >&2
            exit 1
        fi
        rm -rf "$cache/toolkit" && mv "$cache/toolkit.part" "$cache/toolkit"
    fi
fi
export CUDA_ROOT=$root CUDA_PATH=$root CUDA_HOME=$root PATH=$root/bin:$PATH
nvcc --version | tail -n 2 >&2

stubs=$cache/stubs
mkdir -p "$stubs"
libs=(cuda:libcuda.so.1 cudart:libcudart.so.13 nvrtc:libnvrtc.so.13 curand:libcurand.so.10
    cublas:libcublas.so.13 cublasLt:libcublasLt.so.13)
link=()
for pair in "${libs[@]}"; do
    name=${pair%%:*} soname=${pair#*:}
    [[ -f "$stubs/lib$name.so" ]] || echo | gcc -shared -x c - -o "$stubs/lib$name.so" -Wl,-soname,"$soname"
    link+=(-C "link-arg=-l$name")
done

patch_file=$PWD/scripts/patches/mistralrs-core-0.8.1.patch
patched=$cache/mistralrs-core-0.8.1
stamp=$(sha256sum "$patch_file" | cut -d' ' -f1)
if [[ "$(cat "$patched/.whetstone-patch" 2>/dev/null)" != "$stamp" ]]; then
    original=$(cargo metadata --format-version 1 | python3 -c 'import json, sys
print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"] == "mistralrs-core" and p["version"] == "0.8.1"))')
    rm -rf "$patched" "$patched.part"
    cp -r "$(dirname "$original")" "$patched.part"
    (cd "$patched.part" && patch -p1 --quiet --forward <"$patch_file")
    echo "$stamp" >"$patched.part/.whetstone-patch"
    mv "$patched.part" "$patched"
fi
cp Cargo.lock "$cache/Cargo.lock.saved"
trap 'cp "$cache/Cargo.lock.saved" Cargo.lock' EXIT

export CARGO_TARGET_DIR=$PWD/target/cuda
cargo rustc --release --features cuda --bin whet --config "patch.crates-io.mistralrs-core.path=\"$patched\"" -- \
    -L "native=$stubs" -C link-arg=-Wl,--unresolved-symbols=ignore-in-object-files -C link-arg=-Wl,--no-as-needed \
    "${link[@]}"
bin=$CARGO_TARGET_DIR/release/whet
needed=$(readelf -d "$bin" | grep NEEDED)
for pair in "${libs[@]}"; do
    grep -q "${pair#*:}" <<<"$needed" || { echo "build-cuda: $bin does not link ${pair#*:}" >&2; exit 1; }
done
strip -o "$CARGO_TARGET_DIR/whet.stripped" "$bin"
gzip -9 -c "$CARGO_TARGET_DIR/whet.stripped" >"$CARGO_TARGET_DIR/whet.gz.part" && mv "$CARGO_TARGET_DIR/whet.gz.part" "$CARGO_TARGET_DIR/whet.gz"
echo "build-cuda: $bin ($(du -h "$CARGO_TARGET_DIR/whet.stripped" | cut -f1) stripped, $(du -h "$CARGO_TARGET_DIR/whet.gz" | cut -f1) as whet.gz)"
