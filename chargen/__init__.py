"""chargen: character-level recurrent language models, and the same core for time series.

    from chargen import train, generate, evaluate, load
    result = train("novel.txt", run="novel", max_time="2m")
    for piece in generate("novel", seed="It was", length=200):
        print(piece, end="")

Names are imported on first use, so `import chargen` (and `chargen generate`) does not load torch.
"""
__version__ = "0.1.0"

_API = {
    "train": ("chargen.api", "train"),
    "generate": ("chargen.api", "generate"),
    "evaluate": ("chargen.api", "evaluate"),
    "load": ("chargen.api", "load"),
    "ModelConfig": ("chargen.config", "ModelConfig"),
    "TrainConfig": ("chargen.config", "TrainConfig"),
    "SamplingSettings": ("chargen.sample", "SamplingSettings"),
    "UserError": ("chargen.errors", "UserError"),
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        import importlib

        module, attr = _API[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'chargen' has no attribute {name!r}")
