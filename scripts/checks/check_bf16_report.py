"""The report of scripts/checks/check-bf16.sh: does bf16 training end where fp32 does?

    python3 scripts/checks/check_bf16_report.py MANIFEST RUNS_DIR RESULTS_DIR [UPDATES]

MANIFEST: one line per run, `part<TAB>name<TAB>precision<TAB>seed`; the run is RUNS_DIR/name,
its scores RESULTS_DIR/name.csv (`toolkit eval`'s tidy CSV; none yet: no scores). Prints one table of every run and,
per part and number, bf16 - fp32 at each seed next to the noise |fp32 seed A - fp32 seed B|
(A, B: the part's first two seeds), with the verdict "within noise" when |bf16 - fp32| <= noise
+ 1 point, else "OUTSIDE NOISE". For the training loss, which has no points, the 1 point is read
as 1% of the fp32 loss. NaN anywhere is outside. Then the FUN unfreezing orders and how far
apart the tr(F) values are that chose them. Always exits 0: the verdicts are the report.
UPDATES: read only the first UPDATES updates of each run's loss curve (runs still training, or
stopped early: compare them at the same point; their scores are those of the checkpoints given).
"""
import csv
import math
import os
import sys

LAST_STEPS = 10  # the final training loss: the mean over the last this many updates
MAX_UPDATES = int(sys.argv[4]) if len(sys.argv) > 4 else None


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def loss_curve(run):
    """{step: training loss} of every update (metrics.csv)."""
    curve = {int(r["step"]): float(r["loss"]) for r in read_csv(os.path.join(run, "metrics.csv"))
             if MAX_UPDATES is None or int(r["step"]) <= MAX_UPDATES}
    if not curve:
        sys.exit(f"check_bf16_report: {run}/metrics.csv has no updates")
    return curve


def final_loss(run):
    losses = list(loss_curve(run).values())
    return sum(losses[-LAST_STEPS:]) / len(losses[-LAST_STEPS:])


def best_validation(run, metric="accuracy"):
    """The best validation score, in points (the trainer logs accuracy as a fraction)."""
    values = [float(r["value"]) for r in read_csv(os.path.join(run, "validation.csv")) if r["metric"] == metric]
    return 100 * max(values) if values else None


def scores(path):
    """{(language, metric): value} of one results CSV; language `avg` is the suite's average."""
    return {(r["language"], r["metric"]): float(r["value"]) for r in read_csv(path)}


def fun_decisions(run):
    """{step: (chosen layer, {layer: tr(F)})} of every decision FUN made by tr(F)
    (fun_selection.csv), within the first MAX_UPDATES updates."""
    decisions = {}
    for r in read_csv(os.path.join(run, "fun_selection.csv")):
        step = int(r["step"])
        if MAX_UPDATES is not None and step > MAX_UPDATES:
            continue
        _, traces = decisions.setdefault(step, (None, {}))
        traces[int(r["layer"])] = float(r["trace"])
        if r["chosen"] == "1":
            decisions[step] = (int(r["layer"]), traces)
    return decisions


def max_relative_difference(a, b):
    common = sorted(set(a) & set(b))
    if not common:
        return None
    return max(abs(a[k] - b[k]) / max(abs(b[k]), 1e-30) for k in common)


def fmt(x, digits=2):
    return "-" if x is None else f"{x:.{digits}f}"


def main():
    manifest, runs_dir, results_dir = sys.argv[1:4]
    runs = []
    with open(manifest) as f:
        for line in f:
            part, name, precision, seed = line.rstrip("\n").split("\t")
            run = os.path.join(runs_dir, name)
            result = os.path.join(results_dir, f"{name}.csv")
            numbers = {"final loss": final_loss(run)}
            val = best_validation(run)
            if val is not None:
                numbers["val acc"] = val
            for (lang, metric), value in (scores(result) if os.path.exists(result) else {}).items():
                if lang != "lowest":
                    numbers[f"{metric} {lang}"] = value
            runs.append({"part": part, "name": name, "precision": precision, "seed": seed, "run": run,
                         "numbers": numbers})
    if not runs:
        sys.exit("check_bf16_report: the manifest lists no runs")

    bad = [r["name"] for r in runs if any(not math.isfinite(v) for v in r["numbers"].values())]
    if bad:
        print(f"NaN or infinity in: {', '.join(bad)}")

    print("| run | precision | seed | final loss | val acc | eval avg (primary) | eval avg (2nd) |")
    print("|---|---|---|---|---|---|---|")
    for r in runs:
        n = r["numbers"]
        avgs = [k for k in n if k.endswith(" avg")]
        cells = [f"{k.split()[0]} {n[k]:.2f}" for k in avgs] + ["-"] * (2 - len(avgs))
        print(f"| {r['name']} | {r['precision']} | {r['seed']} | {n['final loss']:.4f} | {fmt(n.get('val acc'))} | "
              f"{cells[0]} | {cells[1]} |")

    for part in dict.fromkeys(r["part"] for r in runs):
        compare(part, [r for r in runs if r["part"] == part])


def compare(part, runs):
    by = {(r["precision"], r["seed"]): r for r in runs}
    seeds = list(dict.fromkeys(r["seed"] for r in runs))
    pairs = [s for s in seeds if ("fp32", s) in by and ("bf16", s) in by]
    noise_seeds = [s for s in seeds if ("fp32", s) in by][:2]
    print()
    if len(noise_seeds) < 2:
        print(f"## {part}: one fp32 seed only, so no measured noise: the margin alone (1 point; 1% for the loss)")
    else:
        a, b = noise_seeds
        print(f"## {part}: bf16 - fp32 at the same seed; noise = |fp32 s{a} - fp32 s{b}|")
    if not pairs:
        print("no seed with both precisions finished")
        return
    header = "| number | " + " | ".join(f"fp32 s{s} | bf16 s{s} | bf16-fp32" for s in pairs) + " | noise | verdict |"
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    names = [k for k in by[("fp32", pairs[0])]["numbers"]]
    outside = 0
    for key in names:
        def value(p, s):
            return by[(p, s)]["numbers"].get(key, math.nan)
        noise = abs(value("fp32", noise_seeds[0]) - value("fp32", noise_seeds[1])) if len(noise_seeds) == 2 else 0.0
        cells, verdicts = [], []
        for s in pairs:
            fp32, bf16 = value("fp32", s), value("bf16", s)
            margin = 0.01 * abs(fp32) if key == "final loss" else 1.0
            diff = bf16 - fp32
            ok = abs(diff) <= noise + margin  # False for NaN
            outside += not ok
            digits = 4 if key == "final loss" else 2
            cells.append(f"{fp32:.{digits}f} | {bf16:.{digits}f} | {diff:+.{digits}f}")
            verdicts.append(f"s{s}: {'within noise' if ok else 'OUTSIDE NOISE'}")
        digits = 4 if key == "final loss" else 2
        print(f"| {key} | " + " | ".join(cells) + f" | {noise:.{digits}f} | {'; '.join(verdicts)} |")
    print(f"{part}: {outside} comparison(s) outside noise" if outside else f"{part}: every comparison within noise")
    # The same seed draws the same batches in both precisions, so the curves compare update by
    # update; the first update's loss is the same weights' forward pass in each precision.
    for s in pairs:
        fp32, bf16 = loss_curve(by[("fp32", s)]["run"]), loss_curve(by[("bf16", s)]["run"])
        steps = sorted(set(fp32) & set(bf16))
        diffs = [abs(bf16[k] - fp32[k]) for k in steps]
        print(f"{part} s{s}: loss at update 1 fp32 {fp32[steps[0]]:.6f} bf16 {bf16[steps[0]]:.6f}; over {len(steps)} "
              f"updates |bf16 - fp32| mean {sum(diffs) / len(diffs):.4f}, max {max(diffs):.4f}; "
              f"non-finite losses: {sum(not math.isfinite(v) for v in list(fp32.values()) + list(bf16.values()))}")

    decisions = {k: fun_decisions(r["run"]) for k, r in by.items()}
    if not any(decisions.values()):
        return
    # FUN's choices (after the top layer, which it unfreezes first without tr(F)).
    print()
    print(f"{part}: layers FUN chose by tr(F), in order (11 = top; steps counted in updates)")
    for (p, s), d in sorted(decisions.items(), key=lambda kv: (kv[0][1], kv[0][0] != "fp32")):
        print(f"  {p} s{s}: " + " ".join(f"{d[step][0]}@{step}" for step in sorted(d)))
    for s in pairs:
        fp32, bf16 = decisions[("fp32", s)], decisions[("bf16", s)]
        steps = sorted(set(fp32) & set(bf16))
        differ = [step for step in steps if fp32[step][0] != bf16[step][0]]
        print(f"  s{s}: bf16 chose {'the same layers as' if not differ else 'DIFFERENT layers from'} fp32 at "
              f"{len(steps)} common decisions" + (f" (differs from step {differ[0]})" if differ else ""))
        if steps:
            rel = max_relative_difference(bf16[steps[0]][1], fp32[steps[0]][1])
            # A bias common to every layer leaves FUN's ranking alone; scatter could reorder it.
            signed = [bf16[step][1][k] / fp32[step][1][k] - 1 for step in steps for k in fp32[step][1] if k in bf16[step][1]]
            mean = sum(signed) / len(signed)
            spread = (sum((x - mean) ** 2 for x in signed) / len(signed)) ** 0.5
            print(f"  s{s}: tr(F) at the first decision (step {steps[0]}), max |bf16 - fp32| / fp32 = {100 * rel:.2f}%; "
                  f"over all common decisions bf16 / fp32 - 1 = {100 * mean:+.2f}% mean, {100 * spread:.2f}% spread")
        margins = []
        for step in steps:
            ranked = sorted(fp32[step][1].values(), reverse=True)
            if len(ranked) > 1:
                margins.append(f"{100 * (ranked[0] / ranked[1] - 1):.2f}%@{step}")
        if margins:
            print(f"  s{s}: fp32's tr(F) margin of the chosen layer over the runner-up: {' '.join(margins)}")
    if len(noise_seeds) == 2:
        a, b = (decisions[("fp32", s)] for s in noise_seeds)
        steps = sorted(set(a) & set(b))
        same = all(a[step][0] == b[step][0] for step in steps)
        print(f"  fp32 s{noise_seeds[0]} vs s{noise_seeds[1]}: {'the same' if same else 'different'} choices at {len(steps)} common decisions")

if __name__ == "__main__":
    main()
