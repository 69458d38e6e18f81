#!/usr/bin/env python3
"""PyTorch scaled_dot_product_attention on the shapes of dring_gpu_bench's dense rows.

Run by tests/gpu-check.sh (shot 2) on the same GPU in the same run, so that dring's dense forward
and backward stand next to SDPA's, with each of its cuDNN and flash backends forced in turn. Shapes
are [B, S, H, D] like dring's, viewed as [B, H, S, D] for SDPA; forward FLOPs 4*B*H*S^2*D, half that
causal (the visible scores), the backward 2.5 times the forward, as in dring_gpu_bench. Times: CUDA
events, median of --reps after 3 warm-ups, inputs standard normal (never zeros). Prints one line
per (shape, backend) and writes --json.

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
    # Each SDPA backend on its own (cuDNN's fused attention, FlashAttention-2 as PyTorch ships it);
    # a backend PyTorch cannot use here gives a row with its reason instead of a time.
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backends = [("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)]

    def timed(fn):
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        times = []
        for _ in range(args.reps):
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop))
        return statistics.median(times)

    rows = []
    for case, b, s, h, d, dtype, causal in shapes:
        gen = torch.Generator(device="cuda").manual_seed(1)
        q, k, v = (torch.randn(b, s, h, d, device="cuda", dtype=dtype, generator=gen).transpose(1, 2) for _ in range(3))
        dout = torch.randn(b, s, h, d, device="cuda", dtype=dtype, generator=gen).transpose(1, 2)
        ref = None
        for name, backend in backends:
            row = {"case": case, "shape": f"B{b} S{s} H{h} D{d}", "dtype": str(dtype).replace("torch.", "").replace(
                "bfloat16", "bf16").replace("float16", "fp16"), "backend": name, "torch": torch.__version__}
            try:
                with sdpa_kernel([backend]):
                    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
                    fwd_ms = timed(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal))
                    qg, kg, vg = (t.detach().requires_grad_() for t in (q, k, v))
                    og = F.scaled_dot_product_attention(qg, kg, vg, is_causal=causal)
                    bwd_ms = timed(lambda: torch.autograd.grad(og, (qg, kg, vg), dout, retain_graph=True))
            except RuntimeError as e:  # this backend refuses the shape or the GPU
                row["skipped"] = str(e).splitlines()[0][:200]
                rows.append(row)
                print(f"sdpa {case:14s} {row['shape']:22s} {row['dtype']:5s} {name:5s} skipped: {row['skipped']}")
                continue
            if ref is None:
                # Error of a few rows against float64, as for dring's rows.
                rows_idx = torch.linspace(0, s - 1, 4, device="cuda").long()
                qf, kf, vf = q.double(), k.double(), v.double()
                scores = torch.einsum("bhid,bhjd->bhij", qf[:, :, rows_idx], kf) / d**0.5
                if causal:
                    mask = torch.arange(s, device="cuda")[None, :] > rows_idx[:, None]
                    scores = scores.masked_fill(mask, float("-inf"))
                ref = (rows_idx, torch.einsum("bhij,bhjd->bhid", torch.softmax(scores, dim=-1), vf), vf.abs().max())
            rows_idx, want, vmax = ref
            err = ((out[:, :, rows_idx].double() - want).abs().max() / vmax).item()
            flops = 4.0 * b * h * s * s * d * (0.5 if causal else 1.0)
            # The backward recomputes the scores and forms four products: 2.5x the forward's FLOPs.
            row.update({"time_ms": fwd_ms, "tflops": flops / (fwd_ms * 1e-3) / 1e12, "bwd_time_ms": bwd_ms,
                        "bwd_tflops": 2.5 * flops / (bwd_ms * 1e-3) / 1e12, "max_err": err})
            rows.append(row)
            print(f"sdpa {case:14s} {row['shape']:22s} {row['dtype']:5s} {name:5s} fwd {fwd_ms:8.3f} ms "
                  f"{row['tflops']:7.1f} TFLOP/s  bwd {bwd_ms:8.3f} ms {row['bwd_tflops']:7.1f} TFLOP/s  "
                  f"max_err {err:.1e}")
    json.dump({"device": torch.cuda.get_device_name(0), "rows": rows}, open(args.json, "w"), indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
