#!/usr/bin/env bash
# make check-aarch64: the README's Jetson recipe, run for real on an emulated aarch64 Linux.
#
# Builds a Debian 12 arm64 userland from Debian's own packages (debootstrap --arch=arm64, run through
# qemu-user-static), installs the project's wheel there with pip's aarch64 wheels of its runtime
# dependencies, and runs inside it: `frontalize` on samples/, the three-line Python API and
# `python -m runtime.camera --headless` on a short generated video. The same API run on this x86
# machine is the reference: the same faces must be found and the generators' outputs must agree
# (tools/aarch64_probe.py states the PSNR bars). The userland, the venv and pip's downloads are
# cached under $AARCH64_CACHE, so a second run only reinstalls the wheel and runs the checks.
# Also checks that every runtime dependency has a cp310 aarch64 wheel (JetPack 6's Python).
# Speeds measured here are qemu emulation on x86, not Jetson figures.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
CACHE=${AARCH64_CACHE:-/var/cache/frontalize/aarch64}
ROOTFS=$CACHE/rootfs
OUT=${AARCH64_OUT:-$REPO/out/check-aarch64}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
HOST_PY=${HOST_PY:-$REPO/.venv/bin/python}
NEED_MB=3000
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
# The recipe's pip lines (README "Jetson"), with PyPI's CPU onnxruntime and OpenCV standing in for
# JetPack's CUDA/TensorRT onnxruntime wheel and JetPack's own OpenCV, which need a Jetson.
ORT_STAND_IN='"onnxruntime>=1.16,<1.32"'
DEPS_JETPACK='"numpy<2" "ai-edge-litert>=1.2" pillow tqdm "pi-heif>=0.22"'
CV_STAND_IN='"opencv-python-headless>=4.8,<4.15"'  # in the same pip call: an OpenCV built on numpy 1

mkdir -p "$OUT"
exec > >(tee "$OUT/transcript.txt") 2>&1
say() { printf '[check-aarch64 %4ss] %s\n' "$SECONDS" "$*"; }
fail() { say "FAILED: $*"; exit 1; }

say "needs: root (sudo) for apt-get, debootstrap, chroot and mounts; ${NEED_MB} MB free under $CACHE;"
say "       Debian's mirror ($MIRROR) and PyPI; the project's .venv (make setup) for the x86 reference."
say "       First run about 10 min (userland and pip under emulation), a cached run about 6 min."
[ -x "$HOST_PY" ] || fail "$HOST_PY missing: run 'make setup' first"
$SUDO true || fail "root or sudo is needed"
$SUDO mkdir -p "$CACHE"
avail=$(df -Pm "$CACHE" | awk 'NR==2 {print $4}')
used=$($SUDO du -sm "$CACHE" | cut -f1)
[ $((avail + used)) -ge $NEED_MB ] || fail "$CACHE: ${avail} MB free, ${NEED_MB} MB needed (AARCH64_CACHE=<dir> elsewhere)"

# 1. Host tools and the aarch64 binfmt handler (qemu-user-static registers it).
if ! command -v debootstrap >/dev/null || ! [ -e /usr/bin/qemu-aarch64-static ]; then
  say "installing qemu-user-static, debootstrap, binfmt-support (apt)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq qemu-user-static debootstrap binfmt-support >/dev/null
fi
[ -e /proc/sys/fs/binfmt_misc/register ] || $SUDO mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || $SUDO update-binfmts --enable qemu-aarch64 || true
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || fail "no qemu-aarch64 binfmt handler (a container without binfmt_misc?)"

# 2. The userland (cached: $ROOTFS/.complete).
if ! [ -e "$ROOTFS/.complete" ]; then
  say "debootstrap --arch=arm64 bookworm -> $ROOTFS"
  $SUDO rm -rf "$ROOTFS"
  $SUDO debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$ROOTFS" "$MIRROR" > "$CACHE/debootstrap.log" || { tail -20 "$CACHE/debootstrap.log"; fail "debootstrap"; }
  $SUDO touch "$ROOTFS/.complete"
else
  say "userland cached: $ROOTFS"
fi
say "userland: $($SUDO chroot "$ROOTFS" uname -m), $($SUDO chroot "$ROOTFS" python3 --version), Debian $(cat "$ROOTFS/etc/debian_version")"

# 3. The wheel, the probe, the photos and a clip into the userland's /work.
say "building the project's wheel"
rm -rf "$CACHE.dist" 2>/dev/null || $SUDO rm -rf "$CACHE.dist"
dist=$(mktemp -d)
PIP_CONFIG_FILE=/dev/null "$HOST_PY" -m pip wheel -q --no-deps --no-build-isolation -w "$dist" . >/dev/null
wheel=$(ls "$dist"/frontalize-*.whl)
$SUDO rm -rf "$ROOTFS/work" && $SUDO mkdir -p "$ROOTFS/work/out" "$ROOTFS/root/.cache/pip"
$SUDO cp -r "$wheel" tools/aarch64_probe.py samples "$ROOTFS/work/"
rm -rf "$dist"
"$HOST_PY" tools/aarch64_probe.py video samples/three_quarter_bridge.jpg "$OUT/clip.mp4"
$SUDO cp "$OUT/clip.mp4" "$ROOTFS/work/"
$SUDO cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
# the host's CA bundle: a TLS-inspecting proxy's certificate (this machine has one) is trusted there
$SUDO cp -L "${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}" "$ROOTFS/etc/ssl/certs/host-ca.crt"

cleanup() { for m in dev proc; do mountpoint -q "$ROOTFS/$m" && $SUDO umount -l "$ROOTFS/$m"; done; true; }
trap cleanup EXIT
mountpoint -q "$ROOTFS/proc" || $SUDO mount -t proc proc "$ROOTFS/proc"
mountpoint -q "$ROOTFS/dev" || $SUDO mount --bind /dev "$ROOTFS/dev"
# No /sys inside: with the host's (x86) CPU topology there, onnxruntime 1.31 and LiteRT's cpuinfo
# crash under qemu-user; without it they print "cpuinfo" warnings (dropped here) and run.
inside() {  # a clean environment: the host's pip settings (local indexes, find-links) stay out
  $SUDO chroot "$ROOTFS" /usr/bin/env -i HOME=/root PATH=/opt/fz/bin:/usr/bin:/bin LANG=C.UTF-8 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_CERT=/etc/ssl/certs/host-ca.crt /bin/bash -euo pipefail -c "cd /work; $1" \
    2> >(sed '/cpuinfo/d' >&2)
}
step() {  # step NAME COMMAND: run inside, time it, keep the exit code
  local t0=$SECONDS rc=0
  say "aarch64 \$ $2"
  inside "$2" || rc=$?
  say "$1: exit $rc, $((SECONDS - t0)) s"
  [ $rc = 0 ] || fail "$1 (exit $rc)"
}

# 4. The recipe (README "Jetson"), every line as it runs on a Jetson but the two stand-ins.
step "venv" "[ -x /opt/fz/bin/pip ] || python3 -m venv --system-site-packages /opt/fz"
step "onnxruntime (stand-in for JetPack's onnxruntime-gpu wheel)" "pip install -q $ORT_STAND_IN"
step "runtime dependencies" "pip install -q $DEPS_JETPACK $CV_STAND_IN"
step "the project's wheel" "pip install -q --no-deps --force-reinstall /work/$(basename "$wheel")"
say "aarch64 wheels pip chose:"
versions() { inside "$1/bin/pip list --format=freeze | grep -i -E '^(frontalize|onnxruntime|ai-edge-litert|opencv[a-z-]*|numpy|pillow|pi.heif|tqdm)='" | tr '\n' ' '; echo; }
say "  Jetson recipe venv /opt/fz: $(versions /opt/fz)"

# 5. The user's three entry points, inside.
step "frontalize on samples/" "frontalize samples --out out/frontalize --sheet > out/frontalize.log; tail -3 out/frontalize.log"
inside "python3 -c \"import json; r = json.load(open('out/frontalize/results.json')); rows = r['results']; \
print('    faces found:', sum(x['status'] == 'ok' for x in rows), 'in', len({x['file'] for x in rows}), 'photos')\""
step "three-line API" "python -c \"from runtime import Frontalizer
fr = Frontalizer()
faces = fr('samples/three_quarter_bridge.jpg'); faces[0].save('out/api_front.png'); print('    API: yaw', round(faces[0].yaw, 1), 'frontal', faces[0].frontal.shape)\""
step "camera loop, headless" "python -m runtime.camera --source clip.mp4 --headless --out out/camera --max-frames 24 > out/camera.log 2>&1; tail -2 out/camera.log; ls out/camera"

# 5b. A plain `pip install <wheel>` (any other aarch64 Linux: pip resolves every dependency).
step "plain pip install of the wheel" "[ -x /opt/fz-pypi/bin/pip ] || python3 -m venv /opt/fz-pypi; /opt/fz-pypi/bin/pip install -q --force-reinstall --no-deps /work/$(basename "$wheel") && /opt/fz-pypi/bin/pip install -q /work/$(basename "$wheel")"
say "  plain venv /opt/fz-pypi: $(versions /opt/fz-pypi)"
step "frontalize on samples/ (plain install)" "/opt/fz-pypi/bin/frontalize samples --out out/frontalize-pypi > out/frontalize-pypi.log; tail -1 out/frontalize-pypi.log"

# 6. Parity with x86 and the generators' speed (the x86 reference: this machine's .venv).
say "x86 reference run (.venv)"
"$HOST_PY" tools/aarch64_probe.py run samples "$OUT/x86.npz"
$SUDO cp "$OUT/x86.npz" "$ROOTFS/work/x86.npz"
step "API on every sample + generator speed (emulated)" "python aarch64_probe.py run samples out/arm.npz --crops x86.npz"
$SUDO cp "$ROOTFS/work/out/arm.npz" "$OUT/arm.npz"
$SUDO cp -r "$ROOTFS/work/out/frontalize" "$ROOTFS/work/out/camera" "$OUT/" 2>/dev/null || true
rc=0
"$HOST_PY" tools/aarch64_probe.py compare "$OUT/x86.npz" "$OUT/arm.npz" || rc=$?

# 7. JetPack 6 runs Python 3.10: every runtime dependency must have a cp310 aarch64 wheel.
say "cp310 aarch64 wheels (JetPack 6's Python), pip download --only-binary:"
PIP_CONFIG_FILE=/dev/null "$HOST_PY" -m pip download -q --only-binary=:all: --python-version 3.10 --implementation cp \
  --platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64 --platform manylinux_2_28_aarch64 \
  -d "$CACHE/cp310" "numpy<2" "ai-edge-litert>=1.2" pillow tqdm "pi-heif>=0.22" "onnxruntime>=1.16,<1.32" \
  "opencv-python-headless>=4.8,<4.15" || { say "FAILED: a dependency has no cp310 aarch64 wheel"; rc=1; }
ls "$CACHE/cp310" | sed 's/^/    /'
say "done in ${SECONDS} s, exit $rc; transcript: $OUT/transcript.txt"
exit $rc
