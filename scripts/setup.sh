#!/usr/bin/env bash
# Install what blockemu needs on Debian 12, skipping what is already there:
# the Debian packages named in scripts/dependencies.txt (the one list that
# scripts/doctor.sh checks too) and .venv, made from Debian's own python3 --
# the interpreter nbdkit's python plugin embeds -- with --system-site-packages
# so it sees libnbd's module.
set -euo pipefail
cd "$(dirname "$0")/.."

mapfile -t packages < <(awk -F'|' '!/^#/ && NF {gsub(/ /, "", $1); if ($1 !~ /^setup:/) print $1}' scripts/dependencies.txt)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv from /usr/bin/python3 (the interpreter nbdkit embeds)"
  /usr/bin/python3 -m venv --system-site-packages .venv
fi
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: pip install -e '.[test]'"
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
  touch "$stamp"
fi
