"""A minimal RADIUS accounting server for bench/scale --radius: checks each Accounting-Request's
Request Authenticator with the secret, answers a valid Accounting-Response, and counts what it
took by Acct-Status-Type into COUNTS (a JSON file, rewritten at most every 0.2 s). The tests
use Debian's FreeRADIUS; this stands in only so the bench measures aupgate, not the server.
usage: python3 radius_server.py ADDRESS PORT SECRET COUNTS"""
import hashlib
import json
import socket
import sys
import time

addr, port, secret, counts_path = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode(), sys.argv[4]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((addr, port))
s.settimeout(0.2)
counts = {"start": 0, "stop": 0, "interim": 0, "bad": 0}
names = {1: "start", 2: "stop", 3: "interim"}
written = 0.0


def status_type(packet):
    i = 20
    while i + 2 <= len(packet):
        kind, length = packet[i], packet[i + 1]
        if length < 2:
            return None
        if kind == 40 and length == 6:
            return int.from_bytes(packet[i + 2:i + 6], "big")
        i += length
    return None


while True:
    try:
        packet, peer = s.recvfrom(4096)
        if len(packet) < 20 or packet[0] != 4:
            continue
        length = int.from_bytes(packet[2:4], "big")
        packet = packet[:length]
        expected = hashlib.md5(packet[:4] + bytes(16) + packet[20:] + secret).digest()
        if expected != packet[4:20]:
            counts["bad"] += 1
        else:
            counts[names.get(status_type(packet), "bad")] += 1
            head = bytes([5, packet[1]]) + (20).to_bytes(2, "big")
            auth = hashlib.md5(head + packet[4:20] + secret).digest()
            s.sendto(head + auth, peer)
    except socket.timeout:
        pass
    if time.monotonic() - written > 0.2:
        with open(counts_path + ".tmp", "w") as f:
            json.dump(counts, f)
        import os
        os.replace(counts_path + ".tmp", counts_path)
        written = time.monotonic()
