"""scadles: the ScaDLES engine's runs from Python (standard library; pandas and torch optional).

    read_run(out_dir)        an experiment's config, summary and per-run metrics/eval/drops (runs.py)
    train(config, overrides) runs scadles-train and reads what it wrote (train.py)
    load_state_dict(path)    weights of a model.safetensors or a distributed checkpoint's rank file as
    load_model(path)         a PyTorch state_dict, or loaded into the PyTorch twin (checkpoints.py; torch)
    read_safetensors(path)   any safetensors file, validated (safetensors.py)

python/README.md has examples; docs/observability.md and docs/checkpoints.md describe the files.
"""
from .checkpoints import load_model, load_state_dict
from .errors import ScadlesError, TrainError
from .models import build_twin
from .runs import Experiment, Run, read_json, read_jsonl, read_run
from .safetensors import SafeTensors, read_safetensors
from .train import find_train_binary, train

__all__ = ["Experiment", "Run", "SafeTensors", "ScadlesError", "TrainError", "build_twin", "find_train_binary",
           "load_model", "load_state_dict", "read_json", "read_jsonl", "read_run", "read_safetensors", "train"]
