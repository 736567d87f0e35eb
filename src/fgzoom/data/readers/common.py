"""Helpers every dataset reader shares: whitespace tables, box conversion, locating the dataset folder and the
hint for datasets without an automatic download."""

from __future__ import annotations

from pathlib import Path

from fgzoom.data.index import Box, DatasetLayoutError


def no_download_hint(hint: str, download: bool, name: str) -> str:
    """``hint``, prefixed with a note that ``data.download=true`` cannot fetch ``name`` when set."""
    if download:
        return f"data.download=true cannot fetch {name} (no automatic download); {hint}"
    return hint


def read_table(path: Path, min_fields: int, maxsplit: int = -1) -> dict[str, list[str]]:
    """Read a whitespace-separated ``<id> <field> ...`` file into ``{id: [fields]}``.

    Args:
        path: the text file.
        min_fields: fields required after the id; a shorter line raises :class:`DatasetLayoutError`.
        maxsplit: split at most this many times (``1`` keeps names with spaces whole).
    """
    table: dict[str, list[str]] = {}
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            parts = line.split(maxsplit=maxsplit) if maxsplit >= 0 else line.split()
            if not parts:
                continue
            if len(parts) < 1 + min_fields:
                raise DatasetLayoutError(
                    f"{path}:{lineno}: expected an id and {min_fields} field(s), got {line.strip()!r}; "
                    "the file is truncated or not from the official release"
                )
            table[parts[0]] = parts[1:]
    return table


def xywh_to_box(x: float, y: float, w: float, h: float) -> Box:
    """``(x, y, width, height)`` with a 0-based top-left corner -> ``(y0, x0, y1, x1)`` end-exclusive."""
    return (y, x, y + h, x + w)


def find_base(root: Path, folder: str, marker: str) -> Path:
    """``root`` if it holds ``marker``, else ``root/folder`` if that exists, else ``root``."""
    if not (root / marker).exists() and (root / folder).is_dir():
        return root / folder
    return root
