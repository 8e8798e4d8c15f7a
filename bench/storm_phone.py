"""One phone of bench/storm: waits for the agreed instant, POSTs the accept form, then fetches
the internet host until it answers with its own page. Prints one JSON line: the answer's
status, whether it says "connected", and the milliseconds from the instant to the answer and to
the first forwarded answer (null if not opened within 10 s).

usage: storm_phone.py CODE POLICY_VERSION START_UNIX_SECONDS
"""
import http.client, json, sys, time, urllib.parse
from labhttp import INTERNET, PORTAL, request


code, policy, start = sys.argv[1], sys.argv[2], float(sys.argv[3])


body = urllib.parse.urlencode({"code": code, "name": "Storm", "organisation": "Lab", "agree": "yes", "policy": policy})
time.sleep(max(0.0, start - time.time()))
t0 = time.time()
try:
    status, page = request(PORTAL, "POST", "/accept", body, timeout=10)
except OSError as e:
    print(json.dumps({"status": None, "error": str(e)}))
    sys.exit(0)
answered = (time.time() - t0) * 1000
connected = b"connected" in page
opened = None
while time.time() - t0 < 10 and connected:
    try:
        s, data = request(INTERNET, "GET", "/", timeout=10)
        if s == 200 and b"Hello from the internet" in data:
            opened = (time.time() - t0) * 1000
            break
    except OSError:
        pass
print(json.dumps({"status": status, "connected": connected, "answered_ms": answered, "opened_ms": opened,
                  "late_start_ms": (t0 - start) * 1000}))
