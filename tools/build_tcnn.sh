#!/usr/bin/env bash
# Build tiny-cuda-nn's PyTorch bindings (the `tinycudann` module, our `tcnn` backend) from source, offline.
#
#   tools/build_tcnn.sh prepare TCNN_GIT CUTLASS_GIT FMT_GIT [OUT_DIR]
#       Run where the sources are (git dirs, bare or not, of NVlabs/tiny-cuda-nn, NVIDIA/cutlass, fmtlib/fmt).
#       Exports only what the bindings build needs into OUT_DIR (default .tcnn-src): tcnn's include/, src/,
#       bindings/torch/ and header dependencies, cutlass's headers (at the commit tcnn pins, else the snapshot's
#       HEAD, said in one line), fmt's include/ and src/. Prints its size. Keep OUT_DIR out of git:
#       echo /.tcnn-src/ >> "$(git rev-parse --git-path info/exclude)"
#   tools/build_tcnn.sh build [SRC_DIR] [--target DIR] [--encodings-only] [--dry-run]
#       Run on the GPU machine, with the Python that will import tinycudann (PYTHON, default python3).
#       TCNN_CUDA_ARCHITECTURES comes from `nvidia-smi --query-gpu=compute_cap` unless already set. Builds the
#       wheel into SRC_DIR/dist (pip wheel --no-build-isolation --no-deps --no-index), installs it with --no-deps
#       into that Python (or into DIR, to be put on PYTHONPATH), then imports tinycudann.
#       --encodings-only: tcnn's --no-networks (the Encoding module only, all this project uses; no cutlass MLPs,
#       a much shorter compile). --dry-run: check the prerequisites and print the commands without running them.
#       MAX_JOBS (default: the number of cores) bounds parallel compiles when ninja is there.
set -euo pipefail

die() { echo "build_tcnn.sh: $*" >&2; exit 2; }

usage() { awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; }

# Export PATHS... of COMMIT in git dir GIT into DEST (a new folder), checking that every file came out.
export_tree() {
    local git=$1 commit=$2 dest=$3 want got
    shift 3
    mkdir -p "$dest"
    # A snapshot may lack large blobs (images) outside PATHS: git archive names them on stderr, harmlessly.
    git --git-dir="$git" archive --format=tar "$commit" -- "$@" 2> >(grep -v '^error: invalid object' >&2) \
        | tar -x -C "$dest"
    want=$(git --git-dir="$git" ls-tree -r --name-only "$commit" -- "$@" | wc -l)
    got=$(find "$dest" ! -type d | wc -l)
    [[ $got == "$want" ]] || die "$git: exported $got of the $want files of $* at ${commit:0:12}"
}

# The git dir of a checkout or a bare repository.
git_dir() {
    local dir
    dir=$(git -C "$1" rev-parse --absolute-git-dir 2>/dev/null) || die "$1: not a git repository"
    echo "$dir"
}

# The commit of submodule PATH pinned by tcnn's COMMIT, if the snapshot GIT has it, else GIT's HEAD (said once).
pinned_or_head() {
    local tcnn=$1 commit=$2 path=$3 git=$4 pin
    pin=$(git --git-dir="$tcnn" ls-tree "$commit" "$path" | awk '$2 == "commit" {print $3}')
    if [[ -n $pin ]] && git --git-dir="$git" cat-file -e "$pin^{commit}" 2>/dev/null; then
        echo "$pin"
    else
        echo "build_tcnn.sh: $path: pinned commit ${pin:-(none)} is not in $git; using its HEAD" \
            "$(git --git-dir="$git" log -1 --format='%h (%cs)' HEAD), which may not compile" >&2
        git --git-dir="$git" rev-parse HEAD
    fi
}

# Fail with one line unless FILE is in COMMIT of GIT (the right repository in the right argument).
require_file() {
    git --git-dir="$1" cat-file -e "$2:$3" 2>/dev/null || die "$1 at ${2:0:12} has no $3: is it $4?"
}

prepare() {
    [[ $# -eq 3 || $# -eq 4 ]] || { usage >&2; exit 2; }
    local tcnn cutlass fmt out=${4:-.tcnn-src} tcnn_commit cutlass_commit fmt_commit tmp
    tcnn=$(git_dir "$1"); cutlass=$(git_dir "$2"); fmt=$(git_dir "$3")
    tcnn_commit=$(git --git-dir="$tcnn" rev-parse "${TCNN_REF:-HEAD}^{commit}")
    require_file "$tcnn" "$tcnn_commit" bindings/torch/setup.py NVlabs/tiny-cuda-nn
    cutlass_commit=$(pinned_or_head "$tcnn" "$tcnn_commit" dependencies/cutlass "$cutlass")
    fmt_commit=$(pinned_or_head "$tcnn" "$tcnn_commit" dependencies/fmt "$fmt")
    require_file "$cutlass" "$cutlass_commit" include/cutlass/cutlass.h NVIDIA/cutlass
    require_file "$fmt" "$fmt_commit" include/fmt/format.h fmtlib/fmt

    tmp="$out.tmp.$$"
    rm -rf "$tmp"
    trap 'rm -rf "$tmp"' EXIT
    # setup.py reads VERSION from CMakeLists.txt and compiles fmt's src/*.cc; the headers are all under include/.
    export_tree "$tcnn" "$tcnn_commit" "$tmp" CMakeLists.txt LICENSE.txt include src bindings/torch \
        dependencies/json dependencies/pcg32 dependencies/pybind11_json
    export_tree "$cutlass" "$cutlass_commit" "$tmp/dependencies/cutlass" LICENSE.txt include tools/util/include
    export_tree "$fmt" "$fmt_commit" "$tmp/dependencies/fmt" include src \
        "$(git --git-dir="$fmt" ls-tree --name-only "$fmt_commit" | grep -m1 '^LICENSE')"
    {
        echo "NVlabs/tiny-cuda-nn $tcnn_commit"
        echo "NVIDIA/cutlass $cutlass_commit"
        echo "fmtlib/fmt $fmt_commit"
    } > "$tmp/SOURCES.txt"
    rm -rf "$out"
    mv "$tmp" "$out"
    trap - EXIT
    echo "prepared $out: $(du -sm "$out" | cut -f1) MiB in $(find "$out" -type f | wc -l) files" \
        "($(gzip -c < <(tar -C "$out" -c .) | wc -c | awk '{printf "%.1f", $1 / 1048576}') MiB as .tar.gz)"
    sed 's/^/  /' "$out/SOURCES.txt"
    local top rel
    if top=$(git rev-parse --show-toplevel 2>/dev/null) && rel=$(realpath --relative-to="$top" "$out") \
        && [[ $rel != ../* ]] && ! git check-ignore -q "$out"; then
        echo "not ignored by git: before carrying it, echo /$rel/ >> \"$(git rev-parse --git-path info/exclude)\""
    fi
}

# TCNN_CUDA_ARCHITECTURES of the GPUs present: "9.0" -> 90, distinct ones joined by ';'.
gpu_architectures() {
    command -v nvidia-smi >/dev/null || die "no nvidia-smi: set TCNN_CUDA_ARCHITECTURES (e.g. 90 for an H100/H200)"
    nvidia-smi --query-gpu=compute_cap --format=csv,noheader | tr -d ' .' | sort -u | paste -sd';'
}

# What a bare toolkit may lack and torch's CUDA wheels (site-packages/nvidia/*/) have, put where the build looks.
shims() {
    local python=$1 dir=$2 found
    mkdir -p "$dir/lib"
    # tcnn's setup.py imports parse_version from pkg_resources, which setuptools >= 81 no longer ships.
    if ! "$python" -c 'import pkg_resources' 2>/dev/null; then
        echo 'from packaging.version import parse as parse_version  # noqa: F401' > "$dir/pkg_resources.py"
        export PYTHONPATH="$dir${PYTHONPATH:+:$PYTHONPATH}"
        echo "no pkg_resources: a parse_version shim in $dir"
    fi
    # ATen's CUDA headers include cusparse.h, cublas_v2.h ...; tcnn includes nvrtc.h.
    if [[ ! -f $CUDA_HOME/include/cusparse.h || ! -f $CUDA_HOME/include/nvrtc.h ]]; then
        found=$(nvidia_dirs "$python" include)
        [[ -n $found ]] && export CPATH="$found${CPATH:+:$CPATH}" && echo "CUDA headers from torch's wheels: $found"
    fi
    # tcnn links -lnvrtc -lcuda: the wheels and the driver ship only versioned names (libnvrtc.so.13, libcuda.so.1).
    if ! compgen -G "$CUDA_HOME/lib*/libnvrtc.so" >/dev/null; then
        found=$(find $(nvidia_dirs "$python" lib | tr ':' ' ') -name 'libnvrtc.so.*' ! -name '*builtins*' 2>/dev/null \
            | sort | head -1)
        [[ -n $found ]] && ln -sf "$found" "$dir/lib/libnvrtc.so"
    fi
    if ! ldconfig -p 2>/dev/null | grep -q 'libcuda\.so '; then
        found=$(ldconfig -p 2>/dev/null | awk '/libcuda\.so\.1 / {print $NF; exit}')
        [[ -n $found ]] && ln -sf "$found" "$dir/lib/libcuda.so"
    fi
    if compgen -G "$dir/lib/*.so" >/dev/null; then
        export LIBRARY_PATH="$dir/lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
        echo "link names: $(cd "$dir/lib" && for f in *.so; do printf '%s -> %s ' "$f" "$(readlink "$f")"; done)"
    fi
}

# The DIRNAME folders (include or lib) of torch's CUDA wheels, ':'-joined; empty where there are none.
nvidia_dirs() {
    "$1" -c "import glob, nvidia; print(':'.join(sorted(d for r in nvidia.__path__ for d in glob.glob(r + '/*/$2'))))" \
        2>/dev/null || true
}

build() {
    local src=.tcnn-src target="" encodings_only=0 dry=0
    while [[ $# -gt 0 ]]; do
        case $1 in
            --target) target=$(realpath -m "${2:?--target needs a directory}"); shift 2 ;;
            --encodings-only) encodings_only=1; shift ;;
            --dry-run) dry=1; shift ;;
            -h|--help) usage; exit 0 ;;
            -*) die "unknown option $1" ;;
            *) src=$1; shift ;;
        esac
    done
    src=$(realpath "$src")
    [[ -f $src/bindings/torch/setup.py ]] || die "$src: no bindings/torch/setup.py (run 'prepare' first)"
    local python=${PYTHON:-python3}
    "$python" -c 'import torch, setuptools' 2>/dev/null || die "$python cannot import torch and setuptools"
    "$python" -m pip --version >/dev/null 2>&1 || die "$python has no pip"
    command -v nvcc >/dev/null || die "no nvcc on PATH"
    # torch finds the CUDA headers from CUDA_HOME, else next to the first nvcc on PATH (which may be a wrapper).
    CUDA_HOME=${CUDA_HOME:-$(realpath "$(nvcc -dryrun -c -x cu /dev/null -o /dev/null 2>&1 | sed -n 's/^#\$ TOP=//p')")}
    export CUDA_HOME
    export TCNN_CUDA_ARCHITECTURES=${TCNN_CUDA_ARCHITECTURES:-$(gpu_architectures)}
    export MAX_JOBS=${MAX_JOBS:-$(nproc)}
    echo "tcnn: $(head -1 "$src/SOURCES.txt" 2>/dev/null || echo "$src"); TCNN_CUDA_ARCHITECTURES=$TCNN_CUDA_ARCHITECTURES;" \
        "$(nvcc --version | grep -o 'release [^,]*'); torch $("$python" -c 'import torch; print(torch.__version__)')"
    command -v ninja >/dev/null || echo "no ninja: torch compiles one file at a time (slower)"
    shims "$python" "$src/.shim"
    local wheel_cmd=("$python" -m pip wheel --no-build-isolation --no-deps --no-index -w "$src/dist" "$src/bindings/torch")
    [[ $encodings_only == 1 ]] && wheel_cmd+=(-C--build-option=--no-networks)
    local install_cmd=("$python" -m pip install --no-deps --no-index --force-reinstall)
    [[ -n $target ]] && install_cmd+=(--target "$target" --upgrade)
    if [[ $dry == 1 ]]; then
        echo "dry run; would run:"
        echo "  rm -rf $src/dist && ${wheel_cmd[*]}"
        echo "  ${install_cmd[*]} $src/dist/tinycudann-*.whl"
        return
    fi
    local start=$SECONDS
    rm -rf "$src/dist"
    "${wheel_cmd[@]}"
    local wheel
    wheel=$(ls "$src"/dist/tinycudann-*.whl)
    echo "built $(basename "$wheel") ($(du -m "$wheel" | cut -f1) MiB) in $((SECONDS - start)) s"
    "${install_cmd[@]}" "$wheel"
    [[ -n $target ]] && export PYTHONPATH="$target${PYTHONPATH:+:$PYTHONPATH}"
    (cd / && "$python" -c 'import tinycudann; print("import tinycudann: OK,", tinycudann.__file__)')
}

case ${1:-} in
    prepare) shift; prepare "$@" ;;
    build) shift; build "$@" ;;
    -h|--help) usage ;;
    *) usage >&2; exit 2 ;;
esac
