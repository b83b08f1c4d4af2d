"""The fake internet's web server: lab sites and the real OS probe hosts, all on one address.

Each OS's connectivity probe gets exactly the "online" answer from REFERENCE.md, so once a
phone is authorized its OS sees the internet; before, the gateway intercepts and these are
never reached.
"""

from __future__ import annotations

import argparse
import html
import time

from flask import Flask, Response, request

LAB_SITES = ("www.example.test", "shop.example.test", "news.example.test")
OCSP_HOST = "ocsp.plaza.test"  # has an address of its own: plain HTTP cannot be told apart by name

APPLE_SUCCESS = "<HTML><HEAD><TITLE>Success</TITLE></HEAD><BODY>Success</BODY></HTML>"
FIREFOX_CANONICAL = (
    '<meta http-equiv="refresh" content="0;url=https://support.mozilla.org/kb/captive-portal"/>'
)

# host -> path -> (status, body, content type); "*" matches any path on that host.
PROBES: dict[str, dict[str, tuple[int, str, str]]] = {
    "captive.apple.com": {"*": (200, APPLE_SUCCESS, "text/html")},
    "www.apple.com": {"/library/test/success.html": (200, APPLE_SUCCESS, "text/html")},
    "www.msftconnecttest.com": {
        "/connecttest.txt": (200, "Microsoft Connect Test", "text/plain"),
        "/redirect": (200, "<html><body>Microsoft</body></html>", "text/html"),
    },
    "ipv6.msftconnecttest.com": {"/connecttest.txt": (200, "Microsoft Connect Test", "text/plain")},
    "www.msftncsi.com": {"/ncsi.txt": (200, "Microsoft NCSI", "text/plain")},
    "detectportal.firefox.com": {
        "/canonical.html": (200, FIREFOX_CANONICAL, "text/html"),
        "/success.txt": (200, "success\n", "text/plain"),
    },
}
GENERATE_204_HOSTS = (
    "connectivitycheck.gstatic.com",
    "www.gstatic.com",
    "www.google.com",
    "clients3.google.com",
    "play.googleapis.com",
    "connect.rom.miui.com",
    "connectivitycheck.platform.hicloud.com",
    "connectivitycheck.platform.hihonorcloud.com",
    "wifi.vivo.com.cn",
    "connectivitycheck.oppomobile.com",
    "wifi.coloros.com",
    "connectivity.samsung.com",
    "www.qualcomm.cn",
)


def all_hosts() -> list[str]:
    return sorted({*LAB_SITES, *PROBES, *GENERATE_204_HOSTS})


MAX_BYTES = 1 << 31  # /bytes/<n>: enough for any throughput or accounting test
CHUNK = 64 * 1024


def create_app() -> Flask:
    app = Flask(__name__)

    @app.route("/bytes/<int:n>", methods=["GET", "POST"])
    def bytes_(n: int) -> Response:
        """GET: exactly n bytes (rate and accounting tests), at most `?per_second=R` bytes a
        second if asked (paced here, by the sender: a client's own rate limit, e.g. curl's
        --limit-rate, lets a fast local link fill the socket buffers at once and then waits,
        so under load a "1 MB/s" download of a few MB can end in milliseconds);
        POST: the body is read and dropped, the answer is how many bytes arrived (uploads)."""
        if request.method == "POST":
            got = 0
            while chunk := request.stream.read(CHUNK):
                got += len(chunk)
            return Response(f"{got}\n", content_type="text/plain")
        n = min(n, MAX_BYTES)
        rate = request.args.get("per_second", "")
        if rate and (not rate.isdigit() or not 1024 <= int(rate) <= MAX_BYTES):
            return Response("per_second: bytes a second, 1024 or more\n", status=400)
        per_second = int(rate) if rate else 0
        step = min(CHUNK, max(1024, per_second // 20)) if per_second else CHUNK

        def body():
            left, sent, started = n, 0, time.monotonic()
            block = b"\0" * step
            while left > 0:
                piece = block[: min(left, step)]
                yield piece
                left -= len(piece)
                sent += len(piece)
                if per_second:  # the time the bytes so far should have taken
                    ahead = started + sent / per_second - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)

        headers = {"Content-Length": str(n)}
        return Response(body(), content_type="application/octet-stream", headers=headers)

    @app.route("/", defaults={"path": ""}, methods=["GET", "HEAD", "POST"])
    @app.route("/<path:path>", methods=["GET", "HEAD", "POST"])
    def serve(path: str) -> Response:
        host = request.host.split(":")[0].lower()
        full = "/" + path
        if host in GENERATE_204_HOSTS and full in ("/generate_204", "/gen_204"):
            return Response(status=204)
        table = PROBES.get(host, {})
        if full in table or "*" in table:
            status, body, ctype = table.get(full) or table["*"]
            return Response(body, status=status, content_type=ctype)
        if host == OCSP_HOST:  # a stand-in OCSP responder: plain HTTP, in the garden
            return Response("OCSP-OK\n", content_type="application/ocsp-response")
        if host in LAB_SITES:
            name = html.escape(host)
            body = (
                f"<!doctype html><title>{name}</title><h1>{name}</h1>"
                f"<p>FAKE-INTERNET-OK: you reached {name}{html.escape(full)}</p>"
            )
            return Response(body, content_type="text/html")
        return Response("not found on the fake internet\n", status=404, content_type="text/plain")

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="fake internet web server for the Plaza lab")
    parser.add_argument(
        "--listen", required=True, action="append", help="HOST:PORT or [IPV6]:PORT; repeatable"
    )
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"), help="serve HTTPS")
    args = parser.parse_args(argv)
    import threading

    from cheroot import wsgi

    app = create_app()
    servers = []
    for listen in args.listen:
        host, _, port = listen.rpartition(":")
        server = wsgi.Server(
            (host.strip("[]"), int(port)), app, numthreads=16, request_queue_size=1024
        )
        server.keep_alive_conn_limit = 1000
        if args.tls:
            from cheroot.ssl.builtin import BuiltinSSLAdapter

            server.ssl_adapter = BuiltinSSLAdapter(*args.tls)
        server.prepare()
        servers.append(server)
    threads = [threading.Thread(target=s.serve, daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
