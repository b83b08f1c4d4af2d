"""Coverage-guided fuzzing of the SNI parser (gateway/garden/sni.py) with atheris (libFuzzer).

The parser reads the first bytes of every captive TLS connection, from any phone on the open
Wi-Fi, inside the daemon's NFQUEUE handler: it must never raise, never hang and never report a
name that is not a strict DNS name. The hypothesis properties in tests/fuzz/ check that on
inputs shaped by hand; this run lets libFuzzer's coverage feedback find shapes nobody thought
of, starting from real ClientHellos (bench/corpus/sni/, made by `--make-corpus` from Python's
OpenSSL client, scapy, and variants with GREASE, ECH, a post-quantum key share, fragmentation).

A finding is a crash (an exception, or a property below failing) or a hang (one input taking
longer than `--timeout`). libFuzzer stops at a finding, so the fuzzer runs in a child process
that is started again, with the time left, until the budget is spent; the figures add up over
the children. The corpus grows in bench/results/fuzz-sni/corpus (not in git); findings are
kept in bench/results/fuzz-sni/findings to replay (`python bench/fuzz_sni.py --replay FILE`).

    .venv/bin/python bench/fuzz_sni.py                # 60 s (make fuzz)
    .venv/bin/python bench/fuzz_sni.py --seconds 600  # or --runs N for a fixed count
    .venv/bin/python bench/fuzz_sni.py --make-corpus  # rewrite the seed hellos
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import re
import shutil
import ssl
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEEDS = HERE / "corpus" / "sni"
WORK = HERE / "results" / "fuzz-sni"
MAX_LEN = 20000  # a hello is at most ~16 KiB plus record headers (gateway.garden.sni.MAX_STREAM)
MAX_RESTARTS = 50  # children started after findings; a bug found at once should not spin
STRICT_NAME = re.compile(
    r"(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
)


# -- the target --------------------------------------------------------------------------------
def check(parse, data: bytes) -> None:
    """The properties: raise (a crash to libFuzzer) if any does not hold."""
    hello = parse(data)
    if hello.detail.startswith("parser error"):
        raise AssertionError(f"the parser's catch-all caught {hello.detail!r}")
    if hello.kind.value == "sni":
        if not (STRICT_NAME.fullmatch(hello.sni) and len(hello.sni) <= 253):
            raise AssertionError(f"reported a name that is not a DNS name: {hello.sni!r}")
    elif hello.sni:
        raise AssertionError(f"{hello.kind} with a name")


def child(argv: list[str]) -> None:
    """Run libFuzzer in this process (started by `fuzz` with libFuzzer's own flags)."""
    import atheris

    with atheris.instrument_imports(include=["gateway.garden.sni"]):
        from gateway.garden.sni import parse_client_hello

    def one_input(data: bytes) -> None:
        check(parse_client_hello, data)

    atheris.Setup([sys.argv[0], *argv], one_input)
    atheris.Fuzz()


# -- the driver --------------------------------------------------------------------------------
STATS = {
    "execs": re.compile(r"stat::number_of_executed_units:\s*(\d+)"),
    "new_units": re.compile(r"stat::new_units_added:\s*(\d+)"),
}
PROGRESS = re.compile(r"cov: (\d+) ft: (\d+) corp: (\d+)/")


def fuzz(seconds: float | None, runs: int | None, timeout: int, seed: int | None) -> dict:
    corpus, findings = WORK / "corpus", WORK / "findings"
    corpus.mkdir(parents=True, exist_ok=True)
    findings.mkdir(parents=True, exist_ok=True)
    before = {p.name for p in findings.iterdir()}
    totals = {"execs": 0, "new_units": 0, "children": 0}
    cov = features = 0
    started = time.monotonic()
    left_runs = runs
    log_path = WORK / "libfuzzer.log"
    with log_path.open("w") as log:
        while totals["children"] <= MAX_RESTARTS:
            flags = [
                str(corpus), str(SEEDS),  # new inputs go to the first directory only
                f"-max_len={MAX_LEN}", f"-timeout={timeout}", "-print_final_stats=1",
                f"-artifact_prefix={findings}/", "-close_fd_mask=1",
            ]  # fmt: skip
            if seconds is not None:
                remaining = seconds - (time.monotonic() - started)
                if remaining < 1:
                    break
                flags.append(f"-max_total_time={int(remaining)}")
            if left_runs is not None:
                if left_runs <= 0:
                    break
                flags.append(f"-runs={left_runs}")
            if seed is not None:
                flags.append(f"-seed={seed + totals['children']}")
            done = subprocess.run(
                [sys.executable, __file__, "--child", *flags],
                capture_output=True, text=True, check=False, cwd=HERE.parent,
            )  # fmt: skip
            totals["children"] += 1
            log.write(done.stderr)
            for key, pattern in STATS.items():
                found = pattern.findall(done.stderr)
                totals[key] += int(found[-1]) if found else 0
            progress = PROGRESS.findall(done.stderr)
            if progress:
                cov, features = max(cov, int(progress[-1][0])), max(features, int(progress[-1][1]))
            if left_runs is not None:
                ran = STATS["execs"].findall(done.stderr)
                left_runs -= int(ran[-1]) if ran else left_runs
            if done.returncode == 0:
                break  # the budget ran out with nothing found
            if not STATS["execs"].search(done.stderr) and "==" not in done.stderr:
                raise SystemExit(f"libFuzzer did not run:\n{done.stderr[-2000:]}")
    elapsed = time.monotonic() - started
    new = sorted(p.name for p in findings.iterdir() if p.name not in before)
    crashes = [n for n in new if n.startswith(("crash-", "oom-"))]
    hangs = [n for n in new if n.startswith(("timeout-", "slow-unit-"))]
    inputs = [p for d in (corpus, SEEDS) for p in d.iterdir() if p.is_file()]
    lines_hit, lines_all = line_coverage(inputs)
    return {
        "seconds": round(elapsed, 1),
        "execs": totals["execs"],
        "execs_per_second": round(totals["execs"] / elapsed) if elapsed else 0,
        "seeds": sum(1 for p in SEEDS.iterdir() if p.is_file()),
        "corpus": len(inputs),
        "new_units": totals["new_units"],
        "edges": cov,
        "features": features,
        "sni_py_lines": f"{lines_hit}/{lines_all}",
        "sni_py_line_coverage": round(100 * lines_hit / lines_all, 1),
        "crashes": len(crashes),
        "hangs": len(hangs),
        "findings": [str(findings / n) for n in new],
        "children": totals["children"],
    }


def line_coverage(inputs: list[Path]) -> tuple[int, int]:
    """Lines of gateway/garden/sni.py run by replaying `inputs`, of all its executable lines (a
    figure anyone can read, unlike libFuzzer's edge count)."""
    import gateway.garden.sni as sni

    path = sni.__file__
    code = compile(Path(path).read_text(), path, "exec")
    functions: set[int] = set()  # lines in function bodies (class bodies run at import)
    stack = [code]
    while stack:
        co = stack.pop()
        if co.co_flags & inspect.CO_NEWLOCALS:
            lines = {line for _, _, line in co.co_lines() if line is not None}
            functions |= lines - {co.co_firstlineno}  # the `def` line itself runs at import
        stack.extend(c for c in co.co_consts if inspect.iscode(c))
    hit: set[int] = set()

    def tracer(frame, event, arg):
        if frame.f_code.co_filename != path:
            return None
        if event == "line":
            hit.add(frame.f_lineno)
        return tracer

    sys.settrace(tracer)
    try:
        for p in inputs:
            sni.parse_client_hello(p.read_bytes())
    finally:
        sys.settrace(None)
    return len(hit & functions), len(functions)


def replay(path: Path) -> int:
    from gateway.garden.sni import parse_client_hello

    data = path.read_bytes()
    print(f"{path}: {len(data)} bytes -> {parse_client_hello(data)}")
    check(parse_client_hello, data)
    print("properties hold")
    return 0


# -- the seed corpus ---------------------------------------------------------------------------
def python_hello(name: str | None, max_tls: str = "") -> bytes:
    ctx = ssl.create_default_context()
    if name is None:
        ctx.check_hostname = False
    if max_tls == "1.2":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    conn = ctx.wrap_bio(incoming, outgoing, server_hostname=name)
    with contextlib.suppress(ssl.SSLWantReadError):
        conn.do_handshake()
    return outgoing.read()


def _u16(n: int) -> bytes:
    return n.to_bytes(2, "big")


def with_extensions(wire: bytes, front: list[tuple[int, bytes]], back=()) -> bytes:
    """A one-record hello with extensions added first and last (lengths fixed up)."""
    hs = wire[5:]
    body = hs[4:]
    pos = 2 + 32
    pos += 1 + body[pos]
    pos += 2 + int.from_bytes(body[pos : pos + 2], "big")
    pos += 1 + body[pos]
    exts = body[pos + 2 :]
    add = lambda items: b"".join(_u16(t) + _u16(len(b)) + b for t, b in items)  # noqa: E731
    exts = add(front) + exts + add(back)
    body = body[:pos] + _u16(len(exts)) + exts
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return wire[:3] + _u16(len(hs)) + hs


def fragmented(wire: bytes, *sizes: int) -> bytes:
    """The hello's handshake re-framed in records of `sizes` (the rest in the last)."""
    hs, out, pos = wire[5:], b"", 0
    for size in (*sizes, len(hs)):
        chunk = hs[pos : pos + size]
        if chunk:
            out += wire[:3] + _u16(len(chunk)) + chunk
        pos += len(chunk)
    return out


def scapy_hello(name: bytes) -> bytes:
    from scapy.layers.tls.all import (
        TLS,
        ProtocolName,
        ServerName,
        TLS_Ext_ALPN,
        TLS_Ext_ServerName,
        TLS_Ext_SupportedGroups,
        TLSClientHello,
    )

    hello = TLSClientHello(
        ciphers=[0x1301, 0x1302, 0xC02F],
        ext=[
            TLS_Ext_SupportedGroups(groups=[29, 23]),
            TLS_Ext_ServerName(servernames=[ServerName(servername=name)]),
            TLS_Ext_ALPN(protocols=[ProtocolName(protocol=b"h2")]),
        ],
    )
    return bytes(TLS(msg=[hello]))


def make_corpus() -> list[Path]:
    """Write the seed hellos: `<expected name or nosni>__<what>.bin`."""
    grease = [(0x0A0A, b""), (0x1A1A, b"\x00")]
    ech = (0xFE0D, b"\x00\x00\x01\x00\x01\x42\x00\x20" + b"\x11" * 32 + b"\x00\x90" + b"\x22" * 144)
    pq_share = (0x0033, _u16(1188) + _u16(0x11EC) + _u16(1184) + b"\x33" * 1184)
    padding = (0x0015, b"\x00" * 200)
    seeds = {
        "wallet.test__python-tls13.bin": python_hello("wallet.test"),
        "wallet.test__python-tls12.bin": python_hello("wallet.test", "1.2"),
        "shop.example.test__python-uppercase.bin": python_hello("SHOP.Example.test"),
        "nosni__python-tls13.bin": python_hello(None),
        "nosni__python-tls12.bin": python_hello(None, "1.2"),
        "wallet.test__grease.bin": with_extensions(python_hello("wallet.test"), grease),
        "public.ech.test__ech-outer.bin": with_extensions(
            python_hello("public.ech.test"), [ech], [(0x2A2A, b"")]
        ),
        "wallet.test__pq-keyshare-padding.bin": with_extensions(
            python_hello("wallet.test"), [pq_share], [padding]
        ),
        "wallet.test__fragmented-100.bin": fragmented(python_hello("wallet.test"), *[100] * 6),
        "wallet.test__fragmented-1.bin": fragmented(python_hello("wallet.test"), *[1] * 40),
        "shop.example.test__scapy.bin": scapy_hello(b"shop.example.test"),
    }
    SEEDS.mkdir(parents=True, exist_ok=True)
    for old in SEEDS.glob("*.bin"):
        old.unlink()
    for name, data in seeds.items():
        (SEEDS / name).write_bytes(data)
    return sorted(SEEDS.glob("*.bin"))


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="time budget (default 60)")
    parser.add_argument("--runs", type=int, help="a fixed number of executions instead")
    parser.add_argument("--timeout", type=int, default=2, help="seconds per input: a hang")
    parser.add_argument("--seed", type=int, help="libFuzzer's random seed (reproducible runs)")
    parser.add_argument("--fresh", action="store_true", help="start from the seeds only")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--make-corpus", action="store_true", help="rewrite the seed hellos")
    parser.add_argument("--replay", type=Path, help="run one input and check the properties")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE.parent))
    if args.make_corpus:
        for path in make_corpus():
            print(f"{path.relative_to(HERE.parent)}: {path.stat().st_size} bytes")
        return 0
    if args.replay:
        return replay(args.replay)
    try:
        import atheris  # noqa: F401
    except ImportError:
        print("atheris is not installed: .venv/bin/pip install atheris", file=sys.stderr)
        return 2
    if args.fresh:
        shutil.rmtree(WORK / "corpus", ignore_errors=True)
    seconds = None if args.runs is not None else args.seconds
    result = fuzz(seconds, args.runs, args.timeout, args.seed)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(
            f"fuzz_sni: {result['execs']:,} executions in {result['seconds']} s "
            f"({result['execs_per_second']:,}/s); corpus {result['corpus']} inputs "
            f"({result['seeds']} seeds, {result['new_units']} new); coverage "
            f"{result['edges']} edges / {result['features']} features, gateway/garden/sni.py lines "
            f"{result['sni_py_lines']} ({result['sni_py_line_coverage']}%); "
            f"crashes {result['crashes']}, hangs {result['hangs']}"
        )
        for path in result["findings"]:
            print(f"  finding: {path} (replay: python bench/fuzz_sni.py --replay {path})")
    return 1 if result["crashes"] or result["hangs"] else 0


if __name__ == "__main__":
    sys.exit(main())
