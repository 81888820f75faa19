#!/bin/bash
# deps.sh WHAT - make sure the Debian packages shrink needs are installed.
# As root, installs the missing ones with apt-get; otherwise prints the exact
# apt-get line and fails.
set -u
what=${1:-build}
pkgs="build-essential pkg-config protobuf-c-compiler libprotobuf-c-dev libonnx-dev libopenblas-openmp-dev zlib1g-dev"
case "$what" in
  test)  pkgs="$pkgs libonnx-testdata dataset-fashion-mnist python3" ;;
  demo)  pkgs="$pkgs dataset-fashion-mnist" ;;
  bench) pkgs="$pkgs libonnx-testdata dataset-fashion-mnist python3-torch python3-numpy python3-onnx libdnnl-dev"
         # a Node.js that is already installed (not Debian's: its npm package
         # then conflicts with it) is used as it is
         command -v node >/dev/null && command -v npm >/dev/null || pkgs="$pkgs nodejs npm" ;;
esac
missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ]; then
  echo "shrink: installing missing Debian packages:$missing" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 || true
  apt-get install -y -qq --no-install-recommends $missing >&2 || { echo "shrink: apt-get install failed" >&2; exit 1; }
else
  echo "shrink: missing Debian packages. Run as root:" >&2
  echo "  apt-get install -y$missing" >&2
  exit 1
fi
