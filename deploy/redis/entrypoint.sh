#!/bin/sh
# Starts redis-server with the ACL users of a template whose passwords come
# from secret files:
#
#   sh entrypoint.sh TEMPLATE [redis-server options...]
#
# Every `#{name}` in TEMPLATE becomes `#<SHA-256 of $SECRETS_DIR/name>`
# (Redis's hashed-password form; a trailing newline in the file is ignored),
# so no password is written out in clear. Lines starting with `#` and blank
# lines are dropped, as ACL files allow neither. The result goes to
# $ACL_DIR/users.acl (a tmpfs or emptyDir: the root filesystem is read-only)
# and redis-server runs with --aclfile pointing at it.
set -eu

template=$1
shift
secrets=${SECRETS_DIR:-/run/secrets}
acl=${ACL_DIR:-/tmp}/users.acl

umask 077
script='/^[[:space:]]*#/d; /^[[:space:]]*$/d'
names=$(sed '/^[[:space:]]*#/d' "$template" | grep -o '#{[A-Za-z0-9_]*}' | sed 's/^#{//; s/}$//' | sort -u)
for name in $names; do
    if [ ! -r "$secrets/$name" ]; then
        echo "entrypoint: secret $secrets/$name is missing or unreadable" >&2
        exit 1
    fi
    password=$(cat "$secrets/$name")
    if [ -z "$password" ]; then
        echo "entrypoint: secret $secrets/$name is empty" >&2
        exit 1
    fi
    hash=$(printf %s "$password" | sha256sum | cut -d' ' -f1)
    script="$script; s/#{$name}/#$hash/g"
done
unset password

sed "$script" "$template" > "$acl.new"
if grep -q '#{' "$acl.new"; then
    echo "entrypoint: $template has a malformed #{...} placeholder" >&2
    exit 1
fi
mv "$acl.new" "$acl"
exec redis-server --aclfile "$acl" "$@"
