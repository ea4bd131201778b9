"""Guest RAM: one anonymous mmap per VM.

The mapping is allocated once at its configured size and never grows, so a VM cannot
take more host memory than it was given. Typed memoryviews over the same mapping give
the CPU's hot path aligned 1/2/4/8-byte access without building bytes objects; native
code (the later JIT) can address the same buffer, so tiers share RAM without copies.
"""

from __future__ import annotations

import mmap
from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:
    from io import BufferedReader


class GuestRAM:
    """``size`` bytes of guest physical memory starting at guest physical ``base``."""

    def __init__(self, base: int, size: int, backing: tuple[int, int] | None = None) -> None:
        """``backing`` (fd, offset): map the RAM copy-on-write from that file (a
        snapshot's RAM, read on first touch, never written back; the fd may be closed
        after); otherwise anonymous memory, all zero."""
        if size <= 0 or size % 4096:
            raise ConfigError(f"RAM size {size} must be a positive multiple of 4 KiB")
        self.base = base
        self.size = size
        self.end = base + size
        if backing is None:
            self.buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        else:
            fd, offset = backing
            self.buf = mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE,
                                 prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=offset)
        self.file_backed = backing is not None
        # Like QEMU's mem-merge=on: the host's KSM may merge pages of equal content
        # (identical guests, clones' written pages) when the host runs it
        # (/sys/kernel/mm/ksm/run, which pyhv reads but never changes). Without KSM it
        # costs nothing.
        self.mergeable = False
        try:
            self.buf.madvise(mmap.MADV_MERGEABLE)
            self.mergeable = True
        except (AttributeError, OSError):
            pass
        mv = memoryview(self.buf)
        self.mv = mv
        # Unsigned and signed views: indexing one is the aligned fast path.
        self.u8, self.u16, self.u32, self.u64 = mv.cast("B"), mv.cast("H"), mv.cast("I"), \
            mv.cast("Q")
        self.s8, self.s16, self.s32 = mv.cast("b"), mv.cast("h"), mv.cast("i")
        self._anchor: object | None = None  # keeps the buffer exported to native code
        self._host = 0

    def host_address(self) -> int:
        """Host address of the first byte, for native code (valid until ``close``)."""
        if self._anchor is None:
            import ctypes

            self._anchor = ctypes.c_char.from_buffer(self.buf)
            self._host = ctypes.addressof(self._anchor)
        return self._host

    def contains(self, paddr: int, length: int = 1) -> bool:
        return self.base <= paddr and paddr + length <= self.end

    def read_bytes(self, paddr: int, length: int) -> bytes:
        off = paddr - self.base
        if off < 0 or off + length > self.size:
            raise ValueError(f"RAM read {paddr:#x}+{length} outside guest RAM")
        return bytes(self.mv[off : off + length])

    def write_bytes(self, paddr: int, data: bytes) -> None:
        off = paddr - self.base
        if off < 0 or off + len(data) > self.size:
            raise ValueError(f"RAM write {paddr:#x}+{len(data)} outside guest RAM")
        self.mv[off : off + len(data)] = data

    def read_file_into(self, paddr: int, f: BufferedReader, length: int) -> int:
        """Read ``length`` bytes of ``f`` into RAM at ``paddr`` with no copy in
        between (a kernel image); the number of bytes read."""
        off = paddr - self.base
        if off < 0 or off + length > self.size:
            raise ValueError(f"RAM write {paddr:#x}+{length} outside guest RAM")
        done = 0
        while done < length:
            n = f.readinto(self.mv[off + done : off + length])
            if not n:
                break
            done += n
        return done

    def read(self, paddr: int, size: int) -> int:
        """Little-endian load of any alignment (slow path)."""
        return int.from_bytes(self.read_bytes(paddr, size), "little")

    def write(self, paddr: int, size: int, value: int) -> None:
        """Little-endian store of any alignment (slow path)."""
        self.write_bytes(paddr, (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little"))

    def clear(self) -> None:
        self.mv[:] = bytes(self.size)

    @staticmethod
    def ksm_merged_pages() -> int | None:
        """This process's pages the host's KSM has merged with others (a VM process
        holds one VM's RAM: its shared pages), or None where the kernel does not say."""
        try:
            with open("/proc/self/ksm_merging_pages") as fh:
                return int(fh.read())
        except (OSError, ValueError):
            return None

    def usage(self, *, restart: bool = False) -> tuple[int, int, int] | None:
        """(resident, referenced, swapped) bytes of this RAM in host memory, from the
        kernel's ``/proc/self/smaps`` entry of the mapping: what it holds, what was
        touched since the last ``restart`` (the page tables' accessed bits, which native
        code sets as Python does), what the host swapped out. ``restart`` then clears
        the accessed bits of the process (``/proc/self/clear_refs``), opening the next
        sampling window. None where the kernel does not say."""
        start = f"{self.host_address():x}-".encode()
        try:
            with open("/proc/self/smaps", "rb") as fh:
                data = fh.read()
        except OSError:
            return None
        at = data.find(b"\n" + start)
        if at < 0 and not data.startswith(start):
            return None
        entry = data[at + 1:] if at >= 0 else data
        end = entry.find(b"\nVmFlags")
        fields: dict[bytes, int] = {}
        for line in entry[:end].split(b"\n")[1:]:
            key, _, rest = line.partition(b":")
            value = rest.split()
            if value and value[0].isdigit():
                fields[key] = int(value[0]) * 1024
        if restart:
            try:
                with open("/proc/self/clear_refs", "w") as fh:
                    fh.write("1")
            except OSError:
                pass
        return (fields.get(b"Rss", 0), fields.get(b"Referenced", 0), fields.get(b"Swap", 0))

    def resident_pages(self) -> list[int]:
        """Page numbers (from ``base``) that may hold something other than zeros: the
        pages resident in host memory (mincore), and for file-backed RAM every page
        (those not yet touched are the file's). A snapshot checks only these."""
        n = self.size >> 12
        if self.file_backed:
            return list(range(n))
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        vec = (ctypes.c_ubyte * n)()
        if libc.mincore(ctypes.c_void_p(self.host_address()), ctypes.c_size_t(self.size),
                        vec) != 0:
            return list(range(n))
        data = bytes(vec)
        if not data.strip(b"\0"):
            return []
        # (mincore's bytes are 0 or 1 here: find the 1s without a Python loop per page)
        out: list[int] = []
        at = data.find(1)
        while at >= 0:
            end = data.find(0, at)
            end = n if end < 0 else end
            out.extend(range(at, end))
            at = data.find(1, end)
        return out

    def close(self) -> None:
        for v in (self.u8, self.u16, self.u32, self.u64, self.s8, self.s16, self.s32, self.mv):
            v.release()
        self._anchor = None
        self.buf.close()
