"""Which of our outputs exist: each map's exact files, one scan per output folder, the manifest.

Our outputs are recognised by what we write, never by where they lie: a file is one of ours when
its name is ``<name>.c<class>[.<method>].overlay.png|.heatmap.png|.npy`` and it lies under OUT
(so ``-o`` may equal or contain an input folder). Temp files that a killed run left in an
output folder are removed when the folder is scanned (see :mod:`scorecam_cli.temp_files`). A map
is done when every file it needs exists (the npy, the overlay, and the heatmap when asked for); a
top-k map, whose class is known only after the model ran, is done when the manifest lists it
from a top-k run and its files exist (manifest lines that cannot be read: one warning each).
"""

from __future__ import annotations

import logging
import os
import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from scorecam_cli.choices import METHODS
from scorecam_cli.manifest import Manifest, read_manifest
from scorecam_cli.temp_files import remove_if_orphan

_METHOD = "|".join(re.escape(m) for m in METHODS if m != "scorecam")
OUTPUT_NAME = re.compile(
    rf"^(?P<base>.+)\.c(?P<cls>\d+)(?:\.(?P<method>{_METHOD}))?"
    r"\.(?P<kind>overlay\.png|heatmap\.png|npy)$",
    re.DOTALL,
)
_KINDS = {"overlay.png": "overlay", "heatmap.png": "heatmap", "npy": "npy"}
log = logging.getLogger("scorecam_cli")


def parse_output_name(name: str) -> tuple[str, int, str, str] | None:
    """``(base, class, method, kind)`` of one of our output names, else None."""
    match = OUTPUT_NAME.match(name)
    if match is None:
        return None
    method = match["method"] or "scorecam"
    return match["base"], int(match["cls"]), method, _KINDS[match["kind"]]


# One output folder's files of ours: (base, method) -> class -> the kinds present.
_Folder = dict[tuple[str, str], dict[int, set[str]]]


class OutputIndex:
    """What OUT already holds, read once: each folder scanned on first use, the manifest on
    first use (only top-k maps need it), before this run writes anything."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._root_resolved = _resolved(root)
        self._folders: dict[Path, _Folder] = {}
        self._top_k: dict[tuple[str, str], set[int]] | None = None

    def _listed_top_k(self) -> dict[tuple[str, str], set[int]]:
        """(stem relative to OUT, method) -> classes of top-k maps the manifest lists."""
        if self._top_k is None:
            self._top_k = defaultdict(set)
            manifest = read_manifest(self.root) if self.root.is_dir() else Manifest(self.root)
            for problem in manifest.problems:
                log.warning("warning: %s", problem)
            for entry in manifest.entries:
                options = entry.get("options")
                if not isinstance(options, dict) or options.get("classes") is not None:
                    continue  # maps of named classes are judged by their files alone
                npy = Path(str(entry["npy"]))
                parsed = parse_output_name(npy.name)
                if parsed is not None:
                    base, cls, method, _ = parsed
                    self._top_k[(str(npy.parent / base), method)].add(cls)
        return self._top_k

    def is_ours(self, path: Path) -> bool:
        """True for an overlay or heatmap PNG of ours under OUT (found again by a folder walk)."""
        parsed = parse_output_name(path.name)
        if parsed is None or parsed[3] == "npy":
            return False
        return _resolved(path.parent).is_relative_to(self._root_resolved)

    def _folder(self, folder: Path) -> _Folder:
        found = self._folders.get(folder)
        if found is None:
            found = {}
            try:
                with os.scandir(folder) as scan:
                    names = [entry.name for entry in scan]
            except OSError:
                names = []
            for name in names:
                remove_if_orphan(folder / name)
                parsed = parse_output_name(name)
                if parsed is not None:
                    base, cls, method, kind = parsed
                    found.setdefault((base, method), {}).setdefault(cls, set()).add(kind)
            self._folders[folder] = found
        return found

    def existing(self, stem: Path, method: str) -> dict[int, set[str]]:
        """Class -> the kinds of output present for ``stem``'s maps by ``method``."""
        return self._folder(stem.parent).get((stem.name, method), {})

    def done(
        self,
        stem: Path,
        method: str,
        classes: Sequence[int] | None,
        top_k: int,
        heatmap: bool,
    ) -> bool:
        """True when every map this input needs has all its files."""
        present = self.existing(stem, method)
        needed = {"npy", "overlay", "heatmap"} if heatmap else {"npy", "overlay"}
        if classes:
            return all(needed <= present.get(c, set()) for c in classes)
        key = (os.path.relpath(stem, self.root), method)
        listed = self._listed_top_k().get(key, set())
        complete = [c for c in listed if needed <= present.get(c, set())]
        return len(complete) >= top_k

    def conflict(
        self, stem: Path, method: str, classes: Sequence[int] | None, heatmap: bool
    ) -> Path | None:
        """An existing file this input would replace (any of its maps when the class is open)."""
        present = self.existing(stem, method)
        wanted = classes if classes else sorted(present)
        for cls in wanted:
            kinds = present.get(cls, set())
            for kind in ("npy", "overlay", "heatmap"):
                if kind in kinds and (heatmap or kind != "heatmap" or not classes):
                    return output_paths(stem, cls, method)[kind]
        return None


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return path.absolute()


def output_paths(stem: Path, class_index: int, method: str = "scorecam") -> dict[str, Path]:
    """The overlay, heatmap and npy paths of one map: ``<stem>.c<class>[.<method>].npy`` and so on.

    Exact Score-CAM, the default, keeps the short names; other methods add theirs, so runs of
    several methods into one folder sit side by side.
    """
    suffix = "" if method == "scorecam" else f".{method}"
    base = f"{stem.name}.c{class_index}{suffix}"
    return {
        "overlay": stem.with_name(f"{base}.overlay.png"),
        "heatmap": stem.with_name(f"{base}.heatmap.png"),
        "npy": stem.with_name(f"{base}.npy"),
    }
