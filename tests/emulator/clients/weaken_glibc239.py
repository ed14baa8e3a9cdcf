"""Copy an ELF64 binary with its GLIBC_2.39 version requirement marked weak (VER_FLG_WEAK).

Usage: python weaken_glibc239.py SRC DST

For running the `dw` CLI (dw-cli 0.1.2x) on glibc < 2.39: its only 2.39 symbols are weak references, so
the loader accepts the binary once the version need itself is weak. Test tooling only; see README.md.
"""

from __future__ import annotations

import os
import struct
import sys

SHT_GNU_VERNEED = 0x6FFFFFFE
VER_FLG_WEAK = 0x2


def weaken(data: bytearray, version: bytes = b"GLIBC_2.39") -> int:
    """Set VER_FLG_WEAK on every Vernaux entry named `version`; returns how many were changed."""
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQII", data, shoff + i * shentsize) for i in range(shnum)]
    changed = 0
    for _name, kind, _flags, _addr, offset, _size, link, info in sections:
        if kind != SHT_GNU_VERNEED:
            continue
        strtab = sections[link][4]
        need = offset
        for _ in range(info):
            _ver, count, _file, aux_off, next_off = struct.unpack_from("<HHIII", data, need)
            aux = need + aux_off
            for _ in range(count):
                _hash, flags, _other, name_off, aux_next = struct.unpack_from("<IHHII", data, aux)
                start = strtab + name_off
                if bytes(data[start : data.index(0, start)]) == version:
                    struct.pack_into("<H", data, aux + 4, flags | VER_FLG_WEAK)
                    changed += 1
                aux += aux_next
            need += next_off
    return changed


def main(argv: list[str]) -> int:
    src, dst = argv[1], argv[2]
    with open(src, "rb") as fh:
        data = bytearray(fh.read())
    if data[:4] != b"\x7fELF" or data[4] != 2:
        print("not an ELF64 file", file=sys.stderr)
        return 1
    print(f"weakened {weaken(data)} GLIBC_2.39 requirement(s)")
    with open(dst, "wb") as fh:
        fh.write(data)
    os.chmod(dst, 0o755)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
