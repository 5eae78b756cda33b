"""``torchtcn bench stream``: streaming step latency and throughput against pytorch-tcn.

The paper's seq-MNIST model (``TCN(1, [25] * 8, kernel_size=7)``, weight norm, dilations
``2**i``, no skips, receptive field 3061) in eval mode, in one process, timed round-robin:

* per-step latency at batch 1 of ``torchtcn`` (``model.step`` on (1, 1, 1) chunks), of
  pytorch-tcn 1.2.3 (``forward(x, inference=True)``, same architecture), and of recomputing
  the receptive-field window with our own model (what a library without streaming does);
* torchtcn's stream-steps per second with 1, 64 and 1024 streams (one step advances every
  stream by one frame), and its ratio to pytorch-tcn's single-stream rate.

``--markdown PATH`` / ``--json PATH`` write the table, so the docs are generated.
"""

from __future__ import annotations

import argparse
import logging
import time

import torch

from ..commands.config_args import non_negative_int, positive_int, positive_int_list
from . import common

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--streams", type=positive_int_list, default="1,64,1024",
                        help="batch sizes for throughput")
    parser.add_argument("--repeats", type=positive_int, default=30,
                        help="timed rounds per contender")
    parser.add_argument("--inner", type=positive_int, default=50, help="steps per timed round")
    parser.add_argument("--warmup", type=non_negative_int, default=3, help="untimed rounds first")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--json", default=None, help="write the results to this JSON file")
    parser.add_argument("--markdown", default=None, help="write the tables to this markdown file")


def paper_model(device) -> torch.nn.Module:
    from ..model import TCN

    return TCN(
        common.IN_CHANNELS, common.TCN_WIDTHS, kernel_size=common.TCN_KERNEL, norm="weight"
    ).to(device).eval()


def _peer(device):
    import pytorch_tcn

    return pytorch_tcn.TCN(
        common.IN_CHANNELS, common.TCN_WIDTHS, kernel_size=common.TCN_KERNEL, dropout=0.0,
        use_norm="weight_norm", causal=True, use_skip_connections=False,
    ).to(device).eval()


def _repeat(fn, n: int):
    def run():
        for _ in range(n):
            fn()

    return run


#: frames beyond the receptive field streamed through each contender, and compared with its
#: full forward pass, before anything is timed (a fast step that computed something else would
#: be no result); past the receptive field every layer has read its whole history
CHECK_MARGIN = 64


def streaming_error(stream_frame, full, x: torch.Tensor) -> float:
    """Max |output streamed frame by frame - full forward| over ``x`` (1, C, T); a
    RuntimeError when it exceeds float32 rounding (1e-4 of the output's scale)."""
    streamed = torch.cat([stream_frame(x[:, :, t : t + 1]) for t in range(x.shape[2])], 2)
    reference = full(x)
    error = (streamed - reference).abs().max().item()
    if not error <= 1e-4 * max(1.0, reference.abs().max().item()):
        raise RuntimeError(f"streaming output differs from the full forward pass by {error:.3g}: "
                           "nothing to time")
    return error


def latency_contenders(device, inner: int) -> tuple[dict, dict, dict]:
    """name -> closure running ``steps[name]`` single-frame steps at batch 1, and name -> the
    streaming error of the contenders that stream (checked by :func:`streaming_error`)."""
    model = paper_model(device)
    x = torch.randn(1, 1, 1, device=device)
    check = torch.randn(1, 1, model.receptive_field + CHECK_MARGIN, device=device)
    fresh = model.init_state(batch_size=1)
    errors = {"torchtcn step": streaming_error(lambda f: model.step(f, fresh)[0], model, check)}
    state = model.init_state(batch_size=1)

    def ours():
        model.step(x, state)

    window = torch.randn(1, 1, model.receptive_field, device=device)

    def recompute():
        model(window)[:, :, -1]

    calls = {"torchtcn step": _repeat(ours, inner)}
    steps = {"torchtcn step": inner}
    why = common.available("pytorch-tcn")
    if why is None:
        peer = _peer(device)
        errors["pytorch-tcn inference"] = streaming_error(lambda f: peer(f, inference=True),
                                                          peer, check)
        peer.reset_buffers()
        calls["pytorch-tcn inference"] = _repeat(lambda: peer(x, inference=True), inner)
        steps["pytorch-tcn inference"] = inner
    else:
        log.warning("pytorch-tcn skipped: %s", why)
    recompute_steps = max(1, inner // 25)
    calls["recompute window"] = _repeat(recompute, recompute_steps)
    steps["recompute window"] = recompute_steps
    return calls, steps, errors


def throughput(device, streams: list[int], repeats: int, inner: int, warmup: int) -> dict:
    """Stream-steps per second of ``model.step`` with N streams (median of rounds)."""
    model = paper_model(device)
    out = {}
    for n in streams:
        x = torch.randn(n, 1, 1, device=device)
        state = model.init_state(batch_size=n)
        steps = max(2, inner * 64 // max(n, 64)) if n > 64 else inner
        times = common.interleaved_times(
            {n: _repeat(lambda: model.step(x, state), steps)}, repeats, warmup, device
        )[n]
        per_step = common.summarize(times)["median"] / steps
        out[n] = {"seconds_per_step": per_step, "stream_steps_per_s": n / per_step}
    return out


def measure(args) -> dict:
    device = torch.device(args.device)
    streams = list(args.streams)
    with torch.no_grad():
        calls, steps, errors = latency_contenders(device, args.inner)
        times = common.interleaved_times(calls, args.repeats, args.warmup, device)
        latency = {
            name: common.summarize(t)["median"] / steps[name] for name, t in times.items()
        }
        rates = throughput(device, streams, args.repeats, args.inner, args.warmup)
    receptive_field = paper_model("cpu").receptive_field
    return {
        "model": f"TCN(1, [25] * 8, kernel_size=7), weight norm, receptive field "
        f"{receptive_field}",
        "device": str(device),
        "machine": common.machine(),
        "latency_s": latency,
        "streaming_max_abs_error": errors,  # vs each one's own full forward, before timing
        "streaming_check_frames": receptive_field + CHECK_MARGIN,
        "throughput": rates,
        "command": common.command_line(args),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def tables(result: dict, render) -> str:
    lat = result["latency_s"]
    ours = lat["torchtcn step"]
    peer = lat.get("pytorch-tcn inference")
    rows = [
        [name, common.fmt(s * 1e6, ".1f"), common.fmt(1 / s, ",.0f"),
         common.fmt(common.ratio(s, ours), ".1f") + "x"]
        for name, s in lat.items()
    ]
    checked = ", ".join(f"{name} {e:.1e}" for name, e in result.get(
        "streaming_max_abs_error", {}).items())
    title = "Per-step latency, batch 1 (median):"
    if str(result.get("device", "cpu")).startswith("cuda"):
        # one synchronisation per timed round: the GPU queues a round's launches
        title = ("Per-step time, batch 1 (median; CUDA: one synchronisation per round of steps, "
                 "so launches are pipelined; a caller that reads every output waits longer):")
    out = [title, "",
           render(["method", "us / step", "steps / s", "time vs torchtcn"], rows), ""]
    if checked:
        frames = result.get("streaming_check_frames")
        what = (f"{frames} frames (the receptive field and {CHECK_MARGIN} more)" if frames
                else "64 frames")  # a result from before the check covered the receptive field
        out += [f"Before timing, {what} streamed one at a time matched each contender's own "
                f"full forward pass (max |difference|: {checked}).", ""]
    peer_rate = None if peer is None else 1 / peer
    rows = []
    for n, r in result["throughput"].items():
        rate = r["stream_steps_per_s"]
        rows.append([
            str(n), common.fmt(r["seconds_per_step"] * 1e6, ".1f"), common.fmt(rate, ",.0f"),
            common.fmt(common.ratio(rate, peer_rate), ".0f") + "x",
        ])
    out += ["torchtcn throughput (one step advances every stream by one frame):", "",
            render(["streams", "us / step", "stream-steps / s", "vs pytorch-tcn 1 stream"],
                   rows)]
    return "\n".join(out)


def markdown(result: dict) -> str:
    m = result["machine"]
    head = [
        "<!-- generated by `torchtcn bench stream`; do not edit by hand -->",
        f"Model: {result['model']}; device {result['device']}; {m.get('cpu')}, "
        f"{m.get('threads')} threads; torch {m.get('torch')}; pytorch-tcn "
        f"{m.get('pytorch-tcn', 'not installed')}; {result['date']}.",
        "",
        "",
    ]
    return "\n".join(head) + tables(result, common.markdown_table) + "\n"


def run(args: argparse.Namespace) -> int:
    result = measure(args)
    print(tables(result, common.text_table))
    if args.json:
        common.write_json(args.json, result)
        print(f"wrote {args.json}")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(result))
        print(f"wrote {args.markdown}")
    return 0
