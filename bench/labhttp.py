"""What the bench clients share: the lab's addresses, one HTTP request on a fresh connection,
the aupgate CLI, and one timed accept."""
import http.client, json, os, re, subprocess, sys, time, urllib.parse

# The internet host the phones fetch: BENCH_INTERNET (HOST:PORT, set by scripts/lab-lib.sh's
# lab_nginx to nginx on port 8000), else the lab's python server on port 80.
_host, _, _port = os.environ.get("BENCH_INTERNET", "198.51.100.2:80").rpartition(":")
PORTAL, INTERNET = ("192.0.2.1", 8080), (_host, int(_port))


def request(host_port, method, path, body=None, timeout=5):
    """One request on a fresh connection (a form body if given): (status, body bytes)."""
    c = http.client.HTTPConnection(*host_port, timeout=timeout)
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
    c.request(method, path, body=body, headers=headers)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def cli(bin_, config, *args):
    """Runs `BIN --config CONFIG ARGS...`; its standard output."""
    return subprocess.run([bin_, "--config", config, *args], check=True, capture_output=True, text=True).stdout


def forwarded():
    """One fetch of the internet host on a fresh connection: answered by the host itself?"""
    try:
        status, data = request(INTERNET, "GET", "/")
    except OSError:  # refused or reset: not forwarded
        return False
    return status == 200 and b"Hello from the internet" in data


def policy_version():
    """The policy version the portal's form carries."""
    _, page = request(PORTAL, "GET", "/")
    return re.search(rb'name="policy" value="([0-9a-f]+)"', page).group(1).decode()


def timed_accept(cli, title, ends, policy, wait):
    """Staff create a course (untimed, through `cli(*args)`), then the phone POSTs the form (the
    timer starts just before it is sent) and fetches the internet host until the host itself
    answers. Returns (course, ms to the POST's answer, ms to the first forwarded answer); exits
    if the phone is not forwarded within `wait` seconds."""
    course = json.loads(cli("course", "add", "--title", title, "--starts", "2000-01-01T00:00",
                            "--ends", ends, "--max-devices", "5", "--json"))
    body = urllib.parse.urlencode({"code": course["code"], "name": "Bench", "organisation": "Lab",
                                   "agree": "yes", "policy": policy})
    t0 = time.perf_counter()
    status, _ = request(PORTAL, "POST", "/accept", body)
    t1 = time.perf_counter()
    assert status == 200, status
    deadline = time.perf_counter() + wait
    while not forwarded():
        if time.perf_counter() > deadline:
            sys.exit(f"the phone was not opened within {wait} s of accepting")
    t2 = time.perf_counter()
    return course, (t1 - t0) * 1000, (t2 - t0) * 1000


def fetch_ms(n):
    """The floor under a timed accept: `n` fetches of the internet host by a phone already
    open, each on a fresh connection; their times in ms (exits if one is not forwarded)."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        if not forwarded():
            sys.exit("an open phone's fetch was not forwarded")
        times.append((time.perf_counter() - t0) * 1000)
    return times
