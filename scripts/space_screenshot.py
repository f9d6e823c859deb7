"""Screenshot of the Space chatting with a trained model: `python scripts/space_screenshot.py MODEL_DIR OUT.png`.

Starts `spaces/app.py` (the documented command) on a free loopback port with MODEL_DIR, has a multi-turn chat in
headless Debian chromium driven by Playwright, prints each reply and saves a full-page screenshot. Used for the
README's picture of the Space; the CI browser test (tests/test_space.py) does the same with a tiny model.
"""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
MESSAGES = ["hi , how are you ?", "what do you do for fun ?", "do you like music ?"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main(model_dir: str, output: str) -> None:
    port = free_port()
    env = {**os.environ, "HF_NEURALCONV_MODEL": model_dir, "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False"}
    app = subprocess.Popen([sys.executable, str(ROOT / "spaces" / "app.py")], env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if app.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the app did not start at {url}") from None
                time.sleep(0.5)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                                 args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url)
            textbox = page.locator("textarea[data-testid='textbox']")
            replies = page.locator("[data-testid='bot']")
            for turn, message in enumerate(MESSAGES, start=1):
                textbox.fill(message)
                textbox.press("Enter")
                expect(replies).to_have_count(turn, timeout=60_000)
                print(f"Human: {message}\nBot:   {replies.nth(turn - 1).inner_text()}")
            page.screenshot(path=output, full_page=True)
            browser.close()
        print(f"saved {output}")
    finally:
        app.terminate()
        app.wait(timeout=30)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(*sys.argv[1:])
