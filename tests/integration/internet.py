"""The lab's "internet": one HTTP server answering as every host the tests need, by Host header.
The OS captive-portal probe hosts get their real answers; anything else gets INTERNET-OK.
usage: internet.py DIR_IGNORED  (listens on [::]:80 and [::]:8080, dual-stack; 8080 is the
portal's port on the gateway, so a guest that reaches it here got out past the portal)"""
import http.server, socket, sys, threading

PROBES = {
    ("captive.apple.com", "/hotspot-detect.html"): (200, "text/html",
        "<HTML><HEAD><TITLE>Success</TITLE></HEAD><BODY>Success</BODY></HTML>"),
    ("connectivitycheck.gstatic.com", "/generate_204"): (204, None, ""),
    ("www.google.com", "/gen_204"): (204, None, ""),
    ("www.gstatic.com", "/generate_204"): (204, None, ""),
    ("www.msftconnecttest.com", "/connecttest.txt"): (200, "text/plain", "Microsoft Connect Test"),
    ("detectportal.firefox.com", "/canonical.html"): (200, "text/html",
        '<meta http-equiv="refresh" content="0;url=https://support.mozilla.org/kb/captive-portal"/>'),
}

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        host = (self.headers.get("Host") or "").split(":")[0].lower()
        status, ctype, body = PROBES.get((host, self.path.split("?")[0]), (200, "text/plain", "INTERNET-OK"))
        data = body.encode()
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        if status != 204:
            self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        if status != 204:
            self.wfile.write(data)

    def log_message(self, *args):
        pass

class Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

threading.Thread(target=Server(("::", 8080), Handler).serve_forever, daemon=True).start()
Server(("::", 80), Handler).serve_forever()
