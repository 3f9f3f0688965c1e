"""Self-describing run directories: atomic saves, safe loads (no code is ever executed).

    checkpoints/<run>/
      config.json         model + training config, corpus name and SHA-256, version, metrics
      model.safetensors   the best weights by validation loss (what generate uses)
      tokenizer.json      the vocabulary (char runs), loadable by tokenizers.Tokenizer.from_file
      trainer_state.pt    the latest weights, optimiser, step, RNG, carried hidden state: all that
                          --resume needs; read with torch.load(weights_only=True)

Each file is written to a temporary file in the same folder, fsynced, then moved into place
with os.replace, so a crash leaves every file either old or new, never half written. The files
are written state first, config.json last; the architecture and vocabulary never change within
a run, so any mix of old and new files still loads.
"""
from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any, Callable, IO

from chargen.errors import UserError, first_line
from chargen.progress import PROGRESS_KEYS

FORMAT = 1
CONFIG, WEIGHTS, TOKENIZER, STATE = "config.json", "model.safetensors", "tokenizer.json", "trainer_state.pt"
TMP_MARK = ".tmp-"
# What the training loop writes into trainer_state.pt and reads back on --resume.
STATE_KEYS = PROGRESS_KEYS | {"model", "optimizer", "rng", "hidden"}


def checkpoints_root() -> Path:
    """Default home of runs: $CHARGEN_CHECKPOINTS, else ./checkpoints."""
    return Path(os.environ.get("CHARGEN_CHECKPOINTS", "checkpoints"))


class WriteFailed(UserError):
    """A file could not be written (disk full, quota, read-only, no permission); its message names the file."""


# What a failed write means, and what the user can do about it, by errno.
WRITE_FAULTS = {
    errno.ENOSPC: ("the disk is full", "free some space"),
    errno.EDQUOT: ("the disk quota is exceeded", "free some space"),
    errno.EROFS: ("the file system is read-only", "write to another folder"),
    errno.EACCES: ("permission denied", "make the folder writable or write to another folder"),
    errno.EPERM: ("permission denied", "make the folder writable or write to another folder"),
}


def _os_error(error: BaseException) -> OSError | None:
    """The OSError behind a failed write. torch.save reports a failed write as a RuntimeError
    ("unexpected pos ...") raised while the OSError is being handled, so look along the chain."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def write_failure(path: str | Path, error: OSError) -> WriteFailed:
    """The one-line error for a file that could not be written."""
    what, remedy = WRITE_FAULTS.get(error.errno, (error.strerror or str(error), "write to another folder"))
    return WriteFailed(f"cannot write {path}: {what} ({remedy})")


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write a file through `write(f)` so that it is replaced whole or not at all.

    A write that fails for lack of space or permission raises WriteFailed naming the file; the
    temporary file is removed and the file it would have replaced is left as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as e:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        cause = _os_error(e) if isinstance(e, Exception) else None
        if cause is not None:
            raise write_failure(path, cause) from None
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Atomically write bytes."""
    atomic_write(path, lambda f: f.write(data))


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def clean_temporaries(run_dir: Path) -> None:
    """Remove temporary files left by a process that was killed while saving."""
    for leftover in Path(run_dir).glob(f".*{TMP_MARK}*"):
        leftover.unlink(missing_ok=True)


# -- finding runs ------------------------------------------------------------------------
def list_runs(root: Path | None = None) -> list[Path]:
    """Run directories under the checkpoints root, most recently written first."""
    root = Path(root or checkpoints_root())
    runs = [p for p in root.glob("*/") if (p / CONFIG).is_file()] if root.is_dir() else []
    return sorted(runs, key=lambda p: (p / CONFIG).stat().st_mtime, reverse=True)


def _available(root: Path) -> str:
    runs = list_runs(root)
    return ("runs in " + str(root) + ": " + ", ".join(p.name for p in runs)) if runs else \
        f"there are no runs in {root}; train one with: chargen train FILE --run NAME"


def resolve_run(run: str | None = None, checkpoint: str | Path | None = None) -> Path:
    """The run directory named by --run NAME or --checkpoint PATH, else the most recent run."""
    root = checkpoints_root()
    if checkpoint is not None:
        path = Path(checkpoint)
    elif run is not None:
        path = root / run
    else:
        runs = list_runs(root)
        if not runs:
            raise UserError(f"no run given and {_available(root)}")
        return runs[0]
    if not path.is_dir():
        raise UserError(f"run {str(path)!r} does not exist; {_available(root)}")
    return path


def make_run_dir(run_dir: Path) -> None:
    """Create a run folder (and its parents), or say in one line why it cannot be created."""
    try:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the run folder {run_dir}: {e.strerror or e}; "
                        "choose another --run or --checkpoint") from None


def check_complete(run_dir: Path, needs: tuple[str, ...]) -> None:
    """Raise a one-line error listing the files a run lacks."""
    if not Path(run_dir).is_dir():
        raise UserError(f"run {str(run_dir)!r} does not exist; {_available(checkpoints_root())}")
    missing = [name for name in needs if not (run_dir / name).is_file()]
    if missing:
        raise UserError(f"run {run_dir} is incomplete: missing {', '.join(missing)}; "
                        f"{_available(run_dir.parent)}")


# -- config.json -------------------------------------------------------------------------
def write_config(run_dir: Path, config: dict) -> None:
    """Atomically write config.json (pretty, UTF-8)."""
    text = json.dumps({"format": FORMAT, **config}, indent=2, ensure_ascii=False) + "\n"
    atomic_write_bytes(Path(run_dir) / CONFIG, text.encode("utf-8"))


def read_config(run_dir: Path) -> dict:
    """Read and check config.json."""
    path = Path(run_dir) / CONFIG
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        check_complete(Path(run_dir), (CONFIG,))
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise UserError(f"{path} is malformed ({first_line(e)}); the run cannot be used — retrain it") from None
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise UserError(f"{path} is not a chargen run config (no 'model' section); retrain the run")
    if config.get("format") != FORMAT:
        raise UserError(f"{path} has format {config.get('format')!r} (written by chargen "
                        f"{config.get('chargen_version', '?')}); this chargen reads format {FORMAT}: "
                        "retrain the run or use the chargen version that wrote it")
    _check_model_section(path, config["model"])
    return config


def _check_model_section(path: Path, model: dict) -> None:
    """Refuse a damaged model section here, in one line, rather than crash while building the model."""
    from dataclasses import fields

    from chargen.config import ModelConfig

    missing = [name for name in ("cell", "hidden", "layers", "head") if name not in model]
    if missing:
        raise UserError(f"{path} lacks model.{', model.'.join(missing)}; the run cannot be used — retrain it")
    for f in fields(ModelConfig):
        kind = type(f.default)
        if f.name not in model or kind not in (bool, int, float, str):
            continue
        value = model[f.name]
        # JSON has one number type: an integer is a fine float; true/false are no numbers here.
        accepted = (int, float) if kind is float else kind
        if not isinstance(value, accepted) or (kind is not bool and isinstance(value, bool)):
            what = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[kind]
            raise UserError(f"{path}: model.{f.name} is {value!r}, not {what}; the run cannot be used — retrain it")
    try:
        ModelConfig.from_dict(model).validate()
        if model["head"] in ("char", "classify") and model.get("vocab_size", 0) < 2:
            raise ValueError(f"a vocabulary of {model.get('vocab_size', 0)} ids")
    except (UserError, ValueError) as e:
        raise UserError(f"{path} holds impossible model settings ({e}); the run cannot be used — retrain it") from None


# -- weights -------------------------------------------------------------------------------
def write_weights(run_dir: Path, tensors: dict[str, Any], metadata: dict[str, str] | None = None) -> None:
    """Atomically write model.safetensors from a state dict (tied weights stored once)."""
    from safetensors.torch import save

    unique, seen = {}, set()
    for name, t in tensors.items():
        if t.data_ptr() in seen:  # tied weight: safetensors refuses shared storage
            continue
        seen.add(t.data_ptr())
        unique[name] = t.detach().to("cpu").contiguous()
    atomic_write_bytes(Path(run_dir) / WEIGHTS, save(unique, metadata=metadata))


def read_weights(run_dir: Path, framework: str = "pt") -> dict:
    """Tensors of model.safetensors, as torch tensors (framework="pt") or numpy arrays ("np")."""
    path = Path(run_dir) / WEIGHTS
    check_complete(Path(run_dir), (WEIGHTS,))
    try:
        if framework == "np":
            from safetensors.numpy import load_file
        else:
            from safetensors.torch import load_file
        tensors = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise UserError(f"{path} is damaged or truncated ({first_line(e)}); "
                        "retrain, or resume from trainer_state.pt with --resume") from None
    refuse_non_finite(path, tensors, "retrain, or resume from trainer_state.pt with --resume")
    return tensors


def refuse_non_finite(path: Path, tensors: dict, remedy: str) -> None:
    """A tensor holding NaN or infinity (a damaged or hand-edited file) makes every output garbage:
    refuse the file in one line naming the tensor, rather than sample replacement characters."""
    import numpy as np

    for name, tensor in tensors.items():
        if not isinstance(tensor, np.ndarray):
            if not getattr(tensor, "is_floating_point", lambda: False)():
                continue
            tensor = tensor.detach().cpu().float().numpy()  # bf16 has no numpy type
        finite = np.isfinite(tensor) if tensor.dtype.kind == "f" else None
        if finite is not None and not finite.all():
            raise UserError(f"{path}: tensor {name!r} holds {finite.size - int(finite.sum())} non-finite value(s) "
                            f"(NaN or infinity); the file is damaged — {remedy}")


# -- trainer state -------------------------------------------------------------------------
def write_state(run_dir: Path, state: dict) -> None:
    """Atomically write trainer_state.pt (tensors, numbers, strings, lists and dicts only)."""
    import torch

    atomic_write(Path(run_dir) / STATE, lambda f: torch.save(state, f))


def read_state(run_dir: Path) -> dict:
    """Read trainer_state.pt with weights_only=True: a pickled object is refused, never run."""
    import pickle
    import warnings

    import torch

    path = Path(run_dir) / STATE
    check_complete(Path(run_dir), (STATE,))
    # Its model.safetensors (the best weights) is a separate file: still fine for generate and eval.
    fresh = "start a new --run (model.safetensors, the best weights, still works for generate)"
    try:
        with warnings.catch_warnings():  # torch warns about odd pickle protocols: the error below says it all
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # The weights-only unpickler names a forbidden import as "GLOBAL module.name".
        objects = [line.strip() for line in str(e).splitlines() if "GLOBAL" in line]
        if objects:
            raise UserError(f"{path} holds Python objects, not only tensors and numbers ({objects[0][:100]}); "
                            f"refusing to load it, as loading could run code. Unless you know where it came "
                            f"from, delete the file and {fresh}") from None
        raise UserError(f"{path} is damaged (it does not read as a PyTorch checkpoint); it cannot be resumed: "
                        f"{fresh}") from None
    except Exception as e:  # torch raises many types for damaged files (RuntimeError, EOFError, KeyError...)
        raise UserError(f"{path} is damaged ({first_line(e)}); it cannot be resumed: {fresh}") from None
    if not isinstance(state, dict) or not STATE_KEYS <= state.keys():
        raise UserError(f"{path} is not a chargen trainer state (it lacks "
                        f"{sorted(STATE_KEYS - (state.keys() if isinstance(state, dict) else set()))[:4]}); "
                        f"it cannot be resumed: {fresh}")
    if not isinstance(state["model"], dict):
        raise UserError(f"{path} holds no model weights; it cannot be resumed: {fresh}")
    refuse_non_finite(path, state["model"], f"it cannot be resumed: {fresh}")
    return state
