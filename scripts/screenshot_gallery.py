"""Look at a report's gallery in a real browser: headless Chromium renders the gallery section of a
vpr_eval --html report and saves a screenshot (PNG, reduced to a palette so it stays small).

    python scripts/screenshot_gallery.py report.html docs/images/report_gallery.png

Needs Chromium (Debian: `apt install chromium`); CI does not install it (a test checks the gallery's HTML
and size instead). The page is opened from a local file with networking off: the report is self-contained.
"""

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--force-device-scale-factor=1"]


def gallery_page(report_html: str) -> str:
    """The report's <head> (styles) with only its gallery section as the body."""
    head = report_html[:report_html.index("<body>") + len("<body>")]
    start = report_html.index("<style>.gallery")
    end = report_html.index("<h2>Configuration", start)
    return head + report_html[start:end] + "</body></html>\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path, help="an HTML report of vpr_eval --html")
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("--width", type=int, default=1100)
    parser.add_argument("--height", type=int, default=1500)
    parser.add_argument("--colors", type=int, default=128, help="palette size of the saved PNG")
    args = parser.parse_args(argv)
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        print("screenshot_gallery: error: no Chromium here (apt install chromium)", file=sys.stderr)
        return 2
    text = args.report.read_text()
    if "<style>.gallery" not in text:
        print(f"screenshot_gallery: error: {args.report} has no gallery (vpr_eval --html with the bag at hand)",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        page, shot = Path(tmp) / "gallery.html", Path(tmp) / "shot.png"
        page.write_text(gallery_page(text))
        run = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp}/profile",
                              f"--window-size={args.width},{args.height}", f"--screenshot={shot}", page.as_uri()],
                             capture_output=True, text=True, timeout=120)
        if not shot.is_file():
            print(f"screenshot_gallery: error: Chromium wrote no screenshot (exit {run.returncode}): "
                  f"{run.stderr[-2000:]}", file=sys.stderr)
            return 1
        from PIL import Image

        args.out.parent.mkdir(parents=True, exist_ok=True)
        Image.open(shot).convert("RGB").quantize(colors=args.colors).save(args.out, optimize=True)
    cases = len(re.findall(r'<div class="case ', text))
    print(f"{args.out}: {args.out.stat().st_size / 1024:.0f} KiB, gallery of {cases} cases from {args.report} "
          f"({args.report.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
