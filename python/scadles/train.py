"""train.py: runs scadles-train from Python and returns what it wrote (runs.read_run).

    exp = train({"model": "fmnist_cnn", "devices": {"rates": [40, 25]}}, {"max_steps": 3})
    exp["scadles-seed1"].metrics

The configuration (a dict, or the path of an experiment file) goes to `--config`, each override to
`--set key=value` (the engine validates both and names a bad key), and the out_dir is always set,
so the result is where this function looks: the `out_dir` argument, else an `out_dir` the overrides
or the configuration name, else a new temporary folder. The binary is looked for in this order:
the `binary` argument, $SCADLES_TRAIN, `<build_dir>/apps/scadles-train`, the repository's
build/apps/scadles-train, ./build/apps/scadles-train, then `scadles-train` on PATH.
"""
import json
import os
import shutil
import subprocess
import tempfile

from .errors import ScadlesError, TrainError
from .runs import read_run

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def find_train_binary(binary=None, build_dir=None):
    """The path of scadles-train (see the module's search order); ScadlesError lists what was tried."""
    tried = []

    def ok(p):
        tried.append(p)
        return os.path.isfile(p) and os.access(p, os.X_OK)

    if binary is not None:
        b = os.fspath(binary)
        if ok(b):
            return os.path.abspath(b)
        raise ScadlesError(f"binary={b!r} is not an executable file")
    env = os.environ.get("SCADLES_TRAIN")
    if env:
        if ok(env):
            return os.path.abspath(env)
        raise ScadlesError(f"$SCADLES_TRAIN={env!r} is not an executable file")
    dirs = [os.fspath(build_dir)] if build_dir is not None else []
    dirs += [os.path.join(REPO, "build"), os.path.join(os.getcwd(), "build")]
    for d in dirs:
        p = os.path.join(d, "apps", "scadles-train")
        if ok(p):
            return os.path.abspath(p)
    on_path = shutil.which("scadles-train")
    if on_path:
        return on_path
    raise ScadlesError("scadles-train not found (tried " + ", ".join(tried) + " and PATH); build it with "
                       f"`cmake -S {REPO} -B {REPO}/build && cmake --build {REPO}/build --target scadles-train`, "
                       "or pass binary= / build_dir=, or set SCADLES_TRAIN")


def _value(v):
    """An override's value as --set takes it: JSON for lists and objects, true/false, numbers exact."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(list(v) if isinstance(v, tuple) else v)
    if isinstance(v, float):
        return repr(v)
    if v is None:
        raise ScadlesError("an override's value is None; give a value (the engine has no null settings)")
    return str(v)


def _overrides(overrides):
    """[(key, value string)] from a dict, a list of (key, value) pairs or a list of 'key=value'."""
    if overrides is None:
        return []
    items = overrides.items() if isinstance(overrides, dict) else overrides
    out = []
    for it in items:
        if isinstance(it, str):
            key, eq, val = it.partition("=")
            if not eq or not key:
                raise ScadlesError(f"override {it!r}: expected 'key=value', e.g. 'optimizer.lr=0.1'")
            out.append((key.strip(), val.strip()))
        else:
            try:
                key, val = it
            except (TypeError, ValueError):
                raise ScadlesError(f"override {it!r}: expected a (key, value) pair or 'key=value'") from None
            out.append((str(key), _value(val)))
    return out


def train(config=None, overrides=None, out_dir=None, *, binary=None, build_dir=None, stop_at=None, resume=None,
          timeout=None, frames=None, cwd=None, env=None):
    """Runs `scadles-train --config CONFIG [--set k=v ...] [--stop-at N] [--resume DIR]` and returns
    runs.read_run(out_dir) with `log` (its stdout and stderr) and `command` set.

    config: a dict (written to a temporary experiment file), the path of an experiment file, or None
    (the engine's defaults). overrides: a dict, (key, value) pairs or 'key=value' strings. stop_at,
    resume: --stop-at STEP, --resume CHECKPOINT_DIR (docs/checkpoints.md). timeout: seconds before
    the run is killed. A failure (non-zero exit, other than a stop) raises TrainError with the output."""
    exe = find_train_binary(binary, build_dir)
    sets = _overrides(overrides)
    cfg_dict = None
    if isinstance(config, dict):
        cfg_dict = config
    elif config is not None:
        cpath = os.fspath(config)
        try:
            with open(cpath, "r", encoding="utf-8") as f:
                cfg_dict = json.load(f)
        except OSError as e:
            raise ScadlesError(f"cannot read the experiment file {cpath}: {e.strerror or e}") from None
        except ValueError as e:
            raise ScadlesError(f"{cpath}: malformed JSON ({e})") from None
    if out_dir is None:
        named = [v for k, v in sets if k == "out_dir"]
        if named:
            out_dir = named[-1]
        elif isinstance(cfg_dict, dict) and cfg_dict.get("out_dir"):
            out_dir = cfg_dict["out_dir"]
        else:
            out_dir = tempfile.mkdtemp(prefix="scadles-run-")
    out_dir = os.path.abspath(os.path.join(cwd or os.getcwd(), os.fspath(out_dir)))
    sets = [(k, v) for k, v in sets if k != "out_dir"] + [("out_dir", out_dir)]

    tmp = None
    try:
        if isinstance(config, dict) or config is None:
            fd, tmp = tempfile.mkstemp(prefix="scadles-experiment-", suffix=".json")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(config or {}, f, indent=1)
            cfg_arg = tmp
        else:
            cfg_arg = os.path.abspath(os.path.join(cwd or os.getcwd(), os.fspath(config)))
        cmd = [exe, "--config", cfg_arg]
        for k, v in sets:
            cmd += ["--set", f"{k}={v}"]
        if resume is not None:
            cmd += ["--resume", os.fspath(resume)]
        if stop_at is not None:
            cmd += ["--stop-at", str(int(stop_at))]
        try:
            r = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            out = e.output.decode(errors="replace") if isinstance(e.output, bytes) else (e.output or "")
            raise TrainError(f"scadles-train ran past timeout={timeout} s and was killed; its last output:\n"
                             f"{out[-2000:]}", None, cmd, out) from None
        except OSError as e:
            raise ScadlesError(f"cannot run {exe}: {e.strerror or e}") from None
    finally:
        if tmp is not None:
            os.unlink(tmp)
    if r.returncode != 0:
        raise TrainError(f"scadles-train exited with status {r.returncode}; its last output:\n{r.stdout[-2000:]}",
                         r.returncode, cmd, r.stdout)
    exp = read_run(out_dir, frames=frames)
    exp.log, exp.command = r.stdout, cmd
    return exp
