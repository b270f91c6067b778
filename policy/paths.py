"""Path containment for the `within` operator: lexical, on POSIX paths, never touching a disk.

Both sides are normalised first (`..`, `.`, duplicate and trailing slashes), then compared whole
component by component: `/home/me/project/../../etc` is `/etc`, and `/home/me/project-evil` is not
inside `/home/me/project`. Symlinks are not resolved (that needs the upstream's filesystem): an
upstream that follows links must confine itself (server-filesystem does, to its allowed dirs).
"""

from __future__ import annotations

import posixpath


def normalise(path: str) -> str | None:
    """The normalised absolute form of `path`, or None if it is not an absolute POSIX path
    (relative to what? the upstream's cwd is not ours to know) or holds a NUL byte."""
    if not path.startswith("/") or "\0" in path:
        return None
    # posixpath keeps a leading `//` (POSIX leaves it implementation-defined): collapse it too.
    return posixpath.normpath("/" + path.lstrip("/"))


def within(path: str, base: str) -> bool:
    """True when `path` is `base` or inside it; `base` must already be normalised."""
    normal = normalise(path)
    if normal is None:
        return False
    return normal == base or normal.startswith(base if base == "/" else base + "/")
