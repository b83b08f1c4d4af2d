"""plaza-provision's command line: exit codes, --json output, batch with resume, and the
one-line message when `rich` is missing. The SSH side is tests/fakes/ssh.py."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import pytest

from provisioning import batch, cli, errors
from tests.fakes.ssh import FakeRouter

UNITS = {"plaza-gateway", "plaza-portal", "plaza-dnsmasq"}


def main(argv: list[str], routers: dict[str, FakeRouter]) -> int:
    return cli.main(argv, make_runner=lambda args: lambda host, user, port: routers[host])


def events(capsys: pytest.CaptureFixture[str]) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_flash_json_is_one_object_per_step_and_a_result(capsys) -> None:
    routers = {"r1": FakeRouter()}
    assert main(["flash", "r1", "--claim", "C", "--json"], routers) == errors.OK
    out = events(capsys)
    assert [e.get("step") for e in out[:-1]] == ["connect", "enrol", "services"]
    assert out[-1] == {
        "host": "r1",
        "result": "ok",
        "exit": 0,
        "message": "enrolled as dev_0123456789abcdef",
    }


@pytest.mark.parametrize(
    ("router", "code"),
    [
        (FakeRouter(ssh="unreachable"), errors.UNREACHABLE),
        (FakeRouter(ssh="wrong-key"), errors.UNREACHABLE),
        (FakeRouter(enrol="used"), errors.CLAIM_REFUSED),
        (FakeRouter(enrol="offline"), errors.CLOUD_UNREACHABLE),
    ],
)
def test_flash_exit_codes(router: FakeRouter, code: int, capsys) -> None:
    assert main(["flash", "r1", "--claim", "C", "--json"], {"r1": router}) == code
    assert events(capsys)[-1]["exit"] == code


def test_flash_exit_codes_for_the_package_and_config(tmp_path: Path, capsys) -> None:
    deb = tmp_path / "p.deb"
    deb.write_bytes(b"x" * 10)
    venue = tmp_path / "v.toml"
    venue.write_text("[lan]\n")
    argv = ["flash", "r1", "--claim", "C", "--json", "--package", str(deb)]
    assert main(argv, {"r1": FakeRouter(free_kb=1)}) == errors.DISK_FULL
    assert main(argv, {"r1": FakeRouter(dpkg="preinst-fails")}) == errors.INSTALL_FAILED
    assert main(argv, {"r1": FakeRouter(dpkg="half")}) == errors.HALF_DONE
    argv = ["flash", "r1", "--claim", "C", "--json", "--venue-config", str(venue)]
    assert main(argv, {"r1": FakeRouter(agent="rolled-back")}) == errors.CONFIG_REFUSED


def test_usage_errors_are_2(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["flash", "r1"], {})
    assert caught.value.code == errors.USAGE
    missing = ["flash", "r1", "--claim", "C", "--package", str(tmp_path / "nope.deb")]
    assert main(missing, {}) == errors.USAGE
    assert "nope.deb: no such file" in capsys.readouterr().err


def test_verify_exit_code_is_1_when_a_check_fails(capsys) -> None:
    ok = FakeRouter(active=set(UNITS), checks=[{"check": "nft", "status": "ok", "reason": "x"}])
    assert main(["verify", "r1", "--json"], {"r1": ok}) == errors.OK
    assert events(capsys)[-1]["message"] == "all ok"
    assert main(["verify", "r1", "--json"], {"r1": FakeRouter()}) == errors.CHECK_FAILED


def test_without_rich_one_line_says_what_to_install(monkeypatch, capsys) -> None:
    real_import = builtins.__import__

    def no_rich(name, *args, **kwargs):
        if name == "rich" or name.startswith("rich."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_rich)
    assert main(["flash", "r1", "--claim", "C"], {"r1": FakeRouter()}) == errors.MISSING_DEPENDENCY
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'plaza[provision]'" in err
    # --json needs no rich.
    assert main(["flash", "r1", "--claim", "C", "--json"], {"r1": FakeRouter()}) == errors.OK


def test_rich_display_shows_steps_and_the_result(capsys) -> None:
    assert main(["flash", "r1", "--claim", "C"], {"r1": FakeRouter()}) == errors.OK
    out = capsys.readouterr().out
    assert "ok r1: connect" in out and "r1: ok (exit 0) enrolled as dev_" in out
    assert main(["flash", "r1", "--claim", "C"], {"r1": FakeRouter(enrol="expired")}) == 6
    out = capsys.readouterr().out
    assert "fail r1: enrol: enrolment refused: claim code expired" in out
    assert "ask the merchant for a new one" in out


def write_csv(tmp_path: Path, hosts: list[str]) -> Path:
    (tmp_path / "venue.toml").write_text("[lan]\n")
    path = tmp_path / "routers.csv"
    path.write_text(
        "host,claim,venue_config\n" + "".join(f"{h},CODE-{h},venue.toml\n" for h in hosts)
    )
    return path


def test_batch_flashes_all_then_resumes_by_verifying(tmp_path: Path, capsys) -> None:
    nft = [{"check": "nft", "status": "ok", "reason": "loaded"}]
    routers = {h: FakeRouter(host=h, checks=nft) for h in ("r1", "r2", "r3")}
    routers["r2"].enrol = "expired"
    csv_file = write_csv(tmp_path, list(routers))
    argv = ["batch", str(csv_file), "--json", "--jobs", "2"]
    assert main(argv, routers) == errors.CLAIM_REFUSED
    results = {e["host"]: e["exit"] for e in events(capsys) if "result" in e}
    assert results == {"r1": 0, "r2": 6, "r3": 0}
    state = json.loads((tmp_path / "routers.csv.state.json").read_text())
    assert sorted(state["done"]) == ["r1", "r3"]
    assert state["done"]["r1"]["device_id"] == "dev_0123456789abcdef"
    # Re-run: r1 and r3 are verified, not flashed; r2 (new code) is flashed.
    routers["r2"].enrol = "ok"
    for router in routers.values():
        router.calls.clear()
    assert main(argv, routers) == errors.OK
    for host in ("r1", "r3"):
        assert not any(c[0] in ("plaza-gateway", "dpkg") for c in routers[host].calls)
        assert ["plaza-provision-agent", "check"] in routers[host].calls
    assert any(c[0] == "plaza-gateway" for c in routers["r2"].calls)
    results = {e["host"]: e["message"] for e in events(capsys) if "result" in e}
    assert results["r1"] == "already flashed: verified"


def test_batch_interrupted_keeps_what_was_done(tmp_path: Path) -> None:
    routers = {h: FakeRouter(host=h) for h in ("r1", "r2")}

    def pull_the_plug(argv: list[str]) -> None:
        if argv[0] == "plaza-gateway":
            raise KeyboardInterrupt

    routers["r2"].on_call = pull_the_plug
    csv_file = write_csv(tmp_path, list(routers))
    assert main(["batch", str(csv_file), "--json", "--jobs", "1"], routers) == 130
    state = json.loads((tmp_path / "routers.csv.state.json").read_text())
    assert list(state["done"]) == ["r1"]


def test_batch_csv_errors_are_usage(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("address,code\nr1,C\n")
    assert main(["batch", str(bad), "--json"], {}) == errors.USAGE
    out = capsys.readouterr()
    assert "missing column(s) host, claim" in out.err
    assert json.loads(out.out)["exit"] == errors.USAGE  # --json: the reason on stdout too
    bad.write_text("host,claim\nr1,C\nr1,D\n")
    assert main(["batch", str(bad), "--json"], {}) == errors.USAGE
    bad.write_text("host,claim,port\nr1,C,x\n")
    with pytest.raises(errors.ProvisionError, match="port 'x' is not a number"):
        batch.read_rows(bad)


NO_RICH = r"""
import importlib, importlib.abc, pkgutil, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("rich", "sqlalchemy", "alembic", "psycopg"):
            raise ImportError(f"{name} is not in the router install")
        return None

sys.meta_path.insert(0, Block())
import provisioning
for info in pkgutil.walk_packages(provisioning.__path__, "provisioning."):
    if info.name != "provisioning.report_rich" and ".package" not in info.name:
        importlib.import_module(info.name)
from provisioning import cli
sys.exit(cli.main(["verify", "r1"]))
"""


def test_router_install_without_rich_imports_the_agent_and_says_what_to_install() -> None:
    """The agent is part of the router install: every provisioning module but the rich view
    imports with rich (and the cloud's libraries) unimportable, and plaza-provision there
    says in one line what to install."""
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-c", NO_RICH],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert run.returncode == errors.MISSING_DEPENDENCY, run.stderr
    assert run.stderr.strip() == (
        "plaza-provision: the progress display needs the 'rich' library, which a router "
        "install lacks (pip install 'plaza[provision]', or run with --json)"
    )


def test_openssh_argv_is_key_only_with_its_own_known_hosts(tmp_path: Path) -> None:
    from provisioning.ssh import OpenSSH

    runner = OpenSSH(
        "r1",
        user="admin",
        port=2222,
        identity="/k",
        known_hosts=tmp_path / "kh",
        options=["ProxyJump=bastion"],
        control_dir=tmp_path,
    )
    argv = runner.base()
    assert argv[-4:] == ["-l", "admin", "r1", "--"] and argv[0] == "ssh"
    assert argv[argv.index("-p") + 1] == "2222"
    pairs = {argv[i + 1] for i, a in enumerate(argv) if a == "-o"}
    assert {
        "BatchMode=yes",
        "PasswordAuthentication=no",
        "StrictHostKeyChecking=accept-new",
        f"UserKnownHostsFile={tmp_path / 'kh'}",
        "IdentitiesOnly=yes",
        "ProxyJump=bastion",
        f"ControlPath={tmp_path}/%C",
    } <= pairs
    assert argv[argv.index("-i") + 1] == "/k"
    # ssh takes an option's first value: the caller's come before the defaults.
    assert argv.index("ProxyJump=bastion") < argv.index("BatchMode=yes")


def test_batch_interrupted_starts_no_further_router(tmp_path: Path) -> None:
    hosts = [f"r{i}" for i in range(1, 6)]
    routers = {h: FakeRouter(host=h) for h in hosts}

    def pull_the_plug(argv: list[str]) -> None:
        if argv[0] == "plaza-gateway":
            raise KeyboardInterrupt

    routers["r2"].on_call = pull_the_plug
    csv_file = write_csv(tmp_path, hosts)
    assert main(["batch", str(csv_file), "--json", "--jobs", "1"], routers) == 130
    assert [h for h in hosts if routers[h].calls] == ["r1", "r2"]


def test_claim_from_stdin_stays_off_the_command_line(monkeypatch, capsys) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("K7Q4-9XMP-2D3F\n"))
    router = FakeRouter()
    assert main(["flash", "r1", "--claim", "-", "--json"], {"r1": router}) == errors.OK
    assert router.inputs == [b"K7Q4-9XMP-2D3F\n"]
