#!/usr/bin/env bash
# `make vm-test` (run it under `flock /tmp/plaza-netns.lock`, as the Makefile does): the VM lab
# from a clean state to a clean state. The box must be built and added (make vagrant-box).
#   plaza-lab vm up (the internet VM, router, 1 phone; flash + verify) -> the scenarios
#   (PLAZA_VM_SCENARIOS, default all five: "demo outage crash roam browser")
#   -> plaza-lab vm down --all
# PLAZA_VM_INTERNET=namespace runs the internet in a namespace of the host instead of its VM.
# `down --all` runs on every exit (trap), also after a failure, and the run fails when libvirt
# still holds a domain, a network or a volume, when a box is still added, or when a lab
# namespace is left; it also removes the box (`make vagrant-box` re-adds it from dist/ in seconds).
set -euo pipefail
cd "$(dirname "$0")/../.."
export PLAZA_PHONES=1
# This checkout's code, whichever checkout the venv's editable install points at.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PLAZA_VM_INTERNET=${PLAZA_VM_INTERNET:-vm}
LAB=.venv/bin/plaza-lab
SCENARIOS=${PLAZA_VM_SCENARIOS:-demo outage crash roam browser}
start=$(date +%s)
stage() { echo "== $* ($(( $(date +%s) - start )) s)"; }
cleanup() {
  rc=$?
  stage "plaza-lab vm down --all"
  $LAB vm down --all || rc=1
  boxes=$(vagrant box list 2>/dev/null | grep -v 'There are no installed boxes' || true)
  if [ -n "$boxes" ]; then echo "vm-test: boxes left: $boxes"; rc=1; fi
  netns=$(ip netns list | grep -E '^(plaza-virt|vmlab-inet)\b' || true)
  if [ -n "$netns" ]; then echo "vm-test: namespaces left: $netns"; rc=1; fi
  echo "vm-test: $(( $(date +%s) - start )) s, exit $rc"
  exit $rc
}
$LAB vm down >/dev/null 2>&1 || true  # a crashed run's VMs and internet
trap cleanup EXIT
stage "plaza-lab vm up"
$LAB vm up --phones 1
failed=""
for scenario in $SCENARIOS; do  # each one, even after a failure: a tester sees them all
  stage "plaza-lab vm $scenario"
  $LAB vm "$scenario" || failed="$failed $scenario"
done
if [ -n "$failed" ]; then echo "vm-test: did not match:$failed"; exit 1; fi
