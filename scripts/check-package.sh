#!/usr/bin/env bash
# Installs the package that scripts/package.sh built and checks it as an
# administrator would meet it: dpkg -i works, /usr/bin/sockfilter runs, the
# man pages open, the default config is valid, systemd accepts the unit;
# then removes it again (purge). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

deb=$(ls -t target/debian/sockfilter_*.deb | head -1)
echo "check-package: $deb"

# The maintainer scripts cargo-deb generates for the unit: removal stops it,
# purge forgets its enablement (and the daemon's data), an upgrade restarts
# it if it runs, installing neither enables nor starts it (README: the
# administrator runs `systemctl enable --now sockfilter`).
scripts=$(mktemp -d)
dpkg-deb -e "$deb" "$scripts"
expect() { # FILE PATTERN WHAT
	grep -q -- "$2" "$scripts/$1" || {
		echo "check-package: $1 does not $3 ($2)" >&2
		exit 1
	}
}
expect prerm 'deb-systemd-invoke stop sockfilter.service' "stop the unit on removal"
expect postinst 'deb-systemd-invoke try-restart sockfilter.service' "restart a running unit on upgrade"
expect postrm 'deb-systemd-helper purge sockfilter.service' "forget the unit's enablement on purge"
expect postrm 'rm -rf /var/lib/sockfilter /var/log/sockfilter' "remove the daemon's data on purge"
if grep -q 'deb-systemd-invoke start\|_dh_action=start' "$scripts/postinst"; then
	echo "check-package: postinst starts the unit on a first install" >&2
	exit 1
fi
rm -rf "$scripts"
dpkg -i "$deb"
trap 'dpkg --purge sockfilter >/dev/null 2>&1; rm -rf /var/lib/sockfilter /var/log/sockfilter' EXIT

/usr/bin/sockfilter --version
for page in sockfilter sockfilter-daemon sockfilter-history sockfilter-fleet; do
	MANPAGER=cat MANWIDTH=80 man "$page" | grep -q "^NAME" || {
		echo "check-package: man $page does not open" >&2
		exit 1
	}
done
/usr/bin/sockfilter check-config /etc/sockfilter/sockfilter.toml
systemd-analyze verify /lib/systemd/system/sockfilter.service
grep -q '^Type=notify' /lib/systemd/system/sockfilter.service
test -s /usr/share/bash-completion/completions/sockfilter
test -s /usr/share/zsh/vendor-completions/_sockfilter
test -s /usr/share/fish/vendor_completions.d/sockfilter.fish
# The installed daemon, with the installed default config and no more
# capabilities than the unit's CapabilityBoundingSet (and no new
# privileges), as systemd would start it: READY=1 on $NOTIFY_SOCKET,
# metrics served, a clean exit on SIGTERM.
caps=$(sed -n 's/^CapabilityBoundingSet=//p' /lib/systemd/system/sockfilter.service |
	tr 'A-Z' 'a-z' | sed 's/cap_/+/g; s/ /,/g')
export SOCKFILTER_CAPS="-all,$caps"
python3 - <<'PY'
import os, signal, socket, subprocess, sys, tempfile, time, urllib.request
d = tempfile.mkdtemp()
path = os.path.join(d, "notify")
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(path); s.settimeout(60)
p = subprocess.Popen(
    ["setpriv", "--bounding-set", os.environ["SOCKFILTER_CAPS"], "--no-new-privs",
     "/usr/bin/sockfilter", "daemon"],
    env=dict(os.environ, NOTIFY_SOCKET=path))
try:
    msg = s.recv(64)
    assert msg == b"READY=1", msg
    body = urllib.request.urlopen("http://127.0.0.1:9178/metrics", timeout=10).read().decode()
    assert "sockfilter_events_total" in body, body[:500]
finally:
    p.send_signal(signal.SIGTERM)
    code = p.wait(timeout=30)
assert code == 0, code
print("check-package: the installed daemon ran with the default config and the unit's capabilities")
PY

# With systemd running (not in a container or VM without it), the same as an
# administrator: enable --now, an upgrade (reinstall) restarts the daemon,
# removal leaves no unit running.
if [ -d /run/systemd/system ] && systemctl is-system-running >/dev/null 2>&1; then
	main_pid() { systemctl show -p MainPID --value sockfilter; }
	systemctl enable --now sockfilter
	systemctl is-active -q sockfilter
	before=$(main_pid)
	dpkg -i "$deb"
	timeout 60 sh -c 'until systemctl is-active -q sockfilter; do sleep 0.5; done'
	after=$(main_pid)
	[ "$before" != "$after" ] || {
		echo "check-package: the upgrade did not restart sockfilter (MainPID $before)" >&2
		exit 1
	}
	dpkg -r sockfilter
	if systemctl is-active -q sockfilter; then
		echo "check-package: sockfilter still runs after dpkg -r" >&2
		exit 1
	fi
	echo "check-package: systemd: enable --now, restart on upgrade, stop on removal"
else
	echo "check-package: systemd is not running here: the unit's start, restart and stop were not exercised (the maintainer scripts were checked)"
fi
# The daemon run above left its history in /var/lib/sockfilter: purge removes it.
test -e /var/lib/sockfilter/history.db
dpkg --purge sockfilter >/dev/null
if [ -e /var/lib/sockfilter ] || [ -e /etc/sockfilter ]; then
	echo "check-package: dpkg --purge left /var/lib/sockfilter or /etc/sockfilter" >&2
	exit 1
fi
echo "check-package: ok"
