#!/usr/bin/env python3
"""A minimal stand-in for an agent's HTTP API, enough for lb's discovery during the benchmark:
one member, one service `web` with the given instances, blocking queries that just wait.
Usage: fake_agent.py HOST:PORT BACKEND_HOST:PORT [BACKEND_HOST:PORT ...]"""
import json, sys, time, urllib.parse
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler

listen = sys.argv[1]
backends = sys.argv[2:]
host, port = listen.rsplit(":", 1)

def entries():
    out = []
    for i, b in enumerate(backends):
        ip, p = b.rsplit(":", 1)
        out.append({"Node": {"Node": f"node{i}", "Address": ip, "Datacenter": "dc1"},
                    "Service": {"ID": f"web{i}", "Service": "web", "Tags": [], "Port": int(p), "Address": "",
                                "Weights": {"Passing": 1, "Warning": 1}},
                    "Checks": [{"CheckID": "serfHealth", "Status": "passing"}]})
    return out

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        u = urllib.parse.urlparse(self.path)
        q = urllib.parse.parse_qs(u.query, keep_blank_values=True)
        if "index" in q:
            wait = q.get("wait", ["30000ms"])[0]
            time.sleep(min(float(wait.rstrip("ms")) / 1000.0, 30.0))
        if u.path == "/v1/agent/members":
            body = [{"Name": "agent", "Addr": host, "Port": 8301, "Status": 1, "Tags": {"dc": "dc1"}}]
        elif u.path == "/v1/catalog/services":
            body = {"web": []}
        elif u.path == "/v1/health/service/web":
            body = entries()
        else:
            body = "agent"
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Consul-Index", "7")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

ThreadingHTTPServer((host, int(port)), H).serve_forever()
