#!/usr/bin/env bash
# Install the gatewatch agent as a hardened service on Raspberry Pi OS (or any Debian with systemd), in one
# step: Debian packages, a virtual environment in /opt/gatewatch, the systemd unit (DynamicUser: no account
# is created), your consent, then the service. Run from a gatewatch checkout or release archive:
#
#   sudo deploy/pi/install.sh --collector https://collector.example.org/
#   sudo deploy/pi/install.sh --collector URL --package /path/to/gatewatch-0.1.0-py3-none-any.whl
#
# Re-running it upgrades the package and the unit and keeps your key, consent and queue. docs/raspberry-pi.md
# explains each step and how to undo it.
set -euo pipefail

PREFIX=/opt/gatewatch
PACKAGE=gatewatch
COLLECTOR=""
UNIT_SOURCE="$(cd "$(dirname "$0")/.." && pwd)/systemd/gatewatch-agent.service"
STATE=/var/lib/gatewatch-agent

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --collector) COLLECTOR=$2; shift 2 ;;
    --package) PACKAGE=$2; shift 2 ;;
    --prefix) PREFIX=$2; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "unknown argument: $1" >&2; usage 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "run as root (sudo)" >&2; exit 1; }
[ -f "$UNIT_SOURCE" ] || { echo "missing $UNIT_SOURCE: run from a gatewatch checkout" >&2; exit 1; }

echo "== Debian packages"
packages=(python3 python3-venv)
# 32-bit Raspberry Pi OS: PyPI has no armv7l wheel of cffi (docs/raspberry-pi.md); pip compiles it (plain C).
if [ "$(uname -m)" = armv7l ] || [ "$(uname -m)" = armv6l ]; then packages+=(gcc python3-dev libffi-dev); fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${packages[@]}"

echo "== $PACKAGE into $PREFIX (the agent only: no collector dependencies)"
[ -x "$PREFIX/bin/python" ] || python3 -m venv "$PREFIX"
"$PREFIX/bin/pip" install -q --disable-pip-version-check --upgrade pip
"$PREFIX/bin/pip" install -q --disable-pip-version-check --upgrade "$PACKAGE"
"$PREFIX/bin/gatewatch-agent" --help >/dev/null

echo "== systemd unit"
sed "s#/opt/gatewatch/bin/gatewatch-agent#$PREFIX/bin/gatewatch-agent#" "$UNIT_SOURCE" \
  >/etc/systemd/system/gatewatch-agent.service
systemctl daemon-reload

if [ ! -e "/var/lib/private/gatewatch-agent/agent.toml" ]; then
  [ -n "$COLLECTOR" ] || { echo "first install: give --collector URL" >&2; exit 2; }
  echo "== your consent (read it: it explains the risks)"
  systemd-run --pty --wait --collect -p DynamicUser=yes -p StateDirectory=gatewatch-agent \
    "$PREFIX/bin/gatewatch-agent" init --data-dir "$STATE" --collector "$COLLECTOR"
fi

systemctl enable --now gatewatch-agent
systemctl restart gatewatch-agent
echo "== done: journalctl -u gatewatch-agent -f   (docs/raspberry-pi.md: status, results, removal)"
