#!/usr/bin/env bash
# bird-gen on aarch64 under qemu-user emulation: bash .ci/aarch64.sh X86_PYTHON
#
# Builds an arm64 root in .ci-env/aarch64 from Debian's own arm64 packages (a private apt state:
# the host's apt configuration is left alone), installs the runtime's aarch64 wheels into it at
# the same versions as X86_PYTHON's environment, and runs bird-gen there under qemu-aarch64-static
# (chroot) as a Cortex-A72, a Raspberry Pi 4's CPU.
# onnxruntime reads the CPU's topology on import and crashes on the host's, so the root carries
# its own /proc/cpuinfo and /sys/devices/system/cpu/{possible,present}: a Pi 4's cores.
# Emulation proves the wheels and the code path, not speed: benchmarks/edge_check.py on a board.
set -euo pipefail
cd "$(dirname "$0")/.."
X86_PYTHON=${1:?usage: .ci/aarch64.sh X86_PYTHON (a python with the runtime installed)}
HERE=$PWD/.ci-env/aarch64
ROOT=$HERE/root
PYVER=3.11  # Debian bookworm's python, and the wheels' tag below

need=()
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
if [ "${#need[@]}" -gt 0 ]; then
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
fi

echo "aarch64: Debian arm64 packages for python$PYVER into $ROOT"
rm -rf "$HERE"
mkdir -p "$HERE/apt/lists/partial" "$HERE/apt/cache/archives/partial" "$ROOT"
touch "$HERE/apt/status"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
cat >"$HERE/apt/sources.list" <<EOF
deb [signed-by=$keyring] http://deb.debian.org/debian bookworm main
deb [signed-by=$keyring] http://deb.debian.org/debian-security bookworm-security main
EOF
apt_arm64() {
  apt-get -q -o APT::Architecture=arm64 -o APT::Architectures=arm64 \
    -o Dir::State::Lists="$HERE/apt/lists" -o Dir::State::status="$HERE/apt/status" \
    -o Dir::Cache="$HERE/apt/cache" -o Dir::Etc::SourceList="$HERE/apt/sources.list" \
    -o Dir::Etc::SourceParts=/nonexistent -o Debug::NoLocking=1 "$@"
}
apt_arm64 update >/dev/null
apt_arm64 install -y -d --no-install-recommends "python$PYVER" libstdc++6 >/dev/null
for deb in "$HERE"/apt/cache/archives/*.deb; do dpkg -x "$deb" "$ROOT"; done

mkdir -p "$ROOT/proc" "$ROOT/sys/devices/system/cpu" "$ROOT/tmp/out" "$ROOT/work"
# As many cores as the host has, so onnxruntime's thread affinities name real ones.
last=$(($(nproc) - 1))
echo "0-$last" >"$ROOT/sys/devices/system/cpu/possible"
echo "0-$last" >"$ROOT/sys/devices/system/cpu/present"
for cpu in $(seq 0 "$last"); do
  printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n' "$cpu"
  printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\n'
  printf 'CPU part\t: 0xd08\nCPU revision\t: 3\n\n'
done >"$ROOT/proc/cpuinfo"

echo "aarch64: the runtime's wheels, pinned to the x86 environment's versions"
pins=$("$X86_PYTHON" - <<'PY'
from importlib.metadata import version
print(" ".join(f"{name}=={version(name)}" for name in ("numpy", "onnxruntime", "pillow", "click")))
PY
)
echo "  $pins"
"$X86_PYTHON" -m pip wheel -q --no-deps . -w "$HERE/dist" 2>&1 |
  grep -v -e '^WARNING: Location' -e '^$' || true
# manylinux_2_28 first: with manylinux2014 alone pip would fall back to old onnxruntime/numpy.
"$X86_PYTHON" -m pip install -q --target "$ROOT/opt/site" --only-binary=:all: \
  --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 \
  --python-version "$PYVER" --implementation cp \
  $pins "$HERE"/dist/bird_vae-*.whl 2>&1 | grep -v -e '^WARNING: ' -e '^$' || true

# The root is entered with chroot and each binary started by the static qemu copied into it,
# so the root's own /proc and /sys files are what onnxruntime reads. The files the checks need
# are copied in (a bind mount needs more privileges than a CI container may give).
cp /usr/bin/qemu-aarch64-static "$ROOT/"
mkdir -p "$ROOT/work/tests" "$ROOT/work/benchmarks"
cp -r tests/fixtures "$ROOT/work/tests/"
cp benchmarks/edge_check.py "$ROOT/work/benchmarks/"
CHROOT=$(command -v chroot)
arm() {  # run an arm64 program in the root; its outputs go to /tmp/out
  (PYTHONPATH=/opt/site QEMU_CPU=${QEMU_CPU:-cortex-a72} PATH=/usr/bin:/bin HOME=/tmp \
    "$CHROOT" "$ROOT" /qemu-aarch64-static "$@")
}
bird_gen() { arm "/usr/bin/python$PYVER" -c \
  'import sys; from birdvae.runtime.cli import main; sys.argv[0] = "bird-gen"; main()' "$@"; }

echo "aarch64: $(arm "/usr/bin/python$PYVER" -c \
  'import platform, onnxruntime as o; print(platform.machine(), "python", platform.python_version(), "onnxruntime", o.__version__)')"
out=$ROOT/tmp/out
bird_gen --n 16 -o /tmp/out/birds.png
bird_gen recon /work/tests/fixtures/birds/blue_jay.jpg -o /tmp/out/recon.png
bird_gen info --model birds64
"$X86_PYTHON" - "$out/birds.png" "$out/recon.png" <<'PY'
import sys
from PIL import Image
for path in sys.argv[1:]:
    with Image.open(path) as png:
        png.load()
        assert png.format == "PNG" and png.mode == "RGB", (path, png.format, png.mode)
        assert any(high - low > 64 for low, high in png.getextrema()), f"{path} is blank"
print("aarch64: bird-gen wrote real PNGs")
PY

echo "aarch64: parity with x86 for fixed codes"
"$X86_PYTHON" benchmarks/edge_check.py --no-timing --save "$out/x86.npz"
arm "/usr/bin/python$PYVER" /work/benchmarks/edge_check.py --no-timing --save /tmp/out/aarch64.npz
"$X86_PYTHON" benchmarks/edge_check.py --compare "$out/x86.npz" "$out/aarch64.npz"
# The emulator's newest CPU has the features a Pi lacks (SVE2, SME, i8mm, bf16), which send
# onnxruntime down other kernels: the int8 sampler's codes went wrong on one of them.
echo "aarch64: the same check on qemu's newest CPU (max)"
QEMU_CPU=max arm "/usr/bin/python$PYVER" /work/benchmarks/edge_check.py --no-timing
echo "aarch64: passed"
