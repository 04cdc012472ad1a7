"""A read-only, archive-aware view of a dataset's native tree.

Public datasets arrive as folders, as archives (``Benign.zip``, ``train.tar.gz``) or as folders of
archives, sometimes nested (a zip inside a zip). Converters should not care: :class:`NativeTree`
walks the files under a folder *and* inside every ``.zip`` / ``.tar`` / ``.tar.gz`` / ``.tgz``
(and ``.tar.bz2`` / ``.tar.xz``) it meets, recursively, and yields :class:`TreeEntry` objects
whose ``path`` is relative to the root with archive members spelled through their archive:

    Benign.zip/Benign/case1 Image.bmp
    outer.zip/inner.zip/x/y.png

Nothing is ever extracted into, written to or renamed in the native tree: members are read
into memory on demand (nested archives are opened from their bytes in memory).

RAR archives (``.rar``, or any file starting with the RAR signature) are read through an external
``unrar`` executable when one is on ``PATH``; without it the archive is reported as unreadable
with an explanation (:class:`RarUnavailableError`), because no pure-Python RAR decoder is
installed and RAR is a proprietary format.

Archive junk written by macOS (``__MACOSX/``, ``._*`` resource forks, ``.DS_Store``) is skipped:
those files are not data and would otherwise read as corrupt images.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import subprocess
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

log = logging.getLogger(__name__)

RAR_MAGIC = (b"Rar!\x1a\x07\x00", b"Rar!\x1a\x07\x01\x00")
ZIP_SUFFIXES = (".zip",)
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
RAR_SUFFIXES = (".rar",)
_JUNK_DIRS = {"__MACOSX"}
_JUNK_NAMES = {".DS_Store", "Thumbs.db"}


class ArchiveError(RuntimeError):
    """An archive in the native tree could not be opened or listed."""


class RarUnavailableError(ArchiveError):
    """A RAR archive was met and no ``unrar`` executable is available to read it."""


def archive_kind(name: str) -> str | None:
    """``"zip"``, ``"tar"``, ``"rar"`` or None, from a file name's (case-insensitive) suffix."""
    low = name.lower()
    if low.endswith(ZIP_SUFFIXES):
        return "zip"
    if low.endswith(TAR_SUFFIXES):
        return "tar"
    if low.endswith(RAR_SUFFIXES):
        return "rar"
    return None


def is_rar_bytes(head: bytes) -> bool:
    """True when ``head`` (the first bytes of a file) carries a RAR 4 or RAR 5 signature."""
    return head.startswith(RAR_MAGIC)


def unrar_executable() -> str | None:
    """The ``unrar`` program on ``PATH`` (``ULTRASAM_UNRAR`` overrides), or None."""
    override = os.environ.get("ULTRASAM_UNRAR")
    if override:
        return override if shutil.which(override) else None
    return shutil.which("unrar")


def rar_unavailable_message(path: str) -> str:
    """The explanation given when a RAR archive cannot be read."""
    return (f"{path} is a RAR archive and no 'unrar' program was found on PATH (set ULTRASAM_UNRAR "
            "to its location); install unrar (e.g. 'apt-get install unrar') or extract the "
            "archive yourself and convert the extracted folder")


def _is_junk(parts: tuple[str, ...]) -> bool:
    return (any(p in _JUNK_DIRS for p in parts)
            or parts[-1] in _JUNK_NAMES or parts[-1].startswith("._"))


@dataclass(frozen=True)
class TreeEntry:
    """One file of the native tree, on disk or inside (possibly nested) archives.

    ``path``: POSIX path relative to the tree root, archive members spelled through their
    archives (``Benign.zip/x/y.bmp``). ``size``: uncompressed size in bytes.
    ``file``: the real file on disk for plain files, None for archive members.
    """

    path: str
    size: int
    _reader: Callable[[], bytes] = field(repr=False, compare=False)
    file: Path | None = field(default=None, compare=False)

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name

    @property
    def stem(self) -> str:
        return PurePosixPath(self.path).stem

    @property
    def suffix(self) -> str:
        """Lower-cased last suffix (``".png"``; ``".gz"`` for ``x.nii.gz``: use ``name``)."""
        return PurePosixPath(self.path).suffix.lower()

    @property
    def parts(self) -> tuple[str, ...]:
        return PurePosixPath(self.path).parts

    @property
    def parent(self) -> str:
        """The relative path of the containing folder ('' at the root)."""
        parent = str(PurePosixPath(self.path).parent)
        return "" if parent == "." else parent

    @property
    def in_archive(self) -> bool:
        return self.file is None

    def read_bytes(self) -> bytes:
        """The file's whole content (archive members are decompressed in memory)."""
        return self._reader()


@dataclass(frozen=True)
class Unreadable:
    """An archive the walk could not enter, and why."""

    path: str
    reason: str


class NativeTree:
    """Read-only walk over ``root`` and every archive below it.

    ``archives``: enter archives (default True); when False they are yielded as plain files.
    ``on_unreadable``: called with ``(relative_path, reason)`` for each archive that cannot be
    opened (corrupt, RAR without ``unrar``); the walk then goes on. Without it the walk raises
    :class:`ArchiveError` (:class:`RarUnavailableError` for RAR). Either way the problem is kept
    in :attr:`unreadable`.

    Use as a context manager (or call :meth:`close`) to release open archive handles.
    """

    def __init__(self, root: str | os.PathLike[str], *, archives: bool = True,
                 on_unreadable: Callable[[str, str], None] | None = None) -> None:
        self.root = Path(root)
        if not self.root.exists():
            raise FileNotFoundError(f"native tree not found: {self.root}")
        self.archives = archives
        self.on_unreadable = on_unreadable
        self.unreadable: list[Unreadable] = []
        self._handles: list[zipfile.ZipFile | tarfile.TarFile] = []

    # -- context management -------------------------------------------------------------------
    def __enter__(self) -> NativeTree:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every archive opened by previous walks (entries from them become unreadable)."""
        for h in self._handles:
            h.close()
        self._handles.clear()

    # -- walking -------------------------------------------------------------------------------
    def walk(self) -> Iterator[TreeEntry]:
        """Every file, in sorted path order within each folder / archive, archives expanded."""
        if self.root.is_file():
            yield from self._expand(self._disk_entry(self.root, self.root.name))
            return
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if d not in _JUNK_DIRS)
            rel_dir = Path(dirpath).relative_to(self.root)
            for fname in sorted(filenames):
                rel = (rel_dir / fname).as_posix()
                if _is_junk(PurePosixPath(rel).parts):
                    continue
                full = Path(dirpath) / fname
                if not full.is_file():  # broken link, socket, ...
                    continue
                yield from self._expand(self._disk_entry(full, rel))

    def files(self, predicate: Callable[[TreeEntry], bool] | None = None) -> list[TreeEntry]:
        """All entries (optionally filtered), sorted by path."""
        out = [e for e in self.walk() if predicate is None or predicate(e)]
        return sorted(out, key=lambda e: e.path)

    @staticmethod
    def _disk_entry(full: Path, rel: str) -> TreeEntry:
        return TreeEntry(rel, full.stat().st_size, full.read_bytes, full)

    def _expand(self, entry: TreeEntry) -> Iterator[TreeEntry]:
        """The entry itself, or when it is an archive (and archives are on), its members."""
        if not self.archives:
            yield entry
            return
        kind = archive_kind(entry.name)
        # Sniff the RAR signature only on disk (cheap); members are trusted by their suffix.
        if kind is None and entry.file is not None and entry.size >= 7:
            head = _head(entry)
            kind = "rar" if is_rar_bytes(head) else None
        if kind is None:
            yield entry
            return
        try:
            members = list(self._members(entry, kind))
        except ArchiveError as e:
            self._report(entry.path, str(e), e)
            return
        for member in members:
            yield from self._expand(member)

    def _report(self, path: str, reason: str, error: ArchiveError) -> None:
        self.unreadable.append(Unreadable(path, reason))
        if self.on_unreadable is None:
            raise error
        log.warning("%s: %s", path, reason)
        self.on_unreadable(path, reason)

    def _members(self, archive: TreeEntry, kind: str) -> Iterator[TreeEntry]:
        if kind == "zip":
            return self._zip_members(archive)
        if kind == "tar":
            return self._tar_members(archive)
        return self._rar_members(archive)

    def _source(self, archive: TreeEntry) -> str | io.BytesIO:
        # Archives on disk are opened by path (random access without loading them); nested ones
        # from their bytes in memory.
        return str(archive.file) if archive.file is not None else io.BytesIO(archive.read_bytes())

    def _zip_members(self, archive: TreeEntry) -> Iterator[TreeEntry]:
        try:
            zf = zipfile.ZipFile(self._source(archive))
            infos = zf.infolist()
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise ArchiveError(f"{archive.path}: not a readable zip archive ({e})") from e
        self._handles.append(zf)
        for info in sorted(infos, key=lambda i: i.filename):
            name = _clean_member_name(info.filename)
            if info.is_dir() or not name:
                continue
            parts = PurePosixPath(name).parts
            if _is_junk(parts):
                continue
            yield TreeEntry(f"{archive.path}/{name}", info.file_size,
                            _zip_reader(zf, info, f"{archive.path}/{name}"))

    def _tar_members(self, archive: TreeEntry) -> Iterator[TreeEntry]:
        try:
            src = self._source(archive)
            tf = (tarfile.open(src, mode="r:*") if isinstance(src, str)
                  else tarfile.open(fileobj=src, mode="r:*"))
            infos = tf.getmembers()
        except (tarfile.TarError, OSError, EOFError) as e:
            raise ArchiveError(f"{archive.path}: not a readable tar archive ({e})") from e
        self._handles.append(tf)
        for info in sorted(infos, key=lambda i: i.name):
            if not info.isfile():  # directories, links, devices: nothing to read
                continue
            name = _clean_member_name(info.name)
            if not name or _is_junk(PurePosixPath(name).parts):
                continue
            yield TreeEntry(f"{archive.path}/{name}", info.size,
                            _tar_reader(tf, info, f"{archive.path}/{name}"))

    def _rar_members(self, archive: TreeEntry) -> Iterator[TreeEntry]:
        exe = unrar_executable()
        if exe is None:
            raise RarUnavailableError(rar_unavailable_message(archive.path))
        if archive.file is None:
            # unrar needs a file; nested RARs are rare enough not to spill temporary copies.
            raise ArchiveError(f"{archive.path}: RAR archives inside other archives are not "
                               "supported; extract the outer archive first")
        listing = subprocess.run([exe, "lb", "-p-", "--", str(archive.file)],
                                 capture_output=True, check=False)
        if listing.returncode != 0:
            raise ArchiveError(f"{archive.path}: unrar could not list the archive: "
                               f"{listing.stderr.decode(errors='replace').strip()}")
        names = sorted(n.replace("\\", "/") for n in
                       listing.stdout.decode("utf-8", errors="replace").splitlines() if n.strip())
        file = archive.file
        for name in names:
            if _is_junk(PurePosixPath(name).parts):
                continue
            yield TreeEntry(f"{archive.path}/{name}", -1, _rar_reader(exe, file, name))


def _clean_member_name(name: str) -> str:
    """A member name as a clean relative POSIX path ('./a//b/' -> 'a/b'; '..' parts dropped)."""
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    return "/".join(parts)


def _head(entry: TreeEntry, n: int = 8) -> bytes:
    if entry.file is not None:
        with open(entry.file, "rb") as f:
            return f.read(n)
    return entry.read_bytes()[:n]


def _zip_reader(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: str) -> Callable[[], bytes]:
    def read() -> bytes:
        try:
            return zf.read(info)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
            raise OSError(f"{path}: cannot read archive member ({e})") from e
    return read


def _tar_reader(tf: tarfile.TarFile, info: tarfile.TarInfo, path: str) -> Callable[[], bytes]:
    def read() -> bytes:
        try:
            f = tf.extractfile(info)
            if f is None:
                raise OSError("not a regular file")
            return f.read()
        except (tarfile.TarError, OSError, EOFError, ValueError) as e:
            raise OSError(f"{path}: cannot read archive member ({e})") from e
    return read


def _rar_reader(exe: str, file: Path, name: str) -> Callable[[], bytes]:
    def read() -> bytes:
        out = subprocess.run([exe, "p", "-inul", "-p-", "--", str(file), name],
                             capture_output=True, check=False)
        if out.returncode != 0:
            raise OSError(f"{file.name}/{name}: unrar failed with exit code {out.returncode}")
        return out.stdout
    return read
