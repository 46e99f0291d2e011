#!/usr/bin/env bash
# The main job: builds msb-imaged, starts it on its default store and socket,
# and puts a real image through it: built here with umoci from the host's own
# dash and coreutils, loaded, listed, inspected, pinned as a sandbox rootfs
# (layer EROFS images checked with fsck.erofs), refused removal while pinned,
# unpinned, removed and pruned.
#
# On a terminal the daemon keeps serving afterwards until Ctrl-C; otherwise
# (or with --demo-only) it is stopped when the demo ends.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
keep_serving=0
[ -t 0 ] && keep_serving=1
[ "${1:-}" = "--demo-only" ] && keep_serving=0

scripts/install-deps.sh
if [ -f build/build.ninja ]; then meson setup --reconfigure build >/dev/null; else meson setup build >/dev/null; fi
meson compile -C build >/dev/null
daemon=$root/build/daemon/msb-imaged

if [ -n "${MSB_IMAGED_SOCKET:-}" ]; then sock=$MSB_IMAGED_SOCKET
elif [ -n "${XDG_RUNTIME_DIR:-}" ]; then sock=$XDG_RUNTIME_DIR/microsandbox/imaged.sock
else sock=/tmp/microsandbox-$(id -u)/imaged.sock; fi
export MSB_IMAGED_SOCKET=$sock

work=$(mktemp -d /tmp/msb-demo.XXXXXX)
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid"; wait "$pid" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

rpc() { # method [params-json]
  local req
  req=$(jq -cn --arg m "$1" --argjson p "${2:-{\}}" '{jsonrpc:"2.0",id:1,method:$m,params:$p}')
  echo "\$ echo '$req' | socat - UNIX-CONNECT:$sock" >&2
  echo "$req" | socat -t 30 - "UNIX-CONNECT:$sock"
}

if echo '{"jsonrpc":"2.0","id":0,"method":"system.info"}' | socat -t 2 - "UNIX-CONNECT:$sock" 2>/dev/null | grep -q result; then
  echo "== a daemon already serves $sock; using it"
else
  echo "== starting msb-imaged on its default store (log: $work/imaged.log)"
  "$daemon" >"$work/imaged.log" 2>&1 &
  pid=$!
  # Ready when it answers a call (the socket file exists from bind(),
  # before the daemon has opened and repaired its store).
  for _ in $(seq 200); do
    echo '{"jsonrpc":"2.0","id":0,"method":"system.info"}' | socat -t 1 - "UNIX-CONNECT:$sock" 2>/dev/null | grep -q result && break
    if ! kill -0 "$pid" 2>/dev/null; then echo "msb-imaged exited; its log:" >&2; cat "$work/imaged.log" >&2; exit 1; fi
    sleep 0.05
  done
fi
rpc system.info | jq .

echo "== building a real image with umoci: dash, coreutils' ls and cat, glibc"
lay=$work/layout
umoci init --layout "$lay" >/dev/null
umoci new --image "$lay:demo" >/dev/null
umoci unpack --image "$lay:demo" "$work/bundle" >/dev/null
rootfs=$work/bundle/rootfs
for f in /bin/dash /bin/ls /bin/cat /lib64/ld-linux-x86-64.so.2; do
  mkdir -p "$rootfs$(dirname "$f")"; cp -L "$f" "$rootfs$f"
done
for lib in $(ldd /bin/dash /bin/ls /bin/cat | awk '/=> \//{print $3}' | sort -u); do
  mkdir -p "$rootfs$(dirname "$lib")"; cp -L "$lib" "$rootfs$lib"
done
ln -s dash "$rootfs/bin/sh"
mkdir -p "$rootfs/etc"; echo "hello from msb-imaged" > "$rootfs/etc/motd"
umoci repack --image "$lay:demo" "$work/bundle" >/dev/null
umoci config --image "$lay:demo" --config.cmd /bin/sh --config.env PATH=/bin \
  --config.label org.example.demo=yes --config.workingdir / >/dev/null
umoci ls --layout "$lay"

echo "== image.load"
rpc image.load "$(jq -cn --arg p "$lay" '{path:$p, tag:"demo/hello:1.0"}')" | jq .
echo "== image.list (newest first)"
rpc image.list | jq -r '.result[] | "\(.reference)  \(.manifest_digest[0:19])  \(.layer_count) layer(s)  \(.size_bytes) bytes  \(.os)/\(.architecture)"'
echo "== image.inspect"
rpc image.inspect '{"reference":"demo/hello:1.0"}' | jq '.result | {config, layers}'
echo "== pin.add: what a sandbox boots"
rootfs_json=$(rpc pin.add '{"kind":"sandbox","name":"demo-sandbox","reference":"docker.io/demo/hello:1.0"}')
echo "$rootfs_json" | jq .
for l in $(echo "$rootfs_json" | jq -r '.result.layers[].path'); do
  fsck.erofs "$l" >/dev/null && echo "fsck.erofs: $l is a valid EROFS image"
done
fsmeta=$(echo "$rootfs_json" | jq -r '.result.fsmeta_path // empty')
if [ -n "$fsmeta" ]; then
  devices=$(echo "$rootfs_json" | jq -r '.result.layers[].path' | sed 's/^/--device=/')
  # shellcheck disable=SC2086
  fsck.erofs $devices --extract="$work/tree" "$fsmeta" >/dev/null
  echo "fsck.erofs: fsmeta + layers extract to the merged tree:"; ls -l "$work/tree/bin"
  echo "/etc/motd in the merged tree: $(cat "$work/tree/etc/motd")"
fi
vmdk=$(echo "$rootfs_json" | jq -r '.result.vmdk_path // empty')
[ -n "$vmdk" ] && { echo "-- $vmdk"; cat "$vmdk"; }
echo "== image.remove while pinned: refused"
rpc image.remove '{"reference":"demo/hello:1.0"}' | jq .
echo "== pin.remove, image.remove, image.prune"
rpc pin.remove '{"kind":"sandbox","name":"demo-sandbox"}' | jq -c .
rpc image.remove '{"reference":"demo/hello:1.0"}' | jq -c .
rpc image.prune | jq .
rpc system.df | jq -c .result

if [ "$keep_serving" = 1 ] && [ -n "$pid" ]; then
  echo "== msb-imaged keeps serving $sock (pid $pid); Ctrl-C stops it"
  trap 'kill -TERM $pid; wait $pid; rm -rf "$work"; exit 0' INT TERM
  wait "$pid"
fi
