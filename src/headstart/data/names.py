"""The one rule for a name that comes from data: an ImageFolder's file and folder names (from the OS) and a
shard sample's `.path` (any string someone packed) pass the same test before either is listed, read or
joined to a folder. Torch-free, so validation imports it without loading torch.
"""

from __future__ import annotations


def shown(name: str) -> str:
    """A printable form of a name: control characters and undecodable bytes escaped."""
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode() for c in name
    )


def unsafe_reason(name: str) -> str | None:
    """Why one file or folder name is unsafe, or None. Names from the OS hold no '/'."""
    if name.isprintable() and ".." not in name and "\\" not in name and name == name.strip():
        return None  # the common case, decided in one pass
    if ".." in name:
        return "name contains '..' (path traversal)"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "name contains control characters"
    if "\\" in name:
        return "name contains a backslash"
    if any(0xDC80 <= ord(c) <= 0xDCFF for c in name):
        return "name is not valid UTF-8"
    if name != name.strip():
        return "name starts or ends with whitespace"
    return "name contains non-printable characters"


def unsafe_path_reason(rel: str) -> str | None:
    """Why a relative '/'-separated path from data (e.g. 'coat/img_1.png') is unsafe, or None: absolute,
    not normalised (an empty or '.' part), or a part `unsafe_reason` refuses ('..', a backslash, a
    control character...)."""
    if rel.startswith("/"):
        return "absolute path"
    for part in rel.split("/"):
        if part in ("", "."):
            return "path is not normalised (an empty or '.' part)"
        if reason := unsafe_reason(part):
            return reason
    return None
