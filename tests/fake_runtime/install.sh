#!/bin/sh
# Fake k3s/rke2 install script for the installer tests. It does what the official
# get.k3s.io / get.rke2.io scripts do that the plan relies on, under $RANCHERD_ROOT:
# it installs a "binary" that answers --version. It also records its runs and its
# INSTALL_* environment under $RANCHERD_ROOT/fake/, prints some output, and fails when
# $RANCHERD_ROOT/fake/fail-install exists. It takes $FAKE_INSTALL_SECONDS (default 0),
# and appends "install-start" and "install-end" to $FAKE_EVENT_LOG when that is set
# ("<time> <node> <event>" lines; the node is $FAKE_NODE or the root's name).
set -eu
root=${RANCHERD_ROOT:?RANCHERD_ROOT is not set}
event() {
    if [ -n "${FAKE_EVENT_LOG:-}" ]; then
        printf '%s %s %s\n' "$(date +%s.%N)" "${FAKE_NODE:-$(basename "$root")}" "$1" \
            >>"$FAKE_EVENT_LOG"
    fi
}
event install-start
mkdir -p "$root/fake"
echo run >> "$root/fake/install-runs"
env | grep -E '^INSTALL_(K3S|RKE2)_' | sort > "$root/fake/install-env" || true

if [ -n "${INSTALL_RKE2_TYPE:-}" ]; then
    runtime=rke2
    version=${INSTALL_RKE2_VERSION:-v1.99.0+rke2r1}
else
    runtime=k3s
    version=${INSTALL_K3S_VERSION:-v1.99.0+k3s1}
fi

i=1
while [ "$i" -le 60 ]; do
    echo "[INFO] fake $runtime install, line $i"
    i=$((i + 1))
done

if [ -e "$root/fake/fail-install" ]; then
    echo "[ERROR] fake $runtime install failed, as asked" >&2
    exit 1
fi

if [ -n "${FAKE_INSTALL_SECONDS:-}" ]; then
    sleep "$FAKE_INSTALL_SECONDS"
fi
mkdir -p "$root/usr/local/bin"
cat > "$root/usr/local/bin/$runtime" <<SCRIPT
#!/bin/sh
echo "$runtime version $version (fake)"
echo "go version go1.22.0 (fake)"
SCRIPT
chmod 755 "$root/usr/local/bin/$runtime"
echo "[INFO] installed $runtime $version"
event install-end
