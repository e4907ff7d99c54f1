"""How fast a big report opens in Chromium, and how much disk its thumbnails take.

Writes a synthetic run of ``--inputs`` x ``--classes`` x 2 methods maps (no model: every input is
sample_images/chelsea.png at ``--side`` pixels, every overlay that photo under a jet blob, and a
manifest; by default 2,500 x 2 x 2 = 10,000 maps), builds its report, then opens it ``--repeats``
times in a fresh headless Chromium page (Debian's /usr/bin/chromium via Playwright) and records:

- ready_ms: navigation start to the first page of cards rendered (the page's
  ``scorecam-ready`` performance mark: data parsed, filtered, sorted, 40 cards in the DOM);
- images_ms: navigation start to every image in the first screen decoded;
- the report's HTML size, its thumbnails' count and size on disk, and the build time.

Usage: ``python benchmarks/report_load.py [--inputs 2500] [--repeats 5] [--json FILE]``
(``make bench-report``). Run it alone on the machine: timings share the CPU with anything else.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"
PHOTO = REPO / "sample_images" / "chelsea.png"
sys.path.insert(0, str(TESTS))

from browser import chromium_page, open_report  # noqa: E402
from report_fixtures import write_synthetic_run  # noqa: E402

from scorecam_cli.report.build import build_report  # noqa: E402

VISIBLE_IMAGES_DECODED = """() => Promise.all(
  Array.from(document.images)
    .filter(img => img.getBoundingClientRect().top < window.innerHeight)
    .map(img => img.decode().catch(() => null))
).then(() => performance.now())"""


def folder_size(folder: Path) -> tuple[int, int]:
    """(files, bytes) of every file under ``folder``."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def measure(html: Path, repeats: int) -> dict[str, float]:
    ready, images = [], []
    for _ in range(repeats):
        with chromium_page() as session:
            open_report(session, html)
            page = session.page
            mark = page.evaluate(
                "() => performance.getEntriesByName('scorecam-ready')[0].startTime"
            )
            ready.append(float(mark))
            images.append(float(page.evaluate(VISIBLE_IMAGES_DECODED)))
            if session.errors:
                raise SystemExit(f"page errors: {session.errors}")
    return {
        "ready_ms_median": round(statistics.median(ready), 1),
        "ready_ms_max": round(max(ready), 1),
        "images_ms_median": round(statistics.median(images), 1),
        "images_ms_max": round(max(images), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=2500, help="inputs (maps: x classes x 2)")
    parser.add_argument("--classes", type=int, default=2, help="classes per input")
    parser.add_argument("--side", type=int, default=224, help="side of the synthetic images")
    parser.add_argument("--repeats", type=int, default=5, help="page loads, each in a new browser")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="scorecam-report-bench-") as temp:
        root = Path(temp)
        maps = write_synthetic_run(
            root, args.inputs, classes=args.classes, side=args.side, photo=PHOTO
        )
        started = time.perf_counter()
        result = build_report(root / "out")
        build_s = time.perf_counter() - started
        thumbs, thumb_bytes = folder_size(root / "out" / "report-files")
        overlays = sum(p.stat().st_size for p in (root / "out").glob("*.overlay.png"))
        figures = {
            "maps": maps,
            "inputs": result.cards,
            "image_side": args.side,
            "build_s": round(build_s, 2),
            "html_bytes": result.html.stat().st_size,
            "thumbnails": thumbs,
            "thumbnail_bytes": thumb_bytes,
            "overlay_png_bytes": overlays,
            "repeats": args.repeats,
            **measure(result.html, args.repeats),
        }
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
