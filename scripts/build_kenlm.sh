#!/usr/bin/env bash
# Build KenLM's `lmplz` (modified Kneser-Ney estimation) and `build_binary`
# from the C++ sources shipped in PyPI's `kenlm` 0.3.0 sdist -- the same
# release as the `kenlm` Python query module in the project's virtualenv.
#
# Idempotent: if $BIN_DIR/lmplz already exists and runs, exit at once.
#
#   BIN_DIR = $HF_NEURALCONV_KENLM_BIN
#             (default: ${XDG_CACHE_HOME:-$HOME/.cache}/hf-neuralconv/kenlm/bin)
#
# Otherwise: install the missing Debian build dependencies (apt-get, as root
# or via passwordless sudo), download the hash-pinned sdist with pip, build
# only the needed cmake targets and copy the binaries into $BIN_DIR.
# Non-interactive (works with CI=true and no stdin).
#
# Optional environment: PYTHON (interpreter whose pip downloads the sdist;
# default: the repository's .venv, else python3), KENLM_BUILD_JOBS (default 2).
set -euo pipefail

KENLM_VERSION=0.3.0
# sha256 of kenlm-0.3.0.tar.gz as listed on https://pypi.org/simple/kenlm/
KENLM_SDIST_SHA256=c4628bb9fb63c8a6f9240035b8b037385cfc404cb72e933cf48878291edac1e8
APT_PACKAGES=(
    build-essential cmake
    libboost-program-options-dev libboost-system-dev libboost-thread-dev
    libboost-test-dev  # KenLM's CMakeLists requires Boost unit_test_framework
    zlib1g-dev libbz2-dev liblzma-dev  # compressed corpus/ARPA support in kenlm_util
)

BIN_DIR="${HF_NEURALCONV_KENLM_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/hf-neuralconv/kenlm/bin}"
JOBS="${KENLM_BUILD_JOBS:-2}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

log() { echo "[build_kenlm] $*"; }

lmplz_works() {
    # `lmplz --help` exits 1, so check its output instead of the status.
    [[ -x "$BIN_DIR/lmplz" ]] || return 1
    local help
    help="$("$BIN_DIR/lmplz" --help 2>&1 </dev/null || true)"
    [[ $help == *Kneser-Ney* ]]
}

if lmplz_works; then
    log "lmplz already present and working: $BIN_DIR/lmplz (nothing to do)"
    exit 0
fi

log "lmplz not found in $BIN_DIR; building KenLM $KENLM_VERSION from source"
start=$SECONDS

# --- 1. Debian build dependencies -----------------------------------------
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done

if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$REPO_ROOT/.venv/bin/python" ]]; then
        PYTHON="$REPO_ROOT/.venv/bin/python"
    else
        PYTHON=python3
    fi
fi
if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
    log "$PYTHON has no pip; adding python3-pip to the packages to install"
    missing+=(python3-pip)
    PYTHON=python3
fi

if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]]; then
        SUDO=()
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
    else
        echo "[build_kenlm] ERROR: missing Debian packages: ${missing[*]}" >&2
        echo "[build_kenlm] Install them as root (apt-get install ${missing[*]}) and rerun." >&2
        exit 1
    fi
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get update -qq </dev/null
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
else
    log "Debian build dependencies already installed"
fi

# --- 2. Sources: the hash-pinned PyPI sdist --------------------------------
work="$(mktemp -d "${TMPDIR:-/tmp}/kenlm-build.XXXXXX")"
trap 'rm -rf "$work"' EXIT

log "downloading kenlm-$KENLM_VERSION.tar.gz with $PYTHON -m pip"
echo "kenlm==$KENLM_VERSION --hash=sha256:$KENLM_SDIST_SHA256" > "$work/requirements.txt"
pip_download=("$PYTHON" -m pip download --quiet --no-deps --no-binary kenlm
              --require-hashes -r "$work/requirements.txt" -d "$work")
# pip prepares the sdist's metadata even for `download`; reuse the installed
# setuptools when possible, else let pip fetch build requirements as wheels.
"${pip_download[@]}" --no-build-isolation </dev/null || "${pip_download[@]}" </dev/null
tar -xzf "$work/kenlm-$KENLM_VERSION.tar.gz" -C "$work"

# --- 3. Build only lmplz and build_binary ----------------------------------
log "configuring with cmake"
cmake -S "$work/kenlm-$KENLM_VERSION" -B "$work/build" \
    -DCMAKE_BUILD_TYPE=Release -DKENLM_MAX_ORDER=6 >"$work/cmake.log" 2>&1 \
    || { cat "$work/cmake.log" >&2; exit 1; }
log "compiling lmplz and build_binary (-j$JOBS)"
cmake --build "$work/build" --target lmplz build_binary -- -j"$JOBS" >"$work/make.log" 2>&1 \
    || { tail -n 50 "$work/make.log" >&2; exit 1; }

# --- 4. Install -------------------------------------------------------------
mkdir -p "$BIN_DIR"
# lmplz last: its presence marks a complete install.
install -m 0755 "$work/build/bin/build_binary" "$BIN_DIR/build_binary"
install -m 0755 "$work/build/bin/lmplz" "$BIN_DIR/lmplz"
lmplz_works || { echo "[build_kenlm] ERROR: installed lmplz does not run" >&2; exit 1; }
log "installed lmplz and build_binary into $BIN_DIR ($((SECONDS - start)) s)"
