#!/usr/bin/env python3
"""Portcullis vs nginx vs HAProxy, side by side. Run through bench/run, which installs the tools, builds,
and enters a private network namespace; this file runs the scenarios and writes the results.

Layout: the proxy under test on CPU1 (one worker/thread), load generators and the backend on CPU0.
One fixture (bench/fixtures + generated certificates) is rendered into Portcullis manifests, nginx.conf
and haproxy.cfg, so hosts, certificates, TLS versions, forwarding headers and the redirect are the same.
"""

import argparse
import base64
import datetime
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PORTCULLIS = Path(os.environ.get("BENCH_PORTCULLIS_BIN", ROOT / "target/release/portcullis"))
TOOLS = ROOT / "target/bench-tools/release/bench-tools"
SNI_LUA = BENCH / "sni.lua"
PROXY_CPU, CLIENT_CPU = "1", "0"
BACKEND = "127.0.0.1:9000"
# htpasswd's bcrypt cost for scenario (i); 10 is the common library default (htpasswd's own is 5).
BCRYPT_COST = 10


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def run(cmd, timeout=None, check=True, cpu=CLIENT_CPU, **kw):
    """Runs a client-side command pinned to the client core; returns stdout."""
    full = ["taskset", "-c", cpu] + [str(c) for c in cmd]
    env = dict(os.environ, OPENSSL_CONF=str(BENCH / "openssl-client.cnf"))
    p = subprocess.run(full, capture_output=True, text=True, timeout=timeout, env=env, **kw)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(full)} failed ({p.returncode}): {p.stderr[-2000:]}{p.stdout[-2000:]}")
    return p.stdout


# ----------------------------------------------------------------------------------------------------
# /proc accounting


def children_tree(pid):
    """pid and all its descendants."""
    parents = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    s = f.read()
                ppid = int(s[s.rfind(")") + 2:].split()[1])
                parents.setdefault(ppid, []).append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(parents.get(p, []))
    return out


def cpu_ticks(pid):
    """utime+stime (clock ticks) of a process tree, including reaped children (cutime/cstime)."""
    total = 0
    for p in children_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                s = f.read()
            fields = s[s.rfind(")") + 2:].split()
            total += sum(int(x) for x in fields[11:15])
        except (OSError, ValueError):
            pass
    return total


def tree_counters(pid):
    """User and system CPU (clock ticks), minor faults and context switches of a process tree: what a
    request costs in our code against the kernel, and how often the proxy sleeps and wakes."""
    out = {"utime": 0, "stime": 0, "minflt": 0, "voluntary": 0, "involuntary": 0}
    for p in children_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                s = f.read()
            fields = s[s.rfind(")") + 2:].split()
            out["minflt"] += int(fields[7])
            out["utime"] += int(fields[11]) + int(fields[13])
            out["stime"] += int(fields[12]) + int(fields[14])
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        out["voluntary"] += int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches:"):
                        out["involuntary"] += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            pass
    return out


def where_time_goes(before, after, requests):
    """Per-request figures from two tree_counters readings."""
    hz = os.sysconf("SC_CLK_TCK")
    d = {k: after[k] - before[k] for k in before}
    return {"user_us_per_req": round(d["utime"] * 1e6 / hz / requests, 2),
            "system_us_per_req": round(d["stime"] * 1e6 / hz / requests, 2),
            "minor_faults_per_req": round(d["minflt"] / requests, 4),
            "voluntary_switches_per_req": round(d["voluntary"] / requests, 4),
            "involuntary_switches_per_req": round(d["involuntary"] / requests, 4)}


def tcp_out_segments():
    """TcpOutSegs of this network namespace: client, proxy and backend together, so only the difference
    between proxies under the same load is the proxy's."""
    with open("/proc/net/snmp") as f:
        tcp = [line.split() for line in f if line.startswith("Tcp:")]
    return int(tcp[1][tcp[0].index("OutSegs")])


def syscall_profile(pid, fn):
    """Syscalls per request by type, from `strace -f -c` attached to the whole process tree. strace slows
    the proxy down several times, so this is its own short run, never the timed one."""
    log_file = tempfile.NamedTemporaryFile(suffix=".strace", delete=False).name
    cmd = ["strace", "-f", "-c", "-qq", "-o", log_file]
    for p in children_tree(pid):
        cmd += ["-p", str(p)]
    tracer = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    r = fn()
    tracer.send_signal(signal.SIGINT)
    tracer.wait(timeout=30)
    calls = {}
    with open(log_file) as f:
        for line in f:
            parts = line.split()
            # "% time seconds usecs/call calls [errors] syscall"; the total line names no syscall.
            if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
                calls[parts[-1]] = int(parts[3])
    os.unlink(log_file)
    requests = r.get("requests") or 0
    return {name: round(n / requests, 3) for name, n in sorted(calls.items(), key=lambda kv: -kv[1])} if requests else {}


def pss_kb(pid):
    total = 0
    for p in children_tree(pid):
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def cpu_times():
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                parts = line.split()
                vals = [int(x) for x in parts[1:]]
                idle = vals[3] + vals[4]
                out[parts[0]] = (sum(vals[:8]), idle, vals[7] if len(vals) > 7 else 0)
    return out


def busy_between(a, b):
    res = {}
    for cpu in a:
        total = b[cpu][0] - a[cpu][0]
        idle = b[cpu][1] - a[cpu][1]
        steal = b[cpu][2] - a[cpu][2]
        res[cpu] = {"busy_pct": round(100.0 * (total - idle) / total, 1) if total else 0.0,
                    "steal_pct": round(100.0 * steal / total, 1) if total else 0.0}
    return res


def background_busy(seconds=1.0):
    a = cpu_times()
    time.sleep(seconds)
    return busy_between(a, cpu_times())


def wait_idle(max_wait, threshold=10.0):
    """Waits (bounded) until both cores are mostly idle; returns the last sample."""
    deadline = time.time() + max_wait
    while True:
        b = background_busy(1.0)
        worst = max(v["busy_pct"] for v in b.values())
        if worst <= threshold or time.time() > deadline:
            return b
        time.sleep(2)


# ----------------------------------------------------------------------------------------------------
# Fixture rendering


class Fixture:
    """Certificates and the hosts served. All three proxies are rendered from this."""

    def __init__(self, work, scale_hosts):
        self.work = work
        self.certs = work / f"certs-{scale_hosts}"
        run([TOOLS, "certs", f"dir={self.certs}", f"hosts={scale_hosts}"], timeout=900)
        self.fp = {}
        with open(self.certs / "fingerprints.tsv") as f:
            for line in f:
                name, host, fp = line.split()
                self.fp[name] = fp
        self.scale_hosts = scale_hosts

    def crt(self, name):
        return (self.certs / f"{name}.crt").read_text()

    def key(self, name):
        return (self.certs / f"{name}.key").read_text()


def base_hosts():
    """(host, cert name) of the hosts every configuration serves."""
    return [("a.bench.test", "a"), ("rsa.bench.test", "rsa"), ("rot.bench.test", "rot-v1")]


def yaml_block(text, indent):
    pad = " " * indent
    return "\n".join(pad + line for line in text.strip().splitlines())


def secret_yaml(name, crt, key):
    return (f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: bench\n"
            f"type: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{yaml_block(crt, 4)}\n"
            f"  tls.key: |\n{yaml_block(key, 4)}\n")


def ingress_yaml(name, host, secret, annotations=None):
    tls = f"  tls:\n  - hosts: [{host}]\n    secretName: {secret}\n" if secret else ""
    ann = "".join(f"    nginx.ingress.kubernetes.io/{k}: {json.dumps(v)}\n" for k, v in (annotations or {}).items())
    ann = f"  annotations:\n{ann}" if ann else ""
    return (f"apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: bench\n{ann}"
            f"spec:\n  ingressClassName: portcullis\n{tls}  rules:\n  - host: {host}\n    http:\n      paths:\n"
            f"      - path: /\n        pathType: Prefix\n        backend:\n          service:\n"
            f"            name: backend\n            port:\n              number: 80\n")


def atomic_write(path, text):
    path = Path(path)
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------------
# Implementations under test


class Impl:
    name = "?"

    def __init__(self, fx, work):
        self.fx, self.dir, self.proc = fx, work / self.name, None
        self.dir.mkdir(parents=True, exist_ok=True)

    @property
    def pid(self):
        return self.proc.pid

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                for p in reversed(children_tree(self.proc.pid)):
                    try:
                        os.kill(p, signal.SIGKILL)
                    except OSError:
                        pass
                self.proc.wait(timeout=5)
        self.proc = None
        wait_port_free(443, getattr(self, "listen_ip", "127.0.0.1"))

    def spawn(self, cmd):
        self.log = open(self.dir / "stderr.log", "ab")
        self.proc = subprocess.Popen(["taskset", "-c", PROXY_CPU] + [str(c) for c in cmd],
                                     stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL)
        return self.proc

    def start(self, resumption=True, scale=False, extra_hosts=()):
        """Writes the configuration and starts; returns when :443 and :80 accept connections."""
        self.write_config(resumption, scale, extra_hosts)
        self.spawn_ns = time.time_ns()
        self.launch()
        if not scale:
            wait_tls("a.bench.test", self.fx.fp["a"], 60, self)


def wait_port_free(port, host="127.0.0.1", timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            s = socket.create_connection((host, port), timeout=0.2)
            s.close()
            time.sleep(0.05)
        except OSError:
            return


def wait_tls(host, fp, timeout, impl):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if impl.proc.poll() is not None:
            raise RuntimeError(f"{impl.name} exited: see {impl.dir / 'stderr.log'}")
        listfile = impl.dir / "ready-hosts.txt"
        listfile.write_text(f"{host} {fp}\n")
        out = run([TOOLS, "probe-hosts", f"list={listfile}", "timeout=2", "parallel=1"], check=False, timeout=10)
        try:
            if json.loads(out.strip().splitlines()[-1])["ok"]:
                return
        except (ValueError, IndexError, KeyError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{impl.name} did not serve {host} within {timeout}s")


class Portcullis(Impl):
    name = "portcullis"

    def write_config(self, resumption, scale, extra_hosts):
        m = self.manifests = self.dir / "manifests"
        if m.exists():
            shutil.rmtree(m)
        m.mkdir()
        (m / "base.yaml").write_text(
            "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata:\n  name: portcullis\n"
            "spec:\n  controller: portcullis.io/ingress-controller\n---\n"
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: backend\n  namespace: bench\n"
            "spec:\n  ports:\n  - port: 80\n    targetPort: 9000\n---\n"
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: backend-1\n"
            "  namespace: bench\n  labels:\n    kubernetes.io/service-name: backend\naddressType: IPv4\n"
            "ports:\n- port: 9000\nendpoints:\n- addresses: [127.0.0.1]\n  conditions:\n    ready: true\n")
        for host, cert in base_hosts():
            short = host.split(".")[0]
            (m / f"{short}.yaml").write_text(
                ingress_yaml(short, host, f"{short}-tls", self.annotations.get(short)) + "---\n"
                + secret_yaml(f"{short}-tls", self.fx.crt(cert), self.fx.key(cert)))
        for name, text in self.extra_manifests.items():
            (m / name).write_text(text)
        for host in extra_hosts:
            self.add_host(host)
        if scale:
            for i in range(self.fx.scale_hosts):
                n = f"h{i:05}"
                (m / f"{n}.yaml").write_text(
                    ingress_yaml(n, f"{n}.bench.test", f"{n}-tls") + "---\n"
                    + secret_yaml(f"{n}-tls", self.fx.crt(n), self.fx.key(n)))
        settings = self.dir / "settings.yaml"
        settings.write_text("tls:\n  min-version: \"1.2\"\n" + (
            "" if resumption else "  session-tickets: false\n  session-cache-size: 0\n") + self.settings_extra)
        ip = self.listen_ip
        self.args = ["--manifests", m, "--config", settings, "--https-addr", f"{ip}:443",
                     "--http-addr", f"{ip}:80", "--admin-addr", f"{ip}:10254", "--log-level", "warn"]

    def launch(self):
        self.spawn([PORTCULLIS] + self.args + self.extra_args)

    extra_args = []
    # The PROXY protocol scenario moves Portcullis behind a TCP relay on 127.0.0.1.
    listen_ip = "127.0.0.1"
    settings_extra = ""
    # Scenarios (i) and (j): annotations on a base Ingress (by short host name), and more objects.
    annotations = {}
    extra_manifests = {}

    def add_host(self, host):
        """An Ingress for `host` without a TLS section (HTTPS gets the default certificate); returns the time
        of the write."""
        short = host.split(".")[0]
        t0 = time.time_ns()
        atomic_write(self.manifests / f"{short}.yaml", ingress_yaml(short, host, None))
        return t0

    def remove_host(self, host):
        os.unlink(self.manifests / f"{host.split('.')[0]}.yaml")

    def rotate(self, name, cert, host="rot.bench.test"):
        short = host.split(".")[0]
        t0 = time.time_ns()
        atomic_write(self.manifests / f"{short}.yaml",
                     ingress_yaml(short, host, f"{short}-tls") + "---\n"
                     + secret_yaml(f"{short}-tls", self.fx.crt(cert), self.fx.key(cert)))
        return t0


class Nginx(Impl):
    name = "nginx"

    def write_config(self, resumption, scale, extra_hosts):
        d = self.dir
        (d / "tmp").mkdir(exist_ok=True)
        (d / "certs").mkdir(exist_ok=True)
        self.resumption, self.scale, self.extra = resumption, scale, set(extra_hosts)
        for host, cert in base_hosts():
            self.install_cert(host.split(".")[0], cert)
        if scale:
            for i in range(self.fx.scale_hosts):
                self.install_cert(f"h{i:05}", f"h{i:05}")
        self.render()

    def install_cert(self, short, cert):
        atomic_write(self.dir / "certs" / f"{short}.crt", self.fx.crt(cert))
        atomic_write(self.dir / "certs" / f"{short}.key", self.fx.key(cert))

    def server(self, host, tls=True):
        short = host.split(".")[0]
        proxy = ("    location / {\n      proxy_pass http://backend;\n"
                 "    }\n")
        if tls:
            certs = self.dir / "certs"
            return (f"  server {{\n    listen 127.0.0.1:443 ssl http2;\n    server_name {host};\n"
                    f"    ssl_certificate {certs}/{short}.crt;\n    ssl_certificate_key {certs}/{short}.key;\n"
                    f"{proxy}  }}\n"
                    f"  server {{\n    listen 127.0.0.1:80;\n    server_name {host};\n"
                    f"    location / {{ return 308 https://$host$request_uri; }}\n"
                    f"    location /.well-known/acme-challenge/ {{ proxy_pass http://backend; }}\n  }}\n")
        return (f"  server {{\n    listen 127.0.0.1:443 ssl http2;\n    server_name {host};\n"
                f"    ssl_certificate {self.dir}/certs/a.crt;\n    ssl_certificate_key {self.dir}/certs/a.key;\n"
                f"{proxy}  }}\n")

    def render(self):
        d = self.dir
        resume = ("    ssl_session_cache shared:SSL:16m;\n    ssl_session_tickets on;\n" if self.resumption
                  else "    ssl_session_cache off;\n    ssl_session_tickets off;\n")
        servers = "".join(self.server(h) for h, _ in base_hosts())
        servers += "".join(self.server(h, tls=False) for h in sorted(self.extra))
        if self.scale:
            servers += "".join(self.server(f"h{i:05}.bench.test") for i in range(self.fx.scale_hosts))
        conf = f"""# Generated by bench/bench.py from the same fixture as the Portcullis manifests and haproxy.cfg.
user root;
worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 8000; }}
http {{
  access_log off;
  client_body_temp_path {d}/tmp/body; proxy_temp_path {d}/tmp/proxy; fastcgi_temp_path {d}/tmp/fcgi;
  uwsgi_temp_path {d}/tmp/uwsgi; scgi_temp_path {d}/tmp/scgi;
  server_names_hash_max_size 32768;
  server_names_hash_bucket_size 128;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  http2_max_concurrent_streams 128;
  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_ecdh_curve X25519:prime256v1;
{resume}
  upstream backend {{
    server {BACKEND};
    keepalive 64;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
  }}
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_set_header Host $host;
  proxy_set_header X-Forwarded-For $remote_addr;
  proxy_set_header X-Real-IP $remote_addr;
  proxy_set_header X-Forwarded-Proto $scheme;
  proxy_set_header X-Forwarded-Host $host;
  proxy_set_header X-Forwarded-Port $server_port;
  proxy_buffering on;
  server {{
    listen 127.0.0.1:443 ssl http2 default_server;
    ssl_certificate {d}/certs/a.crt; ssl_certificate_key {d}/certs/a.key;
    return 404;
  }}
  server {{ listen 127.0.0.1:80 default_server; return 404; }}
{servers}}}
"""
        t0 = time.time_ns()
        atomic_write(d / "nginx.conf", conf)
        return t0

    def launch(self):
        self.spawn(["nginx", "-c", self.dir / "nginx.conf", "-e", self.dir / "error.log"])

    def reload(self):
        os.kill(self.proc.pid, signal.SIGHUP)

    def add_host(self, host):
        """Returns the time of the configuration write, as Portcullis' add_host does."""
        self.extra.add(host)
        t0 = self.render()
        self.reload()
        return t0

    def remove_host(self, host):
        self.extra.discard(host)
        self.render()
        self.reload()

    def rotate(self, name, cert, host="rot.bench.test"):
        t0 = time.time_ns()
        self.install_cert(host.split(".")[0], cert)
        self.reload()
        return t0


class Haproxy(Impl):
    name = "haproxy"
    cert_mode = "api"  # or "reload"

    def write_config(self, resumption, scale, extra_hosts):
        d = self.dir
        (d / "certs").mkdir(exist_ok=True)
        self.resumption, self.scale, self.extra = resumption, scale, set(extra_hosts)
        lines = []
        for host, cert in base_hosts():
            lines.append(self.install_cert(host.split(".")[0], cert) + f" {host}")
        if scale:
            for i in range(self.fx.scale_hosts):
                n = f"h{i:05}"
                lines.append(self.install_cert(n, n) + f" {n}.bench.test")
        # The first line is the default certificate (unknown names), like Portcullis' and nginx's.
        atomic_write(d / "crt-list.txt", "\n".join(lines) + "\n")
        self.render()

    def install_cert(self, short, cert):
        path = self.dir / "certs" / f"{short}.pem"
        atomic_write(path, self.fx.crt(cert) + self.fx.key(cert))
        return str(path)

    def render(self):
        d = self.dir
        hosts = [h for h, _ in base_hosts()] + sorted(self.extra)
        if self.scale:
            hosts += [f"h{i:05}.bench.test" for i in range(self.fx.scale_hosts)]
        tickets = "" if self.resumption else " no-tls-tickets"
        cache = "" if self.resumption else "  tune.ssl.cachesize 0\n"
        cfg = f"""# Generated by bench/bench.py from the same fixture as the Portcullis manifests and nginx.conf.
global
  nbthread 1
  maxconn 8000
  pidfile {d}/haproxy.pid
  stats socket {d}/admin.sock mode 600 level admin expose-fd listeners
  ssl-default-bind-options ssl-min-ver TLSv1.2
  ssl-default-bind-curves X25519:P-256
  tune.ssl.default-dh-param 2048
{cache}
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 300s
  timeout http-request 10s
  http-reuse always
  option http-keep-alive

frontend https
  bind 127.0.0.1:443 ssl crt-list {d}/crt-list.txt alpn h2,http/1.1{tickets}
  http-request set-header X-Forwarded-Proto https
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  http-request set-header X-Forwarded-Port 443
  http-request set-header X-Real-IP %[src]
  option forwardfor
  use_backend %[req.hdr(host),lower,word(1,:),map_str({d}/hosts.map,none)] if {{ req.hdr(host),lower,word(1,:),map_str({d}/hosts.map) -m found }}
  default_backend none

frontend http
  bind 127.0.0.1:80
  http-request redirect location https://%[req.hdr(host),word(1,:)]%[capture.req.uri] code 308 if {{ req.hdr(host),lower,word(1,:),map_str({d}/hosts.map) -m found }} !{{ path_beg /.well-known/acme-challenge/ }}
  default_backend none

backend be
  server s1 {BACKEND} maxconn 0

backend none
  http-request return status 404
"""
        t0 = time.time_ns()
        atomic_write(d / "hosts.map", "".join(f"{h} be\n" for h in hosts))
        atomic_write(d / "haproxy.cfg", cfg)
        return t0

    def launch(self):
        self.spawn(["haproxy", "-W", "-db", "-f", self.dir / "haproxy.cfg"])

    def reload(self):
        os.kill(self.proc.pid, signal.SIGUSR2)

    def add_host(self, host):
        """Returns the time of the configuration write, as Portcullis' add_host does."""
        self.extra.add(host)
        t0 = self.render()
        self.reload()
        return t0

    def remove_host(self, host):
        self.extra.discard(host)
        self.render()
        self.reload()

    def api(self, command):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(10)
        s.connect(str(self.dir / "admin.sock"))
        s.sendall(command.encode())
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
        s.close()
        return out.decode(errors="replace")

    def rotate(self, name, cert, host="rot.bench.test"):
        short = host.split(".")[0]
        path = self.dir / "certs" / f"{short}.pem"
        pem = self.fx.crt(cert) + self.fx.key(cert)
        t0 = time.time_ns()
        if self.cert_mode == "reload":
            atomic_write(path, pem)
            self.reload()
            return t0
        out = self.api(f"set ssl cert {path} <<\n{pem.strip()}\n\n")
        out2 = self.api(f"commit ssl cert {path}\n")
        if "Success" not in out2 and "Committing" not in out2:
            log(f"haproxy commit: {out.strip()} / {out2.strip()}")
        atomic_write(path, pem)
        return t0


class HaproxyReload(Haproxy):
    name = "haproxy-reload"
    cert_mode = "reload"


class TlsOnly(Impl):
    """The ceiling: nginx answering `return 200` itself over TLS, on the proxy core."""
    name = "tls-only"

    def write_config(self, resumption, scale, extra_hosts):
        d = self.dir
        (d / "tmp").mkdir(exist_ok=True)
        conf = f"""user root;
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 8000; }}
http {{
  access_log off;
  client_body_temp_path {d}/tmp/body; proxy_temp_path {d}/tmp/proxy; fastcgi_temp_path {d}/tmp/fcgi;
  uwsgi_temp_path {d}/tmp/uwsgi; scgi_temp_path {d}/tmp/scgi;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_ecdh_curve X25519:prime256v1;
  server {{
    listen 127.0.0.1:443 ssl http2;
    ssl_certificate {self.fx.certs}/a.crt; ssl_certificate_key {self.fx.certs}/a.key;
    location / {{ return 200 "ok\\n"; }}
  }}
}}
"""
        atomic_write(d / "nginx.conf", conf)

    def launch(self):
        self.spawn(["nginx", "-c", self.dir / "nginx.conf", "-e", self.dir / "error.log"])


# ----------------------------------------------------------------------------------------------------
# Load generators and their output


def parse_duration_us(text):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    if not m:
        return None
    v, unit = float(m.group(1)), m.group(2)
    return v * {"us": 1, "ms": 1e3, "s": 1e6, "m": 60e6}[unit]


def wrk(url, duration, conns=32, close=False, headers=()):
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--latency", "--timeout", "10s", "-s", SNI_LUA]
    if close:
        cmd += ["-H", "Connection: close"]
    for h in headers:
        cmd += ["-H", h]
    out = run(cmd + [url], timeout=duration + 60)
    r = {"tool": "wrk"}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    r["rps"] = float(m.group(1)) if m else 0.0
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", out, re.M)
        r[f"p{pct}_us"] = parse_duration_us(m.group(1)) if m else None
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    r["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    r["non_2xx_3xx"] = int(m.group(1)) if m else 0
    m = re.search(r"(\d+) requests in", out)
    r["requests"] = int(m.group(1)) if m else 0
    return r


def percentile(sorted_vals, p):
    if not sorted_vals:
        return None
    return sorted_vals[min(len(sorted_vals) - 1, int(len(sorted_vals) * p))]


def h2load(host, duration, extra, logfile):
    cmd = ["h2load", "-t1", "-D", str(duration), "--connect-to=127.0.0.1:443", f"--log-file={logfile}",
           "--tls13-ciphers=TLS_AES_128_GCM_SHA256"] + extra
    out = run(cmd + [f"https://{host}/"], timeout=duration + 60)
    r = {"tool": "h2load"}
    m = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", out)
    r["rps"] = float(m.group(2)) if m else 0.0
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", out)
    if m:
        r.update(requests=int(m.group(4)), failed=int(m.group(5)), errored=int(m.group(6)), timeout=int(m.group(7)))
    m = re.search(r"Cipher: (\S+)", out)
    r["cipher"] = m.group(1) if m else None
    m = re.search(r"Server Temp Key: (.+)", out)
    r["kx"] = m.group(1).strip() if m else None
    m = re.search(r"Application protocol: (\S+)", out)
    r["alpn"] = m.group(1) if m else None
    lat = []
    try:
        with open(logfile) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3:
                    lat.append(int(parts[2]))
        os.unlink(logfile)
    except OSError:
        pass
    lat.sort()
    r["p50_us"], r["p99_us"] = percentile(lat, 0.5), percentile(lat, 0.99)
    return r


# ----------------------------------------------------------------------------------------------------
# Scenarios


class Bench:
    def __init__(self, args):
        self.args = args
        self.smoke = args.smoke
        self.work = ROOT / "target" / ("bench-smoke" if args.smoke else "bench")
        self.work.mkdir(parents=True, exist_ok=True)
        self.results = []
        self.d = args.duration
        self.warm = args.warmup
        self.fx = Fixture(self.work, args.hosts)
        self.impls = {c.name: c(self.fx, self.work) for c in (Portcullis, Nginx, Haproxy, HaproxyReload, TlsOnly)}
        if args.worker_threads:
            Portcullis.extra_args = ["--worker-threads", str(args.worker_threads)]
        self.under_test = ["portcullis"] if args.smoke else args.impls.split(",")
        self.backend = None

    def record(self, scenario, impl, **fields):
        row = {"scenario": scenario, "impl": impl, **fields}
        self.results.append(row)
        brief = {k: v for k, v in row.items() if k in (
            "rps", "p50_us", "p99_us", "cpu_ms_per_1k", "failed", "dropped_connections", "ms_p50", "ms_max",
            "pss_mb", "ready_ms", "kb_per_conn", "apply_ms", "ingress_apply_ms", "socket_errors")}
        log(f"  {scenario:<22} {impl:<15} {json.dumps(brief)}")

    def start_backend(self):
        log_f = open(self.work / "backend.log", "ab")
        self.backend = subprocess.Popen(["taskset", "-c", CLIENT_CPU, TOOLS, "backend", f"addr={BACKEND}"],
                                        stdout=log_f, stderr=log_f)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", 9000), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("backend did not start")

    def stop_all(self):
        for impl in self.impls.values():
            impl.stop()
        if self.backend:
            self.backend.terminate()
            self.backend.wait()

    # -- (a) (b) (c) and (g): per round -----------------------------------------------------------

    def measured(self, impl, fn):
        """Runs fn() and returns its result plus proxy CPU and core busy figures for the run."""
        hz = os.sysconf("SC_CLK_TCK")
        ours = lambda: (cpu_ticks(impl.pid) + (cpu_ticks(self.backend.pid) if self.backend else 0)
                        + round((os.times().children_user + os.times().children_system) * hz))
        t0, o0, c0, w0, s0 = cpu_ticks(impl.pid), ours(), cpu_times(), tree_counters(impl.pid), tcp_out_segments()
        r = fn()
        t1, o1, c1, w1, s1 = cpu_ticks(impl.pid), ours(), cpu_times(), tree_counters(impl.pid), tcp_out_segments()
        busy = busy_between(c0, c1)
        # CPU used by anything but the proxy, the backend and the load generator (other work on the
        # machine): a measurement with much of it is not trustworthy.
        total = sum(c1[c][0] - c0[c][0] for c in c0)
        busy_ticks = sum((c1[c][0] - c1[c][1]) - (c0[c][0] - c0[c][1]) for c in c0)
        r["foreign_cpu_pct"] = round(max(0.0, 100.0 * (busy_ticks - (o1 - o0)) / total), 1) if total else None
        r["proxy_cpu_s"] = (t1 - t0) / os.sysconf("SC_CLK_TCK")
        r["proxy_core_busy"] = busy.get("cpu" + PROXY_CPU, {}).get("busy_pct")
        r["client_core_busy"] = busy.get("cpu" + CLIENT_CPU, {}).get("busy_pct")
        r["steal_pct"] = max(v["steal_pct"] for v in busy.values())
        r["bound"] = ("proxy" if (r["proxy_core_busy"] or 0) >= 95 and (r["client_core_busy"] or 0) < 90
                      else "client" if (r["client_core_busy"] or 0) >= 95 else "neither/both")
        if r.get("requests"):
            r["cpu_ms_per_1k"] = round(r["proxy_cpu_s"] * 1e6 / r["requests"], 3)
            r.update(where_time_goes(w0, w1, r["requests"]))
            r["tcp_segments_per_req"] = round((s1 - s0) / r["requests"], 3)
        return r

    def throughput_round(self, rnd):
        d, w = self.d, self.warm
        rate = self.args.rate
        for name in random.sample(self.under_test, len(self.under_test)):
            impl = self.impls[name]
            impl.start(resumption=True)
            log(f"round {rnd}: {name} (pid {impl.pid})")
            wrk("https://a.bench.test/", w)  # warm-up: pools, allocator, page faults
            self.record("h1-keepalive", name, round=rnd, **self.measured(impl, lambda: wrk("https://a.bench.test/", d)))
            h2 = ["-c4", "-m16"]
            h2load("a.bench.test", w, h2, self.work / "h2.tsv")
            self.record("h2-keepalive", name, round=rnd, **self.measured(
                impl, lambda: h2load("a.bench.test", d, h2, self.work / "h2.tsv")))
            h1r = ["--h1", "-c16", f"--rps={max(1, rate // 16)}"]
            self.record("h1-fixed-rate", name, round=rnd, offered_rps=rate, **self.measured(
                impl, lambda: h2load("a.bench.test", d, h1r, self.work / "h1r.tsv")))
            h2r = ["-c4", "-m8", f"--rps={max(1, rate // 4)}"]
            self.record("h2-fixed-rate", name, round=rnd, offered_rps=rate, **self.measured(
                impl, lambda: h2load("a.bench.test", d, h2r, self.work / "h2r.tsv")))
            if rnd == 1:
                self.trace_syscalls(impl, name, h1r, h2r)
            self.record("redirect", name, round=rnd, **self.measured(
                impl, lambda: check_redirect() or wrk("http://a.bench.test/p/q?x=1", d)))
            self.record("handshake-resumed", name, round=rnd, cert="ecdsa-p256", **self.measured(
                impl, lambda: wrk("https://a.bench.test/", d, close=True)))
            impl.stop()
            impl.start(resumption=False)
            check_resumption("rsa.bench.test", expect_reused=False)
            self.record("handshake-full", name, round=rnd, cert="rsa-2048", **self.measured(
                impl, lambda: wrk("https://rsa.bench.test/", d, close=True)))
            impl.stop()
        # (g) the limits
        self.record("limit-backend-direct", "backend", round=rnd, **wrk("http://127.0.0.1:9000/", d))
        if not self.smoke:
            impl = self.impls["tls-only"]
            impl.start()
            wrk("https://a.bench.test/", w)
            self.record("limit-tls-only", "tls-only", round=rnd, **self.measured(impl, lambda: wrk("https://a.bench.test/", d)))
            impl.stop()

    def trace_syscalls(self, impl, name, h1r, h2r):
        """Syscalls per request at saturation and at the fixed rate, once per proxy and run."""
        d = min(self.d, 3)
        for scen, load in (("h1-keepalive", lambda: wrk("https://a.bench.test/", d)),
                           ("h2-keepalive", lambda: h2load("a.bench.test", d, ["-c4", "-m16"], self.work / "h2.tsv")),
                           ("h1-fixed-rate", lambda: h2load("a.bench.test", d, h1r, self.work / "h1r.tsv")),
                           ("h2-fixed-rate", lambda: h2load("a.bench.test", d, h2r, self.work / "h2r.tsv"))):
            self.record(f"{scen}-syscalls", name, syscalls_per_req=syscall_profile(impl.pid, load))

    # -- (h) PROXY protocol overhead ------------------------------------------------------------------

    def proxy_protocol(self, rnd):
        """Portcullis behind HAProxy in TCP mode (on the client core, as the load balancer would be on
        another machine), once with `send-proxy-v2` and `proxy-protocol: required`, once with neither:
        the ratio is what reading and trusting the header costs per connection."""
        d, w = self.d, self.warm
        impl = self.impls["portcullis"]
        relay_dir = self.work / "pp-relay"
        relay_dir.mkdir(exist_ok=True)
        modes = random.sample(["off", "required"], 2)
        for mode in modes:
            cfg = relay_dir / "haproxy.cfg"
            send = " send-proxy-v2" if mode == "required" else ""
            cfg.write_text("global\n  nbthread 1\n  maxconn 4000\n"
                           "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n"
                           "frontend tls\n  bind 127.0.0.1:443\n  default_backend ctl\n"
                           f"backend ctl\n  server p 127.0.0.2:443{send}\n")
            log_f = open(relay_dir / "stderr.log", "ab")
            relay = subprocess.Popen(["taskset", "-c", CLIENT_CPU, "haproxy", "-db", "-f", str(cfg)],
                                     stdout=log_f, stderr=log_f, stdin=subprocess.DEVNULL)
            Portcullis.listen_ip = "127.0.0.2"
            Portcullis.settings_extra = ("proxy-protocol: required\ntrusted-proxies: [127.0.0.0/8]\n"
                                         if mode == "required" else "")
            try:
                for resumption, scen, host, close in ((True, "pp-h1-keepalive", "a", False),
                                                      (False, "pp-handshake-full", "rsa", True)):
                    impl.start(resumption=resumption)
                    url = f"https://{host}.bench.test/"
                    wrk(url, w, close=close)
                    self.record(scen, "portcullis", round=rnd, mode=mode, **self.measured(
                        impl, lambda: wrk(url, d, close=close)))
                    impl.stop()
            finally:
                Portcullis.listen_ip, Portcullis.settings_extra = "127.0.0.1", ""
                impl.stop()
                relay.terminate()
                relay.wait()
                wait_port_free(443)

    # -- (i) basic auth against an open route ---------------------------------------------------------

    def basic_auth(self, rnd):
        """The same route open and with `auth-type: basic` (a bcrypt line from `htpasswd -B`), in random
        order; wrk sends the same `Authorization` header to both, so only the check differs. At steady
        state every request after the first relies on the remembered verification."""
        d, w = self.d, self.warm
        impl = self.impls["portcullis"]
        user, password = "bench", "correct horse battery staple"
        line = subprocess.run(["htpasswd", "-nbB", "-C", str(BCRYPT_COST), user, password], capture_output=True,
                              text=True, check=True, timeout=60).stdout.strip()
        authorization = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        # `data`, not `stringData`: the basic-auth step reads only `data` (what the API server stores).
        secret = ("apiVersion: v1\nkind: Secret\nmetadata:\n  name: bench-users\n  namespace: bench\n"
                  f"type: Opaque\ndata:\n  auth: {base64.b64encode(line.encode()).decode()}\n")
        for mode in random.sample(["open", "basic"], 2):
            if mode == "basic":
                Portcullis.annotations = {"a": {"auth-type": "basic", "auth-secret": "bench-users",
                                                "auth-realm": "bench"}}
                Portcullis.extra_manifests = {"users.yaml": secret}
            try:
                impl.start()
                # The route must really ask: 401 without credentials, 200 with them.
                want = {"open": (200, 200), "basic": (401, 200)}[mode]
                got = (https_status("a.bench.test"), https_status("a.bench.test", authorization))
                if got != want:
                    raise RuntimeError(f"basic auth {mode}: statuses {got}, expected {want}")
                url, hdr = "https://a.bench.test/", [f"Authorization: {authorization}"]
                wrk(url, w, headers=hdr)
                self.record("auth-h1-keepalive", "portcullis", round=rnd, mode=mode, bcrypt_cost=BCRYPT_COST,
                            **self.measured(impl, lambda: wrk(url, d, headers=hdr)))
            finally:
                Portcullis.annotations, Portcullis.extra_manifests = {}, {}
                impl.stop()

    # -- (k) SSL passthrough enabled against disabled ------------------------------------------------

    def passthrough(self, rnd):
        """The terminated hosts with `--enable-ssl-passthrough` and one passthrough Ingress for another
        host (every ClientHello is then read ahead of rustls), against the same manifests without the flag
        (the annotation is then reported and nothing is read ahead), in random order: the ratio is what
        passthrough costs the hosts it does not concern."""
        d, w = self.d, self.warm
        impl = self.impls["portcullis"]
        # Its backend is never reached: the measured traffic is for the terminated hosts only.
        ingress = ("apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: pass\n  namespace: bench\n"
                   "  annotations:\n    nginx.ingress.kubernetes.io/ssl-passthrough: \"true\"\n"
                   "spec:\n  ingressClassName: portcullis\n  rules:\n  - host: pass.bench.test\n    http:\n"
                   "      paths:\n      - path: /\n        pathType: Prefix\n        backend:\n"
                   "          service:\n            name: backend\n            port:\n              number: 80\n")
        base_args = Portcullis.extra_args
        for mode in random.sample(["off", "on"], 2):
            Portcullis.extra_manifests = {"pass.yaml": ingress}
            Portcullis.extra_args = base_args + (["--enable-ssl-passthrough"] if mode == "on" else [])
            try:
                for resumption, scen, host, close in ((True, "pt-h1-keepalive", "a", False),
                                                      (True, "pt-handshake-resumed", "a", True),
                                                      (False, "pt-handshake-full", "rsa", True)):
                    impl.start(resumption=resumption)
                    if not resumption:
                        check_resumption("rsa.bench.test", expect_reused=False)
                    url = f"https://{host}.bench.test/"
                    wrk(url, w, close=close)
                    self.record(scen, "portcullis", round=rnd, mode=mode, **self.measured(
                        impl, lambda: wrk(url, d, close=close)))
                    impl.stop()
            finally:
                Portcullis.extra_manifests, Portcullis.extra_args = {}, base_args
                impl.stop()

    # -- (j) rate-limit memory under a flood of distinct addresses -----------------------------------

    def ratelimit_memory(self):
        """One request from each of N distinct loopback source addresses to a route with `limit-rps` and
        `limit-rpm`: PSS before, at the peak and after the limiter forgot the idle clients, and the
        `portcullis_rate_limit_entries` gauge it sets every 5 s. A client is forgotten two refill intervals
        after its request (governor's `retain_recent`): `limit-rpm: 1` holds every address for 2 minutes, so
        all N are held at once; the smoke run's `limit-rpm: 20` holds them for 6 s, long enough for one count
        (the gauge is set after each pruning)."""
        n = 2000 if self.smoke else 100_000
        rps, rpm = ("100", "20") if self.smoke else ("1", "1")
        hold = 2 * 60.0 / int(rpm)
        impl = self.impls["portcullis"]
        Portcullis.extra_manifests = {
            "limit.yaml": ingress_yaml("limit", "limit.bench.test", None, {"limit-rps": rps, "limit-rpm": rpm}),
            "open.yaml": ingress_yaml("open", "open.bench.test", None)}
        try:
            impl.start()
            flood = lambda host, count, first: json.loads(run(
                [TOOLS, "flood", "addr=127.0.0.1:80", f"host={host}", f"n={count}", "conns=32", f"first={first}"],
                timeout=600).strip().splitlines()[-1])
            # Warm-up on the open route (connections, the upstream pool, the allocator), limiter untouched.
            flood("open.bench.test", min(n, 5000), "127.200.0.1")
            time.sleep(2.0)
            before, entries_before = pss_kb(impl.pid), rate_limit_entries()
            peak, samples = before, []
            stop = threading.Event()

            def sample():
                nonlocal peak
                while not stop.is_set():
                    peak = max(peak, pss_kb(impl.pid))
                    samples.append((time.time(), rate_limit_entries()))
                    time.sleep(0.05)
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            t0 = time.time()
            res = flood("limit.bench.test", n, "127.1.0.1")
            flood_s = time.time() - t0
            # The gauge is set when the limiter prunes (every 5 s): wait for the count after the flood,
            # then (bounded) until the idle clients are forgotten.
            time.sleep(6.0)
            entries_peak = max((e for _, e in samples if e is not None), default=None)
            deadline = time.time() + hold + 15.0
            while time.time() < deadline and rate_limit_entries() != 0:
                time.sleep(0.5)
            forgotten_s = time.time() - t0 - flood_s
            entries_after = rate_limit_entries()
            time.sleep(2.0)  # let the allocator give the freed pages back
            stop.set()
            sampler.join(timeout=5)
            after = pss_kb(impl.pid)
            mb = lambda kb: round(kb / 1024, 1)
            self.record("ratelimit-memory", "portcullis", addresses=n, limit_rps=rps, limit_rpm=rpm,
                        ok=res["ok"], other_status=res["other_status"], failed=res["failed"],
                        flood_s=round(flood_s, 1), conns_per_s=round(n / flood_s) if flood_s else None,
                        pss_before_mb=mb(before), pss_peak_mb=mb(peak), pss_after_mb=mb(after),
                        delta_peak_mb=mb(peak - before), delta_after_mb=mb(after - before),
                        entries_before=entries_before, entries_peak=entries_peak, entries_after=entries_after,
                        forgotten_after_s=round(forgotten_s, 1) if entries_after == 0 else None)
        finally:
            Portcullis.extra_manifests = {}
            impl.stop()

    # -- (d) certificate rotation --------------------------------------------------------------------

    def rotation(self):
        swaps = 3 if self.smoke else 20
        interval = 1.0
        impls = list(self.under_test) + (["haproxy-reload"] if "haproxy" in self.under_test else [])
        for name in impls:
            impl = self.impls[name]
            impl.start()
            wait_tls("rot.bench.test", self.fx.fp["rot-v1"], 30, impl)
            total = 2.0 + swaps * interval + 2.0
            out = self.work / f"rot-{name}.json"
            load = spawn_tool(["load", "sni=rot.bench.test", "conns=32", "rate=3000", "new-rate=100",
                               f"duration={total}", f"out={out}"])
            probe = spawn_tool(["probe-watch", "sni=rot.bench.test", f"duration={total}"], stdout=subprocess.PIPE)
            time.sleep(2.0)
            swaps_done, peak = [], pss_kb(impl.pid)
            for i in range(swaps):
                cert = "rot-v2" if i % 2 == 0 else "rot-v1"
                t0 = impl.rotate(f"rot.bench.test", cert)
                swaps_done.append((t0, self.fx.fp[cert]))
                end = time.time() + interval
                while time.time() < end:
                    peak = max(peak, pss_kb(impl.pid))
                    time.sleep(0.05)
            probe_out, _ = probe.communicate(timeout=total + 30)
            load.wait(timeout=total + 30)
            events = parse_probe(probe_out.decode())
            delays = swap_delays(swaps_done, events)
            res = json.loads(out.read_text())
            ka, nc = res["keepalive"], res["new_connections"]
            served = [x for x in delays if x is not None]
            self.record("cert-rotation", name, swaps=swaps, failed=ka["failed"] + nc["failed"],
                        keepalive_failed=ka["failed"], dropped_connections=ka["dropped_connections"],
                        new_conn_failed=nc["failed"], new_conn_errors=nc["errors"], requests=ka["sent"] + nc["ok"] + nc["failed"],
                        ms_p50=statistics.median(served) if served else None, ms_max=max(served) if served else None,
                        not_served=sum(1 for x in delays if x is None), delays_ms=delays,
                        probe_errors=sum(1 for _, fp in events if fp.startswith("error")),
                        peak_pss_mb=round(peak / 1024, 1),
                        mode={"portcullis": "manifest file rewrite (hot swap)", "nginx": "files + SIGHUP reload",
                              "haproxy": "runtime API set/commit ssl cert", "haproxy-reload": "file + SIGUSR2 reload (master-worker)"}[name])
            impl.stop()

    # -- (e) route churn -----------------------------------------------------------------------------

    def churn(self):
        changes = 4 if self.smoke else 10
        steady = 3.0 if self.smoke else 10.0
        for name in self.under_test:
            impl = self.impls[name]
            impl.start()
            total = steady + 2.0 + changes + 2.0
            out = self.work / f"churn-{name}.json"
            load = spawn_tool(["load", "sni=a.bench.test", "conns=32", "rate=3000", "new-rate=100",
                               f"duration={total}", f"out={out}"])
            start_ns = time.time_ns()
            time.sleep(steady + 1.0)
            churn_from = (time.time_ns() - start_ns) / 1e6
            for i in range(changes):
                host = "churn.bench.test"
                if i % 2 == 0:
                    impl.add_host(host)
                else:
                    impl.remove_host(host)
                time.sleep(1.0)
            churn_to = (time.time_ns() - start_ns) / 1e6
            load.wait(timeout=total + 30)
            res = json.loads(out.read_text())
            ka, nc = res["keepalive"], res["new_connections"]
            # Align the load's clock with ours.
            shift = (int(res["start_unix_ns"]) - start_ns) / 1e6

            def window(lo, hi):
                lat = sorted(l for t, l in ka["samples"] if lo <= t + shift < hi and l >= 0)
                fails = sum(1 for t, l in ka["samples"] if lo <= t + shift < hi and l < 0)
                return percentile(lat, 0.99), fails, len(lat)

            s_p99, s_fail, s_n = window(1000, steady * 1000)
            c_p99, c_fail, c_n = window(churn_from, churn_to)
            self.record("route-churn", name, changes=changes, failed=ka["failed"] + nc["failed"],
                        keepalive_failed=ka["failed"], dropped_connections=ka["dropped_connections"],
                        new_conn_failed=nc["failed"], new_conn_errors=nc["errors"],
                        p99_us_steady=s_p99, p99_us_churn=c_p99, failed_steady=s_fail, failed_churn=c_fail,
                        requests_steady=s_n, requests_churn=c_n,
                        mode={"portcullis": "manifest file add/remove", "nginx": "config regen + SIGHUP",
                              "haproxy": "config regen + SIGUSR2 (master-worker)"}[name])
            if name != "portcullis" and "churn.bench.test" in getattr(impl, "extra", set()):
                pass
            impl.stop()

    # -- (f) scale: 10k hosts, idle connections ------------------------------------------------------

    def scale(self):
        n = self.fx.scale_hosts
        rng = random.Random(7)
        sample = sorted(rng.sample(range(n), min(500, n)))
        if n - 1 not in sample:
            sample.append(n - 1)
        changed = f"h{n // 2:05}"
        added = "new.bench.test"
        for name in self.under_test:
            impl = self.impls[name]
            listfile = self.work / "scale-hosts.txt"
            listfile.write_text("".join(f"h{i:05}.bench.test {self.fx.fp[f'h{i:05}']}\n" for i in sample))
            impl.write_config(True, True, ())
            spawn_ns = time.time_ns()
            impl.launch()
            out = run([TOOLS, "probe-hosts", f"list={listfile}", f"since-ns={spawn_ns}", "timeout=900",
                       "parallel=4"], timeout=1000)
            ready = json.loads(out.strip().splitlines()[-1])
            time.sleep(2.0)
            pss = pss_kb(impl.pid)
            # One certificate changed among n: sample PSS until the probe sees it (bounded), then 1 s more.
            probe = spawn_tool(["probe-watch", f"sni={changed}.bench.test", "duration=150"], stdout=subprocess.PIPE)
            lines = []
            reader = threading.Thread(target=lambda: lines.extend(probe.stdout), daemon=True)
            reader.start()
            time.sleep(1.0)
            want = self.fx.fp[f"{changed}-v2"]
            t0 = impl.rotate(changed, f"{changed}-v2", host=f"{changed}.bench.test")
            peak, end, seen_at = pss, time.time() + 120, None
            while time.time() < end and (seen_at is None or time.time() < seen_at + 1.0):
                peak = max(peak, pss_kb(impl.pid))
                if seen_at is None and any(want.encode() in l for l in list(lines)):
                    seen_at = time.time()
                time.sleep(0.02)
            probe.send_signal(signal.SIGTERM)
            probe.wait(timeout=30)
            reader.join(timeout=5)
            events = parse_probe(b"".join(lines).decode())
            apply = swap_delays([(t0, want)], events)[0]
            # Then one Ingress changed among n: a new host, until a new connection to it gets the backend's answer.
            before = https_status_or_none(added)
            if before != 404:
                log(f"  {name}: {added} answered {before} before its Ingress was written, not 404")
            ingress_apply = served_after(added, impl.add_host(added))
            self.record("scale-hosts", name, hosts=n, ready_ms=round(ready["elapsed_ms"]) if ready["ok"] else None,
                        pss_mb=round(pss / 1024, 1), apply_ms=apply, peak_pss_during_change_mb=round(peak / 1024, 1),
                        ingress_apply_ms=ingress_apply,
                        probe_errors=sum(1 for _, fp in events if fp.startswith("error")),
                        sampled_hosts=len(sample))
            impl.stop()
        # Memory per idle TLS connection (the main configuration).
        conns = 200 if self.smoke else 2000
        for name in self.under_test:
            impl = self.impls[name]
            impl.start()
            time.sleep(1.0)
            before = pss_kb(impl.pid)
            idle = spawn_tool(["idle", "sni=a.bench.test", f"n={conns}"], stdout=subprocess.PIPE, stdin=subprocess.PIPE)
            line = idle.stdout.readline().decode().split()
            time.sleep(2.0)
            after = pss_kb(impl.pid)
            idle.stdin.close()
            idle.wait(timeout=30)
            ok = int(line[1]) if len(line) > 1 else 0
            self.record("idle-connections", name, conns=ok, failed=int(line[2]) if len(line) > 2 else None,
                        pss_before_mb=round(before / 1024, 1), pss_after_mb=round(after / 1024, 1),
                        kb_per_conn=round((after - before) / ok, 1) if ok else None)
            impl.stop()


def spawn_tool(args, **kw):
    return subprocess.Popen(["taskset", "-c", CLIENT_CPU, TOOLS] + args, **kw)


def parse_probe(text):
    events = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit():
            events.append((int(parts[0]), parts[1]))
    return events


def swap_delays(swaps, events):
    """For each (t0, new fingerprint): ms until a probe handshake first presented it, or None."""
    out = []
    for i, (t0, fp) in enumerate(swaps):
        nxt = swaps[i + 1][0] if i + 1 < len(swaps) else float("inf")
        # The state at t0 may already be the new one only if the probe saw it earlier (never expected).
        seen = [t for t, f in events if f == fp and t >= t0 and t < nxt]
        # The probe prints changes only: the new cert is "seen" at the first change to it after t0.
        out.append(round((seen[0] - t0) / 1e6, 2) if seen else None)
    return out


def check_redirect():
    """The same Location from all three (asserted once per run)."""
    s = socket.create_connection(("127.0.0.1", 80), timeout=5)
    s.sendall(b"GET /p/q?x=1 HTTP/1.1\r\nHost: a.bench.test\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    head = data.decode(errors="replace")
    if not head.startswith("HTTP/1.1 308") or "location: https://a.bench.test/p/q?x=1" not in head.lower():
        raise RuntimeError(f"unexpected redirect: {head[:300]!r}")


# Built once without the system CA store (nothing is verified): loading it took tens of ms per request,
# more than the changes served_after times.
UNVERIFIED_TLS = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
UNVERIFIED_TLS.check_hostname, UNVERIFIED_TLS.verify_mode = False, ssl.CERT_NONE


def https_status(host, authorization=None, timeout=10):
    """The status of `GET /` over HTTPS on 127.0.0.1:443 with SNI `host`."""
    with socket.create_connection(("127.0.0.1", 443), timeout=timeout) as raw, \
            UNVERIFIED_TLS.wrap_socket(raw, server_hostname=host) as s:
        auth = f"Authorization: {authorization}\r\n" if authorization else ""
        s.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n".encode())
        head = s.recv(64).decode(errors="replace")
    m = re.match(r"HTTP/1\.1 (\d{3})", head)
    return int(m.group(1)) if m else None


def https_status_or_none(host, timeout=2):
    """https_status, or None while the proxy refuses, resets or times out (e.g. during a reload)."""
    try:
        return https_status(host, timeout=timeout)
    except OSError:
        return None


def served_after(host, t0, limit=60.0):
    """ms from t0 (time_ns) until a new HTTPS connection to `host` gets the backend's 200 instead of the
    default 404, polling every 5 ms for at most `limit` s; None if it never does. Includes one handshake."""
    deadline = t0 + limit * 1e9
    while time.time_ns() < deadline:
        if https_status_or_none(host) == 200:
            return round((time.time_ns() - t0) / 1e6, 2)
        time.sleep(0.005)
    return None


def rate_limit_entries():
    """`portcullis_rate_limit_entries` from the admin listener, or None."""
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open("http://127.0.0.1:10254/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return None
    m = re.search(r"^portcullis_rate_limit_entries (\d+)", text, re.M)
    return int(m.group(1)) if m else None


def check_resumption(host, expect_reused):
    """openssl s_client twice with a saved session: the second must say New (resumption off)."""
    with tempfile.TemporaryDirectory() as t:
        sess = Path(t) / "sess"
        base = ["openssl", "s_client", "-connect", "127.0.0.1:443", "-servername", host, "-tls1_3"]
        subprocess.run(base + ["-sess_out", sess], input=b"", capture_output=True, timeout=10)
        out = subprocess.run(base + ["-sess_in", sess], input=b"", capture_output=True, timeout=10).stdout.decode()
        reused = "Reused," in out
        if reused != expect_reused:
            raise RuntimeError(f"resumption check on {host}: reused={reused}, expected {expect_reused}")


# ----------------------------------------------------------------------------------------------------
# Reporting


def versions():
    def cmd(c):
        try:
            p = subprocess.run(c, capture_output=True, text=True, timeout=10)
            return (p.stdout + p.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "not installed"
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = open("/proc/meminfo").readline().split()[1]
    return {
        "portcullis": subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip(),
        "nginx": cmd(["nginx", "-v"]),
        "nginx_openssl": next((l for l in subprocess.run(["nginx", "-V"], capture_output=True, text=True).stderr.splitlines() if "OpenSSL" in l), "?") if shutil.which("nginx") else "not installed",
        "haproxy": cmd(["haproxy", "-v"]),
        "openssl": cmd(["openssl", "version"]),
        "wrk": cmd(["wrk", "-v"]),
        "h2load": cmd(["h2load", "--version"]),
        "rustc": cmd(["rustc", "-V"]),
        "kernel": os.uname().release,
        "cpu": f"{cpu}, {os.cpu_count()} vCPU, {int(mem) // 1024} MiB",
    }


def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def fmt(v, digits=0):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return f"{v:,}"


def summarize(rows, meta):
    """Markdown: per-round scenarios as medians with min–max and same-round ratios."""
    lines = []
    per_round = [
        ("h1-keepalive", "HTTPS keep-alive HTTP/1.1, req/s (wrk c=32)", "rps", True),
        ("h1-keepalive", "  p50 / p99 latency, ms", "lat", False),
        ("h2-keepalive", "HTTPS keep-alive HTTP/2, req/s (h2load c=4 m=16)", "rps", True),
        ("h2-keepalive", "  p50 / p99 latency, ms", "lat", False),
        ("h1-fixed-rate", f"HTTP/1.1 at {meta['rate']} req/s: proxy CPU ms per 1,000 req", "cpu_ms_per_1k", False),
        ("h1-fixed-rate", "  p50 / p99 latency, ms", "lat", False),
        ("h2-fixed-rate", f"HTTP/2 at {meta['rate']} req/s: proxy CPU ms per 1,000 req", "cpu_ms_per_1k", False),
        ("h2-fixed-rate", "  p50 / p99 latency, ms", "lat", False),
        ("handshake-full", "Full TLS handshakes/s (RSA-2048, no resumption; wrk Connection: close)", "rps", True),
        ("handshake-resumed", "Resumed TLS handshakes/s (ECDSA, wrk Connection: close)", "rps", True),
        ("redirect", "HTTP→HTTPS 308 redirects/s (wrk c=32)", "rps", True),
    ]
    impls = ["portcullis", "nginx", "haproxy"]
    lines.append("| scenario | Portcullis | nginx | HAProxy | Portcullis/nginx | Portcullis/HAProxy | bound (P / n / H) |")
    lines.append("|---|---|---|---|---|---|---|")
    for scen, label, key, higher in per_round:
        by = {i: [r for r in rows if r["scenario"] == scen and r["impl"] == i] for i in impls}
        if key == "lat":
            cells = []
            for i in impls:
                p50, p99 = med([r.get("p50_us") for r in by[i]]), med([r.get("p99_us") for r in by[i]])
                cells.append(f"{fmt(p50 / 1000 if p50 else None, 2)} / {fmt(p99 / 1000 if p99 else None, 2)}")
            ratios = []
            for other in ("nginx", "haproxy"):
                rs = same_round_ratios(rows, scen, "p99_us", other)
                ratios.append(ratio_cell(rs, "p99 "))
            lines.append(f"| {label} | {' | '.join(cells)} | {' | '.join(ratios)} | |")
            continue
        cells = []
        for i in impls:
            vals = [r.get(key) for r in by[i] if r.get(key) is not None]
            cells.append(f"{fmt(med(vals), 1 if key == 'cpu_ms_per_1k' else 0)}"
                         + (f" ({fmt(min(vals), 1 if key == 'cpu_ms_per_1k' else 0)}–{fmt(max(vals), 1 if key == 'cpu_ms_per_1k' else 0)})" if len(vals) > 1 else ""))
        ratios = [ratio_cell(same_round_ratios(rows, scen, key, other)) for other in ("nginx", "haproxy")]
        bound = " / ".join(
            (lambda b: max(set(b), key=b.count) if b else "–")([r.get("bound") for r in by[i] if r.get("bound")])
            for i in impls)
        lines.append(f"| {label} | {' | '.join(cells)} | {' | '.join(ratios)} | {bound} |")
    lim = lambda s: med([r.get("rps") for r in rows if r["scenario"] == s])
    lines.append("")
    lines.append(f"Limits (medians): backend hit directly, plain HTTP/1.1 {fmt(lim('limit-backend-direct'))} req/s; "
                 f"TLS termination alone (nginx `return 200` over TLS on the proxy core) {fmt(lim('limit-tls-only'))} req/s.")
    return "\n".join(lines)


def same_round_ratios(rows, scen, key, other):
    out = []
    rounds = sorted({r.get("round") for r in rows if r["scenario"] == scen and r.get("round") is not None})
    for rnd in rounds:
        p = [r.get(key) for r in rows if r["scenario"] == scen and r["impl"] == "portcullis" and r.get("round") == rnd]
        o = [r.get(key) for r in rows if r["scenario"] == scen and r["impl"] == other and r.get("round") == rnd]
        if p and o and p[0] and o[0]:
            out.append(p[0] / o[0])
    return out


def ratio_cell(rs, prefix=""):
    if not rs:
        return "–"
    return f"{prefix}{statistics.median(rs):.2f}×" + (f" ({min(rs):.2f}–{max(rs):.2f})" if len(rs) > 1 else "")


def summarize_once(rows):
    lines = ["| scenario | implementation (mode) | result |", "|---|---|---|"]
    for r in rows:
        if r["scenario"] == "cert-rotation":
            lines.append(f"| (d) certificate rotation, {r['swaps']} swaps under load | {r['impl']} ({r['mode']}) | "
                         f"{r['failed']} failed requests ({r['keepalive_failed']} keep-alive, {r['new_conn_failed']} new-connection), "
                         f"{r['dropped_connections']} dropped connections; new certificate served after p50 {fmt(r['ms_p50'], 1)} ms, "
                         f"max {fmt(r['ms_max'], 1)} ms ({r['not_served']} swaps not seen); peak PSS {r['peak_pss_mb']} MB |")
        elif r["scenario"] == "route-churn":
            lines.append(f"| (e) route churn, {r['changes']} Ingress changes at 1/s | {r['impl']} ({r['mode']}) | "
                         f"{r['failed']} failed requests, {r['dropped_connections']} dropped connections; "
                         f"p99 steady {fmt((r['p99_us_steady'] or 0) / 1000, 2)} ms vs churn {fmt((r['p99_us_churn'] or 0) / 1000, 2)} ms |")
        elif r["scenario"] == "scale-hosts":
            lines.append(f"| (f) {r['hosts']:,} hosts × certificates | {r['impl']} | PSS {r['pss_mb']} MB; cold start until "
                         f"every sampled host serves its certificate {fmt(r['ready_ms'])} ms; one changed certificate live after "
                         f"{fmt(r['apply_ms'], 1)} ms (peak PSS during the change {r['peak_pss_during_change_mb']} MB); "
                         f"one changed Ingress (a new host) live after {fmt(r.get('ingress_apply_ms'), 1)} ms |")
        elif r["scenario"] == "idle-connections":
            lines.append(f"| (f) memory per idle TLS connection ({r['conns']} connections) | {r['impl']} | "
                         f"{fmt(r['kb_per_conn'], 1)} KB ({r['pss_before_mb']} → {r['pss_after_mb']} MB) |")
    return "\n".join(lines) if len(lines) > 2 else "Not run this time (`--only`)."


def mode_ratios(rows, scen, key, base, test):
    """test/base of one figure, per round (both measured in the same round)."""
    by = {m: {r["round"]: r.get(key) for r in rows if r["scenario"] == scen and r.get("mode") == m} for m in (base, test)}
    return [by[test][rnd] / by[base][rnd] for rnd in sorted(by[base]) if by[base][rnd] and by[test].get(rnd)]


def summarize_modes(rows, header, base, test, scenarios, per_round=False):
    """A Portcullis-only comparison of two modes: medians of each, and test/base per round."""
    lines = [header, "|---|---|---|---|" + ("---|" if per_round else "")]
    for scen, label in scenarios:
        runs = {m: [r for r in rows if r["scenario"] == scen and r.get("mode") == m] for m in (base, test)}
        if not runs[base] and not runs[test]:
            continue
        for key, what, digits in (("rps", "per second", 0), ("cpu_ms_per_1k", "proxy CPU ms per 1,000", 1)):
            ratios = mode_ratios(rows, scen, key, base, test)
            cell = lambda m: fmt(med([r.get(key) for r in runs[m]]), digits)
            ratio = (f"{statistics.median(ratios):.3f}×" + (f" ({min(ratios):.3f}–{max(ratios):.3f})" if len(ratios) > 1 else "")
                     if ratios else "–")
            line = f"| {label}, {what} | {cell(base)} | {cell(test)} | {ratio} |"
            if per_round:
                line += " " + ", ".join(f"{x:.2f}×" for x in ratios) + " |"
            lines.append(line)
    return "\n".join(lines) if len(lines) > 2 else "Not run this time (`--only`)."


def summarize_proxy_protocol(rows):
    """Portcullis behind a TCP relay: `send-proxy-v2` + `proxy-protocol: required` against neither."""
    return summarize_modes(
        rows, "| through HAProxy in TCP mode | off | required (v2 header) | required / off |", "off", "required",
        (("pp-h1-keepalive", "HTTPS keep-alive HTTP/1.1 (wrk c=32)"),
         ("pp-handshake-full", "Full TLS handshakes (RSA-2048; wrk Connection: close)")))


def summarize_basic_auth(rows):
    """The same route open and with basic auth (bcrypt), per round."""
    cost = next((r["bcrypt_cost"] for r in rows if r["scenario"] == "auth-h1-keepalive"), None)
    return summarize_modes(
        rows, "| HTTPS keep-alive HTTP/1.1 (wrk c=32) | open | basic auth | basic / open (min–max) | each round |",
        "open", "basic", (("auth-h1-keepalive", f"bcrypt cost {cost}"),), per_round=True)


def summarize_passthrough(rows):
    """Terminated hosts with SSL passthrough enabled (one passthrough host) against disabled, per round."""
    return summarize_modes(
        rows, "| terminated hosts | passthrough off | on (one passthrough host) | on / off (min–max) | each round |",
        "off", "on", (("pt-h1-keepalive", "HTTPS keep-alive HTTP/1.1 (wrk c=32)"),
                      ("pt-handshake-resumed", "Resumed TLS handshakes (ECDSA; wrk Connection: close)"),
                      ("pt-handshake-full", "Full TLS handshakes (RSA-2048; wrk Connection: close)")), per_round=True)


def summarize_ratelimit_memory(rows):
    lines = ["| addresses | limits | admitted / refused / no answer | flood | PSS before → peak → after | "
             "ΔPSS at the peak | `portcullis_rate_limit_entries` peak → after | forgotten after |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["scenario"] != "ratelimit-memory":
            continue
        lines.append(f"| {r['addresses']:,} | `limit-rps: {r['limit_rps']}`, `limit-rpm: {r['limit_rpm']}` | "
                     f"{r['ok']:,} / {r['other_status']:,} / {r['failed']:,} | {fmt(r['flood_s'], 1)} s "
                     f"({fmt(r['conns_per_s'])} connections/s) | {r['pss_before_mb']} → {r['pss_peak_mb']} → "
                     f"{r['pss_after_mb']} MB | {r['delta_peak_mb']} MB | {fmt(r['entries_peak'])} → "
                     f"{fmt(r['entries_after'])} | {fmt(r['forgotten_after_s'], 1)} s after the flood |")
    return "\n".join(lines) if len(lines) > 2 else "Not run this time (`--only`)."


WHERE_TIME_GOES = (("user_us_per_req", "user µs", 2), ("system_us_per_req", "system µs", 2),
                   ("voluntary_switches_per_req", "voluntary switches", 3),
                   ("involuntary_switches_per_req", "involuntary switches", 3),
                   ("minor_faults_per_req", "minor faults", 3),
                   ("tcp_segments_per_req", "TCP segments (namespace)", 2))


def summarize_where_time_goes(rows):
    """Per request, medians over rounds: our code (user) against the kernel's (system), and wakeups."""
    scenarios = ("h1-keepalive", "h2-keepalive", "h1-fixed-rate", "h2-fixed-rate", "redirect")
    lines = ["| scenario | proxy | " + " | ".join(w for _, w, _ in WHERE_TIME_GOES) + " |",
             "|---|---|" + "---|" * len(WHERE_TIME_GOES)]
    for scen in scenarios:
        for impl in sorted({r["impl"] for r in rows if r["scenario"] == scen}):
            mine = [r for r in rows if r["scenario"] == scen and r["impl"] == impl and "user_us_per_req" in r]
            if mine:
                lines.append(f"| {scen} | {impl} | " + " | ".join(
                    fmt(med([r[k] for r in mine if k in r]), digits) for k, _, digits in WHERE_TIME_GOES) + " |")
    traced = [r for r in rows if r["scenario"].endswith("-syscalls")]
    if traced:
        lines += ["", "Syscalls per request (strace -f -c, a separate short run; the five most frequent):", "",
                  "| scenario | proxy | syscalls |", "|---|---|---|"]
        for r in traced:
            top = list(r["syscalls_per_req"].items())[:5]
            lines.append(f"| {r['scenario'][:-len('-syscalls')]} | {r['impl']} | "
                         + ", ".join(f"{name} {n}" for name, n in top) + " |")
    return "\n".join(lines)


def summarize_goals(rows):
    """The issue's goals, each with the figure that decides it (medians of same-round ratios)."""
    def ratio_vs_best(scen, key, higher=True):
        out = []
        rounds = sorted({r.get("round") for r in rows if r["scenario"] == scen and r.get("round")})
        for rnd in rounds:
            got = {r["impl"]: r.get(key) for r in rows if r["scenario"] == scen and r.get("round") == rnd}
            others = [v for k, v in got.items() if k in ("nginx", "haproxy") and v]
            if got.get("portcullis") and others:
                best = max(others) if higher else min(others)
                out.append(got["portcullis"] / best)
        return statistics.median(out) if out else None

    def once(scen, impl, key):
        return next((r.get(key) for r in rows if r["scenario"] == scen and r["impl"] == impl), None)

    def verdict(ok):
        return "–" if ok is None else ("**holds**" if ok else "**does not hold**")

    lines = ["| goal | figure | verdict |", "|---|---|---|"]
    for scen, label in (("h1-keepalive", "HTTP/1.1"), ("h2-keepalive", "HTTP/2")):
        r = ratio_vs_best(scen, "rps")
        lines.append(f"| keep-alive req/s {label} ≥ 1.25× the better of nginx/HAProxy | {fmt(r, 2)}× | "
                     f"{verdict(None if r is None else r >= 1.25)} |")
        p = ratio_vs_best(scen, "p99_us", higher=False)
        lines.append(f"| p99 {label} ≤ the better of theirs (saturation) | {fmt(p, 2)}× | "
                     f"{verdict(None if p is None else p <= 1.0)} |")
    for scen, label in (("h1-fixed-rate", "HTTP/1.1"), ("h2-fixed-rate", "HTTP/2")):
        c = statistics.median(same_round_ratios(rows, scen, "cpu_ms_per_1k", "nginx") or [float("nan")])
        c = None if c != c else c
        lines.append(f"| CPU per request at a fixed rate ≤ 0.7× nginx ({label}) | {fmt(c, 2)}× | "
                     f"{verdict(None if c is None else c <= 0.7)} |")
        p = ratio_vs_best(scen, "p99_us", higher=False)
        lines.append(f"| p99 {label} at the same fixed rate ≤ the better of theirs | {fmt(p, 2)}× | "
                     f"{verdict(None if p is None else p <= 1.0)} |")
    h = ratio_vs_best("handshake-full", "rps")
    lines.append(f"| full handshakes/s ≥ 1.3× the better of the two | {fmt(h, 2)}× | {verdict(None if h is None else h >= 1.3)} |")
    c = ratio_vs_best("handshake-full", "cpu_ms_per_1k", higher=False)
    lines.append(f"| (the same per proxy CPU-second: handshakes per CPU-second vs the better of the two) | "
                 f"{fmt(1 / c if c else None, 2)}× | {verdict(None if c is None else 1 / c >= 1.3)} |")
    for scen, label in (("cert-rotation", "rotation"), ("route-churn", "churn")):
        f, d = once(scen, "portcullis", "failed"), once(scen, "portcullis", "dropped_connections")
        lines.append(f"| {label}: zero failed requests, zero dropped connections | {f} failed, {d} dropped | "
                     f"{verdict(None if f is None else f == 0 and d == 0)} |")
    m = once("cert-rotation", "portcullis", "ms_max")
    lines.append(f"| new certificate served within 50 ms (max over the swaps) | {fmt(m, 1)} ms | {verdict(None if m is None else m <= 50)} |")
    pm, nm = once("scale-hosts", "portcullis", "pss_mb"), once("scale-hosts", "nginx", "pss_mb")
    pr, nr = once("scale-hosts", "portcullis", "ready_ms"), once("scale-hosts", "nginx", "ready_ms")
    pa = once("scale-hosts", "portcullis", "apply_ms")
    pi = once("scale-hosts", "portcullis", "ingress_apply_ms")
    mr = pm / nm if pm and nm else None
    cr = pr / nr if pr and nr else None
    lines.append(f"| 10k hosts: memory ≤ ⅓ of nginx's | {fmt(mr, 2)}× ({fmt(pm, 0)} vs {fmt(nm, 0)} MB) | {verdict(None if mr is None else mr <= 1 / 3)} |")
    lines.append(f"| 10k hosts: cold start ≤ ⅕ of nginx's | {fmt(cr, 2)}× ({fmt(pr)} vs {fmt(nr)} ms) | {verdict(None if cr is None else cr <= 0.2)} |")
    lines.append(f"| 10k hosts: one changed certificate live ≤ 100 ms | {fmt(pa, 0)} ms | {verdict(None if pa is None else pa <= 100)} |")
    lines.append(f"| 10k hosts: one changed Ingress live ≤ 100 ms | {fmt(pi, 0)} ms | {verdict(None if pi is None else pi <= 100)} |")
    auth = mode_ratios(rows, "auth-h1-keepalive", "cpu_ms_per_1k", "open", "basic")
    a = statistics.median(auth) if auth else None
    lines.append(f"| basic-auth route < 2× the proxy CPU per request of the open route (issue 13; every round) | "
                 f"{fmt(a, 2)}× (max {fmt(max(auth) if auth else None, 2)}×) | {verdict(None if a is None else max(auth) < 2)} |")
    for r in rows:
        if r["scenario"] == "ratelimit-memory":
            lines.append(f"| {r['addresses']:,} distinct addresses cost < 64 MiB (issue 13) | ΔPSS {r['delta_peak_mb']} MB | "
                         f"{verdict(r['delta_peak_mb'] < 64)} |")
            lines.append(f"| … and the table shrinks afterwards | entries {fmt(r['entries_peak'])} → {fmt(r['entries_after'])}, "
                         f"PSS {r['pss_peak_mb']} → {r['pss_after_mb']} MB | "
                         f"{verdict(bool(r['entries_peak']) and r['entries_after'] == 0)} |")
    # Goals whose scenarios did not run (--only) are left out rather than shown empty.
    return "\n".join(line for line in lines if not line.endswith("| – |"))


def issue15_targets(rows, callgrind):
    """The issue-15 targets: (measure, figure, target text, ratio or None, bound, lower is better, met or None).
    CPU and latency are Portcullis over the better of nginx/HAProxy within each round, then the median."""
    def vs_best(scen, key, higher_is_better):
        out = []
        for rnd in sorted({r.get("round") for r in rows if r["scenario"] == scen and r.get("round")}):
            got = {r["impl"]: r.get(key) for r in rows if r["scenario"] == scen and r.get("round") == rnd}
            peers = [v for k, v in got.items() if k in ("nginx", "haproxy") and v]
            if got.get("portcullis") and peers:
                out.append(got["portcullis"] / (max(peers) if higher_is_better else min(peers)))
        return statistics.median(out) if out else None

    def once(scen, impl, key):
        return next((r.get(key) for r in rows if r["scenario"] == scen and r["impl"] == impl), None)

    targets = []

    def ratio(measure, value, bound, lower):
        met = None if value is None else (value <= bound if lower else value >= bound)
        targets.append((measure, "not measured in this run" if value is None else f"{value:.2f}×",
                        f"{'≤' if lower else '≥'} {bound}×", value, bound, lower, met))

    ratio("CPU per request at saturation, HTTP/1.1", vs_best("h1-keepalive", "cpu_ms_per_1k", False), 0.8, True)
    ratio("CPU per request at saturation, HTTP/2", vs_best("h2-keepalive", "cpu_ms_per_1k", False), 0.8, True)
    ratio("CPU per request at the fixed rate, HTTP/1.1", vs_best("h1-fixed-rate", "cpu_ms_per_1k", False), 0.8, True)
    ratio("CPU per request at the fixed rate, HTTP/2", vs_best("h2-fixed-rate", "cpu_ms_per_1k", False), 0.8, True)
    ratio("CPU per redirect", vs_best("redirect", "cpu_ms_per_1k", False), 0.8, True)
    for scen, label in (("h1-fixed-rate", "HTTP/1.1"), ("h2-fixed-rate", "HTTP/2")):
        ratio(f"p99 at the fixed rate, {label}", vs_best(scen, "p99_us", False), 1.0, True)
    cpu = vs_best("handshake-full", "cpu_ms_per_1k", False)
    ratio("full handshakes per proxy CPU-second", 1 / cpu if cpu else None, 1.3, False)
    ours, peers = once("idle-connections", "portcullis", "kb_per_conn"), [
        v for v in (once("idle-connections", i, "kb_per_conn") for i in ("nginx", "haproxy")) if v]
    ratio("memory per idle TLS connection", ours / min(peers) if ours and peers else None, 1.0, True)
    # Absolute targets: shown against their bound, which makes the bar's ratio the figure over the bound.
    for key, label, bound in (("h1", "instructions per proxied request, HTTP/1.1 (callgrind)", 30_000),
                              ("h2", "instructions per proxied request, HTTP/2 (callgrind)", 35_000)):
        v = (callgrind or {}).get(key)
        targets.append((label, "not measured in this run" if v is None else f"{v:,.0f}", f"≤ {bound:,}",
                        None if v is None else v / bound, 1.0, True, None if v is None else v <= bound))
    for key, label in (("apply_ms", "one changed certificate among 10,000 live after"),
                       ("ingress_apply_ms", "one changed Ingress among 10,000 live after")):
        ms = once("scale-hosts", "portcullis", key)
        targets.append((label, "not measured in this run" if ms is None else f"{ms:.1f} ms", "≤ 100 ms",
                        None if ms is None else ms / 100, 1.0, True, None if ms is None else ms <= 100))
    return targets


def verdict_word(met):
    return "not measured in this run" if met is None else ("met" if met else "not met")


def summarize_targets(targets):
    lines = ["| measure | Portcullis / better peer | target | verdict |", "|---|---|---|---|"]
    lines += [f"| {m} | {fig} | {goal} | **{verdict_word(met)}** |" for m, fig, goal, _, _, _, met in targets]
    return "\n".join(lines)


def targets_svg(targets, title):
    """Horizontal bars of Portcullis over the better peer (or over the bound for absolute targets), a line at
    1.0 and a tick at each target; green where the target is met. Hand-written so it needs nothing."""
    shown = [t for t in targets if t[3] is not None]
    top, row, left, width = 40, 26, 360, 420
    scale_max = max([2.0] + [t[3] for t in shown] + [t[4] for t in shown])
    x = lambda v: left + width * min(v, scale_max) / scale_max
    height = top + row * max(1, len(shown)) + 30
    esc = lambda t: t.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 80}" height="{height}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="100%" height="100%" fill="white"/>',
           f'<text x="10" y="20" font-size="14">{esc(title)}</text>']
    for i, (measure, _, goal, value, bound, _, met) in enumerate(shown):
        y = top + i * row
        out.append(f'<text x="{left - 8}" y="{y + 15}" text-anchor="end">{esc(measure)}</text>')
        out.append(f'<rect x="{left}" y="{y + 4}" width="{x(value) - left:.1f}" height="{row - 10}" '
                   f'fill="{"#2e8b57" if met else "#c0392b"}"/>')
        out.append(f'<line x1="{x(bound):.1f}" y1="{y + 1}" x2="{x(bound):.1f}" y2="{y + row - 3}" '
                   f'stroke="black" stroke-width="2"/>')
        out.append(f'<text x="{x(value) + 4:.1f}" y="{y + 15}">{value:.2f}× ({esc(goal)})</text>')
    out.append(f'<line x1="{x(1.0):.1f}" y1="{top - 4}" x2="{x(1.0):.1f}" y2="{height - 24}" stroke="#555" '
               f'stroke-dasharray="4 3"/>')
    out.append(f'<text x="{x(1.0):.1f}" y="{height - 10}" text-anchor="middle">1.0 = level with the better peer</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def foreign_summary(rows):
    vals = [r["foreign_cpu_pct"] for r in rows if r.get("foreign_cpu_pct") is not None]
    if not vals:
        return "not measured"
    return f"median {statistics.median(vals):.1f} %, max {max(vals):.1f} % over {len(vals)} measurements"


def write_report(bench, meta, out_dir, tag=""):
    out_dir.mkdir(parents=True, exist_ok=True)
    date = datetime.date.today().isoformat() + (f"-{tag}" if tag else "")
    raw = {"meta": meta, "results": bench.results}
    (out_dir / f"{date}.json").write_text(json.dumps(raw, indent=1) + "\n")
    v = meta["versions"]
    md = [f"# Benchmark results {date}", "",
          f"Command: `{meta['command']}` ({meta['rounds']} rounds, {meta['duration']} s per measurement after a "
          f"{meta['warmup']} s warm-up, implementations in random order each round). Raw data: [{date}.json]({date}.json).",
          "",
          f"Machine: {v['cpu']}; kernel {v['kernel']}. Portcullis {v['portcullis']} ({v['rustc']}); {v['nginx']} "
          f"({v['nginx_openssl']}); {v['haproxy']}; {v['openssl']}; {v['wrk']}; {v['h2load']}.",
          "",
          f"Background load before each round (busy % of cpu0/cpu1 with nothing of ours running): "
          + "; ".join(f"round {i + 1}: {b.get('cpu0', {}).get('busy_pct')}/{b.get('cpu1', {}).get('busy_pct')}"
                      for i, b in enumerate(meta["background"])) + ".",
          "", "CPU used by other work on the machine during the measurements (share of both cores; should be near 0): "
          + foreign_summary(bench.results) + ".",
          ""]
    per_round = {"h1-keepalive", "h2-keepalive", "h1-fixed-rate", "h2-fixed-rate", "redirect", "handshake-resumed",
                 "handshake-full", "limit-backend-direct", "limit-tls-only"}
    sections = [
        ("Per-round scenarios (medians, min–max; ratios computed within each round, then the median)",
         summarize(bench.results, meta) if any(r["scenario"] in per_round for r in bench.results) else None),
        ("Where the time goes, per request (process tree of the proxy)", summarize_where_time_goes(bench.results)),
        ("Once-per-run scenarios", summarize_once(bench.results)),
        ("PROXY protocol overhead (h)", summarize_proxy_protocol(bench.results)),
        ("Basic auth against an open route (i)", summarize_basic_auth(bench.results)),
        ("Rate-limit memory under a flood of distinct addresses (j)", summarize_ratelimit_memory(bench.results)),
        ("SSL passthrough enabled against disabled (k)", summarize_passthrough(bench.results)),
        ("Goals (issues 7 and 13)", summarize_goals(bench.results)),
    ]
    targets = issue15_targets(bench.results, meta.get("callgrind"))
    (out_dir / f"{date}.svg").write_text(targets_svg(targets, f"Portcullis / better of nginx and HAProxy, {date}"))
    md += ["## Targets (issue 15)", "", f"![ratios]({date}.svg)", "", summarize_targets(targets), ""]
    print(summarize_where_time_goes(bench.results))
    for measure, figure, goal, _, _, _, met in targets:
        print(f"target: {measure}: {figure} (target {goal}): {verdict_word(met)}")
    # Scenarios left out with --only get no section.
    for title, body in sections:
        if body and not body.startswith("Not run this time") and body.count("\n") > 1:
            md += [f"## {title}", "", body, ""]
    md += ["## Caveats", "",
          "- One 2-vCPU VM: the proxy under test is pinned to CPU1 with one worker/thread, the load generator and the "
          "backend share CPU0. A run is marked *proxy*-bound only if CPU1 was ≥ 95 % busy while CPU0 had room; "
          "*client*-bound runs measure the load generator as much as the proxy. CPU per request at a fixed offered "
          "rate is the primary efficiency figure.",
          "- Debian's nginx 1.22 and HAProxy 2.6 link OpenSSL 3.0, which is what Debian users run but not the fastest "
          "build of either (AWS-LC or a newer OpenSSL would do better). Portcullis uses rustls with aws-lc-rs.",
          "- wrk resumes TLS sessions on reconnect, so the full-handshake run disables resumption on every server "
          "(checked with `openssl s_client -sess_in`); h2load never resumes.",
          "- The backend is a one-thread hyper server (bench/tools) used by all three proxies.",
          "- Loopback only: absolute numbers do not transfer to real networks; ratios measured in the same round do.",
          "- nginx models a file-based controller (reload on every change); ingress-nginx would change certificates "
          "through Lua without a reload. HAProxy is shown with its runtime API and with a reload.",
          ]
    if meta.get("notes"):
        md += ["", "## Notes", ""] + [f"- {n}" for n in meta["notes"]]
    (out_dir / f"{date}.md").write_text("\n".join(md) + "\n")
    return out_dir / f"{date}.md"


# ----------------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--smoke", action="store_true", help="a few seconds per scenario, Portcullis only")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rate", type=int, default=5000, help="offered req/s of the fixed-rate runs")
    ap.add_argument("--hosts", type=int, default=10000, help="hosts of the scale scenario")
    ap.add_argument("--only", default="throughput,rotation,churn,scale,proxyproto,basicauth,ratelimitmem,passthrough",
                    help="comma-separated scenario groups")
    ap.add_argument("--callgrind", default=None,
                    help='JSON from bench/callgrind ({"h1": instructions per request, "h2": ...}) for the verdicts')
    ap.add_argument("--impls", default="portcullis,nginx,haproxy", help="implementations compared")
    ap.add_argument("--worker-threads", type=int, default=0, help="pass --worker-threads to Portcullis")
    ap.add_argument("--out", default=None, help="results directory (default bench/results, or target/bench-smoke)")
    ap.add_argument("--note", action="append", default=[], help="a note for the results file")
    ap.add_argument("--tag", default="", help="results file name: <date>-<tag>.md and .json")
    args = ap.parse_args()
    if args.smoke:
        args.rounds, args.duration, args.warmup, args.rate, args.hosts = 1, 2, 1, 500, min(args.hosts, 50)
    if os.geteuid() != 0:
        sys.exit("bench.py runs as root inside the namespace bench/run creates")
    bench = Bench(args)
    meta = {"command": "bench/run " + " ".join(sys.argv[1:]), "rounds": args.rounds, "duration": args.duration,
            "warmup": args.warmup, "rate": args.rate, "hosts": args.hosts, "versions": versions(),
            "background": [], "notes": args.note, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "callgrind": json.loads(Path(args.callgrind).read_text()) if args.callgrind else None}
    only = set(args.only.split(","))
    try:
        bench.start_backend()
        if "throughput" in only:
            for rnd in range(1, args.rounds + 1):
                b = wait_idle(0 if args.smoke else 60)
                meta["background"].append(b)
                log(f"round {rnd}: background busy {b}")
                bench.throughput_round(rnd)
        if "rotation" in only:
            bench.rotation()
        if "churn" in only:
            bench.churn()
        if "scale" in only:
            bench.scale()
        if "proxyproto" in only:
            for rnd in range(1, args.rounds + 1):
                bench.proxy_protocol(rnd)
        if "basicauth" in only:
            for rnd in range(1, args.rounds + 1):
                meta["background"].append(wait_idle(0 if args.smoke else 60))
                bench.basic_auth(rnd)
        if "ratelimitmem" in only:
            bench.ratelimit_memory()
        if "passthrough" in only:
            for rnd in range(1, args.rounds + 1):
                meta["background"].append(wait_idle(0 if args.smoke else 60))
                bench.passthrough(rnd)
    finally:
        bench.stop_all()
    meta["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    out = Path(args.out) if args.out else (bench.work / "results" if args.smoke else BENCH / "results")
    path = write_report(bench, meta, out, args.tag)
    log(f"wrote {path}")
    if args.smoke:
        smoke_check(bench.results, only)


def smoke_check(rows, only):
    """The smoke run asserts that every scenario produced data, never timings."""
    want = set()
    if "throughput" in only:
        want |= {"h1-keepalive", "h2-keepalive", "h1-fixed-rate", "h2-fixed-rate", "redirect", "handshake-resumed",
                 "handshake-full", "limit-backend-direct", "h1-keepalive-syscalls", "h2-keepalive-syscalls"}
    if "rotation" in only:
        want.add("cert-rotation")
    if "churn" in only:
        want.add("route-churn")
    if "scale" in only:
        want |= {"scale-hosts", "idle-connections"}
    if "proxyproto" in only:
        want |= {"pp-h1-keepalive", "pp-handshake-full"}
    if "basicauth" in only:
        want.add("auth-h1-keepalive")
    if "ratelimitmem" in only:
        want.add("ratelimit-memory")
    if "passthrough" in only:
        want |= {"pt-h1-keepalive", "pt-handshake-resumed", "pt-handshake-full"}
    bad = []
    for s in sorted(want):
        rs = [r for r in rows if r["scenario"] == s]
        if not rs:
            bad.append(f"{s}: no result")
        elif s in ("cert-rotation",) and any(r["not_served"] == r["swaps"] for r in rs):
            bad.append(f"{s}: the new certificate was never seen")
        elif s == "scale-hosts" and any(r["ready_ms"] is None for r in rs):
            bad.append(f"{s}: hosts never served")
        elif s == "scale-hosts" and any(r.get("ingress_apply_ms") is None for r in rs):
            bad.append(f"{s}: the added host was never served")
        elif s == "ratelimit-memory" and any(r["ok"] != r["addresses"] or not r["entries_peak"]
                                             or r["entries_after"] != 0 for r in rs):
            bad.append(f"{s}: not every address was admitted once, or the limiter did not forget them")
        elif s == "ratelimit-memory":
            pass
        elif s.endswith("-syscalls"):
            if not any(r["syscalls_per_req"] for r in rs):
                bad.append(f"{s}: no syscalls traced")
        elif s not in ("cert-rotation", "route-churn", "scale-hosts", "idle-connections") and not all(
                (r.get("rps") or 0) > 0 for r in rs):
            bad.append(f"{s}: zero throughput")
        elif s in ("h1-keepalive", "h2-keepalive", "h1-fixed-rate", "h2-fixed-rate", "redirect") and not all(
                "user_us_per_req" in r and "tcp_segments_per_req" in r for r in rs):
            bad.append(f"{s}: no per-request CPU split")
    if bad:
        sys.exit("smoke check failed:\n  " + "\n  ".join(bad))
    print(f"smoke: {len(want)} passed, 0 failed")


if __name__ == "__main__":
    main()
