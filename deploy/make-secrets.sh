#!/bin/sh
# Makes the stack's secret files that are missing (a file that exists and is
# not empty is kept), for Compose and `kubectl apply -k deploy/secrets`:
#
#   sh deploy/make-secrets.sh [DIR]      (DIR: default deploy/secrets)
#
#   redis_router_password, redis_jobs_password, redis_admin_password,
#   triton_admin_key      64 random hex digits, no trailing newline
#   router_api_keys.json  the router's API_KEYS_FILE: one key, `ops`, with the
#                         admin scope, as `python -m router.keys new` prints
#                         its entry (name, scopes, SHA-256; not the key)
#   router_admin_key      that key itself (mode 600): for operators, e.g.
#                         ROUTER_API_KEY for `python -m export promote`.
#                         Never mounted into a container.
#
# PYTHON is the Python with the router's dependencies (default: the
# checkout's .venv, else python3).
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$root/deploy/secrets}
if [ -z "${PYTHON:-}" ]; then
    PYTHON=python3
    [ -x "$root/.venv/bin/python" ] && PYTHON=$root/.venv/bin/python
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"

umask 077
mkdir -p "$dir"
chmod 700 "$dir"
for name in redis_router_password redis_jobs_password redis_admin_password triton_admin_key; do
    if [ ! -s "$dir/$name" ]; then
        "$PYTHON" -c 'import secrets, sys; sys.stdout.write(secrets.token_hex(32))' > "$dir/$name.new"
        mv "$dir/$name.new" "$dir/$name"
    fi
done

if [ ! -s "$dir/router_api_keys.json" ]; then
    made=$("$PYTHON" -m router.keys new ops --scopes admin --json)
    printf '%s' "$made" | "$PYTHON" -c '
import json, os, sys
made, folder = json.load(sys.stdin), sys.argv[1]
with open(os.path.join(folder, "router_admin_key"), "w") as f:
    f.write(made["key"])
with open(os.path.join(folder, "router_api_keys.json.new"), "w") as f:
    json.dump([made["entry"]], f, indent=2)
    f.write("\n")
' "$dir"
    mv "$dir/router_api_keys.json.new" "$dir/router_api_keys.json"
    echo "made the admin key \`ops\`: $dir/router_admin_key" >&2
fi

# Compose mounts the host files as they are: the containers' own users read them.
chmod 644 "$dir"/redis_router_password "$dir"/redis_jobs_password "$dir"/redis_admin_password \
    "$dir"/triton_admin_key "$dir"/router_api_keys.json
if [ -e "$dir/router_admin_key" ]; then
    chmod 600 "$dir/router_admin_key"
fi
