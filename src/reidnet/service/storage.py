"""Uploads and archives: a size-capped streaming multipart reader and a safe extractor.

The upload is parsed as it arrives and written straight to its final file, so a body over the limit
is refused (413) after at most the limit has touched the disk, and a declared Content-Length over
it is refused before a byte is read. Extraction writes into a hidden staging folder that is renamed
into place only when every entry passed; any rejected entry removes the staging folder, so a bad
archive leaves nothing behind.
"""

from __future__ import annotations

import lzma
import os
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from reidnet.config import shown
from reidnet.errors import ReidnetError
from reidnet.service.errors import ServiceError

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
FIELD_LIMIT = 64 * 1024  # bytes of a non-file form field
MAX_PARTS = 8  # the form has a `file` and a `name`: a few more are tolerated, not thousands
HEADER_LIMIT = 16 * 1024  # bytes of one part's headers
_COPY_CHUNK = 1024 * 1024


class ArchiveRejected(ReidnetError):
    """An archive entry breaks a safety rule, or the archive exceeds a cap."""


class UploadRejected(ServiceError):
    """An upload request that cannot be accepted; `status_code` says which HTTP error."""


def archive_suffix(filename: str) -> str:
    """The archive type of an upload's file name, or UploadRejected naming the accepted ones."""
    lowered = filename.lower()
    for suffix in ARCHIVE_SUFFIXES:
        if lowered.endswith(suffix):
            return suffix
    raise UploadRejected(
        f"file {filename!r} is not an archive reidnet accepts: upload a .tar, .tar.gz (.tgz) or "
        ".zip holding the train/test/query folders"
    )


# ---------------------------------------------------------------------------------------------
# Streaming multipart upload


@dataclass
class ReceivedUpload:
    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    size: int = 0


class MultipartUpload:
    """Feed the raw body with `write(chunk)`; the part named `file_field` goes to `target`.

    Raises UploadRejected(413) as soon as the parts together (file and fields) pass
    `max_bytes`, and 400 for more than MAX_PARTS parts or a part's headers over HEADER_LIMIT.
    """

    def __init__(self, content_type: str, target: Path, max_bytes: int, file_field: str = "file"):
        from python_multipart.multipart import MultipartParser, parse_options_header

        self._parse_options = parse_options_header
        kind, options = parse_options_header(content_type)
        boundary = options.get(b"boundary")
        if kind != b"multipart/form-data" or not boundary:
            raise UploadRejected(
                "send the dataset as multipart/form-data with a `file` part (the archive) and an "
                "optional `name` part",
                415,
            )
        self.target, self.max_bytes, self.file_field = target, max_bytes, file_field
        self.received = ReceivedUpload()
        self._stream: IO[bytes] | None = None
        self._headers: dict[bytes, bytes] = {}
        self._header_name = b""
        self._header_value = b""
        self._field: str | None = None
        self._field_value = bytearray()
        self._to_file = False
        self._parts = 0
        self._header_bytes = 0
        self._total = 0  # every part's data, counted against max_bytes
        callbacks = {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value_data,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }
        self._parser = MultipartParser(boundary, callbacks)

    def write(self, chunk: bytes) -> None:
        self._parser.write(chunk)

    def finish(self) -> ReceivedUpload:
        self._parser.finalize()
        self.close()
        if self.received.filename is None:
            raise UploadRejected(f"the form has no `{self.file_field}` part holding the archive")
        return self.received

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    # -- parser callbacks --------------------------------------------------------------------

    def _part_begin(self) -> None:
        self._headers, self._field, self._field_value, self._to_file = {}, None, bytearray(), False
        self._parts += 1
        self._header_bytes = 0
        if self._parts > MAX_PARTS:
            raise UploadRejected(
                f"the form has more than {MAX_PARTS} parts: send a `file` part and an optional "
                "`name` part"
            )

    def _count_header(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > HEADER_LIMIT:
            raise UploadRejected(f"a form part's headers are longer than {HEADER_LIMIT} B")

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._header_name += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header_name.lower()] = self._header_value
        self._header_name, self._header_value = b"", b""

    def _headers_finished(self) -> None:
        _, options = self._parse_options(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        if name == self.file_field and filename is not None:
            if self.received.filename is not None:
                raise UploadRejected(f"the form holds more than one `{self.file_field}` part")
            self.received.filename = Path(filename.decode("utf-8", "replace")).name
            archive_suffix(self.received.filename)
            self._stream = open(self.target, "wb")  # noqa: SIM115 - closed in _part_end/close
            self._to_file = True
        else:
            self._field = name

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        self._total += end - start
        if self._total > self.max_bytes:
            raise UploadRejected(_too_large(self.max_bytes), 413)
        if self._to_file:
            self.received.size += end - start
            self._stream.write(data[start:end])
        else:
            self._field_value += data[start:end]
            if len(self._field_value) > FIELD_LIMIT:
                raise UploadRejected(f"form field {self._field!r} is longer than {FIELD_LIMIT} B")

    def _part_end(self) -> None:
        if self._to_file:
            self.close()
        elif self._field:
            self.received.fields[self._field] = self._field_value.decode("utf-8", "replace")


def _too_large(max_bytes: int) -> str:
    return (
        f"the upload is larger than this server's limit of {_human(max_bytes)}: split the data "
        "into several datasets (an experiment trains on a list of them) or ask the operator to "
        "raise --max-upload-mb"
    )


def check_declared_length(content_length: str | None, max_bytes: int) -> None:
    """Refuse a request whose declared size already exceeds the limit (plus form overhead)."""
    if content_length is None:
        return
    try:
        declared = int(content_length)
    except ValueError:
        raise UploadRejected("the Content-Length header is not a number") from None
    if declared > max_bytes + FIELD_LIMIT * 4:
        raise UploadRejected(_too_large(max_bytes), 413)


def _human(size: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


# ---------------------------------------------------------------------------------------------
# Safe extraction


@dataclass(frozen=True)
class ArchiveLimits:
    max_bytes: int
    max_files: int


_DRIVE = re.compile(r"^[A-Za-z]:")
MAX_NAME_BYTES = 255  # NAME_MAX of Linux file systems
MAX_PATH_BYTES = 1024  # an entry's whole path inside the dataset (PATH_MAX is 4096)


def safe_parts(name: str) -> tuple[str, ...]:
    """The path components of an archive entry, or ArchiveRejected for an unsafe name.

    Absolute paths (POSIX or Windows) and `..` components are refused; `.` and empty components
    are dropped, so `./a//b` is `('a', 'b')`. Backslashes count as separators, as Windows tools
    write them.
    """
    normalised = name.replace("\\", "/")
    if normalised.startswith("/") or _DRIVE.match(normalised):
        raise ArchiveRejected(f"entry {shown(name)} has an absolute path")
    parts = tuple(p for p in normalised.split("/") if p not in ("", "."))
    if ".." in parts:
        raise ArchiveRejected(f"entry {shown(name)} has a '..' component")
    if any("\x00" in p for p in parts):
        raise ArchiveRejected(f"entry {shown(name)} has a NUL character in its name")
    try:
        encoded = [p.encode("utf-8") for p in parts]
    except UnicodeEncodeError:  # tarfile keeps undecodable bytes as lone surrogates
        raise ArchiveRejected(
            f"entry {ascii(name)[:200]} has a name that is not UTF-8: rename the file (or make "
            "the archive with a UTF-8 locale)"
        ) from None
    if any(len(p) > MAX_NAME_BYTES for p in encoded) or len(b"/".join(encoded)) > MAX_PATH_BYTES:
        raise ArchiveRejected(
            f"entry {shown(name)} has a name too long for the file system (at most "
            f"{MAX_NAME_BYTES} bytes per folder or file name, {MAX_PATH_BYTES} in all)"
        )
    return parts


class _Extraction:
    """Counts entries and bytes against the limits while writing into `root`."""

    def __init__(self, root: Path, limits: ArchiveLimits):
        self.root, self.limits = root, limits
        self.files = 0
        self.bytes = 0

    def count_entry(self, name: str) -> None:
        self.files += 1
        if self.files > self.limits.max_files:
            raise ArchiveRejected(
                f"the archive holds more than {self.limits.max_files} entries (this server's "
                f"limit, at {shown(name)}): split it into several datasets"
            )

    def check_declared_size(self, name: str, size: int) -> None:
        if self.bytes + size > self.limits.max_bytes:
            raise ArchiveRejected(self._size_message(name))

    def _size_message(self, name: str) -> str:
        return (
            f"the archive unpacks to more than {_human(self.limits.max_bytes)} (this server's "
            f"limit, at {shown(name)}): split it into several datasets"
        )

    def make_dir(self, parts: tuple[str, ...]) -> None:
        if parts:
            self._make_parents(self._inside(parts), "/".join(parts), include_self=True)

    @staticmethod
    def _make_parents(target: Path, name: str, include_self: bool = False) -> None:
        try:
            (target if include_self else target.parent).mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise ArchiveRejected(
                f"entry {shown(name)} needs a folder where the archive already put a file"
            ) from None

    def write_file(self, parts: tuple[str, ...], source: IO[bytes], name: str) -> None:
        if not parts:
            raise ArchiveRejected(f"entry {shown(name)} is a file without a name")
        target = self._inside(parts)
        self._make_parents(target, name)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        try:
            descriptor = os.open(target, flags, 0o644)
        except (FileExistsError, IsADirectoryError):
            raise ArchiveRejected(f"entry {shown(name)} appears twice in the archive") from None
        with os.fdopen(descriptor, "wb") as stream:
            while chunk := source.read(_COPY_CHUNK):
                self.bytes += len(chunk)  # counted as written: headers can lie about sizes
                if self.bytes > self.limits.max_bytes:
                    raise ArchiveRejected(self._size_message(name))
                stream.write(chunk)

    def _inside(self, parts: tuple[str, ...]) -> Path:
        target = self.root.joinpath(*parts)
        # No entry can create a link (they are refused), so a lexical check is exact; this
        # re-check guards against a future change to that rule.
        if not target.resolve().is_relative_to(self.root.resolve()):
            raise ArchiveRejected(f"entry {'/'.join(parts)!r} would land outside the dataset")
        return target


def extract_archive(archive: Path, destination: Path, limits: ArchiveLimits) -> None:
    """Unpack a tar (any compression tarfile reads) or zip archive into `destination`.

    Refuses absolute paths, `..` components, symbolic and hard links, device files and FIFOs, and
    archives over `limits`; on any refusal or read error nothing is left at `destination` or in
    the staging folder.
    """
    staging = destination.parent / f".staging-{destination.name}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        extraction = _Extraction(staging, limits)
        if _is_zip(archive):
            _extract_zip(archive, extraction)
        else:
            _extract_tar(archive, extraction)
        os.replace(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as stream:
        return stream.read(4) in (b"PK\x03\x04", b"PK\x05\x06")


def _extract_tar(archive: Path, extraction: _Extraction) -> None:
    try:
        # Stream mode ("r|*") reads the archive once, front to back, whatever its compression.
        with tarfile.open(archive, mode="r|*") as tar:
            for member in tar:
                _extract_tar_member(tar, member, extraction)
    except tarfile.ReadError as error:
        raise ArchiveRejected(
            f"the upload is not a readable tar, tar.gz or zip archive ({error})"
        ) from None
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as error:
        raise ArchiveRejected(f"the archive is damaged or truncated ({error})") from None
    except OSError as error:
        if error.errno is not None:  # a real I/O problem (disk full...), not bad data
            raise
        raise ArchiveRejected(f"the archive is damaged or truncated ({error})") from None


def _extract_tar_member(tar: tarfile.TarFile, member: tarfile.TarInfo, extraction) -> None:
    name = member.name
    extraction.count_entry(name)
    if member.issym():
        target = shown(member.linkname)
        raise ArchiveRejected(f"entry {shown(name)} is a symbolic link (to {target})")
    if member.islnk():
        raise ArchiveRejected(f"entry {shown(name)} is a hard link (to {shown(member.linkname)})")
    if member.ischr() or member.isblk() or member.isfifo():
        raise ArchiveRejected(f"entry {shown(name)} is a device file or FIFO")
    parts = safe_parts(name)
    if member.isdir():
        extraction.make_dir(parts)
    elif member.isreg():
        extraction.check_declared_size(name, member.size)
        extraction.write_file(parts, tar.extractfile(member), name)
    else:
        raise ArchiveRejected(f"entry {shown(name)} has an unsupported type ({member.type!r})")


def _extract_zip(archive: Path, extraction: _Extraction) -> None:
    try:
        with zipfile.ZipFile(archive) as bundle:
            for info in bundle.infolist():
                _extract_zip_member(bundle, info, extraction)
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        EOFError,
        zlib.error,
        RuntimeError,
        UnicodeDecodeError,
    ) as error:
        # RuntimeError: an encrypted entry; UnicodeDecodeError: a name flagged UTF-8 that is not
        raise ArchiveRejected(f"the zip archive cannot be read ({error})") from None


def _extract_zip_member(bundle: zipfile.ZipFile, info: zipfile.ZipInfo, extraction) -> None:
    name = info.filename
    extraction.count_entry(name)
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if info.create_system == 3 and kind == stat.S_IFLNK:  # 3: made on Unix, mode bits are real
        raise ArchiveRejected(f"entry {shown(name)} is a symbolic link")
    if info.create_system == 3 and kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise ArchiveRejected(f"entry {shown(name)} is a device file or FIFO")
    parts = safe_parts(name)
    if info.is_dir():
        extraction.make_dir(parts)
        return
    extraction.check_declared_size(name, info.file_size)
    with bundle.open(info) as source:
        extraction.write_file(parts, source, name)
