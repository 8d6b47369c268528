"""The web page in headless Chromium: a video file and a fake webcam stream into sessions and
captions appear. Uses the system Chromium (Debian `chromium`, installed by .ci/run); a screenshot is
kept in the test's tmp dir and, with $STREAMVLM_ARTIFACTS set, in that directory."""

import os
import shutil
from pathlib import Path

import pytest
from server_helpers import LiveServer

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
MEDIA_FLAGS = ["--autoplay-policy=no-user-gesture-required", "--use-fake-device-for-media-stream"]
MEDIA_FLAGS += ["--use-fake-ui-for-media-stream"]  # grant the camera without a prompt

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs the system Chromium at /usr/bin/chromium (apt-get install chromium)"
)


def test_page_streams_a_video_file_and_a_webcam_with_captions(tiny, tmp_path):
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="needs playwright (pip install -e '.[test]')"
    )
    from streamvlm.sources import synthetic_frames, write_video

    video = write_video(tmp_path / "clip.mp4", synthetic_frames(5, 8, (120, 160)), fps=8)  # H.264
    defaults = {"greedy": True, "max_new_tokens": 4}
    server = LiveServer(tiny, out_dir=tmp_path / "sessions", stream_defaults=defaults)
    with server, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS + MEDIA_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.goto(server.url + "/")
            page.wait_for_function("document.getElementById('status').textContent === 'ready'")
            assert page.text_content("#model").startswith(f"model: {tiny.path.name}")

            page.set_input_files("#file", str(video))
            page.wait_for_selector("#caption span", timeout=30_000)  # a caption over the video
            page.wait_for_function("document.querySelectorAll('#transcript li').length >= 3", timeout=30_000)
            shot = tmp_path / "browser-page.png"
            page.screenshot(path=str(shot))
            page.wait_for_function(
                "document.getElementById('status').textContent.startsWith('finished')", timeout=30_000
            )
            starts = page.eval_on_selector_all("#transcript li time", "els => els.map(e => e.textContent)")
            assert starts == ["00:00", "00:01", "00:02", "00:03", "00:04"]  # every second of the file
            assert page.text_content("#s-cache").endswith("tokens")
            assert page.text_content("#s-latency").endswith("ms")

            page.click("#camera")  # Chromium's fake camera
            page.wait_for_function("document.querySelectorAll('#transcript li').length >= 2", timeout=30_000)
            page.click("#stop")
            page.wait_for_function(
                "document.getElementById('status').textContent.startsWith('finished')", timeout=30_000
            )
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    if os.environ.get("STREAMVLM_ARTIFACTS"):
        artifacts = Path(os.environ["STREAMVLM_ARTIFACTS"])
        artifacts.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, artifacts / shot.name)
    sessions = sorted((tmp_path / "sessions").glob("*.jsonl"))
    assert len([p for p in sessions if not p.name.endswith(".stats.jsonl")]) == 2


def test_page_follows_the_session_count_and_explains_an_auth_failure(tiny, tmp_path):
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="needs playwright (pip install -e '.[test]')"
    )
    from server_helpers import events
    from websockets.sync.client import connect

    from streamvlm.sources import synthetic_frames, write_video

    video = write_video(tmp_path / "clip.mp4", synthetic_frames(2, 8, (120, 160)), fps=8)
    server = LiveServer(tiny, out_dir=tmp_path / "sessions", token="s3cret")
    with server, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS + MEDIA_FLAGS)
        try:
            page = browser.new_page()
            page.goto(server.url + "/")
            page.wait_for_function("document.getElementById('status').textContent === 'ready'")
            assert "0/4 sessions" in page.text_content("#model")
            with connect(server.ws_url + "?token=s3cret") as ws:  # a session opened elsewhere
                events(ws, until="ready")
                page.wait_for_function(
                    "document.getElementById('model').textContent.includes('1/4 sessions')", timeout=15_000
                )
            page.set_input_files("#file", str(video))  # no token given: refused with 1008
            page.wait_for_function(
                "document.getElementById('placeholder').textContent.startsWith('Unauthorized')",
                timeout=15_000,
            )
            assert page.is_visible("#placeholder") and "1008" in page.text_content("#status")
            emptied = "v => !v.getAttribute('src') && !v.srcObject && v.networkState === v.NETWORK_EMPTY"
            assert page.eval_on_selector("#video", emptied)  # no frame left under the message
            assert page.request.get(server.url + "/favicon.ico").ok
        finally:
            browser.close()
