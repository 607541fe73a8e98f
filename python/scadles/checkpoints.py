"""checkpoints.py: the engine's weights in the PyTorch twins (models.py). Needs torch.

Two kinds of file hold weights (docs/checkpoints.md):
  - a model checkpoint, `<run>/model.safetensors` (engine/checkpoint.c): PyTorch state_dict names
    and shapes, metadata `format` "pt", `model`, `dataset`, `mode`, `step`; loaded as it is;
  - a distributed checkpoint's rank file, `<out_dir>/checkpoint/rank<r>.safetensors`
    (engine/dist_checkpoint.c): the device's fused blocks `net.params` (every trainable tensor, F32,
    back to back in the order the model was built), `net.buffers` (BN running means and variances,
    likewise) and `net.batches_tracked`, with the resolved experiment in its metadata. These are cut
    into the twin's state_dict in the twin's order, which is the engine's (engine/models.c builds
    the layers in the twins' registration order; the tests check the result against the same run's
    model.safetensors).

    state, info = load_state_dict("runs/x/scadles-seed1/model.safetensors")
    model, info = load_model("runs/x/checkpoint", rank=0)     # the twin in eval mode, weights loaded
"""
import collections
import json
import os

from .errors import ScadlesError
from .models import DATASETS, build_twin
from .safetensors import _torch, read_safetensors

DIST_FORMAT = "scadles-distributed-checkpoint"
# first conv layer and its channels at width 1, last linear layer, per model family
_FIRST = {"fmnist_cnn": ("conv1.weight", 16), "vgg": ("features.0.weight", 64)}
_CIFAR_RESNETS = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110")


def _first_layer(model):
    if model in _FIRST:
        return _FIRST[model]
    if model.startswith("vgg"):
        return _FIRST["vgg"]
    return ("conv1.weight", 16 if model in _CIFAR_RESNETS else 64)


def _locate(path, rank):
    """The weights file a path means: a file as is; a checkpoint folder's rank file; a run folder's
    model.safetensors; an out_dir's checkpoint/ rank file, or its only run's model.safetensors."""
    path = os.fspath(path)
    if os.path.isfile(path):
        return path
    if not os.path.isdir(path):
        raise ScadlesError(f"{path}: no such file or folder; give a model.safetensors, a run folder, a checkpoint "
                           "folder or an experiment's out_dir")
    for cand in (os.path.join(path, f"rank{rank}.safetensors"), os.path.join(path, "model.safetensors"),
                 os.path.join(path, "checkpoint", f"rank{rank}.safetensors")):
        if os.path.isfile(cand):
            return cand
    models = sorted(d for d in os.listdir(path) if os.path.isfile(os.path.join(path, d, "model.safetensors")))
    if len(models) == 1:
        return os.path.join(path, models[0], "model.safetensors")
    if models:
        raise ScadlesError(f"{path} holds the weights of {len(models)} runs ({', '.join(models)}); give one run's "
                           "folder")
    if os.path.isfile(os.path.join(path, "run.safetensors")):
        raise ScadlesError(f"{path} is a checkpoint folder without rank{rank}.safetensors (ranks are 0 .. devices-1)")
    raise ScadlesError(f"{path} holds no weights: no rank{rank}.safetensors, model.safetensors or "
                       "checkpoint/ in it")


def _config_near(file):
    """config.json of the experiment a model.safetensors belongs to (its folder or the one above)."""
    here = os.path.dirname(os.path.abspath(file))
    for d in (here, os.path.dirname(here)):
        p = os.path.join(d, "config.json")
        if os.path.isfile(p):
            try:
                with open(p, "r", encoding="utf-8") as f:
                    cfg = json.load(f)
                return cfg if isinstance(cfg, dict) else None
            except (OSError, ValueError):
                return None
    return None


def _infer(st, model):
    """(dataset, width) from the tensors of a model checkpoint that says neither."""
    first, base = _first_layer(model)
    last = "classifier.weight" if model.startswith("vgg") else "fc.weight"
    dataset = width = None
    if first in st and last in st:
        shape, classes = st.entry(first).shape, st.entry(last).shape[0]
        in_c = shape[1]
        dataset = {(1, 10): "fashion-mnist", (3, 10): "cifar10", (3, 100): "cifar100"}.get((in_c, classes))
        width = shape[0] / base
    return dataset, width


def _info(st, path, rank, model, width, dataset):
    meta = st.metadata
    if meta.get("format") == DIST_FORMAT:
        if meta.get("rank") == "-1":
            raise ScadlesError(f"{path} is the checkpoint's run file (the finished runs' summaries), not weights; "
                               "give rank<r>.safetensors or the checkpoint folder")
        try:
            exp = json.loads(meta.get("experiment", ""))
        except ValueError:
            raise ScadlesError(f"{path}: the checkpoint's metadata 'experiment' is not JSON; the file is damaged") from None
        info = {"kind": "checkpoint", "path": path, "model": exp.get("model"), "width": exp.get("width", 1),
                "dataset": exp.get("dataset"), "step": int(meta.get("step", -1)), "mode": meta.get("mode"),
                "seed": int(meta.get("seed", 0)), "rank": int(meta.get("rank", rank)),
                "devices": int(meta.get("devices", 0)), "experiment": exp}
    else:
        cfg = _config_near(path)
        info = {"kind": "model", "path": path, "model": meta.get("model"), "dataset": meta.get("dataset"),
                "width": None, "step": int(meta["step"]) if meta.get("step", "").isdigit() else None,
                "mode": meta.get("mode")}
        if cfg and cfg.get("model") == info["model"] and info["dataset"] in (None, cfg.get("dataset")):
            info["width"] = cfg.get("width", 1)
            info["dataset"] = cfg.get("dataset", info["dataset"])
    if model is not None:
        info["model"] = model
    if width is not None:
        info["width"] = width
    if dataset is not None:
        info["dataset"] = dataset
    if not info["model"]:
        raise ScadlesError(f"{path} does not say which model it holds (no 'model' metadata); pass model=NAME")
    if info["dataset"] is None or info["width"] is None:
        ds, w = _infer(st, info["model"])
        info["dataset"] = info["dataset"] or ds or "fashion-mnist"
        info["width"] = info["width"] if info["width"] is not None else (w or 1)
    if info["dataset"] not in DATASETS:
        raise ScadlesError(f"{path}: unknown dataset {info['dataset']!r}; pass dataset= one of {', '.join(DATASETS)}")
    return info


def _carve(st, path, info):
    """The rank file's fused blocks cut into the twin's state_dict."""
    torch = _torch()
    for name in ("net.params", "net.buffers", "net.batches_tracked"):
        e = st.entry(name)
        if e.dtype != ("I64" if name == "net.batches_tracked" else "F32"):
            raise ScadlesError(f"{path}: '{name}' is {e.dtype}; the engine writes "
                               f"{'I64' if name == 'net.batches_tracked' else 'F32'}")
    params, buffers = st.tensor("net.params").reshape(-1), st.tensor("net.buffers").reshape(-1)
    tracked = int(st.scalar("net.batches_tracked"))
    module, _ = build_twin(info["model"], info["dataset"], info["width"])
    trainable = {n for n, _ in module.named_parameters()}
    state, op, ob = collections.OrderedDict(), 0, 0
    need_p = sum(p.numel() for p in module.parameters())
    need_b = sum(t.numel() for k, t in module.state_dict().items()
                 if k.endswith((".running_mean", ".running_var")))
    what = f"{info['model']} at width {info['width']} on {info['dataset']}"
    if need_p != params.numel() or need_b != buffers.numel():
        raise ScadlesError(f"{path}: net.params holds {params.numel()} floats and net.buffers {buffers.numel()}, but "
                           f"the twin of {what} has {need_p} and {need_b}; pass the model, width and dataset the "
                           "run used")
    for key, t in module.state_dict().items():
        n = t.numel()
        if key in trainable:
            state[key] = params[op:op + n].reshape(t.shape).clone()
            op += n
        elif key.endswith((".running_mean", ".running_var")):
            state[key] = buffers[ob:ob + n].reshape(t.shape).clone()
            ob += n
        elif key.endswith(".num_batches_tracked"):
            state[key] = torch.tensor(tracked, dtype=torch.int64)
        else:
            raise ScadlesError(f"the twin of {what} has a tensor '{key}' the engine's checkpoint has no place for")
    return state


def load_state_dict(path, rank=0, verify=False, model=None, width=None, dataset=None):
    """The state_dict (name -> torch tensor) the weights at `path` make for the twin, and what is
    known about them (info: kind 'model' or 'checkpoint', model, width, dataset, step, mode, ...).
    path: a model.safetensors, a rank file, a run folder, a checkpoint folder or an out_dir (rank
    picks the device of a checkpoint). verify=True also checks a checkpoint's checksum (slow: pure
    Python). model/width/dataset override what the file and its config.json say."""
    file = _locate(path, rank)
    st = read_safetensors(file)
    info = _info(st, file, rank, model, width, dataset)
    if info["kind"] == "checkpoint":
        if verify:
            got, want = st.checksum(), st.metadata.get("checksum")
            if got != want:
                raise ScadlesError(f"{file} is damaged: its checksum is {got} but the file says {want}")
        return _carve(st, file, info), info
    state = collections.OrderedDict((name, st.tensor(name)) for name in st.names())
    return state, info


def load_model(path, rank=0, verify=False, model=None, width=None, dataset=None):
    """The twin of the run's model with the weights at `path` loaded (strict), in eval mode, and the
    info of load_state_dict."""
    state, info = load_state_dict(path, rank=rank, verify=verify, model=model, width=width, dataset=dataset)
    module, shape = build_twin(info["model"], info["dataset"], info["width"])
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ScadlesError(f"{info['path']} does not fit the twin of {info['model']} at width {info['width']} on "
                           f"{info['dataset']}: {e}; pass the model, width and dataset the run used") from None
    info["input_shape"] = shape
    return module.eval(), info
