"""A small eBPF assembler: instructions as ``struct bpf_insn`` records, with labels.

The encoding follows the kernel's include/uapi/linux/bpf.h and the eBPF instruction set
document (docs.kernel.org/bpf/standardization/instruction-set.html)::

    struct bpf_insn { __u8 code; __u8 dst_reg:4, src_reg:4; __s16 off; __s32 imm; };

Registers r0..r10 (r10 the read-only frame pointer). Jumps take a label name, resolved
by :meth:`Asm.assemble` into the 16-bit instruction offset (relative to the next
instruction; ``ld_imm64`` takes two slots). ``ld_map_fd`` emits the two-slot
``BPF_LD | BPF_DW | BPF_IMM`` with ``src_reg = BPF_PSEUDO_MAP_FD``, which the verifier
turns into the map's address.

No compiler at run time: fastvs builds its XDP program with this (fastvs.live.xdp.program).
"""

from __future__ import annotations

import struct
import sys
from dataclasses import dataclass, field

# instruction classes
LD, LDX, ST, STX, ALU, JMP, JMP32, ALU64 = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07
# sizes
W, H, B, DW = 0x00, 0x08, 0x10, 0x18
SIZES = {1: B, 2: H, 4: W, 8: DW}
# modes
IMM, ABS, IND, MEM, ATOMIC = 0x00, 0x20, 0x40, 0x60, 0xC0
# sources
K, X = 0x00, 0x08
# ALU operations
ALU_OPS = {
    "add": 0x00, "sub": 0x10, "mul": 0x20, "div": 0x30, "or": 0x40, "and": 0x50,
    "lsh": 0x60, "rsh": 0x70, "neg": 0x80, "mod": 0x90, "xor": 0xA0, "mov": 0xB0,
    "arsh": 0xC0,
}
END = 0xD0
# jump operations
JMP_OPS = {
    "jeq": 0x10, "jgt": 0x20, "jge": 0x30, "jset": 0x40, "jne": 0x50, "jsgt": 0x60,
    "jsge": 0x70, "jlt": 0xA0, "jle": 0xB0, "jslt": 0xC0, "jsle": 0xD0,
}
JA, CALL, EXIT = 0x00, 0x80, 0x90
PSEUDO_MAP_FD = 1

# helper function ids (enum bpf_func_id)
FN_MAP_LOOKUP_ELEM = 1
FN_REDIRECT_MAP = 51

R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10 = range(11)
FP = R10


def htons(v: int) -> int:
    """A 16-bit value as a little/big-endian load of its network-order bytes reads it."""
    return int.from_bytes(v.to_bytes(2, "big"), sys.byteorder)


def htonl(v: int) -> int:
    return int.from_bytes(v.to_bytes(4, "big"), sys.byteorder)


class AsmError(ValueError):
    pass


def encode(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    """One 8-byte instruction (host byte order, as the kernel reads it)."""
    if not (0 <= dst <= 10 and 0 <= src <= 10):
        raise AsmError(f"bad register r{dst}/r{src}")
    if not -(1 << 15) <= off < (1 << 15):
        raise AsmError(f"offset {off} out of range")
    if not -(1 << 31) <= imm < (1 << 32):
        raise AsmError(f"immediate {imm} out of range")
    if imm >= 1 << 31:
        imm -= 1 << 32
    regs = (dst | (src << 4)) if sys.byteorder == "little" else ((dst << 4) | src)
    return struct.pack("=BBhi", code, regs, off, imm)


@dataclass
class _Insn:
    code: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0
    target: str | None = None  # label of a jump


@dataclass
class Asm:
    """Collects instructions; ``assemble()`` resolves labels and returns the bytes."""

    insns: list[_Insn] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)

    # -- bookkeeping --------------------------------------------------------------------
    def label(self, name: str) -> None:
        if name in self.labels:
            raise AsmError(f"label {name!r} defined twice")
        self.labels[name] = len(self.insns)

    def _emit(self, code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0,
              target: str | None = None) -> None:
        self.insns.append(_Insn(code, dst, src, off, imm, target))

    # -- ALU ----------------------------------------------------------------------------
    def alu64(self, op: str, dst: int, src_or_imm: int, *, reg: bool = False) -> None:
        code = ALU64 | ALU_OPS[op] | (X if reg else K)
        if reg:
            self._emit(code, dst, src_or_imm)
        else:
            self._emit(code, dst, 0, 0, src_or_imm)

    def alu32(self, op: str, dst: int, src_or_imm: int, *, reg: bool = False) -> None:
        code = ALU | ALU_OPS[op] | (X if reg else K)
        if reg:
            self._emit(code, dst, src_or_imm)
        else:
            self._emit(code, dst, 0, 0, src_or_imm)

    def mov(self, dst: int, src: int) -> None:
        """dst = src (registers, 64-bit)."""
        self.alu64("mov", dst, src, reg=True)

    def movi(self, dst: int, imm: int) -> None:
        """dst = imm (sign-extended 32-bit immediate)."""
        self.alu64("mov", dst, imm)

    def addi(self, dst: int, imm: int) -> None:
        self.alu64("add", dst, imm)

    def ld_imm64(self, dst: int, value: int, src: int = 0) -> None:
        value &= 0xFFFFFFFFFFFFFFFF
        self._emit(LD | DW | IMM, dst, src, 0, value & 0xFFFFFFFF)
        self._emit(0, 0, 0, 0, value >> 32)

    def ld_map_fd(self, dst: int, map_fd: int) -> None:
        self.ld_imm64(dst, map_fd, PSEUDO_MAP_FD)

    # -- memory -------------------------------------------------------------------------
    def ldx(self, size: int, dst: int, src: int, off: int) -> None:
        """dst = *(size *)(src + off)."""
        self._emit(LDX | MEM | SIZES[size], dst, src, off)

    def stx(self, size: int, dst: int, off: int, src: int) -> None:
        """*(size *)(dst + off) = src."""
        self._emit(STX | MEM | SIZES[size], dst, src, off)

    def st(self, size: int, dst: int, off: int, imm: int) -> None:
        """*(size *)(dst + off) = imm."""
        self._emit(ST | MEM | SIZES[size], dst, 0, off, imm)

    # -- jumps --------------------------------------------------------------------------
    def jmp(self, op: str, dst: int, src_or_imm: int, target: str, *, reg: bool = False) -> None:
        """if (dst op src_or_imm) goto target (64-bit compare)."""
        code = JMP | JMP_OPS[op] | (X if reg else K)
        if reg:
            self._emit(code, dst, src_or_imm, target=target)
        else:
            self._emit(code, dst, 0, 0, src_or_imm, target=target)

    def ja(self, target: str) -> None:
        self._emit(JMP | JA, target=target)

    def call(self, helper: int) -> None:
        self._emit(JMP | CALL, imm=helper)

    def exit(self) -> None:
        self._emit(JMP | EXIT)

    # -- output -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.insns)

    def assemble(self) -> bytes:
        out = bytearray()
        for i, ins in enumerate(self.insns):
            off = ins.off
            if ins.target is not None:
                if ins.target not in self.labels:
                    raise AsmError(f"undefined label {ins.target!r}")
                off = self.labels[ins.target] - (i + 1)
                if off < 0:
                    raise AsmError(f"backward jump to {ins.target!r} (loops are not used here)")
            out += encode(ins.code, ins.dst, ins.src, off, ins.imm)
        return bytes(out)


def disassemble(prog: bytes) -> list[str]:
    """A readable listing (for error messages and tests): one line per instruction."""
    lines = []
    for i in range(0, len(prog), 8):
        code, regs, off, imm = struct.unpack_from("=BBhi", prog, i)
        dst, src = (regs & 0xF, regs >> 4) if sys.byteorder == "little" else (regs >> 4, regs & 0xF)
        lines.append(f"{i // 8:4d}: code={code:#04x} dst=r{dst} src=r{src} off={off} imm={imm}")
    return lines
