#!/usr/bin/env python3
"""compare_runs.py: one table and one report over several experiment runs that differ in a
setting the runner does not compare by itself (e.g. compression off vs adaptive).

    scripts/compare_runs.py OUT LABEL=DIR [LABEL=DIR ...] [--train PATH/scadles-train] [--target ACC]

Each DIR is an experiment's out_dir (summary.json, config.json, <mode>-seed<k>/ folders). OUT gets
a summary.json whose runs are renamed to LABEL (LABEL-<mode> when DIR holds several modes), links
to the run folders (one LABEL may name several DIRs with different seeds), the first DIR's config.json, and report.html with every plot (accuracy,
batches, buffers, bytes and compression on/off against time) drawn by `scadles-train --report`.
Prints a table: time to target, final accuracy, bytes sent, compressed steps. --target ACC (0..1)
draws the target line there instead of at the first DIR's target_accuracy (e.g. for runs that were
given an unreachable target to train for their whole budget).
Only the Python standard library is used."""
import json
import os
import re
import subprocess
import sys


def die(msg):
    sys.stderr.write("compare_runs: " + msg + "\n")
    sys.exit(2)


def metrics_counts(path):
    """(steps, compressed steps) from a run's metrics.jsonl."""
    steps = comp = 0
    try:
        with open(path) as f:
            for line in f:
                try:
                    r = json.loads(line)
                except ValueError:
                    continue
                steps += 1
                if r.get("compression") is True:
                    comp += 1
    except OSError:
        pass
    return steps, comp


def main(argv):
    train = None
    target = None
    args = []
    i = 0
    while i < len(argv):
        if argv[i] == "--train":
            if i + 1 >= len(argv):
                die("--train needs the path of scadles-train")
            train = argv[i + 1]
            i += 2
            continue
        if argv[i] == "--target":
            try:
                target = float(argv[i + 1])
            except (IndexError, ValueError):
                target = -1.0
            if not 0 < target <= 1:
                die("--target needs an accuracy in (0, 1], e.g. 0.85")
            i += 2
            continue
        args.append(argv[i])
        i += 1
    if len(args) < 2:
        die("usage: compare_runs.py OUT LABEL=DIR [LABEL=DIR ...] [--train PATH/scadles-train] [--target ACC]")
    out = args[0]
    os.makedirs(out, exist_ok=True)
    runs, table, first_cfg = [], [], None
    meta = {}
    for spec in args[1:]:
        if "=" not in spec:
            die("'%s' is not LABEL=DIR" % spec)
        label, d = spec.split("=", 1)
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,60}", label):
            die("label '%s' must be 1-60 letters, digits, '_' or '-'" % label)
        try:
            with open(os.path.join(d, "summary.json")) as f:
                s = json.load(f)
        except (OSError, ValueError) as e:
            die("cannot read %s/summary.json (%s): run the experiment first" % (d, e))
        if first_cfg is None and os.path.exists(os.path.join(d, "config.json")):
            first_cfg = os.path.join(d, "config.json")
        for k in ("experiment", "target_accuracy", "devices"):
            meta.setdefault(k, s.get(k))
        modes = {r["mode"] for r in s.get("runs", [])}
        for r in s.get("runs", []):
            name = label if len(modes) == 1 else "%s-%s" % (label, r["mode"])
            src = os.path.abspath(os.path.join(d, "%s-seed%d" % (r["mode"], r["seed"])))
            dst = os.path.join(out, "%s-seed%d" % (name, r["seed"]))
            if os.path.islink(dst):
                os.unlink(dst)
            if not os.path.exists(dst):
                os.symlink(src, dst)
            steps, comp = metrics_counts(os.path.join(src, "metrics.jsonl"))
            r2 = dict(r)
            r2["mode"] = name
            r2["compressed_steps"] = comp
            runs.append(r2)
            table.append((name, r["seed"], r.get("time_to_target_s", -1), r.get("final_accuracy", 0),
                          r.get("best_accuracy", 0), r.get("bytes_sent", 0), steps, comp))
    if first_cfg:
        with open(first_cfg) as f, open(os.path.join(out, "config.json"), "w") as g:
            g.write(f.read())
    labels = []
    for a in args[1:]:
        if a.split("=", 1)[0] not in labels:
            labels.append(a.split("=", 1)[0])
    summary = {"experiment": "comparison of " + ", ".join(labels),
               "target_accuracy": target if target is not None else meta.get("target_accuracy"), "devices": meta.get("devices"), "runs": runs}
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print("%-24s %5s %12s %9s %9s %14s %7s %11s" % ("run", "seed", "to_target_s", "final", "best", "bytes_sent",
                                                   "steps", "compressed"))
    for name, seed, ttt, fin, best, by, steps, comp in table:
        print("%-24s %5d %12s %8.2f%% %8.2f%% %14d %7d %11d" % (name, seed, "%.1f" % ttt if ttt is not None and ttt >= 0 else "not reached",
                                                             100 * fin, 100 * best, by, steps, comp))
    if train is None:
        here = os.path.dirname(os.path.abspath(__file__))
        cand = os.path.join(here, "..", "build", "apps", "scadles-train")
        train = cand if os.path.exists(cand) else None
    if train:
        rc = subprocess.call([train, "--report", out])
        if rc != 0:
            die("scadles-train --report %s failed (exit %d)" % (out, rc))
    else:
        print("no scadles-train found: pass --train PATH to draw %s/report.html" % out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
