#!/usr/bin/env bash
# Runs bucketfs's mount tests against Garage (a real S3-compatible object
# store, https://garagehq.deuxfleurs.fr) instead of the built-in emulator:
# starts a single-node Garage on 127.0.0.1 with a throwaway configuration
# (free ports, fresh secret, layout, key, bucket), runs the command with
# BUCKETFS_TEST_BACKEND=garage and the endpoint, bucket and key in the
# environment (tests/common/mod.rs reads them), prints how many tests ran
# and how many did not and why, then stops Garage and removes its files.
#
# Usage: tests/garage/run.sh [COMMAND...]
#   default COMMAND: cargo test --locked --test mount --test write
#     --test reliability -- --skip emulator_only:: (and --include-ignored
#     as root). Tests that need the emulator live in `emulator_only`
#     modules: they fail against Garage, so a command of your own should
#     filter them out the same way.
# Env: GARAGE  the garage binary (default: `garage` in PATH, else
#              /opt/bucketfs-garage/bin/garage, where .ci/run installs it)
set -euo pipefail
cd "$(dirname "$0")/../.."

garage=${GARAGE:-}
if [ -z "$garage" ]; then
    if command -v garage >/dev/null 2>&1; then
        garage=$(command -v garage)
    else
        garage=/opt/bucketfs-garage/bin/garage
    fi
fi
if [ ! -x "$garage" ]; then
    echo "run.sh: no garage binary at $garage (install it with: cargo install garage --locked --root /opt/bucketfs-garage)" >&2
    exit 1
fi
if [ $# -eq 0 ]; then
    set -- cargo test --locked --test mount --test write --test reliability -- --skip emulator_only::
    if [ "$(id -u)" = 0 ]; then set -- "$@" --include-ignored; fi
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/bucketfs-garage.XXXXXX")
pid=
cmd=
# Stops a child: TERM, then KILL after 10 s. A child that has exited stays
# a zombie (which kill -0 still finds) until waited for, hence the state.
stop() {
    kill "$1" 2>/dev/null || return 0
    for _ in $(seq 100); do
        case $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) in "" | Z) break ;; esac
        sleep 0.1
    done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
# Stops the tests and Garage and removes Garage's files, on every way out:
# success, failure, Ctrl-C or kill.
cleanup() {
    if [ -n "$cmd" ]; then stop "$cmd"; fi
    if [ -n "$pid" ]; then stop "$pid"; fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Three free ports on 127.0.0.1 (S3 API, RPC, admin).
read -r s3_port rpc_port admin_port < <(python3 - <<'PY'
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
PY
)
secret=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
cat > "$work/garage.toml" <<TOML
metadata_dir = "$work/meta"
data_dir = "$work/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc_port"
rpc_public_addr = "127.0.0.1:$rpc_port"
rpc_secret = "$secret"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3_port"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$admin_port"
TOML
g() { "$garage" -c "$work/garage.toml" "$@"; }

echo "== garage $("$garage" --version 2>/dev/null | head -1) on 127.0.0.1:$s3_port"
# Started directly, not through g: a shell function in the background runs
# in a subshell, so $! would be the subshell's pid and killing it would
# leave the server running.
"$garage" -c "$work/garage.toml" server > "$work/garage.log" 2>&1 &
pid=$!
deadline=$((SECONDS + 60))
until g status > /dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null || [ $SECONDS -gt $deadline ]; then
        echo "run.sh: garage did not start; its log:" >&2
        cat "$work/garage.log" >&2
        exit 1
    fi
    sleep 0.2
done
node=$(g node id -q | cut -d@ -f1)
g layout assign -z dc1 -c 1G "$node" > /dev/null
g layout apply --version 1 > /dev/null
key_out=$(g key create bucketfs-test)
key_id=$(awk -F': *' '/Key ID/ {print $2; exit}' <<< "$key_out")
key_secret=$(awk -F': *' '/Secret key/ {print $2; exit}' <<< "$key_out")
if [ -z "$key_id" ] || [ -z "$key_secret" ]; then
    echo "run.sh: cannot read the key garage created" >&2
    exit 1
fi
g bucket create bucketfs-test > /dev/null
g bucket allow --read --write --owner bucketfs-test --key bucketfs-test > /dev/null

export BUCKETFS_TEST_BACKEND=garage
export BUCKETFS_GARAGE_ENDPOINT="http://127.0.0.1:$s3_port"
export BUCKETFS_GARAGE_REGION=garage
export BUCKETFS_GARAGE_BUCKET=bucketfs-test
export BUCKETFS_GARAGE_KEY_ID="$key_id"
export BUCKETFS_GARAGE_SECRET="$key_secret"

# The command runs in the background so that a TERM to this script
# interrupts the wait at once (a foreground command would be waited for
# first); its output goes through tee to the terminal and the counts.
exec 3> >(tee "$work/output")
tee_pid=$!
set +e
"$@" >&3 2>&1 &
cmd=$!
wait "$cmd"
status=$?
set -e
cmd=
exec 3>&-
wait "$tee_pid"

# libtest's summary lines: tests that ran (passed, failed) and those that
# did not (ignored: they need root; filtered out: they need the emulator).
# A command that is not a test run (the benchmark) prints none.
total() { awk -v field="$1" '/^test result:/ {sum += $field} END {print sum + 0}' "$work/output"; }
if grep -q '^test result:' "$work/output"; then
    echo "== Garage-backed suite: $(total 4) passed against Garage, $(total 6) failed;" \
        "not run: $(total 8) ignored (they need root), $(total 12) filtered out" \
        "(emulator_only: they need the emulator's dialects, faults or counters)"
fi
exit "$status"
