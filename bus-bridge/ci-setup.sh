#!/bin/sh
# Installs what the bridge's tests need and CI does not have: nats-server (Debian's package).
# The tests fail, never skip, without it.
set -eu
if command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
else
    SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq nats-server
