"""Shared by scripts/bench/bench-train.sh and bench_train_reference.py: the FLOP count of a
MAD-X training step, and where a step's time goes by category (GEMM, softmax, LayerNorm, ...),
from `perf` samples (toolkit) or torch.profiler ops (reference), with one classifier for both.

  python3 scripts/bench/train_profile.py perf N_STEPS PERF_N PERF_1 OUT.json
      CPU seconds per category of one step: the samples of a `perf record -e cpu-clock` of an
      N-step `toolkit train` run minus those of a 1-step run, divided by N - 1, so that model
      and data loading cancel out.
  python3 scripts/bench/train_profile.py flops MODEL LANG_ADAPTER RUN_ADAPTER BATCH SEQ
      the FLOP counts of one standard and one gu step (JSON on stdout).
"""
import json
import os
import re
import subprocess
import sys
from collections import defaultdict

# Checked in order, first match wins, on "LIBRARY:SYMBOL" of a perf sample's leaf function or
# on an aten op name: the specific kernels before the generic elementwise ones they call.
# libtorch's view ops, dispatcher and autograd engine are "framework"; a perf sample in
# anonymous executable memory (or perf's map of it) is a JIT-compiled GEMM kernel (MKL, oneDNN).
CATEGORIES = [
    ("GEMM", r"sgemm|gemm|gblock|brgemm|dnnl|mkldnn|onednn|jit_|mkl_|^//anon|^\[jit\]|^memfd:|^perf-\d+\.map|"
             r"^aten::(mm|addmm|bmm|baddbmm|addbmm|matmul|linear|_scaled_dot_product\w*|_addmm_activation)$"),
    ("OpenMP wait", r"^libgomp|^libiomp|__kmp|gomp_|sched_yield|futex"),
    ("softmax", r"softmax"),
    ("LayerNorm", r"layer_?norm|rowwisemoments"),
    ("GELU", r"gelu"),
    ("dropout/random", r"dropout|bernoulli|counter_bits|generator|random|normal|philox|mt19937"),
    ("optimizer", r"adam|optimizer::|_foreach|clip_grad"),
    ("reductions", r"reduce|sum_kernel|norm_kernel|argmax|cross_entropy|nll_loss|"
                   r"^aten::(sum|norm|linalg_vector_norm|mean|max|argmax)$"),
    ("memory", r"^libc\.so|operator new|operator delete|memcpy|memmove|memset|malloc|calloc|realloc|\bfree\b|"
               r"^\[kernel[^:]*:.*(fault|page|folio|memcg|mem_cgroup|lruvec|vma|mas_|alloc|free|copy|clear|charge|lru)|"
               r"^aten::(empty\w*|resize_|zero_|zeros\w*|fill_|new_\w*)$"),
    ("data/tokenizer", r"tokenizers::|toolkit::features|toolkit::data|serde|json|unicode|regex"),
    ("elementwise", r"^libtorch[^:]*:.*(at::native|vectoriz|cpu_kernel|loop_2d|sleef|acopy|copy|fill|cast|convert)|"
                    r"^aten::(add|add_|sub|rsub|mul|mul_|div|div_|copy_|to|_to_copy|clone|contiguous|cat|"
                    r"index_select|embedding\w*|tanh\w*|relu\w*|threshold\w*|masked_fill\w*|where|"
                    r"ones_like|zeros_like|neg|sqrt|pow|exp|clamp\w*|abs|lerp_|addcmul_|addcdiv_)$"),
    ("framework", r"^libtorch|^libc10|^aten::|autograd|c10::"),
]
OTHER = "other"
ORDER = [name for name, _ in CATEGORIES] + [OTHER]
_COMPILED = [(name, re.compile(pattern, re.IGNORECASE)) for name, pattern in CATEGORIES]


def classify(name):
    for category, pattern in _COMPILED:
        if pattern.search(name):
            return category
    return OTHER


TOP = 30  # symbols or ops listed in the JSON besides the categories, for a closer look


def perf_seconds(path):
    """CPU seconds per leaf symbol ("LIBRARY:SYMBOL") in a perf.data file: the sum of its
    cpu-clock sample periods (nanoseconds); an unresolved address is named by its library, so
    JIT-compiled kernels (anonymous memory) and stripped libgomp still classify."""
    script = subprocess.run(["perf", "script", "-i", path, "-F", "period,ip,sym,dso"],
                            capture_output=True, text=True)
    if script.returncode != 0:
        sys.exit(f"train_profile: perf script -i {path} failed: {script.stderr.strip()}")
    # A sample is "PERIOD IP SYM (DSO)" on one line, or, recorded with a call graph, PERIOD
    # alone followed by its frames on tab-indented lines, leaf first.
    period_re = re.compile(r"^ *(\d+)(.*)$")
    frame_re = re.compile(r"^\s*[0-9a-f]+\s+(.*)\s+\(([^()]*)\)\s*$")
    totals = defaultdict(float)
    pending = None
    for line in script.stdout.splitlines():
        if not line.startswith("\t"):
            m = period_re.match(line)
            if not m:
                continue
            pending, line = int(m.group(1)), m.group(2)
        if pending is None:
            continue  # a caller's frame
        frame = frame_re.match(line)
        if frame:
            sym, dso = frame.groups()
            totals[f"{os.path.basename(dso)}:{sym}"] += pending / 1e9
            pending = None
    if not totals:
        sys.exit(f"train_profile: no samples read from {path} (perf record -e cpu-clock?)")
    return totals


def by_category(per_name):
    """{"categories": seconds per category, "top": the TOP largest [name, category, seconds]}."""
    totals = {c: 0.0 for c in ORDER}
    for name, seconds in per_name.items():
        totals[classify(name)] += seconds
    top = sorted(per_name.items(), key=lambda kv: -kv[1])[:TOP]
    return {"categories": totals, "top": [[name[:200], classify(name), round(sec, 5)] for name, sec in top]}


def perf_profile(steps, perf_n, perf_1):
    """CPU seconds of one step: (N-step run - 1-step run) / (N - 1) per symbol, by category. A
    category whose difference is negative (noise in what loading costs) is reported as 0."""
    n, one = perf_seconds(perf_n), perf_seconds(perf_1)
    profile = by_category({k: (n.get(k, 0.0) - one.get(k, 0.0)) / (steps - 1) for k in n.keys() | one.keys()})
    profile["categories"] = {c: max(0.0, v) for c, v in profile["categories"].items()}
    return profile


# The reference's record_function range around gradient clipping and AdamW's step: its ops are
# plain aten ops (CPU AdamW runs one tensor at a time), attributed to the optimizer by this.
OPTIMIZER_RANGE = "optimizer: clip_grad_norm_ + AdamW.step"


def torch_profile(prof, steps):
    """Seconds of one step from a torch.profiler run over `steps` steps, by category: each op's
    self CPU time, so nested ops are not counted twice (the same leaf attribution as perf's),
    except that ops inside OPTIMIZER_RANGE count as the optimizer."""
    per_name = defaultdict(float)
    for event in prof.events():
        name, parent = event.name, event.cpu_parent
        while parent is not None and name != OPTIMIZER_RANGE:
            if parent.name == OPTIMIZER_RANGE:
                name = OPTIMIZER_RANGE
            parent = parent.cpu_parent
        per_name[name] += event.self_cpu_time_total / 1e6 / steps
    return by_category(per_name)


# --- FLOPs -------------------------------------------------------------------------------

def _read_config(path):
    with open(path) as f:
        return json.load(f)


def step_flops(model_dir, lang_adapter_dir, run_adapter_dir, batch, seq, first_token_only=False):
    """FLOPs of one training step's matrix products at this shape, for the standard and gu
    configurations and a tr(F) batch. Forward: every dense and attention product. Backward:
    the input gradient of every product above the lowest trainable weight (two for products
    of two activations: scores and attention-weighted values), the weight gradient of each
    trainable weight. Elementwise work, softmax and LayerNorm are not counted. With
    `first_token_only` (the toolkit, for a head that reads the first token), the last layer
    computes every token's keys and values but only the first token's query, attention,
    feed-forward block and adapters."""
    c = _read_config(os.path.join(model_dir, "config.json"))
    lang_path = os.path.join(lang_adapter_dir, "adapter_config.json")
    task_path = os.path.join(run_adapter_dir, "adapter_config.json")
    head_path = os.path.join(run_adapter_dir, "head_config.json")
    lang, task, head = (_read_config(p) for p in (lang_path, task_path, head_path))
    h, f, layers = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    tokens = batch * seq

    def linear(n, d_in, d_out):
        return 2 * n * d_in * d_out

    # (name, forward FLOPs, has a weight, layer): in forward order, so an op's input gradient is
    # needed when a trainable op comes before it.
    ops = []
    inv = lang["config"].get("inv_adapter")
    if inv:
        if inv != "nice":
            sys.exit(f"train_profile: {lang_path}: inv_adapter {inv!r} is not counted (only nice)")
        split = h // 2
        rest = h - split
        red = lang["config"]["inv_adapter_reduction_factor"]
        f_mid, g_mid = int(rest / red), int(split / red)
        for name, d_in, d_out in (("inv.F0", rest, f_mid), ("inv.F2", f_mid, split),
                                  ("inv.G0", split, g_mid), ("inv.G2", g_mid, rest)):
            ops.append((name, linear(tokens, d_in, d_out), True, -1))
    stack = []
    for path, cfg in ((lang_path, lang), (task_path, task)):
        a = cfg["config"]
        if a.get("mh_adapter") or not a.get("output_adapter", True):
            sys.exit(f"train_profile: {path}: only output adapters (seq_bn) are counted")
        stack.append((cfg["name"], int(h // a["reduction_factor"]), set(a.get("leave_out") or [])))
    for layer in range(layers):
        # The tokens whose outputs the layer computes.
        queries = batch if first_token_only and layer == layers - 1 else tokens
        ops.append(("query", linear(queries, h, h), True, layer))
        for name in ("key", "value"):
            ops.append((name, linear(tokens, h, h), True, layer))
        # q k^T and probs v: batch x heads products of queries x head_dim by head_dim x seq, and back.
        ops.append(("scores", 2 * queries * seq * h, False, layer))
        ops.append(("context", 2 * queries * seq * h, False, layer))
        ops.append(("attention.output", linear(queries, h, h), True, layer))
        ops.append(("intermediate", linear(queries, h, f), True, layer))
        ops.append(("output", linear(queries, f, h), True, layer))
        for name, bottleneck, leave_out in stack:
            if layer not in leave_out:
                ops.append((f"adapter.{name}.down", linear(queries, h, bottleneck), True, layer))
                ops.append((f"adapter.{name}.up", linear(queries, bottleneck, h), True, layer))
    hc = head["config"]
    dims = [h] * hc["layers"] + [hc["num_labels"]]
    for i in range(hc["layers"]):
        # A flex classification head reads the first token only.
        ops.append((f"head.{i}", linear(batch, dims[i], dims[i + 1]), True, layers))

    task_name = task["name"]

    def count(trainable):
        first = next(i for i, op in enumerate(ops) if trainable(op))
        forward = sum(op[1] for op in ops)
        backward = 0
        for i, (name, fl, weight, _) in enumerate(ops):
            if i > first:
                backward += fl if weight else 2 * fl
            if trainable(ops[i]):
                backward += fl
        adapters = sum(op[1] for op in ops if op[0].startswith(("adapter.", "inv.")))
        return {"forward": forward, "backward": backward, "total": forward + backward,
                "adapter_forward_share": adapters / forward}

    is_task = lambda op: op[0].startswith(f"adapter.{task_name}.")
    is_head = lambda op: op[0].startswith("head.")
    standard = count(lambda op: is_task(op) or is_head(op))
    gu = count(lambda op: (is_task(op) and op[3] == layers - 1) or is_head(op))
    return {"standard": standard, "gu": gu, "fisher_batch": standard}


def main():
    if len(sys.argv) == 6 and sys.argv[1] == "perf":
        steps = int(sys.argv[2])
        if steps < 2:
            sys.exit("train_profile: perf needs an N-step run with N >= 2")
        profile = perf_profile(steps, sys.argv[3], sys.argv[4])
        with open(sys.argv[5], "w") as f:
            json.dump(profile, f, indent=1)
    elif len(sys.argv) == 7 and sys.argv[1] == "flops":
        model, lang, run_adapter, batch, seq = sys.argv[2:]
        print(json.dumps(step_flops(model, lang, run_adapter, int(batch), int(seq))))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
