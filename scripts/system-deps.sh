#!/usr/bin/env bash
# Debian packages the local stack needs; installed when missing and root.
set -euo pipefail
packages=(
  libpython3.11  # the Triton Python-backend stub embeds it
  redis-server   # the response cache (make run, integration tests)
  nginx          # load balancing over router replicas (make stack, topology test)
  prometheus     # scraping Triton and the routers (make stack, topology test)
  chromium       # the web page's browser test (driven by Playwright)
)

missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "error: missing Debian packages: ${missing[*]}" >&2
  echo "       install them as root: apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
