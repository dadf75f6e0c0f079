"""Evict files from the OS page cache, so a cold start reads the model from disk (--cold-disk).

posix_fadvise(POSIX_FADV_DONTNEED) asks the kernel to drop a file's clean cached pages; it needs
only read access, not root. The kernel may keep pages (another process has the file mapped, the
file system ignores the advice, as tmpfs does), so residency is checked afterwards with mincore
and the caller is told exactly what kind of cold it will measure.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import mmap
import os
from dataclasses import dataclass
from pathlib import Path

_PAGE = mmap.PAGESIZE


@dataclass
class Eviction:
    ok: bool  # every page of every file left the cache
    resident_pages: int  # still cached after eviction
    total_pages: int
    detail: str


@functools.cache  # find_library runs ldconfig in a subprocess: once per process is enough
def _libc():
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte)]
    return libc


def resident_pages(path: Path) -> tuple[int, int]:
    """(pages of `path` in the page cache, pages in the file), via mmap + mincore."""
    size = os.path.getsize(path)
    pages = (size + _PAGE - 1) // _PAGE
    if size == 0:
        return 0, 0
    libc = _libc()
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), f"mmap failed for {path}")
        try:
            vec = (ctypes.c_ubyte * pages)()
            if libc.mincore(addr, size, vec) != 0:
                raise OSError(ctypes.get_errno(), f"mincore failed for {path}")
            return sum(b & 1 for b in vec), pages
        finally:
            libc.munmap(addr, size)
    finally:
        os.close(fd)


def evict(paths: list[Path]) -> Eviction:
    if not hasattr(os, "posix_fadvise"):
        return Eviction(False, 0, 0, "this OS has no posix_fadvise")
    resident = total = 0
    try:
        for path in paths:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)  # dirty pages cannot be dropped until written back
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
            r, t = resident_pages(Path(path))
            resident, total = resident + r, total + t
    except OSError as e:
        return Eviction(False, resident, total, f"could not evict {e.filename or ''}: {e.strerror or e}")
    if resident:
        return Eviction(False, resident, total,
                        f"{resident} of {total} pages stayed cached (file system ignores the advice, "
                        "or another process maps the file)")
    return Eviction(True, 0, total, f"{total} pages evicted")
