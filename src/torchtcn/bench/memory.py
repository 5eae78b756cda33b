"""``torchtcn bench memory``: peak memory of one training step, each model in its own process.

Method (CPU). A fresh Python process per (model, repeat, allocator setting) builds the model,
an Adam optimizer and a batch, runs one warm-up step on a short sequence (to load code pages,
create kernels and the optimizer state), trims the C heap (``malloc_trim``), resets the
kernel's resident-set high-water mark (``echo 5 > /proc/self/clear_refs``), runs one training
step of the full size, and reports ``VmHWM - VmRSS(before)``: the extra resident memory the
step needed at its peak. Two allocator settings:

* ``glibc``: glibc's defaults, what a user's process sees (freed blocks may stay in the heap
  and count, since glibc raises its mmap threshold after the first large free);
* ``live``: ``MALLOC_MMAP_THRESHOLD_=131072``, so that every block of 128 KiB or more is its
  own mapping and goes back to the system when freed; the peak is then that of memory in use.

Also reported: the bytes autograd keeps between forward and backward (distinct storages seen
by a saved-tensor hook), which no allocator affects. On CUDA the peak is
``torch.cuda.max_memory_allocated`` around the step.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import logging
import sys

import torch

from ..commands.config_args import positive_int
from . import common

log = logging.getLogger(__name__)

MIB = 2.0**20
# allocator settings of the child processes (see the module docstring)
ALLOCATORS = ("glibc", "live")
WARMUP_LEN = 128


# -- inside the child process -------------------------------------------------------------------
def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise ValueError(f"/proc/self/status has no {field} line")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def saved_for_backward_bytes(forward) -> int:
    """Bytes of the distinct storages autograd keeps between ``forward()`` and backward."""
    storages: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = forward()
    loss.backward()
    return sum(storages.values())


def measure(key: str, batch_size: int, seq_len: int, device: str = "cpu", amp=None) -> dict:
    """Peak extra memory (MiB) of one training step of contender ``key``, in this process."""
    device = torch.device(device)
    torch.manual_seed(0)
    model = common.CONTENDERS[key].build()
    step = common.make_step(model, device, common.StepOptions(amp=amp))
    x, y = common.batch(batch_size, seq_len, device)
    step(*common.batch(batch_size, min(WARMUP_LEN, seq_len), device))
    gc.collect()
    _malloc_trim()
    result = {"model": key, "batch_size": batch_size, "seq_len": seq_len, "device": str(device)}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step(x, y)
        torch.cuda.synchronize(device)
        result["peak_mib"] = (torch.cuda.max_memory_allocated(device) - base) / MIB
        result["method"] = "torch.cuda.max_memory_allocated"
    else:
        exact = _reset_peak()
        base = _status_kib("VmRSS")
        step(x, y)
        result["peak_mib"] = (_status_kib("VmHWM") - base) / 1024.0
        result["base_rss_mib"] = base / 1024.0
        result["method"] = "VmHWM - VmRSS" if exact else "VmHWM - VmRSS (peak not reset)"

    def forward():
        return torch.nn.functional.cross_entropy(model(x), y)

    result["saved_mib"] = saved_for_backward_bytes(forward) / MIB
    return result


def _child_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m torchtcn.bench.memory")
    p.add_argument("--child", required=True, choices=sorted(common.CONTENDERS))
    p.add_argument("--batch-size", type=positive_int, required=True)
    p.add_argument("--seq-len", type=positive_int, required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", default=None)
    a = p.parse_args(argv)
    print(json.dumps(measure(a.child, a.batch_size, a.seq_len, a.device, a.amp)))
    return 0


# -- the parent ---------------------------------------------------------------------------------
def measure_in_subprocess(
    key: str, batch_size: int, seq_len: int, device: str = "cpu", allocator: str = "glibc",
    timeout: float = 900,
) -> dict:
    """:func:`measure` in a fresh process (so no model sees another's allocations), with the
    C allocator set up per ``allocator`` (see :data:`common.ALLOCATORS`)."""
    argv = ["--child", key, "--batch-size", str(batch_size), "--seq-len", str(seq_len),
            "--device", device]
    result = common.run_child("torchtcn.bench.memory", argv, allocator, timeout)
    result["allocator"] = allocator
    return result


def measure_all(keys, batch_size, seq_len, repeats, device="cpu") -> dict[str, list[dict]]:
    """Each contender ``repeats`` times under each allocator setting (CPU; once on CUDA),
    round-robin, one process per measurement."""
    allocators = list(ALLOCATORS) if torch.device(device).type == "cpu" else ["glibc"]
    runs: dict[str, list[dict]] = {k: [] for k in keys}
    for r in range(repeats):
        shift = r % len(keys)
        for key in keys[shift:] + keys[:shift]:
            for allocator in allocators:
                res = measure_in_subprocess(key, batch_size, seq_len, device, allocator)
                log.debug("%s (%s): %.1f MiB", key, allocator, res["peak_mib"])
                runs[key].append(res)
    return runs


def table(runs: dict[str, list[dict]]) -> tuple[list[str], list[list[str]], list[dict]]:
    """Header, rows and records: median / min peak per allocator setting, saved for backward,
    and the ratios of the medians to pytorch-tcn's and the LSTM's."""
    def stats(key, allocator):
        values = [r["peak_mib"] for r in runs.get(key, []) if r.get("allocator", "glibc") == allocator]
        return common.summarize(values) if values else None

    allocators = [a for a in ALLOCATORS if any(stats(k, a) for k in runs)]
    header = ["model"]
    for a in allocators:
        header += [f"peak MiB ({a})", "min", "x pytorch-tcn", "x LSTM"]
    header.append("saved for backward MiB")
    rows, records = [], []
    for key in runs:
        if not runs[key]:
            continue
        row = [common.CONTENDERS[key].label]
        methods = sorted({r.get("method", "?") for r in runs[key]})
        rec = {"model": key, "label": common.CONTENDERS[key].label,
               "saved_mib": runs[key][0]["saved_mib"], "method": "; ".join(methods)}
        if any("not reset" in m for m in methods):
            log.warning("%s: the peak could not be reset before the step (%s): its figure may "
                        "be the process's lifetime peak", key, rec["method"])
        for a in allocators:
            s = stats(key, a)
            peer, rnn = stats(common.PEER, a), stats(common.RNN_PEER, a)
            rp = common.ratio(s["median"], peer and peer["median"])
            rl = common.ratio(s["median"], rnn and rnn["median"])
            row += [f"{s['median']:.0f}", f"{s['min']:.0f}", common.fmt(rp, ".2f"),
                    common.fmt(rl, ".2f")]
            rec[a] = {"peak_mib_median": s["median"], "peak_mib_min": s["min"],
                      "vs_pytorch_tcn": rp, "vs_lstm": rl,
                      "runs": [r["peak_mib"] for r in runs[key] if r.get("allocator", "glibc") == a]}
        row.append(f"{rec['saved_mib']:.0f}")
        rows.append(row)
        records.append(rec)
    return header, rows, records


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default="torchtcn,torchtcn-lowmem,pytorch-tcn,lstm,gru",
                        help=f"comma list of {','.join(common.CONTENDERS)}")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="batch of the step")
    parser.add_argument("--seq-len", type=positive_int, default=8192,
                        help="sequence length of the step")
    parser.add_argument("--repeats", type=positive_int, default=2, help="processes per model")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cpu or cuda")
    parser.add_argument("--json", default=None, help="write the results to this JSON file")
    parser.add_argument("--markdown", default=None, help="write the table to this file")


def run(args) -> int:
    keys = _runnable(common.parse_contenders(args.models))
    runs = measure_all(keys, args.batch_size, args.seq_len, args.repeats, args.device)
    header, rows, records = table(runs)
    title = (f"Peak memory of one training step, N={args.batch_size}, T={args.seq_len}, "
             f"{args.device}, {args.repeats} process(es) per model")
    print(title)
    print(common.text_table(header, rows))
    if args.json:
        common.write_json(args.json, {"benchmark": "memory", "machine": common.machine(),
                                      "device": args.device, "repeats": args.repeats,
                                      "command": common.command_line(args),
                                      "batch_size": args.batch_size, "seq_len": args.seq_len,
                                      "results": records})
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(f"{title}\n\n{common.markdown_table(header, rows)}\n")
    return 0


def _runnable(keys: list[str]) -> list[str]:
    """The contenders of ``keys`` that can run here (a warning for each that cannot); a
    ValueError naming why when none can."""
    out, missing = [], {}
    for k in keys:
        why = common.available(k)
        if why:
            log.warning("skipping %s: %s", k, why)
            missing[k] = why
        else:
            out.append(k)
    if not out:
        raise ValueError("none of the models can run here: " + "; ".join(
            f"{k}: {why}" for k, why in missing.items()))
    return out


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
