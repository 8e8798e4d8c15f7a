"""Accept-to-open latency, measured from a phone's namespace.

Each round: staff create a fresh course (untimed), then the phone POSTs the form (timer starts
just before the request is sent) and immediately tries the internet host until it answers with
its own page, not a redirect (timer stops at the first byte of that answer); then staff revoke
the phone (untimed). Prints p50/p90/p99/max of both "POST answered" and "first forwarded answer".

usage: accept_latency.py AUPGATE_BIN CONFIG PHONE_MAC ROUNDS
"""
import http.client, json, re, socket, statistics, subprocess, sys, time, urllib.parse
from labhttp import INTERNET, PORTAL, request
import labhttp

bin_, config, mac, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

def cli(*args):
    return labhttp.cli(bin_, config, *args)


status, page = request(PORTAL, "GET", "/")
policy = re.search(rb'name="policy" value="([0-9a-f]+)"', page).group(1).decode()
posted, opened = [], []
for i in range(rounds):
    course = json.loads(cli("course", "add", "--title", f"bench {i}", "--starts", "2000-01-01T00:00",
                            "--ends", "2099-01-01T00:00", "--max-devices", "5", "--json"))
    body = urllib.parse.urlencode({"code": course["code"], "name": "Bench", "organisation": "Lab",
                                   "agree": "yes", "policy": policy})
    t0 = time.perf_counter()
    status, _ = request(PORTAL, "POST", "/accept", body)
    t1 = time.perf_counter()
    assert status == 200, status
    deadline = time.perf_counter() + 5
    while True:
        status, data = request(INTERNET, "GET", "/")
        if status == 200 and b"Hello from the internet" in data:
            break
        if time.perf_counter() > deadline:
            sys.exit("the phone was not opened within 5 s of accepting")
    t2 = time.perf_counter()
    posted.append((t1 - t0) * 1000)
    opened.append((t2 - t0) * 1000)
    cli("session", "revoke", mac)
    cli("course", "end", str(course["id"]))

def summary(name, xs):
    xs = sorted(xs)
    q = lambda p: xs[min(len(xs) - 1, int(round(p * (len(xs) - 1))))]
    print(f"{name}: n={len(xs)} p50={q(.5):.2f} ms p90={q(.9):.2f} ms p99={q(.99):.2f} ms max={xs[-1]:.2f} ms")

summary("POST /accept answered      ", posted)
summary("POST sent -> internet answers", opened)
