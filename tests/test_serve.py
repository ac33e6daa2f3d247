"""`gais-pipe serve` against a real server on 127.0.0.1: the search API answers as `query --json` does
plus the explain figure's per-frame data, bad input gets JSON 4xx, no request names a file, video
bytes honour Range, thumbnails are made once, concurrent clients get their own answers, a rebuilt
index is picked up without a restart, and a headless browser renders the page."""

import json
import os
import shutil
import threading
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from conftest import extract
from media import make_video, tone
from serving import Server, index_with_random_heads
from typer.testing import CliRunner

from gais_pipe.cli import app as cli
from gais_pipe.config import load_config
from gais_pipe.index.layout import read_record
from gais_pipe.serve.app import create_app
from gais_pipe.serve.engine import Engine
from gais_pipe.workdir import Workdir

ROOT = Path(__file__).resolve().parent.parent
GREYS = {"quiet/grey30.mp4": 30, "tone/grey120.mp4": 120, "tone/grey220.mp4": 220}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    videos, work = root / "videos", root / "work"
    make_video(videos / "quiet/grey30.mp4", seconds=1.0, acodec=None, frame_value=lambda k: 30)
    make_video(videos / "tone/grey120.mp4", seconds=1.0, audio=tone(440.0), frame_value=lambda k: 120)
    make_video(videos / "tone/grey220.mp4", seconds=1.0, audio=tone(880.0), frame_value=lambda k: 220)
    (videos / "not-indexed.txt").write_text("a file beside the videos that no index holds")
    extract(videos, work)
    index_with_random_heads(work)
    engine = Engine(work, load_config("tiny"))
    with Server(create_app(engine)) as server:
        yield server, engine, videos, work


def search(server, text, **options):
    status, answer = server.json("POST", "/api/search", {"text": text, **options})
    assert status == 200, answer
    return answer


def test_health_says_what_is_served(served):
    server, engine, _, work = served
    status, health = server.json("GET", "/api/health")
    record = read_record(Workdir(work))
    assert status == 200 and health["status"] == "ok"
    assert health["index"]["mode"] == "stage1" and health["index"]["videos"] == 3
    assert health["index"]["checkpoint"].endswith("runs/random/best.safetensors")
    assert health["index"]["built"] == record["built"] and health["frames"] == 12
    assert (health["stale"], health["warning"]) == (False, None)


def test_search_answers_as_query_does_with_each_frames_gate_and_attention(served):
    from gais_pipe.explain_stage import explain

    server, engine, _, work = served
    answer = search(server, "a grey picture", k=3)
    printed = CliRunner().invoke(cli, ["query", "a grey picture", "-w", str(work), "-k", "3", "--json"])
    expected = json.loads(printed.output)["results"]
    assert [h["video"] for h in answer["results"]] == [h["video"] for h in expected]
    for hit, same in zip(answer["results"], expected):
        assert hit["score"] == pytest.approx(same["score"], abs=1e-5) and hit["moment"] == same["moment"]
        frames = hit["frames"]
        assert len(frames["times"]) == len(frames["attention"]) == len(frames["gates"]) == 12
        assert (
            frames["best"] == int(np.argmax(frames["attention"])) and hit["moment"] == frames["times"][frames["best"]]
        )
        assert sum(frames["attention"]) == pytest.approx(1.0, abs=1e-4)  # attention over the frames
        heard = [g for g in frames["gates"] if g is not None]
        if hit["video"].startswith("quiet/"):  # no soundtrack: no gate anywhere
            assert heard == [] and hit["audio_gate"] is None
        else:
            assert len(heard) == 12 and all(0 < g < 1 for g in heard)
            assert hit["audio_gate"] == pytest.approx(np.mean(heard), abs=1e-6)
        shown = explain(engine.current.searcher, "a grey picture", hit["video"])  # the figure shows the same
        np.testing.assert_allclose(shown.attention, frames["attention"], atol=1e-6)
        assert shown.score == pytest.approx(hit["score"], abs=1e-6)


def test_video_metadata_by_id(served):
    server, _, videos, _ = served
    status, entry = server.json("GET", f"/api/video?id={quote('tone/grey120.mp4')}")
    assert status == 200
    assert entry["id"] == "tone/grey120.mp4" and entry["path"] == str((videos / "tone/grey120.mp4").resolve())
    assert entry["duration"] == pytest.approx(1.0, abs=0.05) and len(entry["frame_times"]) == 12


BAD = [
    ("POST", "/api/search", {"text": ""}, 400, "empty query"),
    ("POST", "/api/search", {"text": "   \n"}, 400, "empty query"),
    ("POST", "/api/search", {"text": "x", "k": 0}, 400, "k must be between 1 and 100"),
    ("POST", "/api/search", {"text": "x", "k": 10**9}, 400, "k must be between 1 and 100"),
    ("POST", "/api/search", {"text": "x", "rerank_k": -1}, 400, "rerank_k must be between 0 and 1000"),
    ("POST", "/api/search", {"text": "x", "k": "ten"}, 400, "k: Input should be a valid integer"),
    ("POST", "/api/search", {"text": "word " * 300}, 400, "longer than 1000 characters"),
    ("POST", "/api/search", {"k": 3}, 400, "text: Field required"),
    ("POST", "/api/search", b'{"text": "unclosed', 400, "malformed JSON"),
    ("POST", "/api/search", b"[1, 2]", 400, "valid dictionary"),
    ("POST", "/api/search", b'{"text": "' + b"x" * 70000 + b'"}', 413, "request body over"),
    ("GET", "/api/search", None, 405, "Method Not Allowed"),
    ("GET", "/api/video?id=nope.mp4", None, 404, "nope.mp4: not in the index"),
    ("GET", "/api/video/thumbnails?id=nope.mp4", None, 404, "not in the index"),
    ("GET", "/api/video/file?id=nope.mp4", None, 404, "not in the index"),
    ("GET", "/api/video/file", None, 400, "id: Field required"),
    ("GET", "/api/nothing-here", None, 404, "Not Found"),
]


@pytest.mark.parametrize("method, path, body, status, message", BAD)
def test_bad_requests_get_a_json_error(served, method, path, body, status, message):
    server = served[0]
    headers = {"Content-Type": "application/json"} if isinstance(body, bytes) else None
    got, answer = server.json(method, path, body, headers)
    assert got == status and message in answer["error"], answer


def test_an_internal_failure_is_a_json_500(served, monkeypatch):
    server, engine, _, _ = served

    def broken(*args):
        raise RuntimeError("the disk fell off")

    monkeypatch.setattr(engine, "search", broken)
    status, answer = server.json("POST", "/api/search", {"text": "grey"})
    assert status == 500 and answer == {"error": "internal error: RuntimeError: the disk fell off"}


def test_no_path_from_a_request_reaches_the_file_system(served):
    server, _, videos, work = served
    indexed_file = str((videos / "tone/grey120.mp4").resolve())
    for name in [
        "../../../../etc/passwd",
        "/etc/passwd",
        indexed_file,  # an indexed video's own path is not its id
        "tone/../tone/grey120.mp4",
        "not-indexed.txt",  # beside the videos, but not indexed
        str(work / "workdir.json"),
        "tone/grey120.mp4\x00.txt",
    ]:
        for route in ("/api/video", "/api/video/thumbnails", "/api/video/file"):
            status, _, data = server.request("GET", f"{route}?id={quote(name)}")
            assert status == 404 and b"not in the index" in data, (route, name, data[:200])
    for path in ["/static/../pyproject.toml", "/static/..%2F..%2Fpyproject.toml", "/static/%2e%2e/README.md"]:
        status, _, data = server.request("GET", path)
        assert status == 404 and b"gais-pipe" not in data, path
    status, _, _ = server.request("GET", "/api/health", headers={"Host": "attacker.example"})
    assert status == 400  # DNS rebinding: a foreign host name is refused on loopback


def test_video_bytes_honour_range_requests(served):
    server, _, videos, _ = served
    whole = (videos / "tone/grey220.mp4").read_bytes()
    path = f"/api/video/file?id={quote('tone/grey220.mp4')}"
    status, headers, data = server.request("GET", path)
    assert status == 200 and data == whole and headers["accept-ranges"] == "bytes"
    status, headers, data = server.request("GET", path, headers={"Range": "bytes=100-299"})
    assert status == 206 and data == whole[100:300] and headers["content-range"] == f"bytes 100-299/{len(whole)}"
    status, _, data = server.request("GET", path, headers={"Range": "bytes=-64"})
    assert status == 206 and data == whole[-64:]
    status, headers, _ = server.request("GET", path, headers={"Range": f"bytes={len(whole) + 10}-"})
    assert status == 416 and headers["content-range"] == f"bytes */{len(whole)}"


def test_thumbnail_strips_are_made_once_and_kept_in_the_workdir(served, monkeypatch):
    from PIL import Image

    import gais_pipe.serve.thumbnails as thumbnails

    server, _, _, work = served
    shutil.rmtree(work / "thumbnails", ignore_errors=True)
    made = []
    real = thumbnails.write_strip
    monkeypatch.setattr(thumbnails, "write_strip", lambda *args: made.append(args[0]) or real(*args))
    path = f"/api/video/thumbnails?id={quote('tone/grey220.mp4')}"
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(server.request("GET", path))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [status for status, _, _ in answers] == [200] * 4 and len(made) == 1  # four requests, one decode
    assert server.request("GET", path)[2] == answers[0][2] and len(made) == 1
    (cached,) = (work / "thumbnails").glob("*.jpg")
    image = np.asarray(Image.open(cached).convert("RGB"))
    assert image.shape == (96, 12 * 96, 3) and abs(float(image.mean()) - 220) < 8  # the video's own frames
    assert not list((work / "thumbnails").glob(".*tmp*"))


def test_concurrent_clients_each_get_their_own_answer(served):
    server = served[0]
    texts = [f"query number {i}: something" + " grey" * i for i in range(6)]
    alone = {text: search(server, text, k=3, rerank_k=3)["results"] for text in texts}
    answers, failures = [], []

    def client(i):
        for text in texts[i % 3 :: 2]:
            status, answer = server.json("POST", "/api/search", {"text": text, "k": 3, "rerank_k": 3})
            (answers if status == 200 else failures).append((text, answer))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures and len(answers) == sum(len(texts[i % 3 :: 2]) for i in range(16))
    for text, answer in answers:
        assert answer["query"] == text
        assert [(h["video"], round(h["score"], 5)) for h in answer["results"]] == [
            (h["video"], round(h["score"], 5)) for h in alone[text]
        ]


def _chromium():
    webdriver = pytest.importorskip("selenium.webdriver")
    if not (Path("/usr/bin/chromium").exists() and Path("/usr/bin/chromedriver").exists()):
        pytest.skip("chromium and chromium-driver are not installed (scripts/setup.sh installs them)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1400,900")
    options.add_argument("--autoplay-policy=no-user-gesture-required")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # the network log, for failed loads
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def _show_results(browser, server, text: str, k: int) -> None:
    """Load the page, search for `text` and wait for k result cards with their thumbnail strips loaded."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server.url + "/")
    WebDriverWait(browser, 30).until(lambda b: "videos" in b.find_element(By.ID, "status").text)
    browser.find_element(By.ID, "k").clear()
    browser.find_element(By.ID, "k").send_keys(str(k))
    box = browser.find_element(By.ID, "query")
    box.send_keys(text)
    box.submit()
    WebDriverWait(browser, 60).until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "li.result")) == k)
    WebDriverWait(browser, 60).until(lambda b: b.execute_script(LOADED) and all(b.execute_script(LOADED)))


LOADED = "return [...document.images].map(i => i.complete && i.naturalWidth)"


def _failed_loads(browser) -> list[tuple[int, str]]:
    """(status, url) of each response of 400 or more in the browser's network log since the last call."""
    failed = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.responseReceived":
            response = message["params"]["response"]
            if response["status"] >= 400:
                failed.append((response["status"], response["url"]))
    return failed


def test_the_page_renders_results_and_plays_from_the_best_moment(served):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server = served[0]
    expected = search(server, "a grey picture", k=3)["results"]
    browser = _chromium()
    try:
        _show_results(browser, server, "a grey picture", k=3)
        assert "3 videos" in browser.find_element(By.ID, "status").text
        cards = browser.find_elements(By.CSS_SELECTOR, "li.result")
        assert [c.get_attribute("data-video") for c in cards] == [h["video"] for h in expected]
        assert browser.execute_script(LOADED) == [12 * 96] * 3
        first = cards[0]
        strip = first.find_element(By.CSS_SELECTOR, ".frames img").rect
        best = first.find_element(By.CSS_SELECTOR, ".best").rect
        frame = strip["width"] / 12
        assert best["x"] == pytest.approx(strip["x"] + expected[0]["frames"]["best"] * frame, abs=1)
        assert best["width"] == pytest.approx(frame, abs=1)
        assert len(first.find_elements(By.CSS_SELECTOR, ".cells")[1].find_elements(By.TAG_NAME, "div")) == 12
        save_artifact(browser, "serve-page.png")
        # media events do not bubble, but a capturing listener on the document sees them
        browser.execute_script(
            "window.seeks = []; document.addEventListener('seeked', e => seeks.push(e.target.currentTime), true)"
        )
        first.find_element(By.CSS_SELECTOR, ".frames").click()
        WebDriverWait(browser, 30).until(lambda b: b.execute_script("return seeks.length > 0"))
        assert browser.execute_script("return seeks[0]") == pytest.approx(expected[0]["moment"], abs=0.05)
        playing = "const v = document.querySelector('video'); return [v.readyState, v.error && v.error.code]"
        assert browser.execute_script(playing)[0] >= 2 and browser.execute_script(playing)[1] is None
    finally:
        browser.quit()


# Per result card, in CSS px: the card's box; every element in it whose content is wider than its box (a
# scroll bar, or content cut off); the thumbnail strip as shown and its natural size; the best-moment
# outline; and the first and last cell of each per-frame row under the strip.
CARD_LAYOUT = """
const box = (node) => {
  const r = node.getBoundingClientRect();
  return {left: r.left, right: r.right, width: r.width, height: r.height};
};
return {
  viewport: document.documentElement.clientWidth,
  page: [document.documentElement.scrollWidth, document.documentElement.clientWidth],
  cards: [...document.querySelectorAll("li.result")].map((card) => {
    const image = card.querySelector(".frames img");
    return {
      card: box(card),
      overflowing: [card, ...card.querySelectorAll("*")]
        .filter((node) => node.scrollWidth > node.clientWidth)
        .map((node) => `${node.tagName.toLowerCase()}.${node.className}: ${node.scrollWidth} > ${node.clientWidth}`),
      strip: box(image),
      natural: [image.naturalWidth, image.naturalHeight],
      best: box(card.querySelector(".frames .best")),
      rows: [...card.querySelectorAll(".cells")].filter((row) => row.children.length)
        .map((row) => [box(row.firstElementChild), box(row.lastElementChild), row.children.length]),
    };
  }),
};
"""


def test_the_frame_strips_fit_their_cards_at_any_width_and_the_page_loads_without_a_404(served):
    """Issue 23: the T frames of a result shrink to fit its card (keeping their aspect) rather than
    scroll or be cut, at narrow and wide windows alike; and nothing the page loads is missing (the
    browser's automatic /favicon.ico request was a 404 on every load)."""
    import time

    server = served[0]
    expected = search(server, "a grey picture", k=3)["results"]
    browser = _chromium()
    try:
        loaded_at = time.monotonic()
        _show_results(browser, server, "a grey picture", k=3)
        for width in (800, 1280, 1920):
            metrics = {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}
            browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
            save_artifact(browser, f"serve-page-{width}.png")
            layout = browser.execute_script(CARD_LAYOUT)
            assert layout["viewport"] == width
            assert layout["page"][0] <= layout["page"][1], f"{width} px: the page scrolls sideways"
            assert len(layout["cards"]) == 3
            for hit, card in zip(expected, layout["cards"]):
                frames, strip, box = len(hit["frames"]["times"]), card["strip"], card["card"]
                frame = strip["width"] / frames
                assert card["overflowing"] == [], f"{width} px: {card['overflowing']}"
                last = (strip["right"] - frame, strip["right"])  # the last frame's horizontal extent
                assert box["left"] <= last[0] and last[1] <= box["right"], f"{width} px: last frame {last}, card {box}"
                assert frame > 20, f"{width} px: frames {frame:.1f} px wide"
                natural_width, natural_height = card["natural"]
                assert strip["height"] / strip["width"] == pytest.approx(natural_height / natural_width, rel=0.01)
                assert strip["width"] <= natural_width + 0.5  # shrunk where need be, never enlarged
                if width == 1920:  # room for every frame at its natural size
                    assert strip["width"] == pytest.approx(natural_width, abs=0.5)
                assert card["best"]["left"] == pytest.approx(strip["left"] + hit["frames"]["best"] * frame, abs=1)
                assert card["best"]["width"] == pytest.approx(frame, abs=1)
                assert len(card["rows"]) == 2  # sound and attention, one cell per frame, under the frames
                for first_cell, last_cell, cells in card["rows"]:
                    assert cells == frames
                    assert first_cell["left"] == pytest.approx(strip["left"], abs=1)
                    assert last_cell["right"] == pytest.approx(strip["right"], abs=1)
        # Unless the page names an icon, the browser asks for /favicon.ico itself just after the page has loaded
        # (a tenth of a second here): give it time, then nothing the page or the browser fetched may be missing.
        time.sleep(max(0.0, 2 - (time.monotonic() - loaded_at)))
        assert _failed_loads(browser) == []
        icon = browser.execute_script(
            "const link = document.querySelector('link[rel~=icon]'); return link && link.href"
        )
        assert icon, "the page names no icon"
        if not icon.startswith("data:"):  # an icon the server serves
            assert server.request("GET", icon.removeprefix(server.url))[0] == 200
    finally:
        browser.quit()


def save_artifact(browser, name: str) -> Path:
    folder = Path(os.environ.get("GAIS_TEST_ARTIFACTS", ROOT / "test-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(folder / name))
    return folder / name


def test_a_rebuilt_index_is_served_without_a_restart(served):
    """The last test on the served workdir: it adds a video to it."""
    from gais_pipe.index_stage import run_build_index

    server, engine, videos, work = served
    make_video(videos / "grey160.mp4", seconds=1.0, frame_value=lambda k: 160)
    extract(videos, work)
    status, health = server.json("GET", "/api/health")
    assert health["stale"] is True and "build-index" in health["warning"] and health["index"]["videos"] == 3
    pointer = work / "index/CURRENT"
    moved = pointer.with_name("CURRENT.moved")
    os.replace(pointer, moved)  # no current generation: nothing to serve from the disk
    status, answer = server.json("POST", "/api/search", {"text": "grey"})
    assert status == 503 and "being rebuilt" in answer["error"]
    os.replace(moved, pointer)
    run_build_index(work, load_config("tiny"))
    status, health = server.json("GET", "/api/health")
    assert health["index"]["videos"] == 4 and health["stale"] is False and health["warning"] is None
    found = [h["video"] for h in search(server, "a grey picture", k=4)["results"]]
    assert sorted(found) == sorted([*GREYS, "grey160.mp4"])


def test_serve_without_an_index_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(cli, ["serve", "-w", str(tmp_path / "nothing-here"), "--port", "1"])
    assert result.exit_code == 2 and "no index; run `gais-pipe build-index`" in result.output
