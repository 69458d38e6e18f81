#!/usr/bin/env python3
"""PyTorch scaled_dot_product_attention on the shapes of dring_gpu_bench's dense rows.

Run by tests/gpu-check.sh on the same GPU in the same run, so the table can set dring's dense
forward next to SDPA's (flash backend where PyTorch has it). Shapes are [B, S, H, D] like dring's,
viewed as [B, H, S, D] for SDPA; FLOPs 4*B*H*S^2*D, half that causal (the visible scores), as in
dring_gpu_bench. Times: CUDA events, median of --reps after warm-up, inputs standard normal.
Prints one line per shape and writes --json.

Usage: bench/sdpa_bench.py --json FILE [--reps 10] [--quick]
"""
import argparse
import json
import statistics
import sys


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    try:
        import torch
        import torch.nn.functional as F
    except Exception as e:  # noqa: BLE001 - any import failure means "no torch here"
        print(f"sdpa_bench: torch is not importable ({e}); skipped")
        json.dump({"skipped": str(e), "rows": []}, open(args.json, "w"))
        return 0
    if not torch.cuda.is_available():
        print("sdpa_bench: torch sees no GPU; skipped")
        json.dump({"skipped": "no GPU", "rows": []}, open(args.json, "w"))
        return 0

    s_dense = 2048 if args.quick else 16384
    # (case, B, S, H, D, dtype, causal): the dense rows of dring_gpu_bench.
    shapes = [
        ("dense", 1, s_dense, 16, 128, torch.bfloat16, False),
        ("dense_causal", 1, s_dense, 16, 128, torch.bfloat16, True),
        ("dense", 1, s_dense, 16, 128, torch.float16, False),
        ("dense", 1, s_dense, 32, 64, torch.bfloat16, False),
    ]
    backend_note = "default"
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        def context():
            return sdpa_kernel([SDPBackend.FLASH_ATTENTION])

        backend_note = "flash"
    except Exception:  # noqa: BLE001 - older torch: let SDPA choose
        import contextlib

        def context():
            return contextlib.nullcontext()

    rows = []
    for case, b, s, h, d, dtype, causal in shapes:
        gen = torch.Generator(device="cuda").manual_seed(1)
        q, k, v = (torch.randn(b, s, h, d, device="cuda", dtype=dtype, generator=gen).transpose(1, 2) for _ in range(3))
        with context():
            for _ in range(3):
                out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
            torch.cuda.synchronize()
            times = []
            for _ in range(args.reps):
                start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
                stop.record()
                stop.synchronize()
                times.append(start.elapsed_time(stop))
        # Error of a few rows against float64, as for dring's rows.
        rows_idx = torch.linspace(0, s - 1, 4, device="cuda").long()
        qf, kf, vf = q.double(), k.double(), v.double()
        scores = torch.einsum("bhid,bhjd->bhij", qf[:, :, rows_idx], kf) / d**0.5
        if causal:
            mask = torch.arange(s, device="cuda")[None, :] > rows_idx[:, None]
            scores = scores.masked_fill(mask, float("-inf"))
        ref = torch.einsum("bhij,bhjd->bhid", torch.softmax(scores, dim=-1), vf)
        err = ((out[:, :, rows_idx].double() - ref).abs().max() / vf.abs().max()).item()
        ms = statistics.median(times)
        flops = 4.0 * b * h * s * s * d * (0.5 if causal else 1.0)
        row = {"case": case, "shape": f"B{b} S{s} H{h} D{d}", "dtype": str(dtype).replace("torch.", "").replace(
            "bfloat16", "bf16").replace("float16", "fp16"), "time_ms": ms, "tflops": flops / (ms * 1e-3) / 1e12,
               "max_err": err, "backend": backend_note, "torch": torch.__version__}
        rows.append(row)
        print(f"sdpa {case:14s} {row['shape']:22s} {row['dtype']:5s} {ms:9.3f} ms {row['tflops']:8.1f} TFLOP/s "
              f"max_err {err:.1e} ({backend_note})")
    json.dump({"device": torch.cuda.get_device_name(0), "rows": rows}, open(args.json, "w"), indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
