#!/usr/bin/env bash
# Build fastlazy's extension with AddressSanitizer + UndefinedBehaviorSanitizer
# and Cython's bounds, wraparound and initialization checks (FASTLAZY_DEBUG=1
# FASTLAZY_SANITIZE=1: -O0 -g -fsanitize=address,undefined), then run the
# test suite against that build.  Any ASan or UBSan report stops the run
# with a non-zero exit status.
#
#   bash tools/sanitize.sh                 # the normal suite
#   bash tools/sanitize.sh -m slow -k threads   # any pytest arguments
#
# The build goes to build/sanitize/ (the source tree's own build is left
# alone).  Python itself, NumPy and OpenBLAS are not instrumented: ASan
# checks every load and store of fastlazy's C and Cython code, and the
# memcpy/memset it calls; UBSan checks its arithmetic, shifts, alignment and
# pointer overflow.  Needs gcc with libasan and libubsan (Debian's gcc has
# both).  Leak detection is off: CPython keeps objects alive at exit on
# purpose, which LeakSanitizer would report.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=build/sanitize
rm -rf "$OUT"
mkdir -p "$OUT/lib/fastlazy"

echo "== building with ASan + UBSan + Cython checks"
FASTLAZY_DEBUG=1 FASTLAZY_SANITIZE=1 python setup.py -q build_ext -j 2 \
    --force --build-lib "$OUT/lib" --build-temp "$OUT/tmp" \
    > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
# the pure-Python modules and subpackages beside the sanitized extensions
# (never an in-place build's .so from src/)
python - "$OUT/lib/fastlazy" <<'PY'
import shutil, sys
shutil.copytree("src/fastlazy", sys.argv[1], dirs_exist_ok=True,
                ignore=shutil.ignore_patterns("*.so", "*.c", "*.pyx", "*.pxd",
                                              "*.pxi", "*.h", "__pycache__"))
PY
ls "$OUT"/lib/fastlazy/_*.so

LIBASAN=$(gcc -print-file-name=libasan.so)
[ -f "$LIBASAN" ] || { echo "libasan.so not found (gcc: $LIBASAN)"; exit 1; }
export LD_PRELOAD="$LIBASAN"
# allocator_may_return_null: tests that ask for absurd sizes expect MemoryError
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:allocator_may_return_null=1:strict_string_checks=1:check_initialization_order=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export PYTHONPATH="$PWD/$OUT/lib"
export FASTLAZY_SANITIZER=1       # tests/test_leaks.py: RSS is not meaningful

echo "== the extension is the sanitized build"
python - <<PY
import fastlazy._parameter, fastlazy._plan
for c in (fastlazy._parameter, fastlazy._plan):
    assert c.__file__.startswith("$PWD/$OUT/lib/"), c.__file__
    print(c.__name__, "from", c.__file__)
PY
objdump -d "$OUT"/lib/fastlazy/_*.so > "$OUT/disasm.txt"
echo "ASan checks compiled in: $(grep -c 'call.*__asan_report' "$OUT/disasm.txt")"
echo "UBSan checks compiled in: $(grep -c 'call.*__ubsan_handle' "$OUT/disasm.txt")"

echo "== test suite under ASan + UBSan"
# --capture=sys: a sanitizer report goes to file descriptor 2, which pytest's
# default capture would swallow when the process aborts
python -m pytest -p no:cacheprovider --capture=sys -q "$@"
