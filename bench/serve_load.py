"""`chargen serve` under load: concurrent streaming clients against the default model, on this machine.

    python bench/serve_load.py                          # 1, 8 and 32 clients, 15 s each, twice (~3.5 minutes)
    python bench/serve_load.py --clients 1,8,32,64 --seconds 10 --rounds 1 --checkpoint checkpoints/novel

The server is the real command (`python cli.py serve --port 0`) in its own process; the clients are
threads of this process, each sending streamed completions (`--max-tokens` characters, temperature
0.8, a different seed each) one after another until the level's time is up. Per level:

- total characters/s received by all clients, and its ratio to the baseline: one stream of
  `chargen generate`'s sampler (`chargen.sample.generate`, in a fresh process) measured right
  before the level, on the same run;
- time to first character (request sent -> first character received): median and p99;
- failed requests (a status other than 200, an error event, a stream without [DONE]);
- the server's resident memory (VmRSS) after the level. The levels run `--rounds` times: memory that
  grows with the requests served shows as growth from one round to the next.

Without --checkpoint it makes a run of the default model (2x256 GRU, embedding 64) with nearly
random weights (one training step on tinyshakespeare, as bench/speed.py does): the speed does not
depend on the weights' values. The clients share the machine with the server, as they would on a
laptop. Needs the serve extra. Prints a table and writes bench/results/serve-<time>.json.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import speed  # bench/speed.py: the machine's description, the corpus files, the run maker, the sampler worker

REPO = speed.REPO


def rss_mb(pid: int) -> float:
    """Resident memory of a process, MB (Linux /proc)."""
    match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(match.group(1)) / 1024


def start_server(run_dir: Path, max_streams: int) -> tuple[subprocess.Popen, int]:
    process = subprocess.Popen([sys.executable, str(REPO / "cli.py"), "serve", "--checkpoint", str(run_dir),
                                "--port", "0", "--max-streams", str(max_streams)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    line = process.stderr.readline()
    match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
    if not match:
        process.kill()
        raise SystemExit(f"the server did not start: {line}{process.stderr.read()}")
    threading.Thread(target=process.stderr.read, daemon=True).start()  # keep its stderr drained
    return process, int(match.group(1))


def one_completion(port: int, model: str, max_tokens: int, seed: int) -> tuple[float | None, int, bool]:
    """One streamed completion: (seconds to the first character or None, characters received, ok)."""
    body = json.dumps({"model": model, "prompt": "\n", "max_tokens": max_tokens, "temperature": 0.8,
                       "seed": seed, "stream": True})
    t0 = time.perf_counter()
    first, chars, done = None, 0, False
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("POST", "/v1/completions", body, {"content-type": "application/json"})
        response = conn.getresponse()
        if response.status != 200:
            response.read()
            return None, 0, False
        for line in response:
            if not line.startswith(b"data: "):
                continue
            data = line[6:].strip()
            if data == b"[DONE]":
                done = True
                break
            event = json.loads(data)
            if "error" in event:
                return first, chars, False
            got = sum(len(c["text"]) for c in event["choices"])
            if got and first is None:
                first = time.perf_counter() - t0
            chars += got
    except OSError:
        return first, chars, False
    finally:
        conn.close()
    return first, chars, done and chars == max_tokens


def level(port: int, model: str, clients: int, seconds: float, max_tokens: int) -> dict:
    """`clients` threads sending completions back to back for `seconds`; the figures of the level."""
    lock = threading.Lock()
    ttfc: list[float] = []
    totals = {"chars": 0, "requests": 0, "failed": 0}
    deadline = time.perf_counter() + seconds

    def client(k: int) -> None:
        seed = k * 1_000_003
        while time.perf_counter() < deadline:
            seed += 1
            first, chars, ok = one_completion(port, model, max_tokens, seed)
            with lock:
                totals["requests"] += 1
                totals["chars"] += chars
                totals["failed"] += not ok
                if first is not None:
                    ttfc.append(first)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0  # the last requests end after the deadline: count their time too
    ttfc.sort()
    return {"clients": clients, "seconds": wall, "requests": totals["requests"], "failed": totals["failed"],
            "chars_per_s": totals["chars"] / wall,
            "ttfc_median_ms": 1000 * statistics.median(ttfc) if ttfc else None,
            "ttfc_p99_ms": 1000 * ttfc[min(len(ttfc) - 1, int(0.99 * len(ttfc)))] if ttfc else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="1,8,32", help="concurrency levels (default: 1,8,32)")
    parser.add_argument("--seconds", type=float, default=15, help="time per level (default: 15)")
    parser.add_argument("--rounds", type=int, default=2, help="times the levels are run (default: 2)")
    parser.add_argument("--max-tokens", type=int, default=200, help="characters per completion (default: 200)")
    parser.add_argument("--max-streams", type=int, default=64, help="the server's --max-streams (default: 64)")
    parser.add_argument("--checkpoint", type=Path, help="serve this run (default: a default-model run, made here)")
    args = parser.parse_args()
    levels = [int(c) for c in args.clients.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.checkpoint
        if run_dir is None:
            corpus, val = speed.corpus_files(Path(tmp))
            run_dir = Path(tmp) / "default"
            speed.worker("make_run", corpus=str(corpus), val_file=str(val), run_dir=str(run_dir), cell="gru",
                         hidden=256, layers=2, embedding=64)
        config = json.loads((run_dir / "config.json").read_text())["model"]
        process, port = start_server(run_dir, args.max_streams)
        try:
            results = {"machine": speed.machine(), "model": config, "max_tokens": args.max_tokens,
                       "command": " ".join(sys.argv), "levels": []}
            level(port, run_dir.name, 1, 1, 20)  # warm-up: first stepper, first connection
            results["rss_mb_start"] = rss_mb(process.pid)
            for round_ in range(1, args.rounds + 1):
                for clients in levels:
                    base = speed.worker("sample_chargen", run_dir=str(run_dir), streams=1, length=3000)["chars_per_s"]
                    figures = level(port, run_dir.name, clients, args.seconds, args.max_tokens)
                    figures.update(round=round_, baseline_chars_per_s=base, ratio=figures["chars_per_s"] / base,
                                   rss_mb_after=rss_mb(process.pid))
                    results["levels"].append(figures)
                    print(f"round {round_}: {clients} clients done", file=sys.stderr, flush=True)
            time.sleep(1)
            results["rss_mb_end"] = rss_mb(process.pid)
            results["machine"]["load_avg_end"] = os.getloadavg()
        finally:
            process.terminate()
            process.wait(timeout=30)

    print(f"server RSS: {results['rss_mb_start']:.1f} MB after loading and one request, "
          f"{results['rss_mb_end']:.1f} MB at the end")
    print("| round | clients | requests | failed | chars/s (all clients) | `generate`, 1 stream | ratio | "
          "first char median | p99 | server RSS after |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results["levels"]:
        print(f"| {r['round']} | {r['clients']} | {r['requests']} | {r['failed']} | {r['chars_per_s']:,.0f} | "
              f"{r['baseline_chars_per_s']:,.0f} | {r['ratio']:.2f}x | {r['ttfc_median_ms']:.1f} ms | "
              f"{r['ttfc_p99_ms']:.1f} ms | {r['rss_mb_after']:.1f} MB |")
    out = REPO / "bench" / "results" / f"serve-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out.relative_to(REPO)}", file=sys.stderr)


if __name__ == "__main__":
    main()
