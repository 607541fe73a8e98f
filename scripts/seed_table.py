#!/usr/bin/env python3
"""seed_table.py: the docs' tables for experiment sets run over several seeds.

    scripts/seed_table.py LABEL=DIR [LABEL=DIR ...] [--target ACC] [--last N] [--until T]
                          [--json OUT.json]

Each DIR is an experiment's out_dir (summary.json and <mode>-seed<k>/ folders with eval.jsonl and
metrics.jsonl); a DIR holding several modes gives one row per mode (LABEL-<mode>). For every row it
prints, per seed and as mean [min-max] over the seeds:
- time to ACC (default: the run's own target_accuracy): the virtual (or wall) time of the first
  evaluation at or above it, read from eval.jsonl, so runs given an unreachable target to train
  their whole budget still have one; "-" where no evaluation reached it (the mean then counts only
  the seeds that did, and says how many);
- final accuracy: the mean of the last N evaluations (default 10) at or before time T (default: the
  run's end);
- samples dropped, peak buffer, bytes sent by all devices (summary.json) and steps.
--json writes the same figures for plots or later checks. Only the Python standard library is used."""
import json
import os
import sys


def die(msg):
    sys.stderr.write("seed_table: " + msg + "\n")
    sys.exit(2)


def read_jsonl(path):
    out = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        die("%s: a line is not JSON: %.60s" % (path, line))
    except OSError as e:
        die("%s: %s (is the run finished?)" % (path, e.strerror))
    return out


def run_figures(folder, target, last, until):
    evals = read_jsonl(os.path.join(folder, "eval.jsonl"))
    if until is not None:
        evals = [e for e in evals if e["time"] <= until + 1e-9]
    if not evals:
        die("%s: no evaluation%s" % (folder, "" if until is None else " at or before %g s" % until))
    hit = next((e["time"] for e in evals if e["top1"] >= target), None)
    tail = evals[-last:]
    return {"time_to_target_s": hit, "final_accuracy": sum(e["top1"] for e in tail) / len(tail),
            "final_evals": len(tail), "final_from_s": tail[0]["time"], "final_to_s": tail[-1]["time"]}


def spread(vals, fmt):
    got = [v for v in vals if v is not None]
    if not got:
        return "not reached"
    s = "%s [%s-%s]" % (fmt % (sum(got) / len(got)), fmt % min(got), fmt % max(got))
    if len(got) < len(vals):
        s += " (%d of %d seeds)" % (len(got), len(vals))
    return s


def main(argv):
    target = last = until = out_json = None
    pairs = []
    i = 0
    opts = {"--target": float, "--last": int, "--until": float, "--json": str}
    while i < len(argv):
        a = argv[i]
        if a in opts:
            if i + 1 >= len(argv):
                die("%s needs a value" % a)
            try:
                v = opts[a](argv[i + 1])
            except ValueError:
                die("%s: '%s' is not a %s" % (a, argv[i + 1], opts[a].__name__))
            if a == "--target":
                target = v
            elif a == "--last":
                last = v
            elif a == "--until":
                until = v
            else:
                out_json = v
            i += 2
            continue
        if "=" not in a:
            die("'%s' is not LABEL=DIR (usage: seed_table.py LABEL=DIR ... [--target ACC] [--last N] [--until T])" % a)
        pairs.append(a.split("=", 1))
        i += 1
    if not pairs:
        die("no LABEL=DIR given")
    if target is not None and not 0 < target <= 1:
        die("--target %g: allowed 0 < ACC <= 1" % target)
    if last is None:
        last = 10
    if last < 1:
        die("--last %d: allowed N >= 1" % last)
    rows = []
    for label, d in pairs:
        try:
            with open(os.path.join(d, "summary.json")) as f:
                summary = json.load(f)
        except (OSError, ValueError) as e:
            die("%s/summary.json: %s" % (d, e))
        modes = sorted({r["mode"] for r in summary["runs"]})
        for mode in modes:
            runs = sorted((r for r in summary["runs"] if r["mode"] == mode), key=lambda r: r["seed"])
            tgt = target if target is not None else summary["target_accuracy"]
            seeds = []
            for r in runs:
                f = run_figures(os.path.join(d, "%s-seed%d" % (mode, r["seed"])), tgt, last, until)
                f.update({k: r[k] for k in ("seed", "samples_dropped", "peak_buffer", "bytes_sent", "steps",
                                            "samples_trained", "samples_injected")})
                seeds.append(f)
            rows.append({"label": label if len(modes) == 1 else "%s-%s" % (label, mode), "target": tgt,
                         "seeds": seeds})
    print("| run | time to %s, per seed | mean [min-max] | final top-1 (last %d evals), mean [min-max] | "
          "dropped, mean | peak buffer, max | GB sent, mean | steps, mean |" %
          ("/".join(sorted({"%g%%" % (100 * r["target"]) for r in rows})), last))
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        s = r["seeds"]
        n = len(s)
        per = " / ".join("-" if x["time_to_target_s"] is None else "%.1f" % x["time_to_target_s"] for x in s)
        print("| %s | %s | %s | %s | %s | %s | %.2f | %s |" % (
            r["label"], per, spread([x["time_to_target_s"] for x in s], "%.1f s"),
            spread([100 * x["final_accuracy"] for x in s], "%.2f%%"),
            "{:,}".format(round(sum(x["samples_dropped"] for x in s) / n)),
            "{:,}".format(max(x["peak_buffer"] for x in s)),
            sum(x["bytes_sent"] for x in s) / n / 1e9, "{:,}".format(round(sum(x["steps"] for x in s) / n))))
    if out_json:
        with open(out_json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1:])
