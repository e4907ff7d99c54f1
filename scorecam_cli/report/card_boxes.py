"""The boxes a report draws on its cards, from a box file (``scorecam report --boxes``).

The box file is untrusted input, read by :mod:`scorecam_cli.boxes`. The report knows no model,
so class names resolve through the names the run's maps carry (``class_index`` ->
``class_name`` in the manifest); any class index is accepted. A card's boxes are clipped to its
input's ``original_size`` and given as percentages of it, so that the page scales them with the
thumbnail.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scorecam_cli.boxes import BoxSet, fit_boxes, read_boxes

MAX_CARD_BOXES = 100  # boxes drawn per card; a file may hold any number for one image
ANY_INDEX = 2**53  # no range check: the report does not know the model's number of classes
MAX_NAMED = 100_000  # class names are looked up below this index (a manifest may say 2**53)


@dataclass
class CardBoxes:
    """The boxes of a box file by card, and one line per problem (naming the file)."""

    boxes: BoxSet
    names: dict[int, str]
    problems: list[str] = field(default_factory=list)
    _used: set[str] = field(default_factory=set)

    def of(self, stem: str, entry: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The boxes of the card of manifest ``entry`` (its outputs' ``stem``, the input's path
        relative to its input folder): ``left, top, width, height`` in percent of the image,
        ``label`` the class name (or ``#index``); [] when the file has none for it."""
        key = self.boxes.lookup(stem, str(entry["input"]))
        if key is None:
            return []
        self._used.add(key)
        size = entry.get("original_size")
        if not size:
            self.problems.append(f"{entry['input']}: no original size in the manifest; no boxes")
            return []
        height, width = int(size[0]), int(size[1])
        kept, warnings = fit_boxes(self.boxes.boxes[key], (height, width), str(entry["input"]))
        self.problems.extend(warnings)
        if len(kept) > MAX_CARD_BOXES:
            self.problems.append(
                f"{entry['input']}: {len(kept)} boxes; the first {MAX_CARD_BOXES} are drawn"
            )
        return [
            {
                "left": round(100 * box.x0 / width, 3),
                "top": round(100 * box.y0 / height, 3),
                "width": round(100 * (box.x1 - box.x0) / width, 3),
                "height": round(100 * (box.y1 - box.y0) / height, 3),
                "label": self.names.get(box.class_index, f"#{box.class_index}"),
            }
            for box in kept[:MAX_CARD_BOXES]
        ]

    def unmatched(self) -> list[str]:
        """One line per image the file has boxes for that no card showed."""
        return self.boxes.unmatched(self._used)


def read_card_boxes(path: Path, entries: Iterable[Mapping[str, Any]]) -> CardBoxes:
    """The box file ``path`` with the class names of the manifest's ``entries`` (BadBoxFile
    when it cannot be read at all; its other problems are lines of ``problems``)."""
    names: dict[int, str] = {}
    for entry in entries:
        index, name = entry.get("class_index"), entry.get("class_name")
        if isinstance(index, int) and isinstance(name, str) and 0 <= index < MAX_NAMED:
            names.setdefault(index, name)
    labels = [names.get(i, "") for i in range(max(names) + 1)] if names else None
    boxes = read_boxes(path, labels, ANY_INDEX)
    return CardBoxes(boxes, names, list(boxes.warnings))
