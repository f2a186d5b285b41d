#!/usr/bin/env bash
# verify.sh: check every unit file in this directory with
# `systemd-analyze verify`; exits non-zero if any of them has a problem.
#
# Needs systemd-analyze, and the programs the units run installed where the
# units say: /usr/local/bin/bucketfs and /usr/bin/fusermount3 (verify itself
# refuses an ExecStart= that is not executable; the script checks the rest).
#
# Why not just `systemd-analyze verify *`:
# * A template (NAME@.service) is verified through an instance,
#   NAME@example.service, a copy in a temporary directory.
# * verify exits 0 on many real mistakes (an unknown key, a value it cannot
#   parse: it prints "..., ignoring." and carries on), so any line of output
#   that names one of our units counts as a failure.
# * verify also loads the units ours depend on (network-online.target, ...)
#   from the machine and may print warnings about those; lines that do not
#   name our units are shown but do not fail the check.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
analyze=${SYSTEMD_ANALYZE:-systemd-analyze}
if ! command -v "$analyze" >/dev/null 2>&1; then
    echo "verify.sh: $analyze not found (Debian: apt-get install systemd)" >&2
    exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/bucketfs-verify.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/units"

# Units go into one directory (an automount needs its mount unit beside it);
# verify looks for units in the directory of the file it is given first.
shopt -s nullglob
units=()            # names as verified
declare -A origin   # verified name -> file name in this directory
for f in "$here"/*.service "$here"/*.socket "$here"/*.mount \
         "$here"/*.automount "$here"/*.timer "$here"/*.path "$here"/*.target; do
    name=${f##*/}
    case $name in
        *@.*) unit=${name/@./@example.} ;;   # template -> instance
        *) unit=$name ;;
    esac
    cp "$f" "$tmp/units/$unit"
    units+=("$unit")
    origin[$unit]=$name
done
if [ ${#units[@]} -eq 0 ]; then
    echo "verify.sh: no unit files in $here" >&2
    exit 1
fi
# Output may name a unit by its copy or by its original (template) name.
printf '%s\n' "${units[@]}" "${origin[@]}" | sort -u >"$tmp/names"

# --recursive-errors=no (systemd >= 250): problems in the units ours depend
# on do not count, and, found by trying systemd 252, the exit status then
# also reflects "ignoring" warnings about our own units (without the option
# it stays 0 for them). --man=no: no Documentation= man pages to look up.
opts=(--man=no)
if "$analyze" --help 2>/dev/null | grep -q -- '--recursive-errors'; then
    opts+=(--recursive-errors=no)
fi

failed=0

# verify checks ExecStart= programs but skips those of commands whose
# failure is ignored ("-" prefix), such as the ExecStopPost= fusermount3.
echo "== programs the units run"
for prog in $(cat "$tmp/units"/* |
        sed -n 's/^Exec[A-Za-z]*=[-@:+!]*\(\/[^ ]*\).*/\1/p' | sort -u); do
    if [ -x "$prog" ]; then
        echo "ok    $prog"
    else
        echo "FAIL  $prog is not installed or not executable"
        failed=1
    fi
done

echo "== systemd-analyze verify ($("$analyze" --version 2>/dev/null | head -n1))"
for unit in "${units[@]}"; do
    label=$unit
    [ "${origin[$unit]}" = "$unit" ] || label="$unit (instance of ${origin[$unit]})"
    rc=0
    # verify makes and removes its own /tmp/systemd-temporary-* directory.
    out=$(cd "$tmp/units" && SYSTEMD_LOG_COLOR=0 \
        "$analyze" verify "${opts[@]}" "$tmp/units/$unit" 2>&1) || rc=$?
    ours=$(printf '%s\n' "$out" | grep -F -f "$tmp/names" || true)
    other=$(printf '%s\n' "$out" | grep -v -F -f "$tmp/names" | grep -v '^$' || true)
    if [ "$rc" -ne 0 ] || [ -n "$ours" ]; then
        echo "FAIL  $label (exit status $rc)"
        [ -z "$out" ] || printf '%s\n' "$out" | sed 's/^/      /'
        failed=1
    else
        echo "ok    $label"
        [ -z "$other" ] || printf '%s\n' "$other" | sed 's/^/      (not about our units, ignored) /'
    fi
done

if [ "$failed" -ne 0 ]; then
    echo "verify.sh: problems found" >&2
    exit 1
fi
echo "verify.sh: ${#units[@]} unit files verified"
