"""Derived index files are written to a staging folder and swapped in whole, so a reader
never sees a half-written index (a crash leaves the old folder or the new one)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def staging_for(directory: Path) -> Path:
    """An empty sibling folder to build ``directory``'s next version in."""
    staging = directory.with_name(directory.name + ".building")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def swap_in(staging: Path, directory: Path) -> None:
    """Replace ``directory`` by ``staging`` (two renames; the old version is removed after)."""
    old = directory.with_name(directory.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        os.replace(directory, old)
    os.replace(staging, directory)
    shutil.rmtree(old, ignore_errors=True)


def readable_version(directory: Path) -> Path | None:
    """``directory``, or the old version a crash between :func:`swap_in`'s two renames left."""
    if directory.is_dir():
        return directory
    old = directory.with_name(directory.name + ".old")
    return old if old.is_dir() else None
