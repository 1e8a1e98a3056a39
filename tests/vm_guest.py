"""PID 1 of the virtual director of tests/vm.py: a qemu guest whose root file system is
the host's own (virtiofs, read-only), so the guest runs the host's Python and this
checkout's compiled fastvs without an image of its own.

    vm_guest.py MODULES_DIR CONTROL_DIR MAC_CLIENT MAC_SERVER FORWARD-ARGS...

It mounts what a system needs (proc, sys, dev, a tmpfs on /run for anything written),
loads virtio_net from MODULES_DIR (the guest kernel's, not the host's), finds the two
NICs by their MACs, keeps the guest's stack out of IP on them (no addresses, no
forwarding, no IPv6), then runs ``python -m fastvs.live -r ... --client-if ...
--server-if ... FORWARD-ARGS`` and copies its output to the console, each line behind
``fwd: ``. It stops the forwarder (SIGTERM) when CONTROL_DIR/stop appears on the
host, prints ``vm: stats {json}`` (the forwarder's last statistics) and ``vm: exit N``,
and powers the guest off. Anything unexpected is one ``vm: error ...`` line, then the
power-off: the host reads the console, never a hung guest.

    vm_guest.py MODULES_DIR CONTROL_DIR MAC_CLIENT MAC_SERVER --kernel-nat NFT_FILE CLIENT_ADDRS SERVER_ADDRS

runs the kernel's NAT in place of the forwarder (the kernel column of
benchmarks/bench_zerocopy.py): the nftables modules loaded from MODULES_DIR, the
addresses on the NICs, forwarding on, NFT_FILE loaded, ``vm: kernel NAT ready``.
"""

from __future__ import annotations

import ctypes
import json
import lzma
import os
import re
import socket
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

libc = ctypes.CDLL(None, use_errno=True)
RB_POWER_OFF = 0x4321FEDC
SYS_INIT_MODULE = 175  # x86_64
# the kernel's NAT (the kernel column of benchmarks/bench_zerocopy.py): what its rules use
NAT_MODULES = ("nf_tables", "nft_chain_nat", "nft_nat", "nft_numgen")


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def run(*args: str) -> None:
    subprocess.run(args, check=True, stdin=subprocess.DEVNULL)


def mounts() -> None:
    for fstype, where in (("proc", "/proc"), ("sysfs", "/sys"), ("devtmpfs", "/dev"), ("tmpfs", "/run"),
                          ("bpf", "/sys/fs/bpf")):
        run("mount", "-n", "-t", fstype, fstype, where)


def module_index(root: Path) -> dict[str, Path]:
    """Module name -> its file, under the guest kernel's modules directory."""
    return {f.name.split(".ko")[0].replace("-", "_"): f for f in root.rglob("*.ko*")}


def load_module(name: str, index: dict[str, Path]) -> None:
    """init_module ``name`` after the modules it depends on (its ``depends=`` in
    .modinfo: no modprobe, whose depmod files the unpacked package has not)."""
    path = index[name]
    data = lzma.decompress(path.read_bytes()) if path.suffix == ".xz" else path.read_bytes()
    deps = re.search(rb"\0depends=([^\0]*)\0", data)
    for dep in deps.group(1).decode().split(",") if deps else ():
        if dep:
            load_module(dep, index)
    buf = ctypes.create_string_buffer(data, len(data))
    if libc.syscall(SYS_INIT_MODULE, buf, ctypes.c_ulong(len(data)), b"") != 0:
        err = ctypes.get_errno()
        if err != 17:  # EEXIST: loaded already
            raise OSError(err, f"init_module {name}: {os.strerror(err)}")


def iface_by_mac(mac: str, timeout: float = 10) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for name in os.listdir("/sys/class/net"):
            if Path(f"/sys/class/net/{name}/address").read_text().strip() == mac.lower():
                return name
        time.sleep(0.05)
    raise RuntimeError(f"no interface with MAC {mac}")


def channels(dev: str) -> None:
    """A multi-queue NIC uses a queue pair per vCPU (virtio_net starts with one)."""
    out = subprocess.run(["ethtool", "-l", dev], capture_output=True, text=True).stdout
    most = re.search(r"maximums:.*?Combined:\s+(\d+)", out, re.S)
    want = min(int(most.group(1)), os.cpu_count() or 1) if most else 1
    if want > 1:
        run("ethtool", "-L", dev, "combined", str(want))


def sysctl(key: str, value: str) -> None:
    Path("/proc/sys/" + key.replace(".", "/")).write_text(value)


def forward(control: Path, client_if: str, server_if: str, args: list[str]) -> int:
    stats = Path("/run/stats.json")
    cmd = [sys.executable, "-m", "fastvs.live", "--client-if", client_if, "--server-if", server_if,
           "--stats-json", str(stats), *args]
    say("vm: running " + " ".join(cmd[1:]))
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert p.stdout is not None
    out = p.stdout

    def copy() -> None:
        for raw in iter(out.readline, b""):
            say("fwd: " + raw.decode(errors="replace").rstrip("\n"))

    t = threading.Thread(target=copy, daemon=True)
    t.start()
    while p.poll() is None and not (control / "stop").exists():
        time.sleep(0.1)
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    t.join(5)
    if stats.exists():
        say("vm: stats " + json.dumps(json.loads(stats.read_text()), separators=(",", ":")))
    return p.returncode


def wait_stop(control: Path) -> None:
    while not (control / "stop").exists():
        time.sleep(0.1)


def kernel_nat(control: Path, index: dict[str, Path], ifaces: tuple[str, str], args: list[str]) -> int:
    """The kernel's NAT in place of the forwarder: ``--kernel-nat NFT_FILE CLIENT_ADDRS
    SERVER_ADDRS`` (addresses comma-separated, with their prefixes), forwarding on."""
    conf, *addrs = args[1:]
    for name in NAT_MODULES:
        load_module(name, index)
    sysctl("net.ipv4.ip_forward", "1")
    for dev, these in zip(ifaces, addrs, strict=True):
        for a in these.split(","):
            run("ip", "addr", "add", a, "dev", dev)
    run("nft", "-f", conf)
    say("vm: kernel NAT ready")
    wait_stop(control)
    return 0


def main(argv: list[str]) -> int:
    modules, control, mac_c, mac_s = argv[:4]
    args = argv[4:]
    os.environ.update(PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                      PYTHONDONTWRITEBYTECODE="1", TMPDIR="/run", HOME="/run")
    mounts()
    say(f"vm: up, kernel {os.uname().release}")
    index = module_index(Path(modules))
    load_module("virtio_net", index)
    client_if, server_if = iface_by_mac(mac_c), iface_by_mac(mac_s)
    run("ip", "link", "set", "lo", "up")
    sysctl("net.ipv4.ip_forward", "0")
    for dev in (client_if, server_if):
        feats = Path(f"/sys/class/net/{dev}/device/features").read_text().strip()
        from fastvs.live.xdp.netlink import xdp_features

        channels(dev)
        rxq = sum(1 for q in os.listdir(f"/sys/class/net/{dev}/queues") if q.startswith("rx-"))
        say(f"vm: {dev} virtio features {feats} xdp features {xdp_features(socket.if_nametoindex(dev))} "
            f"rx queues {rxq}")
        sysctl(f"net.ipv6.conf.{dev}.disable_ipv6", "1")
        run("ip", "link", "set", dev, "up")
    if args[:1] == ["--kernel-nat"]:
        return kernel_nat(Path(control), index, (client_if, server_if), args)
    rc = forward(Path(control), client_if, server_if, args)
    if rc != 0:
        kmsg = subprocess.run(["dmesg"], capture_output=True, text=True).stdout.splitlines()
        for line in kmsg[-15:]:
            say("vm: dmesg " + line)
    return rc


if __name__ == "__main__":
    rc = 1
    try:
        rc = main(sys.argv[1:])
    except BaseException:  # noqa: BLE001 - PID 1: say it and power off, never panic
        say("vm: error " + traceback.format_exc().replace("\n", " | "))
    say(f"vm: exit {rc}")
    os.sync()
    libc.reboot(RB_POWER_OFF)
