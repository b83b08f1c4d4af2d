#!/usr/bin/env bash
# `make vm-test` (run it under `flock /tmp/plaza-netns.lock`, as the Makefile does): the VM lab
# from a clean state to a clean state. The box must be built and added (make vagrant-box).
#   plaza-lab vm up (router + 1 phone; flash + verify) -> plaza-lab vm demo -> plaza-lab vm down --all
# `down --all` runs on every exit (trap), also after a failure, and fails the run when libvirt
# still holds a domain, a network or a volume; it also removes the box (`make vagrant-box`
# re-adds it from dist/ in seconds).
set -euo pipefail
cd "$(dirname "$0")/../.."
export PLAZA_PHONES=1
LAB=.venv/bin/plaza-lab
start=$(date +%s)
cleanup() {
  rc=$?
  echo "== plaza-lab vm down --all"
  $LAB vm down --all || rc=1
  echo "vm-test: $(( $(date +%s) - start )) s, exit $rc"
  exit $rc
}
$LAB vm down >/dev/null 2>&1 || true  # a crashed run's VMs and internet
trap cleanup EXIT
echo "== plaza-lab vm up"
$LAB vm up --phones 1
echo "== plaza-lab vm demo"
$LAB vm demo
