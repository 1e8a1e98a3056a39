"""PID 1 of the virtual director of tests/vm.py: a KVM guest whose root file system is
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
"""

from __future__ import annotations

import ctypes
import json
import lzma
import os
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
# the modules virtio_net needs, in load order (the guest kernel has the rest built in)
MODULES = ("kernel/net/core/failover.ko", "kernel/drivers/net/net_failover.ko",
           "kernel/drivers/net/virtio_net.ko")


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def run(*args: str) -> None:
    subprocess.run(args, check=True, stdin=subprocess.DEVNULL)


def mounts() -> None:
    for fstype, where in (("proc", "/proc"), ("sysfs", "/sys"), ("devtmpfs", "/dev"), ("tmpfs", "/run"),
                          ("bpf", "/sys/fs/bpf")):
        run("mount", "-n", "-t", fstype, fstype, where)


def load_modules(root: Path) -> None:
    for rel in MODULES:
        path = root / rel
        data = path.read_bytes() if path.exists() else lzma.decompress((root / (rel + ".xz")).read_bytes())
        buf = ctypes.create_string_buffer(data, len(data))
        if libc.syscall(SYS_INIT_MODULE, buf, ctypes.c_ulong(len(data)), b"") != 0:
            err = ctypes.get_errno()
            if err != 17:  # EEXIST: built in or loaded already
                raise OSError(err, f"init_module {rel}: {os.strerror(err)}")


def iface_by_mac(mac: str, timeout: float = 10) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for name in os.listdir("/sys/class/net"):
            if Path(f"/sys/class/net/{name}/address").read_text().strip() == mac.lower():
                return name
        time.sleep(0.05)
    raise RuntimeError(f"no interface with MAC {mac}")


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
    stop = control / "stop"
    while p.poll() is None and not stop.exists():
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


def main(argv: list[str]) -> int:
    modules, control, mac_c, mac_s = argv[:4]
    args = argv[4:]
    os.environ.update(PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                      PYTHONDONTWRITEBYTECODE="1", TMPDIR="/run", HOME="/run")
    mounts()
    say(f"vm: up, kernel {os.uname().release}")
    load_modules(Path(modules))
    client_if, server_if = iface_by_mac(mac_c), iface_by_mac(mac_s)
    run("ip", "link", "set", "lo", "up")
    sysctl("net.ipv4.ip_forward", "0")
    for dev in (client_if, server_if):
        feats = Path(f"/sys/class/net/{dev}/device/features").read_text().strip()
        from fastvs.live.xdp.netlink import xdp_features

        say(f"vm: {dev} virtio features {feats} xdp features {xdp_features(socket.if_nametoindex(dev))}")
        sysctl(f"net.ipv6.conf.{dev}.disable_ipv6", "1")
        run("ip", "link", "set", dev, "up")
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
