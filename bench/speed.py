"""chargen's speed against plain PyTorch baselines, measured side by side in one run.

    python bench/speed.py                          # everything (~3-5 minutes on 2 idle cores)
    python bench/speed.py --only train,sample      # a subset: gemm, train, sample, startup, corpus
    python bench/speed.py --quick                  # shorter measurements (noisier)

Sections (each measurement runs in a fresh subprocess, so one cannot warm, tune or slow another;
glibc allocator settings in particular are per process):

- gemm: the machine's fp32 (and bf16) matrix-multiply rate through torch, and numpy's fp32 rate
  at the sampler's 64-stream shape: the ceilings the other figures are compared with.
- train: characters/second of chargen's real training loop (chargen.api.train, timed between
  steps through its should_stop hook) against bench/baseline_lstm.py, the plain nn.LSTM (--cell gru:
  nn.GRU) loop of the same size, batch and sequence length; the ratio; achieved model GFLOP/s (3x the forward
  FLOPs per character) as a fraction of the measured GEMM rate.
- sample: characters/second of `chargen.sample.generate_streams` for 1 and 64 streams of a 2x512 LSTM (or
  --cell gru) (random weights saved as a real run directory) against the naive one-step torch loop.
- startup: wall time of `python cli.py generate --length 1` (and of `import torch` for scale).
- corpus: reading + encoding MB/s of a large synthetic text (ASCII and non-ASCII) and the peak
  memory it adds; peak memory of a short `cli.py train` on it against the same run on a small file.

Prints a table (stdout) and writes bench/results/speed-<time>.json with the machine description.
The figures are only as quiet as the machine: the load average is recorded with them.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SHAKESPEARE = REPO.parent / "shared" / "corpora" / "tinyshakespeare.txt"
SECTIONS = ("gemm", "train", "sample", "startup", "corpus")


# -- helpers ------------------------------------------------------------------------------------
def flops_per_char(cell: str, embedding: int, hidden: int, layers: int, vocab: int) -> float:
    """Forward FLOPs per character: the recurrent layers' products plus the output layer."""
    gates = {"rnn": 1, "lstm": 4, "gru": 3}[cell] * hidden
    total = 0.0
    for layer in range(layers):
        inputs = embedding if layer == 0 else hidden
        total += 2 * gates * (inputs + hidden)
    return total + 2 * hidden * vocab


def run_json(cmd: list[str], env: dict | None = None, timeout: float = 600) -> dict:
    """Run a command that prints one JSON object as its last stdout line; returns it (plus peak RSS)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, **(env or {})})
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise SystemExit(f"timed out: {' '.join(cmd)}") from None
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{err[-3000:]}")
    lines = [line for line in out.splitlines() if line.startswith("{")]
    return json.loads(lines[-1])


def worker(name: str, **kw) -> dict:
    """Run one of this file's workers in a fresh Python process."""
    return run_json([sys.executable, str(Path(__file__)), "--worker", name, "--args", json.dumps(kw)])


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, MB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed_child(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of a command; its output is discarded (stderr shown on failure)."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=REPO,
                                env={**os.environ, **(env or {})})
        _, status, usage = os.wait4(proc.pid, 0)  # wait4: the child's own peak RSS
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            tail = err.read().decode(errors="replace")[-3000:]
            raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{tail}")
    return wall, usage.ru_maxrss / 1024


def machine() -> dict:
    """What the figures were measured on."""
    info = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "python": platform.python_version(),
            "platform": platform.platform(), "cpus": os.cpu_count(), "load_avg_start": os.getloadavg()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


# -- workers (each runs in its own process) -----------------------------------------------------
def w_gemm(repeats: int = 10) -> dict:
    """The best fp32 (and bf16) torch matrix-multiply rate over a few shapes, and numpy's fp32 rate
    at the sampler's 64-stream shape."""
    import numpy as np
    import torch

    def best_rate(m: int, k: int, n: int, dtype) -> float:
        a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        torch.mm(a, b)  # warm-up: threads, packing buffers
        best = 1e9
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - t0)
        return 2 * m * k * n / best / 1e9

    # Square products, and the LSTM's own: all time steps' input projections (B*T x H x 4H).
    shapes = [(1024, 1024, 1024), (2048, 2048, 2048), (8192, 512, 2048)]
    result = {"torch_threads": torch.get_num_threads(), "torch": torch.__version__, "numpy": np.__version__}
    from chargen.runtime import cpu_has_native_bf16

    # Without native bf16 (an AVX2-only CPU) torch emulates bf16 products: minutes for these shapes,
    # and a rate no chargen path uses (auto precision is fp32 there).
    kinds = (("fp32", torch.float32), ("bf16", torch.bfloat16)) if cpu_has_native_bf16() else (("fp32", torch.float32),)
    result["torch_bf16_gflops"] = None
    for name, dtype in kinds:
        rates = {"x".join(map(str, s)): best_rate(*s, dtype) for s in shapes}
        result[f"torch_{name}_by_shape"] = rates
        result[f"torch_{name}_gflops"] = max(rates.values())
    x, w = np.random.rand(64, 1024).astype(np.float32), np.random.rand(1024, 2048).astype(np.float32)
    best = 1e9
    for _ in range(repeats * 10):
        t0 = time.perf_counter()
        x @ w
        best = min(best, time.perf_counter() - t0)
    result["numpy_fp32_gflops_64x1024x2048"] = 2 * 64 * 1024 * 2048 / best / 1e9
    return result


def w_train_chargen(corpus: str, val_file: str, run_dir: str, precision: str, cell: str, hidden: int, layers: int,
                    embedding: int, streams: int, seq_len: int, steps: int, warmup: int) -> dict:
    """chargen's own training loop (api.train: allocator tuning, TextTask, train()), timed between steps."""
    from chargen import api
    from chargen.config import ModelConfig, TrainConfig

    marks: dict[int, float] = {}

    def mark(step: int) -> bool:
        marks.setdefault(step, time.perf_counter())
        return False

    config = TrainConfig(batch_size=streams, seq_len=seq_len, max_steps=warmup + steps, eval_every=10**9,
                         save_every=1e9, precision=precision)
    api.train(corpus, checkpoint=run_dir, model=ModelConfig(cell=cell, hidden=hidden, layers=layers,
                                                            embedding=embedding),
              config=config, val_file=val_file, should_stop=mark)
    seconds = marks[warmup + steps] - marks[warmup]
    from chargen.loop import autocast_dtype
    import torch

    chosen = autocast_dtype(config, torch.device("cpu"), cell)
    return {"chars_per_s": steps * streams * seq_len / seconds, "step_s": seconds / steps,
            "precision_used": {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[chosen]}


def w_make_run(corpus: str, val_file: str, run_dir: str, cell: str, hidden: int, layers: int, embedding: int) -> dict:
    """A real run directory with (nearly) random weights: chargen trains one step and saves."""
    from chargen import api
    from chargen.config import ModelConfig, TrainConfig

    api.train(corpus, checkpoint=run_dir, model=ModelConfig(cell=cell, hidden=hidden, layers=layers,
                                                            embedding=embedding),
              config=TrainConfig(max_steps=1, batch_size=8, seq_len=32), val_file=val_file)
    return {"run": run_dir}


def w_sample_chargen(run_dir: str, streams: int, length: int) -> dict:
    """chargen's sampler as users get it: sample.generate_streams (numpy stepper, sampling rule, decoding)."""
    from chargen.sample import SamplingSettings, generate_streams

    settings = SamplingSettings(temperature=0.8)
    for _ in generate_streams(Path(run_dir), "\n", 5, settings, streams, rng_seed=0):  # warm-up
        pass
    t0 = time.perf_counter()
    n = sum(1 for _ in generate_streams(Path(run_dir), "\n", length, settings, streams, rng_seed=0))
    seconds = time.perf_counter() - t0
    return {"chars_per_s": streams * n / seconds, "step_s": seconds / n, "torch_imported": "torch" in sys.modules}


def w_encode(path: str, run_dir: str) -> dict:
    """The corpus path of `chargen train`: read, count, encode and cache (corpus_cache.open_corpus),
    timed with its peak memory; then the three stages alone (read_text, char_counts, encode_chunked)."""
    import numpy as np  # noqa: F401 (imported before the baseline memory figure)

    from chargen.corpus import char_counts, encode_chunked, read_text
    from chargen.corpus_cache import open_corpus
    from chargen.vocab import Vocab

    mb = Path(path).stat().st_size / 1e6
    base = peak_rss_mb()
    c0, t0 = time.process_time(), time.perf_counter()
    encoded = open_corpus(Path(path), Path(run_dir))
    c1, t1 = time.process_time(), time.perf_counter()
    added = peak_rss_mb() - base
    result = {"file_mb": mb, "chars": len(encoded.ids), "vocab": len(encoded.vocab),
              "ids_dtype": str(encoded.ids.dtype),
              "total_mb_s": mb / (t1 - t0), "total_mb_per_cpu_s": mb / (c1 - c0),  # equal on an idle machine
              "added_peak_rss_mb": added, "peak_over_file": added / mb}
    del encoded
    t0 = time.perf_counter()
    text = read_text(Path(path))
    t1 = time.perf_counter()
    counts = char_counts(text.text)
    t2 = time.perf_counter()
    encode_chunked(Vocab(sorted(counts)), text.text)
    t3 = time.perf_counter()
    result.update({"read_mb_s": mb / (t1 - t0), "count_mb_s": mb / (t2 - t1), "encode_mb_s": mb / (t3 - t2)})
    return result


def w_make_text(path: str, chars: int, unicode: bool) -> dict:
    """Write a synthetic corpus (in a worker: building it in the main process would raise that process's
    peak RSS, which Linux passes on to every child it starts afterwards as the child's own ru_maxrss)."""
    Path(path).write_text(synthetic_text(chars, unicode=unicode), encoding="utf-8")
    return {"path": path, "bytes": Path(path).stat().st_size}


WORKERS = {"make_text": w_make_text, "gemm": w_gemm, "train_chargen": w_train_chargen, "make_run": w_make_run,
           "sample_chargen": w_sample_chargen, "encode": w_encode}


# -- sections -------------------------------------------------------------------------------------
def corpus_files(tmp: Path) -> tuple[Path, Path]:
    """The training text (tinyshakespeare when present, else synthetic) and a small validation file."""
    if SHAKESPEARE.is_file():
        text = SHAKESPEARE.read_text(encoding="utf-8")
        corpus = SHAKESPEARE
    else:
        text = synthetic_text(1_100_000, unicode=False)
        corpus = tmp / "synthetic.txt"
        corpus.write_text(text, encoding="utf-8")
    val = tmp / "val.txt"
    val.write_text(text[-2000:], encoding="utf-8")
    return corpus, val


def synthetic_text(chars: int, unicode: bool, seed: int = 0) -> str:
    """Prose-like text: shuffled lines of tinyshakespeare (or words), optionally with non-ASCII characters."""
    import numpy as np

    rng = np.random.default_rng(seed)
    if SHAKESPEARE.is_file():
        lines = SHAKESPEARE.read_text(encoding="utf-8").splitlines(keepends=True)
    else:
        words = ["the", "king", "and", "queen", "of", "a", "time", "thee", "love", "night", "shall", "be"]
        lines = [" ".join(rng.choice(words, 8)) + "\n" for _ in range(5000)]
    if unicode:  # curly quotes, dashes and accents, as in most real books: a two-byte-per-char str
        extra = ["\u201cCaf\u00e9,\u201d said she \u2014 na\u00efve.\n",
                 "\u00bfQu\u00e9 pas\u00f3? \u2018Stra\u00dfe\u2019\n"]
        lines = lines + extra * (len(lines) // 20)
    block = "".join(lines[i] for i in rng.permutation(len(lines)))
    return (block * (chars // len(block) + 1))[:chars]


def section_train(args, tmp: Path, results: dict) -> None:
    corpus, val = corpus_files(tmp)
    size = dict(cell=args.cell, hidden=args.hidden, layers=args.layers, embedding=args.embedding)
    shape = dict(streams=args.streams, seq_len=args.seq_len, steps=args.train_steps, warmup=args.warmup)
    plain = f"baseline: plain nn.{args.cell.upper()} loop"
    baseline_cmd = [sys.executable, str(BENCH / "baseline_lstm.py"), "train", "--cell", args.cell, "--hidden",
                    str(args.hidden),
                    "--layers", str(args.layers), "--embedding", str(args.embedding), "--streams", str(args.streams),
                    "--seq-len", str(args.seq_len), "--steps", str(args.train_steps), "--warmup", str(args.warmup)]
    rows = {}
    for rep in range(args.repeats):  # interleaved, so drift in the machine's load hits every row alike
        runs = {
            plain: lambda: run_json(baseline_cmd),
            "baseline + glibc allocator thresholds": lambda: run_json(baseline_cmd + ["--allocator"]),
            "chargen --precision fp32": lambda rep=rep: worker(
                "train_chargen", corpus=str(corpus), val_file=str(val), run_dir=str(tmp / f"fp32-{rep}"),
                precision="fp32", **size, **shape),
            "chargen (default --precision auto)": lambda rep=rep: worker(
                "train_chargen", corpus=str(corpus), val_file=str(val), run_dir=str(tmp / f"auto-{rep}"),
                precision="auto", **size, **shape),
        }
        for name, run in runs.items():
            r = run()
            info(f"  train {name}: {r['chars_per_s']:,.0f} chars/s")
            best = rows.get(name)
            if best is None or r["chars_per_s"] > best["chars_per_s"]:
                rows[name] = r
    gemm = results.get("gemm") or worker("gemm")
    results["gemm"] = gemm
    flops = 3 * flops_per_char(args.cell, args.embedding, args.hidden, args.layers, 66)
    base = rows[plain]["chars_per_s"]
    for r in rows.values():
        r["vs_baseline"] = r["chars_per_s"] / base
        r["model_gflops"] = r["chars_per_s"] * flops / 1e9
        r["of_fp32_gemm"] = r["model_gflops"] / gemm["torch_fp32_gflops"]
    results["train"] = {"model": f"{args.layers}x{args.hidden} {args.cell.upper()}, embedding {args.embedding}, "
                                 "vocab 66",
                        "batch": f"{args.streams} streams x {args.seq_len}", "timed_steps": args.train_steps,
                        "train_flops_per_char": flops, "rows": rows}


def section_sample(args, tmp: Path, results: dict) -> None:
    corpus, val = corpus_files(tmp)
    run_dir = tmp / "sample-run"
    worker("make_run", corpus=str(corpus), val_file=str(val), run_dir=str(run_dir),
           cell=args.cell, hidden=args.hidden, layers=args.layers, embedding=args.embedding)
    results["_run_dir"] = str(run_dir)
    rows = {}
    for streams, length in ((1, args.sample_length), (64, max(20, args.sample_length // 10))):
        ours = worker("sample_chargen", run_dir=str(run_dir), streams=streams, length=length)
        theirs = run_json([sys.executable, str(BENCH / "baseline_lstm.py"), "sample", "--weights",
                           str(run_dir / "model.safetensors"), "--cell", args.cell, "--hidden", str(args.hidden),
                           "--layers",
                           str(args.layers), "--embedding", str(args.embedding), "--streams", str(streams),
                           "--length", str(max(20, length // 4))])
        rows[f"{streams} stream{'s' if streams > 1 else ''}"] = {
            "chargen_chars_per_s": ours["chars_per_s"], "baseline_chars_per_s": theirs["chars_per_s"],
            "vs_baseline": ours["chars_per_s"] / theirs["chars_per_s"], "torch_imported": ours["torch_imported"]}
        info(f"  sample {streams} streams: chargen {ours['chars_per_s']:,.0f}, "
             f"baseline {theirs['chars_per_s']:,.0f} chars/s")
    flops = flops_per_char(args.cell, args.embedding, args.hidden, args.layers, 66)
    gemm = results.get("gemm") or worker("gemm")
    results["gemm"] = gemm
    ceiling = gemm["numpy_fp32_gflops_64x1024x2048"] * 1e9 / flops
    results["sample"] = {"model": f"{args.layers}x{args.hidden} {args.cell.upper()}", "forward_flops_per_char": flops,
                         "fp32_ceiling_64_streams_chars_per_s": ceiling, "rows": rows}


def section_startup(args, tmp: Path, results: dict) -> None:
    run_dir = results.get("_run_dir")
    if run_dir is None:
        corpus, val = corpus_files(tmp)
        run_dir = str(tmp / "sample-run")
        worker("make_run", corpus=str(corpus), val_file=str(val), run_dir=run_dir,
               hidden=args.hidden, layers=args.layers, embedding=args.embedding)
    cmds = {"python cli.py generate --length 1": [sys.executable, "cli.py", "generate", "--checkpoint", run_dir,
                                                  "--length", "1"],
            "python -c 'import torch' (for scale)": [sys.executable, "-c", "import torch"]}
    rows = {}
    for name, cmd in cmds.items():
        walls = sorted(timed_child(cmd)[0] for _ in range(args.startup_repeats))
        rows[name] = {"best_s": walls[0], "median_s": walls[len(walls) // 2]}
        info(f"  startup {name}: best {walls[0]:.2f} s, median {walls[len(walls) // 2]:.2f} s")
    results["startup"] = rows


def section_corpus(args, tmp: Path, results: dict) -> None:
    rows = {}
    chars = int(args.corpus_mb * 1e6)
    small = tmp / "small.txt"
    worker("make_text", path=str(small), chars=200_000, unicode=False)
    train_cmd = lambda path, run: [sys.executable, "cli.py", "train", str(path), "--checkpoint", str(tmp / run),
                                   "--max-steps", "1", "--cell", "lstm", "--hidden", "64", "--layers", "1",
                                   "--embedding", "16",
                                   "--val-fraction", "0.1"]
    _, small_rss = timed_child(train_cmd(small, "mem-small"))
    for kind in ("ascii", "unicode"):
        path = tmp / f"large-{kind}.txt"
        worker("make_text", path=str(path), chars=chars, unicode=kind == "unicode")
        try:
            r = worker("encode", path=str(path), run_dir=str(tmp / f"encode-{kind}"))
            shutil.rmtree(tmp / f"encode-{kind}", ignore_errors=True)
            wall, rss = timed_child(train_cmd(path, f"mem-{kind}"))
            shutil.rmtree(tmp / f"mem-{kind}", ignore_errors=True)
        finally:
            path.unlink()
        r["train_peak_rss_mb"] = rss
        r["train_small_file_peak_rss_mb"] = small_rss
        r["train_added_over_file"] = (rss - small_rss) / r["file_mb"]
        r["train_wall_s"] = wall
        rows[kind] = r
        info(f"  corpus {kind}: {r['total_mb_s']:.0f} MB/s, training peak RSS {rss:.0f} MB "
             f"({small_rss:.0f} MB on a small file)")
    results["corpus"] = rows


# -- report ---------------------------------------------------------------------------------------
def info(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def table(results: dict) -> str:
    lines = []
    if "gemm" in results:
        g = results["gemm"]
        lines += ["## Machine rates", f"torch fp32 GEMM (best of 3 shapes): {g['torch_fp32_gflops']:.0f} GFLOP/s;  "
                  f"bf16: {g['torch_bf16_gflops'] or 0:.0f} GFLOP/s (0: no native bf16);  numpy fp32 64x1024x2048: "
                  f"{g['numpy_fp32_gflops_64x1024x2048']:.0f} GFLOP/s ({g['torch_threads']} torch threads)", ""]
    if "train" in results:
        t = results["train"]
        lines += [f"## Training: {t['model']}, {t['batch']}",
                  "| loop | chars/s | vs baseline | model GFLOP/s | of fp32 GEMM |", "|---|---|---|---|---|"]
        for name, r in t["rows"].items():
            lines.append(f"| {name}{' [' + r['precision_used'] + ']' if 'precision_used' in r else ''} | "
                         f"{r['chars_per_s']:,.0f} | {r['vs_baseline']:.2f}x | {r['model_gflops']:.0f} | "
                         f"{r['of_fp32_gemm']:.0%} |")
        lines.append("")
    if "sample" in results:
        s = results["sample"]
        lines += [f"## Sampling: {s['model']} (fp32 ceiling for 64 streams at numpy's GEMM rate: "
                  f"{s['fp32_ceiling_64_streams_chars_per_s']:,.0f} chars/s)",
                  "| streams | chargen chars/s | naive one-step torch loop chars/s | ratio |", "|---|---|---|---|"]
        for name, r in s["rows"].items():
            lines.append(f"| {name} | {r['chargen_chars_per_s']:,.0f} | {r['baseline_chars_per_s']:,.0f} | "
                         f"{r['vs_baseline']:.1f}x |")
        lines.append("")
    if "startup" in results:
        lines += ["## Start-up", "| command | best | median |", "|---|---|---|"]
        for name, r in results["startup"].items():
            lines.append(f"| {name} | {r['best_s']:.2f} s | {r['median_s']:.2f} s |")
        lines.append("")
    if "corpus" in results:
        lines += ["## Large corpus (read + count + encode + cache, as `chargen train` does it)",
                  "| text | MB | MB/s (per CPU s) | stages alone MB/s: read / count / encode | peak +RSS | "
                  "training peak RSS (small file) | training +RSS / file |", "|---|---|---|---|---|---|---|"]
        for kind, r in results["corpus"].items():
            lines.append(f"| {kind} | {r['file_mb']:.0f} | {r['total_mb_s']:.0f} ({r['total_mb_per_cpu_s']:.0f}) | "
                         f"{r['read_mb_s']:.0f} / {r['count_mb_s']:.0f} / {r['encode_mb_s']:.0f} | "
                         f"{r['added_peak_rss_mb']:.0f} MB | "
                         f"{r['train_peak_rss_mb']:.0f} MB ({r['train_small_file_peak_rss_mb']:.0f} MB) | "
                         f"{r['train_added_over_file']:.2f}x |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections: {', '.join(SECTIONS)}")
    parser.add_argument("--quick", action="store_true", help="fewer steps and characters (noisier figures)")
    parser.add_argument("--cell", choices=("lstm", "gru"), default="lstm",
                        help="recurrent cell of chargen and of the plain baseline (the issue's targets are for the "
                             "LSTM)")
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--embedding", type=int, default=64)
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--train-steps", type=int, default=12, help="timed training steps per loop")
    parser.add_argument("--warmup", type=int, default=3, help="untimed training steps first")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved repeats of the training loops (best kept)")
    parser.add_argument("--sample-length", type=int, default=3000, help="characters sampled for one stream")
    parser.add_argument("--startup-repeats", type=int, default=5)
    parser.add_argument("--corpus-mb", type=float, default=200, help="size of the synthetic large corpus")
    parser.add_argument("--out", type=Path, help="JSON file (default: bench/results/speed-<time>.json)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--args", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if str(REPO) not in sys.path:  # workers import chargen from this checkout even when it is not installed
        sys.path.insert(0, str(REPO))
    if args.worker:
        print(json.dumps(WORKERS[args.worker](**json.loads(args.args or "{}"))))
        return
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    if args.quick:
        args.train_steps, args.warmup, args.sample_length = 4, 2, 600
        args.startup_repeats, args.corpus_mb = 3, min(args.corpus_mb, 50)

    results: dict = {"machine": machine(), "options": {**vars(args), "out": str(args.out) if args.out else None}}
    tmp = Path(tempfile.mkdtemp(prefix="chargen-speed-"))
    env_root = os.environ.get("CHARGEN_CHECKPOINTS")
    os.environ["CHARGEN_CHECKPOINTS"] = str(tmp / "checkpoints")  # never touch the user's runs
    try:
        for name in SECTIONS:
            if name in sections:
                info(f"{name}...")
                t0 = time.perf_counter()
                if name == "gemm":
                    results["gemm"] = worker("gemm")
                else:
                    globals()[f"section_{name}"](args, tmp, results)
                info(f"  ({time.perf_counter() - t0:.0f} s)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if env_root is None:
            os.environ.pop("CHARGEN_CHECKPOINTS", None)
    results.pop("_run_dir", None)
    results["machine"]["load_avg_end"] = os.getloadavg()
    out = args.out or BENCH / "results" / f"speed-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    m = results["machine"]
    print(f"{m.get('cpu', '?')}, {m['cpus']} CPUs, load average {m['load_avg_start'][0]:.1f} at start, "
          f"{m['load_avg_end'][0]:.1f} at end; JSON: {out}")


if __name__ == "__main__":
    main()
