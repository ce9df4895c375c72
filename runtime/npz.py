"""Float arrays out of an ``.npz`` archive that may be hostile, every size known before any work.

``np.load`` trusts what an archive says: a 1.3 MB file can declare, and inflate to, gigabytes,
and random bytes earn numpy's advice to load them with pickles allowed. Here the archive's
directory is read first (exactly the expected members, no comment, no zip64), then each member's
``.npy`` header (dtype, shape); the caller checks those shapes against the bounds it knows (the
manifest's), and only then is each array read, exactly as many bytes as its header declared,
with its CRC checked. Only real float arrays (float32, float64) are read: never pickles.
"""

from __future__ import annotations

import ast
import io
import math
import struct
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

NPY_MAGIC = b"\x93NUMPY"
MAX_HEADER = 4096  # numpy pads its headers to 64 bytes; a plain one is 128
READ_PIECE = 1 << 18
# End of central directory without a comment: signature, disk, disk of the directory, entries
# on this disk, entries, directory size, directory offset, comment length.
_END = struct.Struct("<4s4H2LH")
_END_SIGNATURE = b"PK\x05\x06"
# A directory entry is 46 bytes, its name (numpy's: the array's name and ".npy") and its extra
# fields (a zip64 record at most); the shipped archives spend 57 a member.
MAX_ENTRY_BYTES = 512


class ArchiveError(ValueError):
    """The bytes are not an archive of the expected float arrays; the message says why."""


@dataclass(frozen=True)
class ArrayHeader:
    """What a member's ``.npy`` header declares, and where its data starts."""

    dtype: np.dtype
    shape: tuple[int, ...]
    fortran_order: bool
    data_offset: int

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def read_npz(
    data: bytes,
    names: Sequence[str],
    check: Callable[[dict[str, ArrayHeader]], None],
) -> dict[str, np.ndarray]:
    """The arrays ``names`` stored in ``data``. ``check`` sees every header before any array is
    read and raises to refuse; a member missing or extra, or any size that disagrees, is an
    ArchiveError."""
    _check_directory(data, len(names))
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            listed = archive.infolist()
            infos = {_array_name(info): info for info in listed}
            missing = [name for name in names if name not in infos]
            if missing:
                raise ArchiveError(f"it lacks the arrays {missing}")
            if len(listed) != len(names):
                raise ArchiveError(f"it holds {len(listed)} members, not its {len(names)} arrays")
            headers = {name: _read_header(archive, infos[name]) for name in names}
            check(headers)
            return {name: _read_array(archive, infos[name], headers[name]) for name in names}
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise ArchiveError(f"its zip archive is damaged ({exc})") from exc


def _check_directory(data: bytes, members: int) -> None:
    """The archive ends with its directory record, listing at most ``members`` entries in a
    directory of at most ``members`` entries' bytes just before it, so that reading the
    directory costs nothing whatever the file claims. zipfile parses every entry the directory's
    bytes hold, whatever count the record gives, so both are bounded."""
    if len(data) < _END.size or data[-_END.size : -_END.size + 4] != _END_SIGNATURE:
        raise ArchiveError("it is not a zip archive written by numpy (no directory at its end)")
    fields = _END.unpack(data[-_END.size :])
    on_disk, total, size, offset, comment = fields[3], fields[4], fields[5], fields[6], fields[7]
    if comment or on_disk != total or total > members:
        raise ArchiveError(f"its directory lists {total} entries, more than its {members} arrays")
    if size > members * MAX_ENTRY_BYTES or offset + size != len(data) - _END.size:
        raise ArchiveError(
            f"its directory takes {size} bytes at {offset}, not at most "
            f"{members * MAX_ENTRY_BYTES} just before its end record"
        )


def _array_name(info: zipfile.ZipInfo) -> str:
    if not info.filename.endswith(".npy") or info.flag_bits & 0x1:
        raise ArchiveError(f"it holds {info.filename!r}, not a plain .npy array")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise ArchiveError(f"{info.filename} is compressed in a way numpy never writes")
    return info.filename[: -len(".npy")]


def _read_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> ArrayHeader:
    with archive.open(info) as member:
        start = member.read(len(NPY_MAGIC) + 2)
        if len(start) < len(NPY_MAGIC) + 2 or not start.startswith(NPY_MAGIC):
            raise ArchiveError(f"{info.filename} is not a .npy array")
        major = start[len(NPY_MAGIC)]
        if major not in (1, 2, 3):
            raise ArchiveError(f"{info.filename} has .npy version {major}")
        size_format = "<H" if major == 1 else "<I"
        size_bytes = member.read(struct.calcsize(size_format))
        if len(size_bytes) != struct.calcsize(size_format):
            raise ArchiveError(f"{info.filename} ends inside its header")
        (length,) = struct.unpack(size_format, size_bytes)
        if length > MAX_HEADER:
            raise ArchiveError(f"{info.filename} has a {length}-byte header (at most {MAX_HEADER})")
        text = member.read(length)
    header = _parse_header(text, "utf-8" if major == 3 else "latin-1", info.filename)
    offset = len(start) + len(size_bytes) + length
    dtype, shape, fortran_order = header
    result = ArrayHeader(dtype, shape, fortran_order, offset)
    if info.file_size != offset + result.nbytes:
        raise ArchiveError(
            f"{info.filename} declares {info.file_size} bytes, its header {offset + result.nbytes}"
        )
    return result


def _parse_header(text: bytes, encoding: str, name: str) -> tuple[np.dtype, tuple[int, ...], bool]:
    try:
        header = ast.literal_eval(text.decode(encoding))
    except (ValueError, SyntaxError, UnicodeDecodeError, MemoryError, RecursionError):
        header = None
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise ArchiveError(f"{name} has no valid .npy header")
    descr, fortran_order, shape = header["descr"], header["fortran_order"], header["shape"]
    if not isinstance(descr, str) or descr.lstrip("<>=|") not in ("f4", "f8"):
        raise ArchiveError(f"{name} holds {descr!r} values; only float32 and float64 are read")
    if not isinstance(fortran_order, bool) or not isinstance(shape, tuple):
        raise ArchiveError(f"{name} has no valid .npy header")
    if not all(type(n) is int and n >= 0 for n in shape):
        raise ArchiveError(f"{name} has an invalid shape {shape!r}")
    return np.dtype(descr), shape, fortran_order


def _read_array(archive: zipfile.ZipFile, info: zipfile.ZipInfo, header: ArrayHeader) -> np.ndarray:
    """The member's data, read in pieces into its array: one ``read`` of it all would copy the
    growing buffer once per inflated chunk."""
    array = np.empty(math.prod(header.shape), header.dtype)
    buffer, filled = memoryview(array).cast("B"), 0
    with archive.open(info) as member:
        member.read(header.data_offset)
        while filled < header.nbytes:
            piece = member.read(min(READ_PIECE, header.nbytes - filled))
            if not piece:
                raise ArchiveError(f"{info.filename} is cut short")
            buffer[filled : filled + len(piece)] = piece
            filled += len(piece)
        member.read(1)  # at the end: zipfile checks the CRC
    order = "F" if header.fortran_order else "C"
    return array.reshape(header.shape, order=order)
