#!/usr/bin/env python3
"""compare_clocks.py: how far the virtual clock can be trusted (docs/distributed.md). Puts a run
under the real clock (e.g. scripts/edge_run.sh's out_dir) beside the same experiment replayed under
the virtual clock (same seeds, rates, links, and a measured compute profile), mode by mode:

    scripts/compare_clocks.py REAL_DIR VIRTUAL_DIR [--skip-first N] [--json OUT.json]

For each mode and seed present in both: steps, mean step time (the difference of consecutive
step end times in metrics.jsonl), its compute / communication / wait parts, time to the target
(summary.json), and the ratios virtual / real. --skip-first N leaves the first N steps out of the
means (start-up: the first step of a real run also pays connection set-up and the first window);
default 1. Steps that an evaluation followed are counted apart ("eval steps"), since the real clock
pays the evaluation inside the next step while the virtual clock charges none.
Only the Python standard library is used."""
import json
import os
import sys


def die(msg):
    sys.stderr.write("compare_clocks: " + msg + "\n")
    sys.exit(2)


def load_jsonl(path):
    rows = []
    try:
        with open(path) as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if line:
                    try:
                        rows.append(json.loads(line))
                    except ValueError as e:
                        die("%s:%d: not JSON (%s); is the run complete?" % (path, n, e))
    except OSError as e:
        die("cannot read %s (%s): give an experiment's out_dir" % (path, e.strerror))
    return rows


def run_stats(folder, skip):
    m = load_jsonl(os.path.join(folder, "metrics.jsonl"))
    ev = load_jsonl(os.path.join(folder, "eval.jsonl")) if os.path.exists(os.path.join(folder, "eval.jsonl")) else []
    eval_steps = {e["step"] for e in ev}
    plain, after_eval, parts = [], [], {"compute": [], "comm": [], "wait": []}
    prev = None
    for i, r in enumerate(m):
        t = r["time"]
        if prev is not None and i >= skip:
            dt = t - prev["time"]
            (after_eval if prev["step"] in eval_steps else plain).append(dt)
            if prev["step"] not in eval_steps:
                for k in parts:
                    parts[k].append(r.get(k, 0.0))
        prev = r
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")
    return {"steps": len(m), "step_s": mean(plain), "n_plain": len(plain), "eval_step_s": mean(after_eval),
            "n_eval": len(after_eval), "compute_s": mean(parts["compute"]), "comm_s": mean(parts["comm"]),
            "wait_s": mean(parts["wait"])}


def summary_runs(d):
    try:
        s = json.load(open(os.path.join(d, "summary.json")))
    except (OSError, ValueError) as e:
        die("%s/summary.json: %s" % (d, e))
    return {(r["mode"], r["seed"]): r for r in s["runs"]}


def main(argv):
    args, skip, out_json = [], 1, None
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--skip-first" and i + 1 < len(argv):
            try:
                skip = int(argv[i + 1])
            except ValueError:
                die("--skip-first takes a number of steps")
            i += 2
        elif a == "--json" and i + 1 < len(argv):
            out_json = argv[i + 1]
            i += 2
        elif a in ("-h", "--help"):
            sys.stdout.write(__doc__)
            return 0
        else:
            args.append(a)
            i += 1
    if len(args) != 2:
        die("usage: compare_clocks.py REAL_DIR VIRTUAL_DIR [--skip-first N] [--json OUT.json]")
    real, virt = args
    rs, vs = summary_runs(real), summary_runs(virt)
    common = [k for k in rs if k in vs]
    if not common:
        die("no mode/seed is in both %s and %s" % (real, virt))
    rows = []
    fmt = lambda x: "-" if x is None or x != x else "%.3f" % x
    ratio = lambda v, r: None if (v is None or r is None or r != r or v != v or r == 0) else v / r
    print("| mode seed | clock | steps | step s (n) | compute s | comm s | wait s | after-eval step s (n) | time to target s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for k in common:
        sr = run_stats(os.path.join(real, "%s-seed%d" % k), skip)
        sv = run_stats(os.path.join(virt, "%s-seed%d" % k), skip)
        tr, tv = rs[k].get("time_to_target_s"), vs[k].get("time_to_target_s")
        for name, s, t in (("real", sr, tr), ("virtual", sv, tv)):
            print("| %s %d | %s | %d | %s (%d) | %s | %s | %s | %s (%d) | %s |" % (
                k[0], k[1], name, s["steps"], fmt(s["step_s"]), s["n_plain"], fmt(s["compute_s"]), fmt(s["comm_s"]),
                fmt(s["wait_s"]), fmt(s["eval_step_s"]), s["n_eval"], fmt(t)))
        r = {"mode": k[0], "seed": k[1], "real": dict(sr, time_to_target_s=tr), "virtual": dict(sv, time_to_target_s=tv),
             "ratio": {q: ratio(sv[q], sr[q]) for q in ("step_s", "compute_s", "comm_s", "eval_step_s")}}
        r["ratio"]["time_to_target_s"] = ratio(tv, tr)
        print("| %s %d | virtual/real | | %s | %s | %s | | %s | %s |" % (
            k[0], k[1], fmt(r["ratio"]["step_s"]), fmt(r["ratio"]["compute_s"]), fmt(r["ratio"]["comm_s"]),
            fmt(r["ratio"]["eval_step_s"]), fmt(r["ratio"]["time_to_target_s"])))
        rows.append(r)
    if out_json:
        with open(out_json, "w") as f:
            json.dump({"real": real, "virtual": virt, "skip_first": skip, "runs": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
