"""Downloading the course's archives: progress bar, resumable temporary file, integrity check.

A download goes to ``<name>.part`` and becomes ``<name>`` only once it is complete and, for a zip,
once every member's CRC has been checked, so an interrupted or damaged download is never mistaken
for a good file; running again resumes the ``.part`` file (HTTP Range) where the server allows it.
"""
from __future__ import annotations

import os
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

IMAGENET64_URL = "https://github.com/arthurredfern/UT-Dallas-CS-6301-CNNs/raw/master/Data/{}"
# The course's six archives: the five train zips unpack into train/, Val1.zip into val/
IMAGENET64_FILES = {"train": ("Train1.zip", "Train2.zip", "Train3.zip", "Train4.zip", "Train5.zip"),
                    "val": ("Val1.zip",)}


def check_zip(path) -> None:
    """Raise ValueError naming the file unless it is a readable zip whose members all pass their CRC."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ValueError(f"{path} is not a complete zip archive ({e}): delete it and download it again") from e
    if bad is not None:
        raise ValueError(f"{path} is damaged (member {bad!r} fails its CRC check): delete it and download it again")


def _urlopen(request, timeout):
    # one seam for the tests, which replace it with a fake server
    return urllib.request.urlopen(request, timeout=timeout)


def download_file(url: str, dest, *, progress: bool = True, verify_zip: bool | None = None,
                  chunk_size: int = 1 << 20, timeout: float = 60) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part`` (resumed if present), then check it.

    ``verify_zip`` (default: when ``dest`` ends in .zip) runs :func:`check_zip` before the file is
    renamed into place; a damaged download is deleted and reported as a ValueError.
    """
    from tqdm.auto import tqdm
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "irnet_lib"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = _urlopen(urllib.request.Request(url, headers=headers), timeout)
    except urllib.error.HTTPError as e:
        if e.code != 416 or not have:  # 416: the .part file is already whole
            raise
        response = None
    if response is not None:
        with response:
            status = getattr(response, "status", None) or response.getcode()
            if have and status != 206:  # the server ignored the Range header: start again
                have = 0
            length = response.headers.get("Content-Length")
            total = have + int(length) if length else None
            with open(part, "ab" if have else "wb") as f, \
                    tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=dest.name,
                         disable=not progress) as bar:
                while True:
                    block = response.read(chunk_size)
                    if not block:
                        break
                    f.write(block)
                    bar.update(len(block))
    if verify_zip is None:
        verify_zip = dest.suffix == ".zip"
    if verify_zip:
        try:
            check_zip(part)
        except ValueError:
            part.unlink()
            raise
    os.replace(part, dest)
    return dest

