"""Box files: the objects' pixel boxes per image, from CSV or Pascal VOC XML (untrusted input).

- **CSV** with a header naming the columns ``image,class,x0,y0,x1,y1`` (any order, other columns
  ignored): one box per row, several rows per image. ``image`` is the path relative to the input
  folder, or as given on the command line; ``class`` an index or a name; coordinates in pixels of
  the original image, x1 and y1 exclusive.
- **Pascal VOC XML**: a folder of ``.xml`` files (searched recursively) or one file, each with its
  image's ``<filename>`` and one ``<object>`` per box (``<name>``, ``<bndbox>`` with ``xmin``,
  ``ymin``, ``xmax``, ``ymax``, 1-based and inclusive as in the VOC devkit, so ``xmin - 1`` and
  ``xmax`` here). A ``<filename>`` without extension (ImageNet's) matches the image's stem.
  Documents with a DTD (``<!DOCTYPE>``, entity declarations) are refused, so no entity expands.

Classes map through the model's labels (names, case-insensitive) or as indices; ImageNet synset
ids (``n01440764``) map to indices for 1000-class models, in the order timm ships
(``timm.data.ImageNetInfo``; without timm they are reported as unsupported). Every bad row, box,
class or file gives one warning line naming the file and never stops the others; only a file that
cannot be read at all raises :class:`~scorecam_cli.errors.BadBoxFile`. Boxes reaching outside an
image are clipped to it when its size is known (:func:`fit_boxes`).
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath, PurePosixPath
from xml.etree import ElementTree

from scorecam_cli.errors import BadBoxFile
from scorecam_cli.file_limits import read_or_fail
from scorecam_cli.safe_xml import BadXml, parse_xml

COLUMNS = ("image", "class", "x0", "y0", "x1", "y1")
MAX_CSV_BYTES = 256 * 1024 * 1024
MAX_XML_BYTES = 1024 * 1024  # a VOC file describes one image: a few KB
MAX_WARNINGS = 50  # per box file; the rest are counted in one last line
EDGE_TOLERANCE = 1.0  # pixels a box may reach past the image without a warning (rounding)
SYNSET = re.compile(r"n\d{8}")
IMAGENET_CLASSES = 1000


@dataclass(frozen=True)
class Box:
    """One object's box in original-image pixels: ``x0 <= x < x1``, ``y0 <= y < y1``."""

    class_index: int
    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def coords(self) -> tuple[float, float, float, float]:
        """``(x0, y0, x1, y1)``, e.g. a row of the (B, 4) tensor :func:`.localisation.box_mask`
        takes."""
        return (self.x0, self.y0, self.x1, self.y1)


@dataclass(frozen=True)
class BoxSet:
    """The boxes of a box file by image key (the image as the file names it), and the warnings
    reading it gave (one line each, naming the file)."""

    source: str
    boxes: Mapping[str, tuple[Box, ...]]
    warnings: tuple[str, ...] = ()

    def lookup(self, relative: PurePath | str, path: PurePath | str | None = None) -> str | None:
        """The key holding an input's boxes, or None: its path relative to its input folder,
        the path as given, then (for files keyed by bare names) its file name and its stem."""
        rel = PurePosixPath(Path(relative).as_posix())
        candidates = [str(rel)]
        if path is not None:
            candidates.append(str(PurePosixPath(Path(path).as_posix())))
        candidates += [rel.name, rel.stem]
        return next((key for key in candidates if key in self.boxes), None)

    def unmatched(self, used: Iterable[str]) -> list[str]:
        """One warning per image the file has boxes for that no input matched (``used`` keys)."""
        seen = set(used)
        return [
            f"{self.source}: boxes for {key!r}: no such input image"
            for key in self.boxes
            if key not in seen
        ]


def read_boxes(
    path: str | Path, labels: Sequence[str] | None, classes: int | None = None
) -> BoxSet:
    """The boxes of a CSV file, a VOC XML file or a folder of VOC XML files.

    ``labels`` are the model's class names (None: indices only); ``classes`` its number of
    outputs (default: ``len(labels)``; None with no labels: any index >= 0).
    """
    source = Path(path)
    count = classes if classes is not None else (len(labels) if labels is not None else None)
    resolver = _ClassResolver(labels, count)
    log = _Warnings(str(source))
    if source.is_dir():
        boxes = _read_voc_folder(source, resolver, log)
    elif source.suffix.lower() == ".xml":
        boxes = _read_voc_files([source], resolver, log)
    else:
        boxes = _read_csv(source, resolver, log)
    resolver.report(log)
    return BoxSet(str(source), {k: tuple(v) for k, v in boxes.items()}, log.lines())


def fit_boxes(
    boxes: Iterable[Box], size: tuple[int, int], image: str
) -> tuple[tuple[Box, ...], list[str]]:
    """Boxes clipped to an image of ``size`` (H, W), and one warning per box clipped by more
    than EDGE_TOLERANCE pixels, or dropped because no pixel centre is left inside it."""
    height, width = size
    kept: list[Box] = []
    warnings: list[str] = []
    for box in boxes:
        clipped = Box(
            box.class_index,
            min(max(box.x0, 0.0), width),
            min(max(box.y0, 0.0), height),
            max(min(box.x1, width), 0.0),
            max(min(box.y1, height), 0.0),
        )
        where = f"{image}: box {_format(box)} of class {box.class_index}"
        if not _covers_a_pixel(clipped):
            warnings.append(f"{where} lies outside the {width}x{height} image; dropped")
            continue
        overshoot = max(abs(a - b) for a, b in zip(box.coords, clipped.coords, strict=True))
        if overshoot > EDGE_TOLERANCE:
            warnings.append(f"{where} reaches outside the {width}x{height} image; clipped")
        kept.append(clipped)
    return tuple(kept), warnings


def by_class(boxes: Iterable[Box]) -> dict[int, tuple[Box, ...]]:
    """Boxes grouped by class index, classes in order of first appearance."""
    groups: dict[int, list[Box]] = {}
    for box in boxes:
        groups.setdefault(box.class_index, []).append(box)
    return {index: tuple(group) for index, group in groups.items()}


def imagenet_synsets() -> list[str] | None:
    """ImageNet-1k's synset ids in class-index order (timm's ``ImageNetInfo``), or None."""
    try:
        from timm.data import ImageNetInfo
    except ImportError:
        return None
    names = list(ImageNetInfo().label_names())
    return names if len(names) == IMAGENET_CLASSES else None


# -- Classes and warnings -------------------------------------------------------------------------


class _Warnings:
    """One line per problem, prefixed by the file; at most MAX_WARNINGS, then a count."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._lines: list[str] = []
        self._dropped = 0

    def add(self, text: str, where: str | None = None) -> None:
        if len(self._lines) >= MAX_WARNINGS:
            self._dropped += 1
            return
        self._lines.append(f"{where or self.source}: {text}")

    def lines(self) -> tuple[str, ...]:
        more = [f"{self.source}: {self._dropped} more warnings"] if self._dropped else []
        return (*self._lines, *more)


@dataclass
class _ClassResolver:
    """Class text -> index; unknown classes are counted and reported once each at the end."""

    labels: Sequence[str] | None
    classes: int | None
    unknown: dict[str, tuple[str, int]] = field(default_factory=dict)  # text -> (reason, uses)
    _by_name: dict[str, int] = field(default_factory=dict)
    _synsets: dict[str, int] | None = None

    def __post_init__(self) -> None:
        for index, name in enumerate(self.labels or ()):
            self._by_name.setdefault(name.strip().casefold(), index)

    def index(self, text: str) -> int | None:
        name = text.strip()
        index, reason = self._resolve(name)
        if index is None:
            known_reason, uses = self.unknown.get(name, (reason, 0))
            self.unknown[name] = (known_reason, uses + 1)
        return index

    def report(self, log: _Warnings) -> None:
        for name, (reason, uses) in self.unknown.items():
            rows = f"{uses} box{'es' if uses > 1 else ''} skipped"
            log.add(f"class {name[:60]!r}: {reason}; {rows}")

    def _resolve(self, name: str) -> tuple[int | None, str]:
        if not name:
            return None, "no class given"
        if re.fullmatch(r"[+-]?\d+", name):
            index = int(name) if len(name) <= 18 else 10**18  # no 5000-digit int() (ValueError)
            if index < 0:
                return None, "a negative class index"
            if self.classes is not None and index >= self.classes:
                return None, f"index out of range (the model has {self.classes} classes)"
            return index, ""
        if name.casefold() in self._by_name:
            return self._by_name[name.casefold()], ""
        if SYNSET.fullmatch(name):
            return self._synset(name)
        if self.labels is None:
            return None, "the model has no class names; give an index"
        return None, "not one of the model's class names"

    def _synset(self, name: str) -> tuple[int | None, str]:
        if self.classes != IMAGENET_CLASSES:
            return (
                None,
                f"an ImageNet synset id, but the model has {self.classes} classes, not 1000",
            )
        if self._synsets is None:
            synsets = imagenet_synsets()
            if synsets is None:
                return None, "ImageNet synset ids need timm (pip install 'scorecam-cli[timm]')"
            self._synsets = {synset: index for index, synset in enumerate(synsets)}
        if name not in self._synsets:
            return None, "not an ImageNet-1k synset id"
        return self._synsets[name], ""


# -- CSV ------------------------------------------------------------------------------------------


def _read_csv(source: Path, resolver: _ClassResolver, log: _Warnings) -> dict[str, list[Box]]:
    text = _read_text(source, MAX_CSV_BYTES)
    rows = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(rows, None)
        if header is None:
            raise BadBoxFile(f"{source}: empty box file")
        names = [name.strip().lower() for name in header]
        missing = [column for column in COLUMNS if column not in names]
        if missing:
            raise BadBoxFile(
                f"{source}: not a box file: the CSV header needs the columns "
                f"{','.join(COLUMNS)} (missing: {', '.join(missing)})"
            )
        at = [names.index(column) for column in COLUMNS]
        boxes: dict[str, list[Box]] = {}
        for row in rows:
            where = f"{source}: line {rows.line_num}"
            if not any(cell.strip() for cell in row):
                continue
            if len(row) <= max(at):
                log.add(f"{len(row)} fields, too few for the header's columns; row skipped", where)
                continue
            image, class_text, *numbers = (row[i] for i in at)
            key = _image_key(image)
            if key is None:
                log.add("no image named; row skipped", where)
                continue
            box = _box(class_text, numbers, COLUMNS[2:], resolver, log, where)
            if box is not None:
                boxes.setdefault(key, []).append(box)
    except csv.Error as error:
        raise BadBoxFile(f"{source}: line {rows.line_num}: not readable as CSV ({error})") from None
    return boxes


def _image_key(text: str) -> str | None:
    """The image as the file names it, a normalised POSIX path: ``./a//b.jpg`` -> ``a/b.jpg``."""
    name = text.strip()
    if not name:
        return None
    key = str(PurePosixPath(name))
    return None if key == "." else key


def _box(
    class_text: str,
    numbers: Sequence[str],
    names: Sequence[str],
    resolver: _ClassResolver,
    log: _Warnings,
    where: str,
    offset: float = 0.0,
) -> Box | None:
    """A Box from the class and the texts of x0, y0, x1, y1 (``offset`` is added to x0 and
    y0: -1 for VOC's 1-based corners), or None after one warning."""
    values: list[float] = []
    for name, text in zip(names, numbers, strict=True):
        try:
            value = float(text.strip())
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            log.add(f"{name} {text.strip()[:40]!r} is not a finite number; box skipped", where)
            return None
        values.append(value)
    x0, y0, x1, y1 = values[0] + offset, values[1] + offset, values[2], values[3]
    if x1 <= x0 or y1 <= y0:
        span = f"x {_number(x0)}..{_number(x1)}, y {_number(y0)}..{_number(y1)}"
        log.add(f"empty box ({span}: x1 <= x0 or y1 <= y0); box skipped", where)
        return None
    index = resolver.index(class_text)
    return None if index is None else Box(index, x0, y0, x1, y1)


# -- Pascal VOC -----------------------------------------------------------------------------------


def _read_voc_folder(
    folder: Path, resolver: _ClassResolver, log: _Warnings
) -> dict[str, list[Box]]:
    files = list(_xml_files(folder))
    if not files:
        raise BadBoxFile(f"{folder}: no .xml files (Pascal VOC) in the folder")
    return _read_voc_files(files, resolver, log)


def _xml_files(folder: Path) -> Iterator[Path]:
    """``.xml`` files below ``folder``, sorted, without following symbolic links to folders."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(name for name in dirs if not name.startswith("."))
        for name in sorted(files):
            if name.lower().endswith(".xml") and not name.startswith("."):
                yield Path(root) / name


def _read_voc_files(
    files: Iterable[Path], resolver: _ClassResolver, log: _Warnings
) -> dict[str, list[Box]]:
    boxes: dict[str, list[Box]] = {}
    first_file: dict[str, Path] = {}
    for file in files:
        try:
            root = parse_xml(_read_bytes(file, MAX_XML_BYTES))
        except BadBoxFile as error:
            log.add(str(error).removeprefix(f"{file}: "), str(file))
            continue
        except BadXml as error:
            log.add(str(error), str(file))
            continue
        found = _voc_boxes(root, resolver, log, str(file))
        if found is None:
            continue
        key, file_boxes = found
        if not file_boxes:
            continue
        if key in first_file:
            log.add(f"boxes for {key!r} are also in {first_file[key]}; merged", str(file))
        first_file.setdefault(key, file)
        boxes.setdefault(key, []).extend(file_boxes)
    return boxes


def _voc_boxes(
    root: ElementTree.Element, resolver: _ClassResolver, log: _Warnings, where: str
) -> tuple[str, list[Box]] | None:
    """(image key, boxes) of one VOC annotation, or None after one warning."""
    if root.tag != "annotation":
        log.add(f"not a Pascal VOC annotation (root <{root.tag[:40]}>, not <annotation>)", where)
        return None
    key = _image_key(root.findtext("filename") or "")
    if key is None:
        log.add("no <filename>: the image is unknown; file skipped", where)
        return None
    boxes: list[Box] = []
    objects = root.findall("object")
    if not objects:
        log.add(f"no <object> for {key!r}", where)
    for number, item in enumerate(objects, start=1):
        at = f"{where}: object {number}"
        bndbox = item.find("bndbox")
        if bndbox is None:
            log.add("no <bndbox>; object skipped", at)
            continue
        corners = [bndbox.findtext(name) or "" for name in ("xmin", "ymin", "xmax", "ymax")]
        names = ("xmin", "ymin", "xmax", "ymax")
        box = _box(item.findtext("name") or "", corners, names, resolver, log, at, offset=-1.0)
        if box is not None:
            boxes.append(box)
    return key, boxes


# -- Reading files --------------------------------------------------------------------------------


def _read_text(path: Path, limit: int) -> str:
    try:
        return _read_bytes(path, limit).decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise BadBoxFile(f"{path}: not UTF-8 text (byte {error.start})") from None


def _read_bytes(path: Path, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes, opened without blocking."""
    too_large = f"over the limit of {limit / 2**20:,.0f} MB for a box file"
    data = read_or_fail(path, limit, BadBoxFile, str(path), too_large)
    if not data:
        raise BadBoxFile(f"{path}: empty file")
    return data


def _covers_a_pixel(box: Box) -> bool:
    """Whether a pixel centre (x + 0.5, y + 0.5) lies inside the box (as in ``box_mask``)."""
    columns = math.ceil(box.x1 - 0.5) - math.ceil(box.x0 - 0.5)
    rows = math.ceil(box.y1 - 0.5) - math.ceil(box.y0 - 0.5)
    return columns > 0 and rows > 0


def _number(value: float) -> str:
    return f"{value:g}"


def _format(box: Box) -> str:
    return f"({', '.join(_number(v) for v in box.coords)})"
