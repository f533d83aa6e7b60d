#!/usr/bin/env bash
# Installs the package that scripts/package.sh built and checks it as an
# administrator would meet it: dpkg -i works, /usr/bin/sockfilter runs, the
# man pages open, the default config is valid, systemd accepts the unit;
# then removes it again (purge). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."

deb=$(ls -t target/debian/sockfilter_*.deb | head -1)
echo "check-package: $deb"
dpkg -i "$deb"
trap 'dpkg --purge sockfilter >/dev/null; rm -rf /var/lib/sockfilter /var/log/sockfilter' EXIT

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
echo "check-package: ok"
