"""Seeds an aupgate store with N allowed devices, written straight into SQLite (daemon stopped).

The store must already exist and be migrated: start the daemon on it once first (it creates the
schema and records its policy text), and for consents create the courses through the CLI.

Each device gets what the daemon itself would have written, so `aupgate audit verify` still
passes:
  - consents: the consent row (with a random salt) and its `consent` event, whose `personal`
    field commits to the personal fields (src/store/consents.rs, record_consent);
  - exceptions: the exception row, its `exception-granted` event committing to the device and
    reason, and the event's device link in event_subjects (src/store/exceptions.rs).
Every event is appended to the hash chain after the current head (src/store/mod.rs,
insert_event). With --no-events only the rows are written (to see what the daemon does with
rows the audit log does not vouch for).

MACs are distinct unicast, locally administered: 02:5e:00:HH:HH:HH for device 1..N (so none
collides with the lab's phones, 02:00:00:00:01:xx).

usage: seed.py DB N consents COURSE_ID[,COURSE_ID...] [--no-events]
       seed.py DB N exceptions [--no-events]
Consents are spread over the courses in turn; each expires when its course ends. Exceptions run
for 7 days (staff may grant at most 31).
"""
import datetime, hashlib, json, secrets, sqlite3, sys, time

GENESIS = "0" * 64


def ts(t):
    """The store's timestamp text: RFC 3339 UTC, milliseconds (src/store/mod.rs, ts)."""
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def sha256_lines(*parts):
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\n")
    return h.hexdigest()


def detail_text(obj):
    """As serde_json writes a json! object: keys sorted, no spaces."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def mac_of(i):
    return "02:5e:00:%02x:%02x:%02x" % ((i >> 16) & 255, (i >> 8) & 255, i & 255)


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    no_events = "--no-events" in sys.argv
    db, n, kind = args[0], int(args[1]), args[2]
    assert 0 < n < 1 << 24, "N must be 1..16777215"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA foreign_keys = ON")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    # 7 only added an index, 8 the accounting tables (filled by the daemon's own sweep), 9 changed
    # staff sessions; the rows written here are the same.
    assert version in (6, 7, 8, 9), f"schema version {version}: this seeder follows schemas 6 to 9 (src/store/schema.rs)"
    now = datetime.datetime.now(datetime.timezone.utc)
    at = ts(now)
    t0 = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    row = conn.execute("SELECT hash FROM events WHERE hash IS NOT NULL ORDER BY id DESC LIMIT 1").fetchone()
    prev = row[0] if row else GENESIS

    def event(kind_, detail):
        nonlocal prev
        text = detail_text(detail)
        h = sha256_lines(prev, at, kind_, text)
        cur = conn.execute(
            "INSERT INTO events (at, kind, detail, prev_hash, hash) VALUES (?, ?, ?, ?, ?)", (at, kind_, text, prev, h)
        )
        prev = h
        return cur.lastrowid

    if kind == "consents":
        courses = [int(c) for c in args[3].split(",")]
        policy = conn.execute("SELECT hash FROM policies ORDER BY first_shown_at DESC, hash LIMIT 1").fetchone()[0]
        ends = dict(conn.execute(f"SELECT id, ends_at FROM courses WHERE id IN ({','.join('?' * len(courses))})", courses))
        assert len(ends) == len(courses), f"courses {courses} not all in the store"
        for i in range(1, n + 1):
            course = courses[(i - 1) % len(courses)]
            mac, ip = mac_of(i), "10.%d.%d.%d" % ((i >> 16) & 255, (i >> 8) & 255, i & 255)
            name, org, ua = f"Seeded guest {i}", "Bench", "bench/seed.py"
            salt = secrets.token_hex(16)
            cur = conn.execute(
                "INSERT INTO consents (course_id, mac, ip, accepted_at, expires_at, name, organisation, user_agent, policy_hash, salt)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (course, mac, ip, at, ends[course], name, org, ua, policy, salt),
            )
            if not no_events:
                event("consent", {
                    "consent": cur.lastrowid, "course": course, "policy": policy, "accepted_at": at,
                    "expires_at": ends[course], "personal": sha256_lines(salt, mac, ip, name, org, ua),
                })
    elif kind == "exceptions":
        until, by = ts(now + datetime.timedelta(days=7)), "bench"
        for i in range(1, n + 1):
            mac, reason = mac_of(i), f"seeded device {i}"
            cur = conn.execute(
                "INSERT INTO exceptions (mac, reason, granted_by, granted_at, until) VALUES (?, ?, ?, ?, ?)",
                (mac, reason, by, at, until),
            )
            if not no_events:
                salt = secrets.token_hex(16)
                eid = event("exception-granted", {
                    "exception": cur.lastrowid, "until": until, "by": by, "device": sha256_lines(salt, mac, reason),
                })
                conn.execute("INSERT INTO event_subjects (event_id, salt, mac, note) VALUES (?, ?, ?, ?)",
                             (eid, salt, mac, reason))
    else:
        sys.exit(f"seed.py: unknown kind {kind!r} (consents or exceptions)")
    conn.execute("COMMIT")
    conn.close()
    print(f"seeded {n} {kind}{' without events' if no_events else ' with their events'} in {time.perf_counter() - t0:.2f} s")


main()
