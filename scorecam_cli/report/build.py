"""Build the static report page of a run folder from its manifest (never from the pipeline).

The page is one HTML file with its script, style and card data inline, beside a folder of
thumbnails (``<name>-files/``); every link in it is relative, so the run folder can be moved or
zipped. Cards: one per input, its maps grouped by class, methods side by side.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatch
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

from scorecam_cli.confined import check_real_folders, resolved
from scorecam_cli.errors import OutputWrite, ScoreCamError
from scorecam_cli.file_limits import DEFAULT_LIMITS, Limits
from scorecam_cli.manifest import PART_GLOB, Manifest, manifest_files, read_manifest
from scorecam_cli.manifest_lines import PATHS
from scorecam_cli.outputs import parse_output_name
from scorecam_cli.render import write_atomic
from scorecam_cli.report.card_boxes import read_card_boxes
from scorecam_cli.report.thumbnails import THUMB_SUFFIX, write_thumbnails

REPORT_NAME = "report.html"
PAGE_SIZE = 40  # cards per page


class NoManifest(ScoreCamError):
    """The folder has no run manifest to build a report from."""


@dataclass
class ReportResult:
    """The page written and what went into it; ``missing_inputs`` are inputs (as recorded) that
    were not found, whose cards show the overlays only; ``problems`` are one line each."""

    html: Path
    cards: int = 0
    maps: int = 0
    thumbnails_written: int = 0
    thumbnails_reused: int = 0
    missing_inputs: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def build_report(
    root: Path,
    html: Path | None = None,
    thumb_size: int = 192,
    limits: Limits = DEFAULT_LIMITS,
    box_file: Path | None = None,
) -> ReportResult:
    """Write the report of run folder ``root`` to ``html`` (default ``root/report.html``).

    The manifest is untrusted (see :mod:`scorecam_cli.manifest`); overlays and inputs are read
    under ``limits``. Nothing is written through a symlinked folder below ``root`` (or below the
    page's folder when it lies outside ``root``); OutputWrite when the page would replace the
    manifest, a map's file or an input, or would go through such a folder.
    """
    if not manifest_files(root):
        raise NoManifest(f"{root}: no manifest.jsonl; write one with `scorecam run ... -o {root}`")
    html = html if html is not None else root / REPORT_NAME
    manifest = read_manifest(root, require_files=True)
    _refuse_target(html, manifest)
    thumbs = html.parent / f"{html.stem}-files" / f"w{thumb_size}"
    base = root if _lexically_inside(html, root) else html.parent
    check_real_folders(base, thumbs)
    result = ReportResult(html, problems=list(manifest.problems))
    boxes = None if box_file is None else read_card_boxes(box_file, manifest.entries)
    jobs: list[tuple[Path, Path]] = []
    cards: dict[str, dict[str, Any]] = {}
    for entry in manifest.entries:
        overlay = manifest.path_of(entry, "overlay")
        if overlay is None:  # not so: require_files kept only maps whose overlay is on disk
            continue
        thumb = thumbs / "maps" / f"{entry['overlay']}{THUMB_SUFFIX}"
        jobs.append((overlay, thumb))
        key = str(entry.get("input_abspath") or entry["input"])
        if key not in cards:
            cards[key] = _new_card(manifest, entry, thumbs, jobs, result)
            cards[key]["boxes"] = [] if boxes is None else boxes.of(_stem(entry), entry)
        cards[key]["maps"].append(_map_data(entry, overlay, thumb, html.parent))
    if boxes is not None:
        result.problems.extend(boxes.problems + boxes.unmatched())
    stats = write_thumbnails(jobs, thumb_size, base, limits)
    result.thumbnails_written, result.thumbnails_reused = stats.written, stats.reused
    result.problems.extend(dict.fromkeys(stats.failed.values()))  # a bad folder: said once
    failed = {_link(target, html.parent) for target in stats.failed}
    for card in cards.values():
        if card["original"] in failed:
            card["original"] = None
        for item in card["maps"]:
            item["thumb"] = None if item["thumb"] in failed else item["thumb"]
    result.cards, result.maps = len(cards), len(manifest.entries)
    _write_page(html, list(cards.values()), root)
    return result


def _refuse_target(html: Path, manifest: Manifest) -> None:
    """OutputWrite when ``html`` is a file of the run: its manifest (or a part's name), one of
    its maps' files (or a name of ours inside OUT), or an input."""
    target = resolved(html.parent) / html.name  # the page replaces a symlink, never follows it
    root = resolved(manifest.root)
    named: dict[Path, str] = {}

    def name(path: Path | None, what: str) -> None:
        if path is not None:  # as named in its folder, and where it leads
            named[resolved(path.parent) / path.name] = named[resolved(path)] = what

    for path in manifest_files(manifest.root):
        name(path, "manifest")
    for entry in manifest.entries:
        for key in PATHS:
            name(manifest.path_of(entry, key), f"{key} file")
        name(manifest.input_of(entry), "input")
    what = named.get(target)
    if what is None and target.parent == root and fnmatch(target.name, PART_GLOB):
        what = "manifest"
    if what is None and target.is_relative_to(root) and parse_output_name(target.name):
        what = "output"
    if what is not None:
        raise OutputWrite(f"{html}: is one of the run's files (its {what}); give -o another name")


def _lexically_inside(path: Path, folder: Path) -> bool:
    return Path(os.path.abspath(path)).is_relative_to(os.path.abspath(folder))


def _new_card(
    manifest: Manifest,
    entry: Mapping[str, Any],
    thumbs: Path,
    jobs: list[tuple[Path, Path]],
    result: ReportResult,
) -> dict[str, Any]:
    """A card for ``entry``'s input, with the job for its original's thumbnail when found."""
    source = manifest.input_of(entry)
    original = None
    if source is None:
        result.missing_inputs.append(str(entry["input"]))
    else:
        target = thumbs / "inputs" / f"{_stem(entry)}{THUMB_SUFFIX}"
        jobs.append((source, target))
        original = _link(target, result.html.parent)
    return {
        "input": str(entry["input"]),
        "size": entry.get("original_size"),
        "original": original,
        "maps": [],
    }


def _map_data(entry: Mapping[str, Any], overlay: Path, thumb: Path, base: Path) -> dict[str, Any]:
    return {
        "class_index": entry.get("class_index"),
        "class_name": entry.get("class_name"),
        "probability": entry.get("probability"),
        "method": entry.get("method"),
        "layer": entry.get("layer"),
        "model": entry.get("model"),
        "passes": entry.get("forward_passes"),
        "saved": entry.get("forward_passes_saved"),
        "thumb": _link(thumb, base),
        "href": _link(overlay, base),
    }


def _stem(entry: Mapping[str, Any]) -> str:
    """The outputs' common stem (``dir/photo.jpg``) from ``dir/photo.jpg.c3[.method].npy``."""
    npy = str(entry["npy"])
    cut = npy.rfind(f".c{entry.get('class_index')}")
    return npy[:cut] if cut > 0 else npy


def _link(path: Path, base: Path) -> str:
    """A relative URL from folder ``base`` to ``path``, percent-encoded byte by byte."""
    relative = os.path.relpath(path, base).replace(os.sep, "/")
    return quote(os.fsencode(relative))


def _write_page(html: Path, cards: list[dict[str, Any]], root: Path) -> None:
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    folder = resources.files("scorecam_cli.report")
    env = Environment(loader=FileSystemLoader(str(folder)), autoescape=select_autoescape(["html"]))
    methods = sorted({str(m["method"]) for card in cards for m in card["maps"]})
    data = {"cards": cards, "methods": methods, "page_size": PAGE_SIZE}
    name = os.fsencode(resolved(root).name).decode("utf-8", "replace")  # the page is UTF-8
    page = env.get_template("report.html").render(
        title=f"scorecam report: {name}",
        data_json=_script_json(data),
        script=(folder / "report.js").read_text(encoding="utf-8"),
        style=(folder / "report.css").read_text(encoding="utf-8"),
        methods=methods,
        maps=sum(len(card["maps"]) for card in cards),
        cards=len(cards),
    )
    write_atomic(html, page.encode("utf-8"))


def _script_json(data: Mapping[str, Any]) -> str:
    """JSON safe inside ``<script type="application/json">``: no ``<``, ``>`` or ``&`` left."""
    text = json.dumps(data, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
