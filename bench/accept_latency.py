"""Accept-to-open latency, measured from a phone's namespace.

Each round: staff create a fresh course (untimed), then the phone POSTs the form (timer starts
just before the request is sent) and immediately tries the internet host until it answers with
its own page, not a redirect (timer stops at the first byte of that answer); then staff revoke
the phone (untimed). Prints p50/p90/p99/max of both "POST answered" and "first forwarded answer".

usage: accept_latency.py AUPGATE_BIN CONFIG PHONE_MAC ROUNDS
"""
import sys
import labhttp

bin_, config, mac, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

def cli(*args):
    return labhttp.cli(bin_, config, *args)


policy = labhttp.policy_version()
posted, opened = [], []
for i in range(rounds):
    course, post_ms, open_ms = labhttp.timed_accept(cli, f"bench {i}", "2099-01-01T00:00", policy, 5)
    posted.append(post_ms)
    opened.append(open_ms)
    cli("session", "revoke", mac)
    cli("course", "end", str(course["id"]))

def summary(name, xs):
    xs = sorted(xs)
    q = lambda p: xs[min(len(xs) - 1, int(round(p * (len(xs) - 1))))]
    print(f"{name}: n={len(xs)} p50={q(.5):.2f} ms p90={q(.9):.2f} ms p99={q(.99):.2f} ms max={xs[-1]:.2f} ms")

summary("POST /accept answered      ", posted)
summary("POST sent -> internet answers", opened)
