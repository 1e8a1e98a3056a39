#!/usr/bin/env bash
# Build fastvs with AddressSanitizer + UBSan (setup.py's FASTVS_SANITIZE=1) in a copy of
# the work tree, then run the test suite and a short fuzz run of each harness under it.
#
# CPython itself is not built with ASan, so the ASan runtime must be the first library
# loaded: LD_PRELOAD=$(gcc -print-file-name=libasan.so) (and libstdc++, see below). Leak checking is off (CPython
# leaks at exit by design). Any "ERROR: AddressSanitizer" or UBSan "runtime error:" in
# the logs fails the run.
#
#   tools/asan_test.sh                      # suite + 20 s per fuzz harness
#   FUZZ_SECONDS=0 tools/asan_test.sh       # suite only
#   PYTEST_ARGS="tests/test_properties.py" tools/asan_test.sh
#
# Environment: ASAN_WORK (build dir, default a fresh /tmp dir), FUZZ_SECONDS (20),
# PYTEST_ARGS (the suite), KEEP_WORK=0 to delete the copy. pytest runs with --capture=sys so
# an ASan report from inside a test reaches the log; libFuzzer gets -rss_limit_mb=0 (the
# ASan quarantine alone passes its 2 GB default).
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
WORK=${ASAN_WORK:-$(mktemp -d /tmp/fastvs-asan.XXXXXX)}
FUZZ_SECONDS=${FUZZ_SECONDS:-20}
PYTEST_ARGS=${PYTEST_ARGS:-tests}
PY=${PYTHON:-python}
LOG=$WORK/logs
mkdir -p "$LOG"

echo "== copy of the tree in $WORK"
tar -C "$REPO" -cf - --exclude=.git --exclude=build --exclude='*.so' --exclude='*.html' \
    --exclude='fuzz/corpus' --exclude='fuzz/crashes' --exclude='.hypothesis' \
    --exclude='__pycache__' . | tar -C "$WORK" -xf -

echo "== build with FASTVS_SANITIZE=1"
( cd "$WORK" && FASTVS_SANITIZE=1 "$PY" setup.py -q build_ext --inplace -j 2 ) >"$LOG/build.log" 2>&1 \
  || { tail -n 30 "$LOG/build.log"; echo "asan: build failed"; exit 2; }
LIBASAN=$(gcc -print-file-name=libasan.so)
if [ ! -e "$LIBASAN" ]; then echo "asan: libasan.so not found (gcc -print-file-name)"; exit 2; fi
# libstdc++ too: python is plain C, so without it ASan's __cxa_throw interceptor finds no
# real function and aborts ("CHECK failed ... real___cxa_throw") the first time a C++
# extension throws (matplotlib's ft2font does, on import, in tests/test_bench.py)
LIBSTDCXX=$(gcc -print-file-name=libstdc++.so)
so="$WORK/$(cd "$WORK" && ls fastvs/datapath/_engine*.so)"
if [ "$(nm -D "$so" | grep -c __asan_report)" = 0 ]; then echo "asan: $so is not instrumented"; exit 2; fi

export LD_PRELOAD="$LIBASAN${LIBSTDCXX:+ $LIBSTDCXX}"
export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=0:detect_stack_use_after_return=0:allocator_may_return_null=1:print_summary=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export PYTHONPATH=$WORK
export PYTHONMALLOC=malloc   # let ASan see Python's own allocations too

where=$(cd "$WORK" && "$PY" -c 'import fastvs.datapath._engine as e; print(e.__file__)')
echo "== engine under test: $where"
case "$where" in "$WORK"/*) ;; *) echo "asan: imported $where, not the sanitized copy"; exit 2;; esac

status=0
echo "== test suite ($PYTEST_ARGS)"
# shellcheck disable=SC2086
( cd "$WORK" && "$PY" -m pytest -q -p no:cacheprovider --capture=sys $PYTEST_ARGS ) >"$LOG/pytest.log" 2>&1
rc=$?
tail -n 5 "$LOG/pytest.log"
[ $rc -eq 0 ] || { echo "asan: test suite exit $rc"; status=1; }

if [ "$FUZZ_SECONDS" -gt 0 ] && "$PY" -c 'import atheris' 2>/dev/null; then
  ( cd "$WORK" && "$PY" fuzz/make_corpus.py ) >"$LOG/corpus.log" 2>&1
  for h in engine pcap rules; do
    echo "== fuzz_$h for $FUZZ_SECONDS s"
    ( cd "$WORK" && "$PY" "fuzz/fuzz_$h.py" "fuzz/corpus/$h" -max_total_time="$FUZZ_SECONDS" \
        -artifact_prefix="$LOG/crash-$h-" -rss_limit_mb=0 -print_final_stats=1 ) >"$LOG/fuzz_$h.log" 2>&1
    rc=$?
    grep -E "^Done|stat::number_of_executed_units" "$LOG/fuzz_$h.log" || true
    [ $rc -eq 0 ] || { tail -n 30 "$LOG/fuzz_$h.log"; echo "asan: fuzz_$h exit $rc"; status=1; }
  done
else
  echo "== fuzz run skipped (FUZZ_SECONDS=0 or atheris not installed)"
fi

if grep -l -E "ERROR: AddressSanitizer|runtime error:" "$LOG"/*.log >/dev/null 2>&1; then
  echo "asan: sanitizer reports in:"; grep -l -E "ERROR: AddressSanitizer|runtime error:" "$LOG"/*.log
  grep -h -A 12 -E "ERROR: AddressSanitizer|runtime error:" "$LOG"/*.log | head -n 60
  status=1
fi
echo "asan: $([ $status -eq 0 ] && echo clean || echo FAILED); logs in $LOG"
[ "${KEEP_WORK:-1}" = 1 ] || rm -rf "$WORK"
exit $status
