"""The GPU code a shared library carries: the SASS (cubin) archs and the PTX archs of its fatbinaries.

`cuobjdump --list-elf/--list-ptx` answers this where the toolkit ships it. Some toolkits (this CI machine's) do not,
so the fallback reads the ELF's .nv_fatbin section directly: a sequence of fatbinary blobs, each a 16-byte header
(magic 0xBA55ED50, version, header size, payload size) followed by entries whose headers give the kind
(1 = PTX, 2 = ELF/SASS) and the arch as a number (90 = sm_90). Only the headers are read; payloads may be
compressed. Usage: python scripts/cuda_targets.py LIB.so
"""
from __future__ import annotations

import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

FATBIN_MAGIC = 0xBA55ED50
KIND_PTX, KIND_ELF = 1, 2


def _elf_section(data: bytes, wanted: str) -> bytes | None:
    """The bytes of one section of a 64-bit little-endian ELF file, or None if absent."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError("not a 64-bit little-endian ELF file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names_offset = sections[shstrndx][4]
    for name, _type, _flags, _addr, offset, size, *_ in sections:
        end = data.index(b"\0", names_offset + name)
        if data[names_offset + name:end].decode() == wanted:
            return data[offset:offset + size]
    return None


def fatbin_targets(fatbin: bytes) -> tuple[set[int], set[int]]:
    """(SASS archs, PTX archs) of the fatbinary blobs in a .nv_fatbin section."""
    sass, ptx = set(), set()
    pos = 0
    while pos + 16 <= len(fatbin):
        magic, _version, header_size, payload_size = struct.unpack_from("<IHHQ", fatbin, pos)
        if magic != FATBIN_MAGIC:  # blobs are aligned; skip padding between them
            pos += 8
            continue
        entry, end = pos + header_size, pos + header_size + payload_size
        while entry + 32 <= end:
            kind, _unknown, entry_header, entry_size = struct.unpack_from("<HHIQ", fatbin, entry)
            arch, = struct.unpack_from("<I", fatbin, entry + 28)
            (ptx if kind == KIND_PTX else sass if kind == KIND_ELF else set()).add(arch)
            entry += entry_header + entry_size
        pos = end
    return sass, ptx


def _cuobjdump_targets(cuobjdump: str, library: Path) -> tuple[set[int], set[int]]:
    def archs(flag: str) -> set[int]:
        out = subprocess.run([cuobjdump, flag, str(library)], capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            raise RuntimeError(f"{cuobjdump} {flag} {library}: {out.stderr.strip()}")
        return {int(m) for m in re.findall(r"\.sm_(\d+)[a-z]?\.", out.stdout)}
    return archs("--list-elf"), archs("--list-ptx")


def cuda_targets(library: str | Path, cuda_home: str | None = None) -> tuple[set[int], set[int], str]:
    """(SASS archs, PTX archs, how they were read) of a shared library; archs as numbers (sm_90 -> 90)."""
    library = Path(library)
    candidates = [Path(cuda_home, "bin", "cuobjdump")] if cuda_home else []
    which = shutil.which("cuobjdump")
    candidates += [Path(which)] if which else []
    for tool in candidates:
        if tool.exists():
            sass, ptx = _cuobjdump_targets(str(tool), library)
            return sass, ptx, str(tool)
    section = _elf_section(library.read_bytes(), ".nv_fatbin")
    if section is None:
        return set(), set(), "ELF .nv_fatbin (absent: no GPU code)"
    sass, ptx = fatbin_targets(section)
    return sass, ptx, "ELF .nv_fatbin headers (no cuobjdump in this toolkit)"


def expected_targets(arch_list: str) -> tuple[set[int], set[int]]:
    """What TORCH_CUDA_ARCH_LIST asks for: "8.0;9.0+PTX" -> SASS {80, 90}, PTX {90}."""
    sass, ptx = set(), set()
    for arch in filter(None, re.split(r"[;\s]+", arch_list.strip())):
        number = int(arch.replace("+PTX", "").replace(".", ""))
        sass.add(number)
        if arch.endswith("+PTX"):
            ptx.add(number)
    return sass, ptx


if __name__ == "__main__":
    sass, ptx, how = cuda_targets(sys.argv[1])
    print(f"SASS: {', '.join(f'sm_{a}' for a in sorted(sass)) or 'none'}; "
          f"PTX: {', '.join(f'compute_{a}' for a in sorted(ptx)) or 'none'} (read from {how})")
