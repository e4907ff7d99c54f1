"""The report page in a real browser: headless Debian Chromium driven by Playwright.

These tests never skip: CI installs Chromium (``.ci/run``) and Playwright (the dev extra).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from browser import card_count, chromium_page, open_report
from click.testing import CliRunner
from report_fixtures import class_name, write_synthetic_run

from scorecam_cli.cli import main
from scorecam_cli.manifest import read_manifest
from scorecam_cli.report.build import PAGE_SIZE, build_report

SAMPLES = Path(__file__).parent.parent / "sample_images"
FAST = ["--input-size", "64", "--workers", "0", "-k", "2"]


def test_report_of_a_real_run_filters_sorts_and_shows_methods_side_by_side(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    runner = CliRunner()
    first = runner.invoke(main, ["run", str(SAMPLES), "-o", str(out), *FAST])
    assert first.exit_code == 0, first.output
    # gradcam maps of the same inputs and classes go beside the scorecam ones (other names)
    gradcam = ["--method", "gradcam", "--report"]  # no --overwrite: other names
    second = runner.invoke(main, ["run", str(SAMPLES), "-o", str(out), *gradcam, *FAST])
    assert second.exit_code == 0, second.output
    assert (out / "report.html").is_file()  # --report built it at the end of the run
    built = runner.invoke(main, ["report", str(out)])
    assert built.exit_code == 0, built.output
    assert "0 thumbnails written, 25 reused" in built.stderr  # 5 originals, 20 maps
    html = Path(built.stdout.strip())
    assert html == out / "report.html"

    entries = read_manifest(out).entries
    inputs = sorted({e["input"] for e in entries})
    assert len(inputs) == 5 and len(entries) == 5 * 2 * 2
    classes_of = {i: {e["class_name"] for e in entries if e["input"] == i} for i in inputs}
    unique = [
        name
        for i in inputs
        for name in classes_of[i]
        if sum(name in names for names in classes_of.values()) < len(inputs)
    ]
    assert unique, "some class must be missing from some input for the filter to drop"
    wanted = unique[0]
    expected = sum(wanted in names for names in classes_of.values())

    with chromium_page() as session:
        page = session.page
        open_report(session, html)
        assert page.locator(".card").count() == card_count(session) == 5
        for row in page.locator(".class-row").all():  # methods side by side, per class
            methods = row.locator("figcaption .method").all_inner_texts()
            assert sorted(methods) == ["gradcam", "scorecam"]
        assert page.locator(".original img").count() == 5

        page.fill("#filter", wanted)
        assert card_count(session) == page.locator(".card").count() == expected < 5
        for row in page.locator(".class-name").all_inner_texts():
            assert wanted in row
        page.fill("#filter", "")
        assert card_count(session) == 5

        page.select_option("#method", "gradcam")
        assert set(page.locator("figcaption .method").all_inner_texts()) == {"gradcam"}
        page.select_option("#method", "")

        page.select_option("#sort", "name")
        names = page.locator(".input-name").all_inner_texts()
        assert names == sorted(inputs)
        page.select_option("#sort", "probability")
        best = {i: max(e["probability"] for e in entries if e["input"] == i) for i in inputs}
        by_probability = page.locator(".input-name").all_inner_texts()
        assert [best[i] for i in by_probability] == sorted(best.values(), reverse=True)

        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        assert (tmp_path / "report.png").stat().st_size > 10_000
        assert session.errors == []
        assert all(url.startswith("file://") for url in session.requests)
        sources = page.eval_on_selector_all("img", "els => els.map(e => e.getAttribute('src'))")
        assert sources and all(src.endswith(".webp") for src in sources)  # never the PNGs


def test_report_of_ten_thousand_maps_opens_pages_and_filters(tmp_path: Path) -> None:
    inputs = 2500
    maps = write_synthetic_run(tmp_path, inputs, classes=2)
    assert maps == 10_000
    result = build_report(tmp_path / "out")
    assert (result.cards, result.maps, result.missing_inputs) == (inputs, maps, [])
    moved = tmp_path / "moved"  # relative links only: the folder still works elsewhere
    shutil.move(tmp_path / "out", moved)

    with chromium_page() as session:
        page = session.page
        open_report(session, moved / "report.html")
        assert card_count(session) == inputs
        assert page.locator(".card").count() == PAGE_SIZE
        assert page.locator("img[loading='lazy']").count() == PAGE_SIZE * 5  # original + 4 maps
        first = page.locator(".card img").first
        page.wait_for_function(
            "img => img.complete && img.naturalWidth > 0", arg=first.element_handle()
        )

        wanted = class_name(7)
        expected = sum(7 in {n % 50, (n + 1) % 50} for n in range(inputs))
        page.fill("#filter", wanted)
        assert card_count(session) == expected < inputs
        assert set(page.locator(".class-name").all_inner_texts()) == {f"{wanted} (#7)"}
        page.fill("#filter", "")
        page.click("#next")
        assert page.inner_text("#page").startswith("page 2 of ")
        assert page.locator(".card").count() == PAGE_SIZE
        assert session.errors == []
        assert all(url.startswith("file://") for url in session.requests)
    data = json.loads(
        (moved / "report.html")
        .read_text()
        .split('type="application/json">')[1]
        .split("</script>")[0]
    )
    assert len(data["cards"]) == inputs
