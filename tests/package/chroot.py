"""A throwaway Debian 12 root for installing the package: built once by mmdebstrap, cached.

The base (minbase plus what the package depends on) is a tarball under CACHE keyed by its
package list, so only the first run downloads; each test session unpacks it once, and each
scenario runs dpkg in an overlay on top of it (`unshare --mount --net --fork chroot`).
No apt runs inside: the package must install from what its Depends brought in, offline.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

CACHE = Path("/var/cache/plaza-test")
SUITE = "bookworm"
# What the package depends on (provisioning/package/nfpm.yaml), nothing more.
PACKAGES = ("python3", "nftables", "dnsmasq-base", "libnetfilter-queue1", "iptables", "adduser")
MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)


class ChrootError(RuntimeError):
    """The base could not be built or a command in it could not be run."""


def base_tarball(packages: tuple[str, ...] = PACKAGES) -> Path:
    """The cached base for `packages`, built by mmdebstrap when missing (~1 minute)."""
    key = hashlib.sha256(" ".join([SUITE, "minbase", *sorted(packages)]).encode()).hexdigest()
    tarball = CACHE / f"{SUITE}-minbase-{key[:16]}.tar"
    if tarball.exists():
        return tarball
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = tarball.with_suffix(".partial.tar")
    cmd = [
        "mmdebstrap", "--quiet", "--variant=minbase", "--mode=root",
        f"--include={','.join(packages)}", SUITE, str(partial), *MIRRORS,
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        raise ChrootError(f"mmdebstrap failed ({done.returncode}): {done.stderr[-2000:]}")
    partial.rename(tarball)
    return tarball


def unpack(tarball: Path, root: Path) -> Path:
    """The base unpacked once (~10 s); each scenario writes to its own overlay on top."""
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-C", str(root), "-xf", str(tarball)], check=True)
    return root


class Chroot:
    """A fresh Debian root: `base` read-only below, this scenario's changes in `upper`.

    Every command runs in new mount and network namespaces: the overlay and /proc are
    mounted there and vanish with it, and the package's `nft delete table` on remove acts on
    an empty network namespace, never on the host's tables.
    """

    def __init__(self, base: Path, scratch: Path) -> None:
        self.base = base
        self.upper = scratch / "upper"
        self.work = scratch / "work"
        self.merged = scratch / "merged"
        for d in (self.upper, self.work, self.merged):
            d.mkdir(parents=True, exist_ok=True)

    def put(self, source: Path, inside: str) -> str:
        """Copy a host file into the root (into the overlay's upper layer); returns its path."""
        target = self.upper / inside.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())
        target.chmod(source.stat().st_mode & 0o777)
        return inside

    def write(self, inside: str, text: str, mode: int = 0o644) -> None:
        target = self.upper / inside.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(mode)

    def run(
        self, *argv: str, check: bool = True, prelude: str = "", timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """argv in the root; `prelude`: host shell commands run first in the same namespaces
        (the root has no iproute2: its network is set up from outside)."""
        script = (
            'mount -t overlay overlay -o "lowerdir=$1,upperdir=$2,workdir=$3" "$4" '
            '&& mount -t proc proc "$4/proc" '
            f'&& {{ {prelude or ":"} ; }} && root="$4" && shift 4 && exec chroot "$root" "$@"'
        )
        cmd = [
            "unshare", "--mount", "--net", "--fork", "sh", "-c", script, "sh",
            str(self.base), str(self.upper), str(self.work), str(self.merged), *argv,
        ]  # fmt: skip
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
        done = subprocess.run(
            cmd, capture_output=True, text=True, env=env, check=False, timeout=timeout
        )
        if check and done.returncode != 0:
            raise ChrootError(
                f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}{done.stderr}"
            )
        return done

    def sh(self, script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("sh", "-c", script, check=check)

    def exists(self, path: str) -> bool:
        return self.run("test", "-e", path, check=False).returncode == 0


if __name__ == "__main__":  # warm the cache: python tests/package/chroot.py
    print(base_tarball())
    sys.exit(0)
