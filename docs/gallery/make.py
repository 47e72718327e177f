"""Draw the gallery of docs/gallery: circuits found on built-in models, as `circuitx draw`
and `discover --draw` make them, and screenshots of an interactive circuit page and of
the leaderboard's report in headless Chromium.

    python docs/gallery/make.py

Each picture is one `circuitx` command, printed as it runs. The screenshots need
chromium and chromium-driver (apt-get install chromium chromium-driver) and selenium
(in the test extra).
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROMPTS = ["--n-prompts", "20", "--faithfulness-prompts", "20"]
PICTURES = {
    "planted-ioi-eap-ig.png": "--task ioi --model planted-ioi --method eap-ig --reference auto",
    "planted-greater-than-path-patching.png": (
        "--task greater-than --model planted --method path-patching --reference auto"
    ),
    "random-12x12-eap-top200.png": "--task ioi --model random-12x12 --method eap --top-k 200",
    "planted-greater-than-transcoder-features.png": (
        "--task greater-than --model planted --method transcoder --granularity feature "
        "--reference auto"
    ),
}
PAGE = "--task ioi --model planted-ioi --method eap-ig --reference auto"
BOARD = "--tasks ioi,greater-than --methods activation-patching,eap,acdc --model planted"


def circuitx(*args: str) -> None:
    command = [sys.executable, "-m", "circuitx", *args]
    print(" ".join(shlex.quote(part) for part in command[2:]), flush=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def screenshot(page: Path, out: Path, width: int, height: int, before: str = "") -> None:
    """``page`` in headless Chromium, as a PNG (``before``: a script run first)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.binary_location = shutil.which("chromium") or "chromium"
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    try:
        driver.set_window_size(width, height)
        driver.get(page.as_uri())
        if before:
            driver.execute_script(before)
        driver.save_screenshot(str(out))
    finally:
        driver.quit()


def main() -> None:
    for name, args in PICTURES.items():
        circuitx("discover", *shlex.split(args), *PROMPTS, "--draw", str(HERE / name))
    with tempfile.TemporaryDirectory() as scratch:
        page = Path(scratch) / "planted-ioi-eap-ig.html"
        circuitx("discover", *shlex.split(PAGE), *PROMPTS, "--draw", str(page))
        click = (  # a name mover's inputs and outputs lit (against the reference, as drawn)
            "document.querySelector('circle.node[data-name=\"a3.h0\"]')"
            ".dispatchEvent(new MouseEvent('click', {bubbles: true}));"
        )
        screenshot(page, HERE / "interactive-page.png", 1200, 980, click)
        board = Path(scratch) / "board"
        circuitx("leaderboard", *shlex.split(BOARD), "--n-prompts", "20", "--out", str(board))
        screenshot(board / "index.html", HERE / "leaderboard-report.png", 1400, 900)


if __name__ == "__main__":
    main()
