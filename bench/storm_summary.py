"""Summarises bench/storm: reads the phones' JSON lines on stdin, prints percentiles."""
import json, sys

rows = [json.loads(line) for line in sys.stdin if line.strip()]
ok = [r for r in rows if r.get("status") == 200 and r.get("connected")]
others = [r.get("status") or r.get("error") for r in rows if r not in ok]

def q(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p * (len(xs) - 1))))] if xs else float("nan")

answered = [r["answered_ms"] for r in ok]
opened = [r["opened_ms"] for r in ok if r["opened_ms"] is not None]
late = [r["late_start_ms"] for r in rows if "late_start_ms" in r]
print(f'answered "connected": {len(ok)} of {len(rows)}; other answers: {others}')
print(f"answer time:      p50 {q(answered, .5):7.1f} ms  p99 {q(answered, .99):7.1f} ms  max {max(answered, default=float('nan')):7.1f} ms")
print(f"first forwarded:  p50 {q(opened, .5):7.1f} ms  p99 {q(opened, .99):7.1f} ms  max {max(opened, default=float('nan')):7.1f} ms")
print(f"connected within 1 s of the instant: {sum(1 for a in answered if a < 1000)} of {len(rows)}")
print(f"latest phone to start after the instant (its own wake-up): {max(late, default=0):.1f} ms")
