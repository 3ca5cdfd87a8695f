#!/usr/bin/env bash
# Does a fresh machine pass the README's two commands?  A green CI proves
# little: CI runs on a machine where packages may have been installed by hand.
#
# This builds a minimal Debian 12 root (mmdebstrap, minbase, plus git, make and
# ca-certificates: what a user needs to clone and type `make`) in a temporary
# directory, puts a clean `git clone` of this repository's HEAD in it, and runs
# there, as root and with CI=true (a missing dependency fails, never skips):
#     make test
#     timeout 30 make run      (passes when the device is served until the timeout)
# then prints both results and the wall time.  Run it after every change to
# set-up (scripts/setup.sh, scripts/dependencies.txt, the Makefile).
#
# Needs root (chroot, mounts) and the Debian package registry.  It downloads a
# base system and every package set-up installs, so it is not part of
# `make test`.  The root gets the host's /proc, /sys and /dev (qemu needs them);
# no /dev/kvm is needed, as the VM harness uses software emulation.
#
# Environment:
#   BLOCKEMU_DEBIAN_SOURCES  apt sources for the root (default: the host's
#                            /etc/apt/sources.list.d/debian.sources, else
#                            /etc/apt/sources.list); must include bookworm-security,
#                            where Debian's Linux 6.12 lives
#   FRESH_KEEP=1             keep the root afterwards (its path is printed)
#   FRESH_ROOT_DIR           where to make the temporary root (default: $TMPDIR or /tmp)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)

if [ "$(id -u)" -ne 0 ]; then
  echo "fresh_machine_check: needs root (mmdebstrap, chroot and mounts); run it with sudo" >&2
  exit 2
fi
sources=${BLOCKEMU_DEBIAN_SOURCES:-}
if [ -z "$sources" ]; then
  for candidate in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
    if [ -s "$candidate" ]; then sources=$candidate; break; fi
  done
fi
if [ -z "$sources" ] || [ ! -s "$sources" ]; then
  echo "fresh_machine_check: no Debian apt sources found; set BLOCKEMU_DEBIAN_SOURCES to a sources file" >&2
  exit 2
fi
if ! command -v mmdebstrap >/dev/null 2>&1; then
  echo "fresh_machine_check: installing mmdebstrap (this script's own tool, not the project's)"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends mmdebstrap
fi

root=$(mktemp -d "${FRESH_ROOT_DIR:-${TMPDIR:-/tmp}}/blockemu-fresh.XXXXXX")
cleanup() {
  # Whatever still runs in the root (an interrupted test's nbdkit or qemu)
  # holds its mounts busy: end it first.
  for proc in /proc/[0-9]*; do
    [ "$(readlink "$proc/root" 2>/dev/null)" = "$root" ] && kill -9 "${proc#/proc/}" 2>/dev/null
  done
  sleep 1
  # Mounts first: rm -rf must never walk into the host's /dev or /proc.
  for m in tmp dev sys proc; do
    if mountpoint -q "$root/$m"; then umount -R "$root/$m" || umount -lR "$root/$m" || true; fi
  done
  if [ "${FRESH_KEEP:-}" = 1 ]; then
    echo "fresh_machine_check: root kept at $root"
  elif ! grep -q " $root/" /proc/mounts; then
    rm -rf "$root"
  else
    echo "fresh_machine_check: $root still has mounts; not removed" >&2
  fi
}
trap cleanup EXIT

start=$(date +%s)
stamp() { printf '[%4ds] %s\n' $(($(date +%s) - start)) "$*"; }

stamp "building a minimal Debian 12 root in $root (apt sources: $sources)"
mmdebstrap --quiet --variant=minbase --include=git,make,ca-certificates bookworm "$root" "$sources"

stamp "cloning $(git -C "$repo" rev-parse --short HEAD) into the root"
git clone --quiet --no-hardlinks "$repo" "$root/root/blockemu"
cp /etc/resolv.conf "$root/etc/resolv.conf"
# mmdebstrap writes no /etc/hosts; every installed Debian has one naming
# localhost (Selenium reaches chromedriver at localhost).
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"
# The root trusts what the host trusts: behind a TLS-inspecting proxy, pip
# reaches PyPI only with the proxy's CA, which the host's bundle holds.  pip
# is pointed at the system bundle, as it is not by default.
if [ -s /etc/ssl/certs/ca-certificates.crt ]; then
  cp /etc/ssl/certs/ca-certificates.crt "$root/usr/local/share/ca-certificates/host-trust.crt"
  chroot "$root" update-ca-certificates >/dev/null
fi
mount -t proc proc "$root/proc"
# rslave: unmounting the root's submounts must never propagate to the host's.
mount --rbind /sys "$root/sys" && mount --make-rslave "$root/sys"
mount --rbind /dev "$root/dev" && mount --make-rslave "$root/dev"
mount -t tmpfs tmpfs "$root/tmp"

in_root() {
  chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 CI=true \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    bash -c "cd /root/blockemu && $1"
}

stamp "make test (CI=true); its log: $root/root/make-test.log"
set +e
in_root "make test 2>&1 | tee /root/make-test.log; exit \${PIPESTATUS[0]}"
test_rc=$?
stamp "make test exited $test_rc"

stamp "timeout 30 make run"
in_root "timeout 30 make run > /root/make-run.log 2>&1"
run_rc=$?
set -e
umount -R "$root/tmp" || true
served=no
grep -q "blockemu: serving" "$root/root/make-run.log" && served=yes
stamp "make run exited $run_rc (124 = still serving at the timeout), served: $served"

summary=$(grep -E '[0-9]+ (passed|failed|errors?)' "$root/root/make-test.log" | tail -n 1 || true)
echo
echo "fresh_machine_check: commit $(git -C "$repo" rev-parse --short HEAD), wall time $(($(date +%s) - start)) s"
echo "  make test:  exit $test_rc  ${summary:-(no pytest summary line)}"
echo "  make run:   exit $run_rc  served: $served"
if [ "$test_rc" -ne 0 ] || [ "$run_rc" -ne 124 ] || [ "$served" != yes ]; then
  tail -n 40 "$root/root/make-test.log" | sed 's/^/  | /'
  echo "  make run's output:"; sed 's/^/  | /' "$root/root/make-run.log"
  echo "fresh_machine_check: FAILED"
  FRESH_KEEP=1
  exit 1
fi
echo "fresh_machine_check: PASSED"
