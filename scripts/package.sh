#!/usr/bin/env bash
# Builds the Debian package target/debian/sockfilter_VERSION_ARCH.deb with
# cargo-deb: the release binary in /usr/bin, the systemd unit, a commented
# default config in /etc/sockfilter, man pages and bash/zsh/fish completions
# generated from the command line itself (`sockfilter assets`).
#
#   scripts/package.sh            # then: sudo dpkg -i target/debian/sockfilter_*.deb
#
# Needs cargo-deb (`cargo install cargo-deb --locked`).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo deb --version >/dev/null 2>&1; then
	echo "package.sh: cargo-deb is not installed: cargo install cargo-deb --locked" >&2
	exit 1
fi
cargo build --release --locked -p sockfilter-cli
rm -rf target/release/assets
target/release/sockfilter assets target/release/assets
gzip -9n target/release/assets/man/*.1
cargo deb --no-build --locked -p sockfilter-cli "$@"
