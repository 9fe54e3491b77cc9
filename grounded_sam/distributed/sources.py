"""Listing the images of a labeling job: a folder, a text file of paths, or a URI.

Listing goes through ``pyarrow.fs`` (a dependency of Ray Data), so any filesystem pyarrow
can open works: local paths, ``file://``, ``s3://``, ``gs://``, ``hdfs://``, ... The rules are
those of ``grounded-sam label``: recursive, the extensions of
:data:`grounded_sam.inputs.IMAGE_EXTENSIONS` in any case, hidden files and folders
skipped, sorted by path relative to the root.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from grounded_sam.export.files import atomic_write
from grounded_sam.inputs import IMAGE_EXTENSIONS
from grounded_sam.labeling.state import STATE_DIRNAME

if TYPE_CHECKING:
    import pyarrow.fs

__all__ = ["ImageFile", "ImageListing", "list_images"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageFile:
    """One image to label.

    Attributes:
        path: Path on the listing's filesystem (what Ray Data reads; no URI scheme).
        rel: Posix path relative to the listing's root (names the image in the dataset).
        size: File size in bytes (an image whose size changed is labeled again on resume).
    """

    path: str
    rel: str
    size: int


@dataclass
class ImageListing:
    """The images of a job and the filesystem they live on.

    Attributes:
        filesystem: The ``pyarrow.fs.FileSystem`` of every file.
        root: Root on that filesystem; each file's ``rel`` is relative to it.
        files: The images, sorted by ``rel``.
        local: True when the files are plain local paths (copied into the dataset as they
            are); False for URIs, whose images are fetched through ``filesystem`` at export.
    """

    filesystem: pyarrow.fs.FileSystem
    root: str
    files: list[ImageFile]
    local: bool

    def fetch(self, image: ImageFile, cache_dir: Path) -> Path:
        """A local file with the image's bytes (the file itself for a local listing).

        Args:
            image: One of :attr:`files`.
            cache_dir: Where remote images are copied (``cache_dir / rel``); a copy of the
                same size is reused.

        Returns:
            The local path.
        """
        if self.local:
            return Path(image.path)
        target = cache_dir / image.rel
        if target.is_file() and target.stat().st_size == image.size:
            return target

        def download(tmp: Path) -> None:
            with self.filesystem.open_input_stream(image.path) as src, tmp.open("wb") as dst:
                shutil.copyfileobj(src, dst, length=1 << 20)

        return atomic_write(target, download)


def _is_image(name: str) -> bool:
    base = posixpath.basename(name)
    return not base.startswith(".") and posixpath.splitext(base)[1].lower() in IMAGE_EXTENSIONS


def _has_scheme(source: str) -> bool:
    return _SCHEME.match(source) is not None


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")


def _resolve(source: str) -> tuple[pyarrow.fs.FileSystem, str, bool]:
    import pyarrow.fs

    if _has_scheme(source):
        fs, path = pyarrow.fs.FileSystem.from_uri(source)
        return fs, path.rstrip("/") or "/", False
    return pyarrow.fs.LocalFileSystem(), os.path.abspath(source), True


def _common_root(paths: Sequence[str]) -> str:
    parents = [posixpath.dirname(p) for p in paths]
    return posixpath.commonpath(parents) if parents else "/"


def list_images(
    source: str | os.PathLike, exclude: Sequence[str | os.PathLike] = ()
) -> ImageListing:
    """List the images of a labeling job.

    Args:
        source: A folder (scanned recursively), a text file with one image path or URI per
            line (blank lines and lines starting with "#" are skipped; relative paths are
            relative to the text file's folder), or the URI of either (``s3://bucket/x``).
        exclude: Local folders to skip (the output folder when it is inside ``source``).

    Returns:
        The listing; ``rel`` is relative to the folder, or for a text file to the deepest
        folder that holds all its images.

    Raises:
        FileNotFoundError: ``source`` or a listed path does not exist.
        ValueError: No images found, or a text file mixes filesystems.
    """
    import pyarrow.fs

    text = os.fspath(source)
    fs, root, local = _resolve(text)
    info = fs.get_file_info(root)
    if info.type == pyarrow.fs.FileType.NotFound:
        raise FileNotFoundError(f"Images not found: {text} does not exist.")
    if info.type == pyarrow.fs.FileType.Directory:
        files = _list_folder(fs, root, local, exclude)
    elif _is_image(root):
        files = [ImageFile(root, posixpath.basename(root), int(info.size or 0))]
        root = posixpath.dirname(root)
    else:
        fs, root, files = _list_text_file(fs, root, local, text)
    if not files:
        raise ValueError(
            f"No images found in {text} (looked for {', '.join(IMAGE_EXTENSIONS)} in any "
            "case, in all subfolders)."
        )
    return ImageListing(fs, root, files, local)


def _list_folder(
    fs: pyarrow.fs.FileSystem, root: str, local: bool, exclude: Sequence[str | os.PathLike]
) -> list[ImageFile]:
    import pyarrow.fs

    skip = [os.path.abspath(p) for p in exclude] if local else []
    entries = fs.get_file_info(pyarrow.fs.FileSelector(root, recursive=True))
    # Earlier labeling runs' datasets under the images folder (a folder that holds
    # .grounded_sam_state/run.json) are skipped, as the one-machine scan does.
    marker = f"/{STATE_DIRNAME}/run.json"
    for entry in entries:
        if entry.type == pyarrow.fs.FileType.File and entry.path.endswith(marker):
            dataset = entry.path[: -len(marker)]
            if dataset != root.rstrip("/"):
                logger.warning(
                    "Skipping %s: it holds a labeled dataset (an earlier labeling run)", dataset
                )
                skip.append(dataset)
    found = []
    for entry in entries:
        if entry.type != pyarrow.fs.FileType.File or not _is_image(entry.path):
            continue
        rel = posixpath.relpath(entry.path, root)
        if any(part.startswith(".") for part in rel.split("/")[:-1]):
            continue
        if any(entry.path == s or entry.path.startswith(s.rstrip("/") + "/") for s in skip):
            continue
        found.append(ImageFile(entry.path, rel, int(entry.size or 0)))
    return sorted(found, key=lambda f: f.rel)


def _list_text_file(
    fs: pyarrow.fs.FileSystem, list_path: str, local: bool, text: str
) -> tuple[pyarrow.fs.FileSystem, str, list[ImageFile]]:
    import pyarrow.fs

    with fs.open_input_stream(list_path) as stream:
        lines = stream.read().decode("utf-8", errors="replace").splitlines()
    entries = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
    if not entries:
        raise ValueError(f"{text} lists no image paths (one path or URI per line).")
    base = posixpath.dirname(list_path)
    paths: list[str] = []
    target_fs = fs
    for i, entry in enumerate(entries):
        if _has_scheme(entry):
            entry_fs, path = pyarrow.fs.FileSystem.from_uri(entry)
            if i == 0:
                target_fs, local = entry_fs, False
            elif entry_fs.type_name != target_fs.type_name:
                raise ValueError(
                    f"{text} mixes filesystems ({target_fs.type_name} and {entry_fs.type_name}):"
                    " list images of one filesystem per job."
                )
        elif local:
            path = os.path.abspath(os.path.join(base, entry))
        else:
            path = posixpath.normpath(posixpath.join(base, entry))
        paths.append(path)
    images = [p for p in dict.fromkeys(paths) if _is_image(p)]
    if len(images) < len(paths):
        logger.warning(
            "Skipping %d line(s) of %s that are not %s files",
            len(paths) - len(images),
            text,
            "/".join(IMAGE_EXTENSIONS),
        )
    infos = target_fs.get_file_info(images)
    missing = [i.path for i in infos if i.type != pyarrow.fs.FileType.File]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} image(s) listed in {text} do not exist, e.g. {missing[0]}: fix "
            "the list or remove them."
        )
    root = _common_root(images)
    files = [ImageFile(i.path, posixpath.relpath(i.path, root), int(i.size or 0)) for i in infos]
    return target_fs, root, sorted(files, key=lambda f: f.rel)
