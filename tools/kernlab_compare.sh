#!/bin/bash
# tools/kernlab_compare.sh - the real kernel as referee: run one capture through a Linux 6.1
# IPVS director (kernlab, a qemu VM) and through fastvs, and compare what both sent.
#
# usage: tools/kernlab_compare.sh [--kernlab DIR] RULES IN.pcap [--pps N] [--sysctl FILE]
#                                 [--out DIR] [--ignore-ttl] [-- FASTVS-PROCESS-OPTIONS...]
#
#   --kernlab DIR  the kernel lab (holding run.sh and kl.py); default: $KERNLAB
#   RULES        ipvsadm -S -n format, NAT (-m) real servers only (kernlab's limit)
#   IN.pcap      Ethernet, classic pcap: client packets and real-server replies
#   --pps N      injection rate into the VM (default 100; 100-200 runs without loss).
#                The VM's clock is wall-clock time, pcap timestamps are ignored: keep
#                captures that depend on timeouts consistent with 1/N s per packet.
#   --sysctl F   sysctl.conf applied in the guest before the rules (e.g. conn_reuse_mode)
#   --out DIR    keep the results in DIR (default: a temporary directory, kept and printed)
#   --ignore-ttl passed to `kl.py diff` (zero TTL and IP checksum before comparing)
#   -- ...       extra options for `fastvs process` (e.g. --director-view, --keep-ttl)
#
# Steps (what it runs):
#   1. $KERNLAB/run.sh RULES IN.pcap DIR/kern.pcap --pps N        (needs root; boots the VM)
#   2. fastvs process IN.pcap -r RULES -o DIR/mine.pcap --seed 1 [fastvs options]
#   3. $KERNLAB/kl.py diff RULES DIR/kern.pcap DIR/mine.pcap      (per-flow picks, IP bytes)
# and prints "VERDICT: SAME" (exit 0) or "VERDICT: DIFFERENT" (exit 1). Other failures
# (VM, fastvs) exit 2. DIR also holds kern.ipvsadm.txt (the kernel's -L -n --stats, -c,
# -S -n at the end) and mine.txt (fastvs's listing with connections).
#
# kernlab is not part of this repository: give its location with --kernlab DIR or the
# KERNLAB environment variable (copy it somewhere writable if needed). Its VM artefacts go
# to $KL_OUT (kernlab's default; built by its build.sh on first use: it apt-installs qemu,
# a Debian kernel, ipvsadm, ...).
set -euo pipefail

usage() { sed -n '4,17p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
KL_DIR=${KERNLAB:-}
if [ "${1:-}" = --kernlab ]; then
    [ $# -ge 2 ] || usage
    KL_DIR=$2; shift 2
fi
[ $# -ge 2 ] || usage
RULES=$(realpath "$1"); IN=$(realpath "$2"); shift 2
PPS=100; SYSCTL=(); OUTDIR=""; DIFFOPT=(); FVOPT=()
while [ $# -gt 0 ]; do
    case "$1" in
        --kernlab) KL_DIR=$2; shift 2;;
        --pps) PPS=$2; shift 2;;
        --sysctl) SYSCTL=(--sysctl "$(realpath "$2")"); shift 2;;
        --out) OUTDIR=$2; shift 2;;
        --ignore-ttl) DIFFOPT=(--ignore-ttl); shift;;
        --) shift; FVOPT=("$@"); break;;
        -h|--help) usage;;
        *) echo "kernlab_compare: unknown option $1" >&2; usage;;
    esac
done

if [ -z "$KL_DIR" ]; then
    echo "kernlab_compare: where is kernlab? give --kernlab DIR or set KERNLAB=DIR (the kernel lab, holding run.sh and kl.py; not part of this repository)" >&2
    exit 2
fi
if [ ! -f "$KL_DIR/run.sh" ] || [ ! -f "$KL_DIR/kl.py" ]; then
    echo "kernlab_compare: $KL_DIR is not kernlab (no run.sh and kl.py in it); give --kernlab DIR or set KERNLAB=DIR" >&2
    exit 2
fi
KERNLAB=$(realpath "$KL_DIR")
[ "$(id -u)" = 0 ] || { echo "kernlab_compare: kernlab needs root (netns, taps, qemu)" >&2; exit 2; }

if [ -z "$OUTDIR" ]; then OUTDIR=$(mktemp -d /tmp/kernlab_compare.XXXXXX); fi
mkdir -p "$OUTDIR"; OUTDIR=$(realpath "$OUTDIR")
echo "== kernel: $KERNLAB/run.sh $(basename "$RULES") $(basename "$IN") --pps $PPS  (results in $OUTDIR)"
if ! bash "$KERNLAB/run.sh" "$RULES" "$IN" "$OUTDIR/kern.pcap" --pps "$PPS" "${SYSCTL[@]}" \
        > "$OUTDIR/kern.log" 2>&1; then
    tail -20 "$OUTDIR/kern.log" >&2
    echo "kernlab_compare: the kernel run failed (log: $OUTDIR/kern.log)" >&2
    exit 2
fi

echo "== fastvs: fastvs process $(basename "$IN") -r $(basename "$RULES") -o mine.pcap --seed 1 ${FVOPT[*]:-}"
if ! fastvs process "$IN" -r "$RULES" -o "$OUTDIR/mine.pcap" --seed 1 -c --no-progress "${FVOPT[@]}" \
        > "$OUTDIR/mine.txt" 2>&1; then
    cat "$OUTDIR/mine.txt" >&2
    echo "kernlab_compare: fastvs failed" >&2
    exit 2
fi

echo "== diff: kl.py diff (IP datagrams; Ethernet ignored)"
set +e
python3 "$KERNLAB/kl.py" diff "$RULES" "$OUTDIR/kern.pcap" "$OUTDIR/mine.pcap" "${DIFFOPT[@]}"
rc=$?
set -e
if [ $rc -eq 0 ]; then
    echo "VERDICT: SAME (kernel and fastvs sent the same IP datagrams; results in $OUTDIR)"
    exit 0
fi
echo "VERDICT: DIFFERENT (see above; kernel listing $OUTDIR/kern.ipvsadm.txt, fastvs $OUTDIR/mine.txt)"
exit 1
