"""runs.py: reads what scadles-train leaves in an experiment's out_dir into Python objects.

    <out_dir>/config.json           the resolved configuration (engine/experiment_write.c)
    <out_dir>/summary.json          one entry per run (engine/runner.c; absent while the experiment is
                                    stopped at a checkpoint)
    <out_dir>/<mode>-seed<k>/       one folder per run (mode x seed):
        metrics.jsonl               one line per step (engine/step/record.c)
        eval.jsonl                  one line per evaluation (engine/step/evaluate.c)
        drops.json                  each device's dropped samples by reason (engine/step/run.c)
        model.safetensors           the final weights (engine/checkpoint.c; see checkpoints.py)

The formats are described in docs/distributed.md and docs/observability.md. Tables (metrics, eval,
drops, the summary's runs) are lists of dicts, or pandas DataFrames when pandas is installed and
`frames` is not False. A truncated last line of a .jsonl file (a run killed while writing) is skipped
with a warning naming the file and line, as the engine's report does; a malformed line anywhere else
is an error naming file:line.
"""
import json
import os
import re
import warnings

from .errors import ScadlesError

RUN_DIR = re.compile(r"^(ddp|scadles)-seed(\d+)$")


def _pandas(frames):
    """pandas when frames is True (required) or None (when installed); None for plain lists."""
    if frames is False:
        return None
    try:
        import pandas
    except ImportError as e:
        if frames:
            raise ScadlesError(f"frames=True needs pandas, which cannot be imported ({e}); on Debian: "
                               "apt-get install python3-pandas (or pass frames=False for lists of dicts)") from None
        return None
    return pandas


def read_json(path):
    """One JSON file; a missing or malformed one raises ScadlesError naming it."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ScadlesError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        return json.loads(text)
    except ValueError as e:
        raise ScadlesError(f"{path}: malformed JSON ({e})") from None


def read_jsonl(path):
    """A .jsonl file as a list of dicts (see the module's note on a truncated last line)."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ScadlesError(f"cannot read {path}: {e.strerror or e}") from None
    lines = text.split("\n")
    complete = text.endswith("\n") or not text
    if complete:
        lines.pop()  # the empty piece after the last newline
    rows = []
    for i, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:
            if i == len(lines) and not complete:
                warnings.warn(f"{path}:{i}: skipped the truncated last line (the run was stopped while writing it)",
                              stacklevel=3)
                break
            raise ScadlesError(f"{path}:{i}: malformed line ({e})") from None
        rows.append(row)
    return rows


class Run:
    """One run (mode x seed) of an experiment: `name` ('scadles-seed1'), `mode`, `seed`, `path`,
    `metrics` and `eval` (a row per step / per evaluation), `drops` (a row per device; None when
    the run has not written drops.json yet), `summary` (its entry of summary.json, or None), and
    `model_path` (model.safetensors, or None before the run finished)."""

    def __init__(self, path, mode, seed, metrics, evals, drops, summary, model_path):
        self.path, self.mode, self.seed = path, mode, seed
        self.name = f"{mode}-seed{seed}"
        self.metrics, self.eval, self.drops = metrics, evals, drops
        self.summary, self.model_path = summary, model_path

    def __repr__(self):
        return f"<Run {self.name}: {len(self.metrics)} steps, {len(self.eval)} evaluations>"


class Experiment:
    """An experiment's out_dir: `path`, `config` (dict), `summary` (dict, or None while the
    experiment is stopped at a checkpoint), `runs` (name -> Run, in the order they ran),
    `table` (summary.json's runs: a row per run; empty without summary.json), `checkpoint` (the
    checkpoint folder, or None), and `log`/`command` when train() made it."""

    def __init__(self, path, config, summary, runs, table, checkpoint):
        self.path, self.config, self.summary = path, config, summary
        self.runs, self.table, self.checkpoint = runs, table, checkpoint
        self.log = None
        self.command = None

    def __getitem__(self, name):
        try:
            return self.runs[name]
        except KeyError:
            raise KeyError(f"{self.path} has no run '{name}' (it has: {', '.join(self.runs) or 'none'})") from None

    def __iter__(self):
        return iter(self.runs.values())

    def __len__(self):
        return len(self.runs)

    def __repr__(self):
        state = "finished" if self.summary is not None else "not finished"
        return f"<Experiment {self.path}: {', '.join(self.runs) or 'no runs'} ({state})>"


def _run_order(config):
    """Sort key of a run folder: seed-major, modes in the configured order (the runner's order)."""
    seeds = [int(s) for s in config.get("seeds", [])] if isinstance(config.get("seeds"), list) else []
    modes = list(config.get("modes", [])) if isinstance(config.get("modes"), list) else []

    def key(item):
        mode, seed = item
        return (seeds.index(seed) if seed in seeds else len(seeds), seed,
                modes.index(mode) if mode in modes else len(modes), mode)
    return key


def read_run(path, frames=None):
    """Reads an experiment's out_dir (what `scadles-train --config` or `--out` wrote) into an
    Experiment. frames: None = DataFrames when pandas is installed, True = DataFrames (pandas
    required), False = lists of dicts."""
    path = os.fspath(path)
    pd = _pandas(frames)
    if not os.path.isdir(path):
        raise ScadlesError(f"{path}: no such folder; give the out_dir of a scadles-train run")
    cfg_path = os.path.join(path, "config.json")
    if not os.path.exists(cfg_path):
        if os.path.exists(os.path.join(path, "metrics.jsonl")):
            raise ScadlesError(f"{path} is one run's folder; give its parent, the experiment's out_dir "
                               f"({os.path.dirname(os.path.abspath(path))})")
        raise ScadlesError(f"{path} has no config.json: not the out_dir of a scadles-train run "
                           "(scadles-train writes config.json there when a run starts)")
    config = read_json(cfg_path)
    sum_path = os.path.join(path, "summary.json")
    summary = read_json(sum_path) if os.path.exists(sum_path) else None
    entries = summary.get("runs", []) if isinstance(summary, dict) else []

    found = []
    for d in sorted(os.listdir(path)):
        m = RUN_DIR.match(d)
        if m and os.path.exists(os.path.join(path, d, "metrics.jsonl")):
            found.append((m.group(1), int(m.group(2))))
    found.sort(key=_run_order(config))

    runs = {}
    for mode, seed in found:
        rdir = os.path.join(path, f"{mode}-seed{seed}")
        metrics = read_jsonl(os.path.join(rdir, "metrics.jsonl"))
        ev_path = os.path.join(rdir, "eval.jsonl")
        evals = read_jsonl(ev_path) if os.path.exists(ev_path) else []
        dr_path = os.path.join(rdir, "drops.json")
        drops = None
        if os.path.exists(dr_path):
            dj = read_json(dr_path)
            if not isinstance(dj, dict) or not isinstance(dj.get("devices"), list):
                raise ScadlesError(f"{dr_path}: expected {{\"devices\": [...]}}")
            drops = dj["devices"]
        entry = next((e for e in entries if e.get("mode") == mode and e.get("seed") == seed), None)
        model = os.path.join(rdir, "model.safetensors")
        if pd is not None:
            metrics, evals = pd.DataFrame(metrics), pd.DataFrame(evals)
            drops = pd.DataFrame(drops) if drops is not None else None
        runs[f"{mode}-seed{seed}"] = Run(rdir, mode, seed, metrics, evals, drops, entry,
                                         model if os.path.exists(model) else None)
    table = pd.DataFrame(entries) if pd is not None else list(entries)
    ck = os.path.join(path, "checkpoint")
    return Experiment(path, config, summary, runs, table, ck if os.path.isdir(ck) else None)
