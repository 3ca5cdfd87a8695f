#!/usr/bin/env bash
# `make doctor`: every external program and file blockemu and its tests use
# (scripts/dependencies.txt), each with the version found.  It only looks,
# never installs.  When anything is missing it exits 1 after one line per
# missing item, naming what provides it.
set -uo pipefail
cd "$(dirname "$0")/.."
PATH=$PATH:/usr/sbin:/sbin

present() {  # CHECK -> status 0 when present
  local kind=${1%%:*} target=${1#*:}
  case $kind in
    cmd) command -v "$target" >/dev/null 2>&1 ;;
    file) compgen -G "$target" >/dev/null ;;
    py) [ -x /usr/bin/python3 ] && /usr/bin/python3 -c "import $target" >/dev/null 2>&1 ;;
    venv) [ -x ".venv/bin/$target" ] ;;
    *) echo "doctor: scripts/dependencies.txt: check '$1' has unknown kind '$kind' (allowed: cmd, file, py, venv)" >&2
       return 2 ;;
  esac
}

version_of() {  # PROVIDER VERSION-SPEC -> one line
  if [ "$2" = dpkg ]; then
    dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo "?"
  else
    bash -c "$2" 2>&1 | head -n 1
  fi
}

how_to_get() {  # PROVIDER
  case $1 in
    setup:.venv) echo "run 'make setup' (scripts/setup.sh makes .venv)" ;;
    setup:kernel) echo "run 'make kernel' (scripts/fetch_kernel.sh)" ;;
    setup:uapi) echo "run 'make kernel' (scripts/fetch_ublk_header.sh)" ;;
    setup:fio) echo "run 'make kernel' (scripts/fetch_fio.sh)" ;;
    *) echo "apt-get install $1 (or run 'make setup')" ;;
  esac
}

trim() { local s=$1; s=${s#"${s%%[! ]*}"}; printf '%s' "${s%"${s##*[! ]}"}"; }

format='%-8s %-21s %-55s %s\n'
printf "$format" status provider check version
count=0 problems=()
while IFS='|' read -r provider check version_spec purpose; do
  case $provider in ''|'#'*) continue ;; esac
  provider=$(trim "$provider") check=$(trim "$check") version_spec=$(trim "$version_spec") purpose=$(trim "$purpose")
  count=$((count + 1))
  if present "$check"; then
    printf "$format" ok "$provider" "$check" "$(version_of "$provider" "$version_spec")"
  else
    printf "$format" MISSING "$provider" "$check" -
    problems+=("doctor: missing ${check#*:}, $purpose: $(how_to_get "$provider")")
  fi
done < scripts/dependencies.txt

if ((${#problems[@]})); then
  printf '%s\n' "${problems[@]}" >&2
  exit 1
fi
echo "doctor: all $count dependencies present"
