"""Capture the README's dashboard screenshots (``docs/screenshots/*.jpg``) from the demo's runs, in headless chromium.

    make screenshots            # after `make demo`; or: python -m tests.apps.screenshots --runs-dir runs

Serves ``fusion app`` over ``--runs-dir`` (the browser helpers of :mod:`tests.apps.browser`), opens every page, waits
until it shows its headings and has finished running, checks that it shows no error, and writes a JPEG 1000 pixels
wide per page. A page that does not render stops the capture with what it showed, so a stale picture is never kept
silently.
"""
from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

from tests.apps.browser import REPO, assert_no_exception, open_browser, serve_app, wait_for_text

#: (file name, page path, texts the page must show, window height in pixels)
PAGES = (
    ("home", "", ["fusion-suite runs", "Metrics across runs"], 1200),
    ("recommendation", "Recommendation", ["Long-sequence recommendation", "Click probability", "Retrieved behaviours"],
     2700),
    ("medical", "Medical", ["Chest X-ray, ECG and report", "Finding probabilities", "Most similar cases in the cohort"],
     2300),
    ("dementia", "Dementia", ["Dementia from spontaneous speech", "Probability of dementia", "Cohort calibration"], 3000),
    ("driving", "Driving", ["Camera-LiDAR 3D detection", "Sensor faults", "Per-object attribution"], 2000),
)
WIDTH = 1000


def capture(runs_dir: Path, out: Path) -> list[Path]:
    """One ``<name>.jpg`` in ``out`` per page of :data:`PAGES`, rendered over ``runs_dir``; returns the paths."""
    import time

    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory() as scratch, serve_app(runs_dir, Path(scratch) / "app.log") as url, \
            open_browser(Path(scratch) / "profile") as browser:
        for name, page, texts, height in PAGES:
            browser.set_window_size(1400, height)
            browser.get(f"{url}/{page}")
            wait_for_text(browser, texts)
            assert_no_exception(browser)
            time.sleep(1.5)  # charts finish painting
            picture = Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("RGB")
            picture = picture.resize((WIDTH, round(picture.height * WIDTH / picture.width)), Image.LANCZOS)
            path = out / f"{name}.jpg"
            picture.save(path, "JPEG", quality=80, optimize=True)
            print(f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}: {picture.width}×{picture.height}",
                  flush=True)
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", type=Path, default=REPO / "runs")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    args = parser.parse_args(argv)
    if not args.runs_dir.is_dir():
        parser.error(f"{args.runs_dir} does not exist; run `make demo` first")
    capture(args.runs_dir.resolve(), args.out.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
