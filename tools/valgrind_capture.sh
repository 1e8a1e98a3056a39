#!/usr/bin/env bash
# Run `fastvs process` under valgrind memcheck on a few short captures (a golden one,
# real ones from pcaps/real, and a hostile one made by mangling a golden
# capture's bytes) and fail on any memcheck error in fastvs' extension code.
#
#   tools/valgrind_capture.sh [capture ...]
#
# PYTHONMALLOC=malloc makes CPython use malloc so memcheck sees every allocation;
# tools/valgrind-python.supp silences CPython's deliberate reads.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PY=$("${PYTHON:-python}" -c "import sys; print(sys.executable)")  # the real binary, not a shim
command -v valgrind >/dev/null || { echo "valgrind: not installed (apt-get install valgrind)"; exit 2; }
TMP=$(mktemp -d /tmp/fastvs-valgrind.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
G=$REPO/tests/golden

caps=("$@")
if [ ${#caps[@]} -eq 0 ]; then
  real=$REPO/pcaps/real
  caps=("$G/g5-mix.pcap" "$real/ppp_pcapng-example.pcapng" "$real/ppp_VlanPackets.pcap"
        "$real/dpkt_http.pcap")
  # hostile: every 7th byte of the records of g1-rr flipped (headers kept)
  "$PY" - "$G/g1-rr.pcap" "$TMP/mangled.pcap" <<'PYEOF'
import sys
d = bytearray(open(sys.argv[1], "rb").read())
i = 24
while i + 16 <= len(d):
    n = int.from_bytes(d[i + 8:i + 12], "little")
    for k in range(i + 16 + 3, min(i + 16 + n, len(d)), 7):
        d[k] ^= 0x5A
    i += 16 + n
open(sys.argv[2], "wb").write(d)
PYEOF
  caps+=("$TMP/mangled.pcap")
fi

status=0
for cap in "${caps[@]}"; do
  [ -e "$cap" ] || { echo "valgrind: $cap is missing"; status=1; continue; }
  echo "== valgrind: fastvs process $(basename "$cap")"
  PYTHONMALLOC=malloc valgrind --tool=memcheck --error-exitcode=1 --errors-for-leak-kinds=none \
      --leak-check=no --suppressions="$REPO/tools/valgrind-python.supp" --num-callers=30 \
      --log-file="$TMP/vg.log" \
      "$PY" -m fastvs.cli process "$cap" -r "$G/g5-mix.rules" -o "$TMP/out.pcap" --seed 1 -q
  rc=$?
  grep -E "ERROR SUMMARY" "$TMP/vg.log" | tail -n 1
  if [ $rc -ne 0 ]; then
    status=1
    grep -A 25 -E "^==[0-9]+== (Invalid|Conditional|Use of|Syscall)" "$TMP/vg.log" | head -n 80
  fi
done
echo "valgrind: $([ $status -eq 0 ] && echo clean || echo FAILED)"
exit $status
