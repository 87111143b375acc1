#!/usr/bin/env bash
# Debian packages the full test suite uses; installs only what is missing.
# Needs root (CI runs as root). Elsewhere it prints what to install and carries on:
# the tests that need a missing package say so and are skipped.
set -euo pipefail
packages=(dataset-fashion-mnist chromium xvfb xdotool x11-utils postgresql)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "not a Debian system: install ${missing[*]} by other means for the full suite" >&2
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "run as root (or: sudo apt-get install ${missing[*]}) for the full suite" >&2
  exit 0
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
