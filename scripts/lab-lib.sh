# Shared by scripts/lab and bench/run: a namespace lab with a gateway, an access-point bridge,
# N phones and an "internet" web server. Source it, set P (name prefix) and call lab_up N;
# lab_down removes everything. Never touches the host's own interfaces or ruleset.
# shellcheck shell=bash

lab_work=""
lab_pids=()

lab_ns() { echo "$P-$1"; }

lab_up() {
  local phones=$1 i ns
  lab_work=$(mktemp -d /tmp/aupgate-lab.XXXXXX)
  GW=$(lab_ns gw) AP=$(lab_ns ap) NET=$(lab_ns net)
  for ns in $GW $AP $NET; do
    ip netns del "$ns" 2>/dev/null || true
    ip netns add "$ns"; ip -n "$ns" link set lo up
  done
  ip -n "$GW" link add guest0 type veth peer name uplink netns "$AP"
  ip -n "$GW" link add wan0 type veth peer name eth0 netns "$NET"
  ip -n "$GW" addr add 192.0.2.1/24 dev guest0;   ip -n "$GW" link set guest0 up
  ip -n "$GW" addr add 198.51.100.1/24 dev wan0;  ip -n "$GW" link set wan0 up
  ip netns exec "$GW" sysctl -qw net.ipv4.ip_forward=1
  ip -n "$NET" addr add 198.51.100.2/24 dev eth0; ip -n "$NET" link set eth0 up
  ip -n "$NET" route add 192.0.2.0/24 via 198.51.100.1
  ip -n "$AP" link add br0 type bridge; ip -n "$AP" link set br0 up
  ip -n "$AP" link set uplink master br0 up
  for i in $(seq "$phones"); do
    ns=$(lab_ns "phone$i")
    ip netns del "$ns" 2>/dev/null || true
    ip netns add "$ns"; ip -n "$ns" link set lo up
    ip -n "$ns" link add eth0 type veth peer name "port$i" netns "$AP"
    ip -n "$AP" link set "port$i" master br0 up
    ip -n "$ns" link set eth0 address "02:00:00:00:01:$(printf %02x "$i")"
    ip -n "$ns" addr add "192.0.2.$((100 + i))/24" dev eth0; ip -n "$ns" link set eth0 up
    ip -n "$ns" route add default via 192.0.2.1
  done
  mkdir -p "$lab_work/www"; echo "Hello from the internet" > "$lab_work/www/index.html"
  ip netns exec "$NET" python3 -m http.server 80 --bind 198.51.100.2 --directory "$lab_work/www" >/dev/null 2>&1 &
  lab_pids+=($!)
  cat > "$lab_work/aupgate.toml" <<CONF
[school]
name = "Claremont Primary School"
timezone = "Europe/London"
dsl_contact = "Jenny James (DSL), via the school office"
[guest]
interface = "guest0"
address = "192.0.2.1"
[portal]
port = 8080
[store]
path = "$lab_work/state/aupgate.db"
[control]
socket = "$lab_work/run/control.sock"
CONF
}

# lab_nginx: nginx (Debian's, 2 workers, as it ships) in the internet namespace on port 8000,
# answering "Hello from the internet" as the python server on port 80 does, but in 0.1 ms
# instead of 0.6 (a phone's fetch through the gateway, measured from a phone). The benches time
# their fetches against it, so the stand-in's own time is not taken for the gateway's. Sets
# lab_internet (HOST:PORT) and exports it as BENCH_INTERNET for bench/labhttp.py.
lab_nginx() {
  command -v nginx >/dev/null || {
    echo "lab_nginx: needs Debian's nginx (apt-get install nginx; the lab runs its own, the service need not run)" >&2
    return 1
  }
  mkdir -p "$lab_work/nginx/tmp"
  cat > "$lab_work/nginx/nginx.conf" <<CONF
worker_processes 2;
daemon off;
pid $lab_work/nginx/nginx.pid;
error_log $lab_work/nginx/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  default_type text/html;
  client_body_temp_path $lab_work/nginx/tmp/body;
  proxy_temp_path $lab_work/nginx/tmp/proxy;
  fastcgi_temp_path $lab_work/nginx/tmp/fastcgi;
  uwsgi_temp_path $lab_work/nginx/tmp/uwsgi;
  scgi_temp_path $lab_work/nginx/tmp/scgi;
  server { listen 198.51.100.2:8000; location / { return 200 "Hello from the internet\n"; } }
}
CONF
  ip netns exec "$NET" nginx -p "$lab_work/nginx" -e "$lab_work/nginx/error.log" -c "$lab_work/nginx/nginx.conf" &
  lab_pids+=($!)
  lab_internet=198.51.100.2:8000
  export BENCH_INTERNET=$lab_internet
  for _ in $(seq 50); do ip netns exec "$NET" curl -sf -o /dev/null "http://$lab_internet/" && return 0; sleep 0.1; done
  echo "lab_nginx: nginx did not answer on $lab_internet" >&2
  return 1
}

# lab_start_daemon BIN: runs `BIN run` in the gateway; sets daemon_pid; waits until ready.
lab_start_daemon() {
  ip netns exec "$GW" "$1" run --config "$lab_work/aupgate.toml" >/dev/null 2> "$lab_work/daemon.log" &
  daemon_pid=$!
  lab_pids+=("$daemon_pid")
  for _ in $(seq 100); do grep -q "aupgate ready" "$lab_work/daemon.log" && return 0; sleep 0.1; done
  cat "$lab_work/daemon.log" >&2
  return 1
}

lab_down() {
  local pid ns
  set +e # cleanup must run to the end: a killed child's `wait` status is not an error
  for pid in "${lab_pids[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  for ns in $(ip netns list | awk '{print $1}' | grep "^$P-"); do ip netns del "$ns" 2>/dev/null; done
  [ -n "$lab_work" ] && rm -rf "$lab_work"
  return 0
}
