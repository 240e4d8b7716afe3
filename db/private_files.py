"""Folders and files only the server's own user may read (0700 and 0600, whatever the umask): the data folder,
the SQLite database, the secret key and the logs hold conversations, password hashes and what unseals provider
keys. Only what is created here gets these modes; an existing folder keeps the one its owner chose."""

from __future__ import annotations

import os
from pathlib import Path

FOLDER_MODE = 0o700
FILE_MODE = 0o600


def private_folder(path: Path) -> Path:
    """The folder, created owner-only when missing (its parents as the umask says: they are not ours)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.mkdir(mode=FOLDER_MODE, exist_ok=True)
    return path


def private_file(path: Path) -> Path:
    """The file, created empty and owner-only when missing (so whoever writes it next does not pick the mode)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE))
    return path
