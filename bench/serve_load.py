"""Load generator for `mt serve` (bench/serve.sh runs it; standard library only).

    serve_load.py throughput URL IMAGES_DIR --clients C --requests-per-client R --max-tokens N
    serve_load.py soak URL IMAGES_DIR --requests 1000 --concurrency 32 --max-tokens N --pid PID

throughput: C clients, each sending R requests one after another (a question about an
image, sent as a data: URL, or with --text the question alone; `ignore_eos`, so every
answer is N tokens), all clients started together. Prints one JSON line: completion tokens, wall seconds, aggregate
tokens/s, requests that failed.

soak: REQUESTS requests through CONCURRENCY workers; samples the server's resident memory
(/proc/PID/status) every 0.5 s. Prints requests sent, answered, failed (by status), and
the RSS samples' median and maximum in each quarter of the run.
"""

import argparse
import base64
import http.client
import json
import os
import statistics
import sys
import threading
import time
import urllib.parse

QUESTIONS = [
    "What is shown in this image?",
    "Describe the image in detail.",
    "Which organ is visible?",
    "Is there any abnormality?",
]


def images(folder):
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder))
    out = []
    for f in files:
        kind = "jpeg" if f.lower().endswith((".jpg", ".jpeg")) else "png"
        with open(f, "rb") as fh:
            out.append(f"data:image/{kind};base64," + base64.b64encode(fh.read()).decode())
    return out


def ask(url, body):
    """POST a chat request; (status, completion tokens)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=3600)
    data = json.dumps(body).encode()
    conn.request("POST", "/v1/chat/completions", data, {"Content-Type": "application/json"})
    r = conn.getresponse()
    payload = r.read()
    conn.close()
    if r.status != 200:
        return r.status, 0
    return 200, json.loads(payload)["usage"]["completion_tokens"]


def body(i, pictures, max_tokens):
    """Request i: a question about picture i (cycling), or the question alone (no pictures)."""
    content = [{"type": "text", "text": QUESTIONS[i % len(QUESTIONS)]}]
    if pictures:
        content.append({"type": "image_url", "image_url": {"url": pictures[i % len(pictures)]}})
    return {
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "temperature": 0,
    }


def throughput(a):
    pictures = [] if a.text else images(a.images)
    tokens, failed, lock = [0], [0], threading.Lock()

    def client(c):
        for r in range(a.requests_per_client):
            b = body(c * a.requests_per_client + r, pictures, a.max_tokens)
            status, n = ask(a.url, b)
            with lock:
                tokens[0] += n
                failed[0] += status != 200

    threads = [threading.Thread(target=client, args=(c,)) for c in range(a.clients)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - start
    print(json.dumps({
        "clients": a.clients,
        "prompt": "text" if a.text else "image",
        "requests": a.clients * a.requests_per_client,
        "completion_tokens": tokens[0],
        "seconds": round(wall, 2),
        "tokens_per_s": round(tokens[0] / wall, 2),
        "failed": failed[0],
    }), flush=True)


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def soak(a):
    pictures = images(a.images)
    next_i, lock = [0], threading.Lock()
    statuses = {}
    samples = []
    done = threading.Event()

    def sampler():
        start = time.monotonic()
        while not done.is_set():
            samples.append((time.monotonic() - start, rss_kb(a.pid)))
            time.sleep(0.5)

    def worker():
        while True:
            with lock:
                i = next_i[0]
                next_i[0] += 1
            if i >= a.requests:
                return
            b = body(i, pictures, a.max_tokens)
            try:
                status, _ = ask(a.url, b)
            except Exception as e:  # a lost request is what this run looks for
                status = type(e).__name__
            with lock:
                statuses[status] = statuses.get(status, 0) + 1

    s = threading.Thread(target=sampler)
    s.start()
    start = time.monotonic()
    workers = [threading.Thread(target=worker) for _ in range(a.concurrency)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall = time.monotonic() - start
    done.set()
    s.join()
    quarters = []
    end = samples[-1][0] if samples else 0
    for q in range(4):
        part = [kb for t, kb in samples if q * end / 4 <= t <= (q + 1) * end / 4]
        if part:
            quarters.append({"median_mb": round(statistics.median(part) / 1024),
                             "max_mb": round(max(part) / 1024)})
    print(json.dumps({
        "requests": a.requests,
        "concurrency": a.concurrency,
        "answered": statuses.get(200, 0),
        "statuses": {str(k): v for k, v in statuses.items()},
        "seconds": round(wall, 1),
        "rss_by_quarter": quarters,
    }), flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["throughput", "soak"])
    p.add_argument("url")
    p.add_argument("images")
    p.add_argument("--clients", type=int, default=1)
    p.add_argument("--requests-per-client", type=int, default=4)
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--pid", type=int, default=0)
    p.add_argument("--text", action="store_true", help="questions without an image")
    a = p.parse_args()
    {"throughput": throughput, "soak": soak}[a.mode](a)


if __name__ == "__main__":
    sys.exit(main())
