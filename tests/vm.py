"""A virtual director for the tests that need a NIC with AF_XDP zero-copy, which veth has
not: a qemu guest with two virtio-net NICs, on the namespace lab of tests/netns.py in
place of the director namespace. virtio_net binds AF_XDP sockets in zero-copy mode given
VIRTIO_F_RING_RESET and VIRTIO_F_ACCESS_PLATFORM, in kernels whose driver advertises it
(NETDEV_XDP_ACT_XSK_ZEROCOPY: not Debian's 6.12, whose driver has the code but not the
flag, so the bind is refused; yes in 6.18 and 7.3)::

    client ns              switch ns                                   rs1 / rs2 ns
    eth0 10.0.0.2 --- pc [brc] tc ===( guest eth0 | guest eth1 )=== ts [br0] p1 --- eth0 10.1.0.11
                                          qemu guest                       p2 --- eth0 10.1.0.12

``tc``/``ts`` are tap devices that qemu (run in the switch namespace) backs the guest's
NICs with. The guest boots Debian's cloud kernel (trixie-backports; 7.3 when written), fetched by
:func:`guest_kernel` into build/vm-kernel/ with apt-get download: a registry package,
nothing installed on the host) with the host's own root file system shared read-only
through virtiofs, and tests/vm_guest.py as PID 1: the forwarder in the guest is this
checkout's, run by the host's Python. Traffic stays inside the lab's namespaces and the
guest. :class:`VmLab` tears it all down on :meth:`close`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from netns import GW_IP, Topology, wait_for

ROOT = Path(__file__).resolve().parents[1]
KERNEL_DIR = ROOT / "build" / "vm-kernel"
KERNEL_PACKAGE = "linux-image-cloud-amd64"  # its dependency is the versioned image
SUITE = "deb http://deb.debian.org/debian trixie-backports main"
VIRTIOFSD = "/usr/lib/qemu/virtiofsd"  # Debian's qemu-system-common (qemu 7.2)
# TCG with one host thread for both vCPUs: with a thread per vCPU (thread=multi) the guest
# kernel sometimes died at boot on a breakpoint it had already patched away ("Oops: int3"
# while flipping a static key: qemu 7.2 let the other vCPU run the stale code), 1 boot in
# 40 on a loaded host, none in 127 with one thread. The price: one vCPU runs while the
# other waits its turn
TCG_ACCEL = "tcg,thread=single"
MAC_CLIENT, MAC_SERVER = "52:54:00:fa:00:01", "52:54:00:fa:00:02"
# zero-copy needs the ring reset (rebinding a queue to the socket's buffers) and the DMA
# API (ACCESS_PLATFORM); XDP on virtio_net needs the guest offloads off
NIC = ("virtio-net-pci,netdev={id},mac={mac},disable-legacy=on,iommu_platform=on,queue_reset=on,"
       "guest_tso4=off,guest_tso6=off,guest_ecn=off,guest_ufo=off,guest_csum=off")


def apt(args: list[str], work: Path) -> subprocess.CompletedProcess[str]:
    """apt-get/apt-cache with a sources list and state of their own (the host's apt
    configuration is not touched)."""
    (work / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (work / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    (work / "sources.list").write_text(SUITE + "\n")
    opts = [f"-oDir::Etc::SourceList={work / 'sources.list'}", "-oDir::Etc::SourceParts=-",
            f"-oDir::State::Lists={work / 'lists'}", f"-oDir::Cache={work / 'cache'}",
            "-oAPT::Sandbox::User=root", "-qq"]
    return subprocess.run([args[0], *opts, *args[1:]], cwd=work, capture_output=True, text=True, timeout=600)


def guest_kernel(dest: Path = KERNEL_DIR) -> Path:
    """The guest kernel's directory (``vmlinuz`` and ``modules/``), fetched once: Debian's
    cloud kernel from trixie-backports, unpacked (dpkg-deb -x), not installed.
    Raises RuntimeError saying why it cannot be had."""
    if (dest / "vmlinuz").exists() and (dest / "modules").is_dir():
        return dest
    for tool in ("apt-get", "apt-cache", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} not found: the guest kernel comes from Debian's trixie-backports")
    work = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    r = apt(["apt-get", "update"], work)
    if r.returncode != 0:
        raise RuntimeError(f"apt-get update (trixie-backports) failed: {r.stderr.strip()[-300:]}")
    image = re.search(r"Depends: (linux-image-\S+)", apt(["apt-cache", "depends", KERNEL_PACKAGE], work).stdout)
    if image is None:
        raise RuntimeError(f"{KERNEL_PACKAGE} not found in trixie-backports")
    # newer images are split: the kernel in linux-binary-*, the modules in linux-modules-*
    split = re.findall(r"Depends: (linux-(?:binary|modules)-\S+)",
                       apt(["apt-cache", "depends", image.group(1)], work).stdout)
    for pkg in (image.group(1), *split):
        r = apt(["apt-get", "download", pkg], work)
        if r.returncode != 0:
            raise RuntimeError(f"apt-get download {pkg} failed: {r.stderr.strip()[-300:]}")
    tree = work / "tree"
    for deb in work.glob("*.deb"):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True, timeout=300)
    modules = next((d for d in (*tree.glob("lib/modules/*"), *tree.glob("usr/lib/modules/*")) if d.is_dir()), None)
    vmlinuz = next(iter([*tree.glob("boot/vmlinuz-*"), *(modules.glob("vmlinuz") if modules else ())]), None)
    if vmlinuz is None or modules is None:
        raise RuntimeError(f"{image.group(1)}: no vmlinuz or no modules in the packages")
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    vmlinuz.rename(dest / "vmlinuz")
    modules.rename(dest / "modules")
    (dest / "version").write_text(modules.name + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return dest


def unavailable() -> str | None:
    """Why a guest cannot run here (one line), or None."""
    if os.geteuid() != 0:
        return "needs root"
    if shutil.which("qemu-system-x86_64") is None:
        return "qemu-system-x86_64 not installed (Debian: qemu-system-x86)"
    if not os.path.exists(VIRTIOFSD):
        return f"{VIRTIOFSD} not found (Debian: qemu-system-common)"
    return None


class GuestKernelDied(AssertionError):
    """The guest's kernel stopped before it ran its init (tests/vm_guest.py): an
    AssertionError, which wait_for does not take for a value to poll past."""

    def __init__(self, message: str, console: Path | None) -> None:
        super().__init__(message)
        self.console = console


class VmLab(Topology):
    """The lab of :class:`netns.Topology` with the director in a qemu guest (see the
    module's docstring). :meth:`boot` starts a forwarder there; :meth:`halt` stops it
    and returns what it printed."""

    def __init__(self, *, server: str = "busybox", prefix: str | None = None, memory_mb: int = 1024,
                 queues: int = 1) -> None:
        """``queues``: queue pairs of each of the guest's NICs (multi-queue virtio-net on
        multi-queue taps when more than one; tests/vm_guest.py uses one per vCPU)."""
        self.kernel = guest_kernel()
        self.memory_mb = memory_mb
        self.qemu: subprocess.Popen[bytes] | None = None
        self.console: Path | None = None
        super().__init__(server=server, prefix=prefix, queues=queues)

    def _build(self) -> None:
        for n in (self.client, self.switch, *self.rs):
            self._add_ns(n)
        sw = self.switch
        self.client_if, self.server_if = "eth0", "eth1"  # as the guest names them (by MAC)
        for br in ("br0", "brc"):
            self.nsx(sw, "ip", "link", "add", br, "type", "bridge")
            self.nsx(sw, "ip", "link", "set", br, "up")
        ports = [("pc", "brc"), ("tc", "brc"), ("ts", "br0")]
        self._veth(self.client, "eth0", sw, "pc")
        for tap in ("tc", "ts"):
            self.nsx(sw, "ip", "tuntap", "add", "dev", tap, "mode", "tap", *(["multi_queue"] if self.queues > 1 else []))
        self._switch_ports(ports)
        self.nft = False
        self._peers()

    def boot(self, rules: Path, *args: str, ready: str = "fastvs forward: ready", timeout: float = 120) -> str:
        """Boot the guest running ``python -m fastvs.live -r RULES --addr GW ARGS`` on its
        two NICs; returns once the forwarder printed ``ready`` (its console so far)."""
        return self._start(["-r", str(rules), "--addr", GW_IP, *args], ready, timeout)

    def boot_kernel_nat(self, conf: Path, client_addrs: list[str], server_addrs: list[str],
                        timeout: float = 120) -> str:
        """Boot the guest as a director by the kernel's NAT (nftables CONF, the addresses
        with their prefixes on the client and server NICs, forwarding on), no forwarder."""
        args = ["--kernel-nat", str(conf), ",".join(client_addrs), ",".join(server_addrs)]
        return self._start(args, "vm: kernel NAT ready", timeout)

    def _start(self, args: list[str], ready: str, timeout: float) -> str:
        """Boot with tests/vm_guest.py's ARGS (after the MACs) until ``ready`` is on the
        console. A guest kernel that dies before it runs tests/vm_guest.py (before
        ``vm: up``: the emulator's fault, not the forwarder's) is booted once more, with
        its console kept beside the new one and a line on stderr; after ``vm: up`` any
        failure is the test's."""
        assert self.qemu is None, "one guest at a time"
        try:
            return self._boot(args, ready, timeout)
        except GuestKernelDied as e:
            print(f"tests/vm.py: the guest kernel died before its init ran; booting again ({e.console})",
                  file=sys.stderr)
            self.qemu = None
        return self._boot(args, ready, timeout)

    def _boot(self, args: list[str], ready: str, timeout: float) -> str:
        control = self.tmp / "control"
        control.mkdir(exist_ok=True)
        (control / "stop").unlink(missing_ok=True)
        self.console = self.tmp / f"console-{time.monotonic_ns()}.log"
        sock = self.tmp / "virtiofs.sock"
        sock.unlink(missing_ok=True)
        self.spawn(self.switch, VIRTIOFSD, f"--socket-path={sock}", "-o", "source=/",
                   "-o", "cache=auto", "-o", "sandbox=chroot")  # stopped with the lab
        wait_for(sock.exists, 10, "virtiofsd's socket")
        # FASTVS_VM_ACCEL: kvm, or qemu's -accel for TCG (TCG_ACCEL by default: where this
        # was written /dev/kvm is PVM, kvm_pvm, nested paging in software, which runs only
        # PVM-built guest kernels)
        accel = os.environ.get("FASTVS_VM_ACCEL", TCG_ACCEL)
        kvm = accel == "kvm"
        guest = [sys.executable, str(Path(__file__).with_name("vm_guest.py")), str(self.kernel / "modules"),
                 str(control), MAC_CLIENT, MAC_SERVER, *args]
        cmdline = ("console=ttyS0 loglevel=4 panic=-1 rootfstype=virtiofs root=hostroot ro "
                   f"init={guest[0]} -- " + " ".join(guest[1:]))
        mem = f"{self.memory_mb}M"
        cmd = ["qemu-system-x86_64", "-nodefaults", "-display", "none", "-no-reboot",
               *(["-enable-kvm", "-cpu", "host,-arch-capabilities"] if kvm
                 else ["-accel", accel, "-cpu", "Haswell-v4"]),
               "-smp", "2", "-m", mem, "-kernel", str(self.kernel / "vmlinuz"), "-append", cmdline,
               "-object", f"memory-backend-memfd,id=mem,size={mem},share=on", "-numa", "node,memdev=mem",
               "-chardev", f"socket,id=fs,path={sock}", "-device", "vhost-user-fs-pci,chardev=fs,tag=hostroot",
               "-serial", f"file:{self.console}"]
        for i, (tap, mac) in enumerate((("tc", MAC_CLIENT), ("ts", MAC_SERVER))):
            mq = f",queues={self.queues}" if self.queues > 1 else ""
            cmd += ["-netdev", f"tap,id=n{i},ifname={tap},script=no,downscript=no,vnet_hdr=off{mq}",
                    "-device", NIC.format(id=f"n{i}", mac=mac)
                    + (f",mq=on,vectors={2 * self.queues + 2}" if self.queues > 1 else "")]
        self.qemu = self.spawn(self.switch, *cmd, stderr=open(self.tmp / "qemu.err", "wb"))  # noqa: SIM115

        def up() -> bool:
            text = self.log()
            died = "vm: up" not in text and re.search(r"\] (Oops|Kernel panic|BUG):", text) is not None
            if self.qemu is not None and (died or self.qemu.poll() is not None):
                if died:  # an oops that does not panic would leave a guest that never boots
                    self.qemu.kill()
                    self.qemu.wait()
                err = (self.tmp / "qemu.err").read_text(errors="replace")
                if "vm: up" not in text:
                    raise GuestKernelDied(f"the guest kernel died before its init ran:\n{text}\n{err}", self.console)
                raise AssertionError(f"the guest stopped before the forwarder was ready:\n{text}\n{err}")
            if "vm: exit" in text:
                raise AssertionError(f"the guest's forwarder exited:\n{text}")
            return ready in text

        wait_for(up, timeout, f"the guest's forwarder ({ready!r})", interval=0.2)
        return self.log()

    def log(self) -> str:
        """The guest's console so far."""
        if self.console is None or not self.console.exists():
            return ""
        return self.console.read_text(errors="replace")

    def halt(self, timeout: float = 60) -> tuple[int | None, dict[str, Any] | None, str]:
        """Stop the forwarder and power the guest off: (its exit status, its last
        statistics, the console)."""
        assert self.qemu is not None
        (self.tmp / "control" / "stop").write_text("")
        try:
            self.qemu.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.qemu.kill()
            self.qemu.wait()
        self.qemu = None
        text = self.log()
        m = re.search(r"^vm: exit (-?\d+)", text, re.M)
        s = re.search(r"^vm: stats (\{.*\})$", text, re.M)
        return (int(m.group(1)) if m else None), (json.loads(s.group(1)) if s else None), text

    def close(self) -> None:
        if self.qemu is not None and self.qemu.poll() is None:
            self.qemu.kill()
            self.qemu.wait()
        self.qemu = None
        super().close()
