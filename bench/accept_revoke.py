"""One accept and one revoke, timed, from a phone's namespace (bench/scale).

Each round, as in bench/accept_latency.py:
  1. staff create a fresh course (untimed: a revoked device may not accept again for a course);
  2. accept: the timer starts just before the POST to /accept is sent; the phone then fetches
     the internet host until it answers with its own page, not a redirect. Stops at that answer;
     then 3 more fetches, each timed on its own: a fetch by a phone already open, the floor
     under the accept's time (a fresh connection through the gateway and the host's answer);
  3. revoke: the timer starts just before `aupgate session revoke MAC` is started; while it
     runs, the phone keeps fetching the internet host on fresh connections until it is no longer
     answered by it (the portal's redirect, or a refusal). Stops then. When the CLI itself
     returned is kept too;
  4. staff end the course (untimed).
The internet host is BENCH_INTERNET (nginx, from lab_nginx in scripts/lab-lib.sh) when set,
else the lab's python server. Prints p50/p90/p99/max/mean of each, and one `figures` line of
key=value for bench/scale. With 50 rounds, p99 is the slowest round.

usage: accept_revoke.py AUPGATE_BIN CONFIG PHONE_MAC ROUNDS [REVOKE_ROUNDS]
(REVOKE_ROUNDS, default all: how many of the rounds time their revoke; the others revoke untimed.)
"""
import datetime, subprocess, sys, time
from labhttp import forwarded
import labhttp

bin_, config, mac, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
revoke_rounds = int(sys.argv[5]) if len(sys.argv) > 5 else rounds
# Courses end in a week, as the seeded ones do (bench/scale). (nft's text parser refuses a timeout
# of 100,000,000 s or more; the daemon now caps element timeouts at 366 days, so 2099 would work.)
ENDS = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def cli(*args):
    return labhttp.cli(bin_, config, *args)


policy = labhttp.policy_version()
posted, opened, closed, cli_done, floor = [], [], [], [], []
for i in range(rounds):
    course, post_ms, open_ms = labhttp.timed_accept(cli, f"scale bench {i}", ENDS, policy, 10)
    posted.append(post_ms)
    opened.append(open_ms)
    floor.extend(labhttp.fetch_ms(3))

    if i < revoke_rounds:
        t0 = time.perf_counter()
        proc = subprocess.Popen([bin_, "--config", config, "session", "revoke", mac],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.perf_counter() + 10
        t_cli = None
        while forwarded():
            if t_cli is None and proc.poll() is not None:
                t_cli = time.perf_counter()
            if time.perf_counter() > deadline:
                sys.exit("the phone was still forwarded 10 s after the revoke started")
        t_closed = time.perf_counter()
        proc.wait()
        t_cli = t_cli or time.perf_counter()
        assert proc.returncode == 0, proc.stderr.read()
        closed.append((t_closed - t0) * 1000)
        cli_done.append((t_cli - t0) * 1000)
    else:
        cli("session", "revoke", mac)
    cli("course", "end", str(course["id"]))


def q(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p * (len(xs) - 1))))]


def summary(name, xs):
    print(f"{name}: n={len(xs)} p50={q(xs, .5):.2f} ms p90={q(xs, .9):.2f} ms p99={q(xs, .99):.2f} ms"
          f" max={max(xs):.2f} ms mean={sum(xs) / len(xs):.2f} ms")


summary("POST /accept answered        ", posted)
summary("POST sent -> internet answers", opened)
summary("a fetch once open (the floor)", floor)
if closed:
    summary("revoke started -> not forwarded", closed)
    summary("revoke started -> CLI returned ", cli_done)
mean = lambda xs: sum(xs) / len(xs)
fig = {"accept_post_p50": q(posted, .5), "accept_post_p99": q(posted, .99),
       "accept_p50": q(opened, .5), "accept_p99": q(opened, .99), "accept_mean": mean(opened),
       "fetch_p50": q(floor, .5)}
if closed:
    fig.update({"revoke_p50": q(closed, .5), "revoke_p99": q(closed, .99),
                "revoke_mean": mean(closed), "revoke_cli_p50": q(cli_done, .5),
                "revoke_cli_p99": q(cli_done, .99)})
print("figures " + " ".join(f"{k}={v:.2f}" for k, v in fig.items()))
