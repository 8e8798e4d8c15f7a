"""What the bench clients share: the lab's addresses, one HTTP request on a fresh connection,
and the aupgate CLI."""
import http.client, subprocess

PORTAL, INTERNET = ("192.0.2.1", 8080), ("198.51.100.2", 80)


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
