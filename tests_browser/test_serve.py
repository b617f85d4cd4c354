"""`run.py serve` driven in a real browser: Debian's Chromium through Playwright (`make test-browser`).

A tiny DALL·E is trained through the CLI, served on the loopback address, and used as a person would: type a
prompt, press Generate, wait for the pictures; then an empty prompt, whose message must show on the page while
the server goes on serving. The screenshot is kept under TEST_ARTEFACTS (default: the test's temporary dir).
"""

import io
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

REPO = pathlib.Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Chromium as root in a container, with no network beyond the loopback address.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

if os.environ.get("CI") != "true":  # under CI, what is missing fails the test instead
    pytest.importorskip("gradio", reason="pip install -e '.[demo]'")
    pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    if CHROMIUM is None:
        pytest.skip("no chromium on this machine (apt-get install chromium)", allow_module_level=True)
from playwright.sync_api import sync_playwright  # noqa: E402


def run(*args, **kwargs):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, str(REPO / "run.py"), *args], check=True, capture_output=True, text=True,
                          env=env, cwd=REPO, **kwargs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The page of a tiny trained DALL·E, served at its address."""
    workdir = tmp_path_factory.mktemp("served")
    common = ["--config", "configs/shapes_dalle.py:tiny", f"--config.data.data_dir={workdir / 'data'}",
              "--workdir", str(workdir), "--config.train.progress_bar=false"]
    for command in ("train-text-tokenizer", "train-image-tokenizer", "train"):
        run(command, *common)
    port = free_port()
    log = open(workdir / "serve.log", "w")
    process = subprocess.Popen([sys.executable, str(REPO / "run.py"), "serve", *common, "--port", str(port)],
                               stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, JAX_PLATFORMS="cpu"),
                               cwd=REPO)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(url, timeout=5)
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"serve did not start:\n{(workdir / 'serve.log').read_text()[-3000:]}")
            time.sleep(1)
    yield url
    process.terminate()
    process.wait(timeout=30)


def gallery_pictures(page, gallery: str) -> list[np.ndarray]:
    """The pictures a gallery shows, fetched as the browser fetched them."""
    pictures = []
    for source in page.eval_on_selector_all(f"{gallery} img", "images => images.map(i => i.src)"):
        response = page.request.get(source)
        pictures.append(np.asarray(Image.open(io.BytesIO(response.body())).convert("RGB")))
    return pictures


def test_a_prompt_gives_pictures_and_an_empty_one_a_message(server, tmp_path):
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(server)
        prompt = page.locator("#dalle-prompt textarea")
        prompt.fill("a small red circle")
        page.click("#dalle-generate")
        page.wait_for_function("document.querySelectorAll('#dalle-gallery img').length >= 4", timeout=240_000)
        pictures = gallery_pictures(page, "#dalle-gallery")
        assert len(pictures) == 4  # the Samples slider's default
        for picture in pictures:
            assert picture.shape[0] >= 32 and picture.shape[1] >= 32 and picture.std() > 0  # not blank
        artefacts = pathlib.Path(os.environ.get("TEST_ARTEFACTS", tmp_path))
        artefacts.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(artefacts / "serve_dalle.png"), full_page=True)

        prompt.fill("")
        page.click("#dalle-generate")
        page.locator("#dalle-status").get_by_text("Type a prompt first.").wait_for(timeout=60_000)
        assert page.eval_on_selector_all("#dalle-gallery img", "images => images.length") == 0  # cleared
        page.screenshot(path=str(artefacts / "serve_dalle_empty_prompt.png"), full_page=True)

        shown = page.eval_on_selector_all("#dalle-gallery img", "images => images.map(i => i.src).join()")
        prompt.fill("a large blue square")  # the server serves on after a refusal
        page.click("#dalle-generate")
        page.wait_for_function("""shown => {
            const now = [...document.querySelectorAll('#dalle-gallery img')].map(i => i.src);
            return now.length >= 4 && now.join() !== shown; }""", arg=shown, timeout=240_000)
        assert len(gallery_pictures(page, "#dalle-gallery")) == 4
        browser.close()
