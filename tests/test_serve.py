"""`chargen serve`: the real server on a free local port, driven over HTTP, by the openai client and in Chromium.

One server (started by the command line, `--port 0`) serves the tiny run to every test of the module;
its limits are small so that each refusal can be reached: --max-streams 2, --max-n 4,
--max-prompt-chars 500, and --max-tokens 1,000,000 so a completion can outlast any test (a client
that disconnects must stop it).
"""
from __future__ import annotations

import http.client
import json
import math
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO

pytest.importorskip("starlette", reason="needs the serve extra (pip install -e '.[test]' installs it)")
from chargen.completions import StopScanner  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium") if Path("/usr/bin/chromium").exists() else None
ARTEFACTS = Path(os.environ.get("CHARGEN_TEST_ARTEFACTS", REPO / "bench" / "results"))
PROMPT = "ROMEO:\n"
LONG = 1_000_000


class Server:
    """The `chargen serve` process: its port, and requests to it."""

    def __init__(self, process: subprocess.Popen, port: int):
        self.process, self.port = process, port
        self.url = f"http://127.0.0.1:{port}"

    def request(self, method: str, path: str, body=None, headers: dict | None = None) -> tuple[int, object]:
        """(status, decoded JSON body); `body` is JSON-encoded unless it is bytes."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers={"content-type": "application/json", **(headers or {})})
        response = conn.getresponse()
        raw = response.read()
        conn.close()
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, raw.decode()

    def complete(self, **body) -> dict:
        status, reply = self.request("POST", "/v1/completions", {"model": "tiny", **body})
        assert status == 200, reply
        return reply

    def open_stream(self, **body) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """A streamed completion, left open: the caller reads events and closes the connection."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        conn.request("POST", "/v1/completions", json.dumps({"model": "tiny", "stream": True, **body}),
                     {"content-type": "application/json"})
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("content-type").startswith("text/event-stream")
        return conn, response

    def stream(self, **body) -> list[dict]:
        """Every event of a streamed completion, up to [DONE] (which must come last)."""
        conn, response = self.open_stream(**body)
        events = [line[len(b"data: "):].decode() for line in response.read().splitlines() if line]
        conn.close()
        assert events[-1] == "[DONE]"
        return [json.loads(e) for e in events[:-1]]

    def health(self) -> dict:
        return self.request("GET", "/health")[1]

    def wait_idle(self, within: float = 10) -> dict:
        """/health once no completion is running (fails after `within` seconds)."""
        deadline = time.monotonic() + within
        while (h := self.health())["running"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert h["running"] == 0, h
        return h


def start_server(*args: str) -> tuple[subprocess.Popen, str]:
    """`python cli.py serve ARGS --port 0`; returns the process and the line it printed (or its error)."""
    process = subprocess.Popen([sys.executable, str(REPO / "cli.py"), "serve", "--port", "0", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stderr.readline()
    return process, line


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def server(tiny_run):
    process, line = start_server("--checkpoint", str(tiny_run), "--max-streams", "2", "--max-n", "4",
                                 "--max-prompt-chars", "500", "--max-tokens", str(LONG))
    match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
    assert match, line + process.stderr.read()
    yield Server(process, int(match.group(1)))
    stop_server(process)
    assert process.stdout.read() == ""  # stdout carries only the product: a server has none


def generated(cli, run: Path, *args: str) -> str:
    """What `chargen generate --no-seed ARGS` prints (the trailing newline it adds taken off)."""
    r = cli("generate", "--checkpoint", str(run), "--no-seed", *args)
    assert r.returncode == 0, r.stderr
    return r.stdout[:-1]


def streamed_text(events: list[dict], choices: int = 1) -> list[str]:
    texts = [""] * choices
    for event in events:
        for choice in event["choices"]:
            texts[choice["index"]] += choice["text"]
    return texts


# -- the text: the same as chargen generate ---------------------------------------------------------
def test_completion_is_what_generate_writes_with_the_same_seed(server, cli, tiny_run):
    expected = generated(cli, tiny_run, "--seed", PROMPT, "--length", "150", "--rng-seed", "7", "--temperature", "0.9",
                         "--top-k", "20")
    reply = server.complete(prompt=PROMPT, max_tokens=150, seed=7, temperature=0.9, top_k=20)
    assert reply["object"] == "text_completion" and reply["model"] == "tiny"
    [choice] = reply["choices"]
    assert choice["text"] == expected
    assert choice["finish_reason"] == "length"
    assert reply["usage"] == {"prompt_tokens": len(PROMPT), "completion_tokens": 150, "total_tokens": 150 + len(PROMPT)}

    events = server.stream(prompt=PROMPT, max_tokens=150, seed=7, temperature=0.9, top_k=20,
                           stream_options={"include_usage": True})
    assert streamed_text(events) == [expected]
    assert len({e["id"] for e in events}) == 1
    assert [c["finish_reason"] for e in events for c in e["choices"]][-1] == "length"
    assert events[-1]["choices"] == [] and events[-1]["usage"] == reply["usage"]
    # Another seed, another text: the seed is what makes it repeatable.
    assert server.complete(prompt=PROMPT, max_tokens=150, seed=8, temperature=0.9,
                           top_k=20)["choices"][0]["text"] != expected


def test_n_choices_are_generates_samples(server, cli, tiny_run):
    out = cli("generate", "--checkpoint", str(tiny_run), "--no-seed", "--seed", PROMPT, "--length", "60",
              "--rng-seed", "3", "--num-samples", "3", "--top-p", "0.9").stdout
    samples = re.split(r"=== sample \d ===\n", out)[1:]
    expected = [s[:-1] for s in samples]
    reply = server.complete(prompt=PROMPT, max_tokens=60, seed=3, n=3, top_p=0.9)
    assert [c["index"] for c in reply["choices"]] == [0, 1, 2]
    assert [c["text"] for c in reply["choices"]] == expected
    assert len(set(expected)) == 3
    assert reply["usage"]["completion_tokens"] == 180
    assert streamed_text(server.stream(prompt=PROMPT, max_tokens=60, seed=3, n=3, top_p=0.9), 3) == expected


def test_completions_running_at_once_do_not_disturb_each_other(server):
    # Each running completion has its own stepper state and scratch: two drawn at the same time with
    # the same seed are the text that seed gives alone.
    from concurrent.futures import ThreadPoolExecutor

    server.wait_idle()
    body = dict(prompt=PROMPT, max_tokens=3000, seed=13)
    alone = server.complete(**body)["choices"][0]["text"]
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda _: streamed_text(server.stream(**body))[0], range(2)))
    assert together == [alone, alone]


def test_stop_strings_end_a_choice_and_are_left_out(server):
    full = server.complete(prompt=PROMPT, max_tokens=300, seed=11, temperature=1.0)["choices"][0]["text"]
    stop = full[40:43]  # a string the unstopped text has: the stopped text ends where it first occurs
    cut = full[:full.index(stop)]
    body = dict(prompt=PROMPT, max_tokens=300, seed=11, temperature=1.0, stop=["@@@@", stop])
    [choice] = server.complete(**body)["choices"]
    assert choice["text"] == cut and choice["finish_reason"] == "stop"
    events = server.stream(**body)
    assert streamed_text(events) == [cut]
    assert all(stop not in c["text"] for e in events for c in e["choices"])
    assert events[-1]["choices"][-1]["finish_reason"] == "stop"
    # A stop string that never occurs: the full length.
    assert server.complete(prompt=PROMPT, max_tokens=300, seed=11, temperature=1.0,
                           stop="@@@@")["choices"][0]["text"] == full


def test_stop_scanner_holds_back_what_may_start_a_stop_string():
    scanner = StopScanner(("END", "\n\n"))
    released = ""
    for ch in "an E, then\nEN":
        start, end = scanner.push(ch)
        released += scanner.text[start:end]
    assert released == "an E, then\n" and not scanner.stopped  # "EN" may be the start of "END": held back
    assert scanner.text[slice(*scanner.push("D"))] == "" and scanner.stopped  # "END": nothing more, and stopped
    assert scanner.text[:scanner.sent] == "an E, then\n"


def test_logprobs_are_the_models_own_probabilities(server):
    # At temperature 0 each character is the model's likeliest: its log-probability is the top one.
    [choice] = server.complete(prompt=PROMPT, max_tokens=40, temperature=0, logprobs=3)["choices"]
    lp = choice["logprobs"]
    assert "".join(lp["tokens"]) == choice["text"]
    assert lp["text_offset"] == list(range(40))
    for token, logprob, top in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"]):
        assert len(top) == 3 and logprob <= 0
        assert max(top, key=top.get) == token and math.isclose(top[token], logprob)
    # Sampled characters carry probabilities too, and streamed offsets continue across chunks.
    events = server.stream(prompt=PROMPT, max_tokens=80, seed=5, logprobs=0)
    offsets = [o for e in events for c in e["choices"] for o in c["logprobs"]["text_offset"]]
    probs = [math.exp(x) for e in events for c in e["choices"] for x in c["logprobs"]["token_logprobs"]]
    assert offsets == list(range(80)) and all(0 < p <= 1 for p in probs)


def test_models_lists_the_served_run(server, tiny_run):
    status, reply = server.request("GET", "/v1/models")
    assert status == 200 and [m["id"] for m in reply["data"]] == ["tiny"]
    config = json.loads((tiny_run / "config.json").read_text())
    described = reply["data"][0]["chargen"]
    assert (described["cell"], described["hidden"], described["val_bpc"]) == (
        "lstm", 64, config["metrics"]["val_bpc"])
    assert server.request("GET", "/v1/models/tiny")[1]["id"] == "tiny"


# -- refusals: the API's error shape and status ------------------------------------------------------
@pytest.mark.parametrize("body, status, param", [
    (b"{not json", 400, None),
    (b"[1, 2]", 400, None),
    ({"prompt": PROMPT, "temperature": -1}, 400, "temperature"),
    ({"prompt": PROMPT, "temperature": "hot"}, 400, "temperature"),
    (b'{"model": "tiny", "prompt": "x", "temperature": 1e999}', 400, "temperature"),
    ({"prompt": PROMPT, "top_p": 0}, 400, "top_p"),
    ({"prompt": PROMPT, "max_tokens": 10 ** 30}, 400, "max_tokens"),
    ({"prompt": PROMPT, "top_k": 2.5}, 400, "top_k"),
    ({"prompt": PROMPT, "max_tokens": LONG + 1}, 400, "max_tokens"),
    ({"prompt": PROMPT, "n": 5}, 400, "n"),
    ({"prompt": PROMPT, "seed": -3}, 400, "seed"),
    ({"prompt": PROMPT, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ({"prompt": PROMPT, "stream": "yes"}, 400, "stream"),
    ({"prompt": [1, 2, 3]}, 400, "prompt"),
    ({"prompt": "naïve ☃"}, 400, "prompt"),
    ({"prompt": PROMPT, "echo": True}, 400, "echo"),
    ({"prompt": PROMPT, "model": "nvoel"}, 404, "model"),
    ({"prompt": "x" * 501}, 413, "prompt"),
    (json.dumps({"prompt": "x", "padding": "y" * 20_000}).encode(), 413, None),
])
def test_bad_requests_get_the_apis_error_and_status(server, body, status, param):
    if isinstance(body, dict):
        body = {"model": "tiny", **body}
    got, reply = server.request("POST", "/v1/completions", body)
    assert got == status, reply
    error = reply["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert error["message"] and "\n" not in error["message"]


def test_other_refusals(server):
    status, reply = server.request("POST", "/v1/completions", b"prompt=hi",
                                   {"content-type": "application/x-www-form-urlencoded"})
    assert status == 415 and "application/json" in reply["error"]["message"]
    status, reply = server.request("POST", "/v1/chat/completions", {"messages": []})
    assert status == 404 and "/v1/completions" in reply["error"]["message"]
    assert server.request("GET", "/v1/models/..%2F..%2Fetc%2Fpasswd")[0] == 404
    # A request addressed to another host name (DNS rebinding) is refused.
    assert server.request("GET", "/v1/models", headers={"host": "attacker.example"})[0] == 400
    assert server.health()["running"] == 0


def test_a_client_that_disconnects_stops_its_completion(server):
    before = server.wait_idle()["chars_sent"]
    conn, response = server.open_stream(prompt=PROMPT, max_tokens=LONG)
    assert response.readline().startswith(b"data: {")
    assert server.health()["running"] == 1
    conn.close()
    after = server.wait_idle(within=5)["chars_sent"]
    time.sleep(0.3)
    assert server.health()["chars_sent"] == after  # nothing is drawn any more
    assert after - before < LONG // 10


def test_one_stream_over_the_limit_gets_429(server):
    server.wait_idle()
    streams = [server.open_stream(prompt=PROMPT, max_tokens=LONG) for _ in range(2)]
    for _, response in streams:
        assert response.readline().startswith(b"data: {")
    status, reply = server.request("POST", "/v1/completions", {"model": "tiny", "prompt": PROMPT})
    assert status == 429 and reply["error"]["type"] == "rate_limit_error"
    assert "--max-streams" in reply["error"]["message"]
    for conn, _ in streams:
        conn.close()
    server.wait_idle()
    assert server.complete(prompt=PROMPT, max_tokens=5)["choices"][0]["finish_reason"] == "length"


# -- the official openai client ----------------------------------------------------------------------
def test_the_openai_client_works_unmodified(server, cli, tiny_run):
    openai = pytest.importorskip("openai", reason="the test extra installs the openai client")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="not-needed", max_retries=0)
    assert [m.id for m in client.models.list()] == ["tiny"]
    expected = generated(cli, tiny_run, "--seed", PROMPT, "--length", "80", "--rng-seed", "21")
    completion = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=80, seed=21, temperature=0.8)
    assert completion.choices[0].text == expected
    assert completion.usage.completion_tokens == 80
    chunks = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=80, seed=21, temperature=0.8,
                                       stream=True)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == expected
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nvoel", prompt=PROMPT)
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="tiny", prompt=PROMPT, temperature=-1)


# -- the command line --------------------------------------------------------------------------------
def test_serve_without_the_extra_names_it(monkeypatch, capsys, tiny_run):
    import cli as command_line

    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if it were not installed
    monkeypatch.delitem(sys.modules, "chargen.server", raising=False)
    assert command_line.main(["serve", "--checkpoint", str(tiny_run)]) == 1
    err = capsys.readouterr().err
    assert err == ('chargen: error: chargen serve needs the serve extra (uvicorn is not installed): '
                   'pip install "chargen[serve]"\n')


def test_serve_startup_errors_are_one_line(cli, tiny_run, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = cli("serve", "--checkpoint", str(tiny_run), "--port", str(port), timeout=60)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith(f"chargen: error: cannot listen on 127.0.0.1 port {port}: ")
    assert r.stderr.endswith("pass another --port (--port 0 picks a free one)\n") and r.stderr.count("\n") == 1

    r = cli("serve", "--checkpoint", str(tiny_run), "--host", "no.such.host.invalid", timeout=60)
    assert r.returncode == 1 and r.stderr.startswith("chargen: error: --host no.such.host.invalid: cannot resolve it")
    assert r.stderr.count("\n") == 1

    r = cli("serve", "--checkpoint", str(tiny_run), "--port", "70000", timeout=60)
    assert r.returncode == 1 and r.stderr == "chargen: error: --port must be between 0 and 65535, not 70000\n"

    r = cli("serve", "--run", "nvoel", timeout=60)
    assert r.returncode == 1 and r.stderr.startswith("chargen: error: run ") and r.stderr.count("\n") == 1

    twin = tmp_path / "elsewhere" / tiny_run.name
    twin.parent.mkdir()
    twin.symlink_to(tiny_run)
    r = cli("serve", "--checkpoint", str(tiny_run), "--checkpoint", str(twin), timeout=60)
    assert r.returncode == 1 and f"two runs are called '{tiny_run.name}'" in r.stderr and r.stderr.count("\n") == 1


# -- the playground in a real browser ----------------------------------------------------------------
@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (apt-get install chromium; .ci/run installs it)")
def test_playground_streams_coloured_text_and_undoes(server):
    sync_api = pytest.importorskip("playwright.sync_api", reason="the test extra installs playwright")
    expected = server.complete(prompt="ROMEO:", max_tokens=200, seed=5)["choices"][0]["text"]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            failed = []
            page.on("requestfailed", lambda r: failed.append(r.url))
            page.goto(server.url + "/")
            assert page.input_value("#model") == "tiny" and "LSTM 2x64" in page.inner_text("#about")
            page.fill("#prompt", "ROMEO:")
            page.fill("#seed", "5")
            page.click("#write")
            # Locator waits and reads only: the page's content security policy forbids evaluating test code.
            expect = sync_api.expect
            expect(page.locator("#status")).to_contain_text("characters in", timeout=30_000)
            assert page.inner_text("#story .typed") == "ROMEO:"
            spans = page.locator("#story span.gen")
            expect(spans).to_have_count(200)
            # The page's defaults, with seed 5, write exactly what the API does with seed 5.
            assert "".join(spans.all_text_contents()) == expected
            backgrounds = {spans.nth(i).get_attribute("style") for i in range(0, 200, 4)}
            assert len(backgrounds) > 5  # coloured by probability, not one colour
            assert spans.first.get_attribute("title").startswith("probability ")
            ARTEFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTEFACTS / "serve_playground.png"))

            page.click("#continue")
            expect(spans).to_have_count(400, timeout=30_000)
            expect(page.locator("#continue")).to_be_enabled()
            page.click("#undo")
            expect(spans).to_have_count(200)
            page.click("#undo")
            expect(spans).to_have_count(0)
            assert page.input_value("#prompt") == "ROMEO:"
            assert not failed  # every request succeeded (and nothing was fetched from elsewhere)

            # Stop: a turn as long as the server allows, stopped once it has begun; the server stops too.
            page.focus("#length")
            page.keyboard.press("End")
            assert page.input_value("#length") == str(LONG)
            page.click("#write")
            expect(spans.nth(10)).to_be_attached(timeout=30_000)
            page.click("#stop")
            expect(page.locator("#status")).to_contain_text("stopped after")
            shown = int(re.search(r"stopped after (\d+)", page.inner_text("#status")).group(1))
            assert 10 < shown < LONG and spans.count() == shown
        finally:
            browser.close()
    assert server.wait_idle()["running"] == 0
