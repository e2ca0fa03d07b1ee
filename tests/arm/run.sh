#!/usr/bin/env bash
# Build musicgen_edu's CPU kernels for ARM (AArch64, NEON vectors) and check them against
# float64 references under qemu: the ARM half of tests/test_thin.py, for want of an ARM
# machine (Apple silicon under Linux, AWS Graviton, a Raspberry Pi 4/5, Jetson run this build).
#
#   sudo PYTHON=$(command -v python) bash tests/arm/run.sh
#
# PYTHON: an interpreter with the installed torch (default python3). Exit status: the checks',
# or 77 when the check cannot be set up here (no ARM wheel of this torch version to be had, no
# mount namespace); tests/test_thin.py runs it and skips on 77 unless MUSICGEN_REQUIRE_ARM=1.
# Needs Debian's g++-aarch64-linux-gnu and qemu-user, pip, and root with CAP_SYS_ADMIN:
# qemu-user shows an ARM program the host's /proc/cpuinfo, on which PyTorch's CPU detection
# crashes, so the program runs in a private mount namespace (unshare -m) that sees an ARM
# Neoverse-N1's instead. PyTorch's C++ library for ARM comes from the PyPI wheel of the
# installed torch version (headers and CPU libraries kept in $MUSICGEN_ARM_CACHE, default
# ~/.cache/musicgen_edu/arm); the CUDA runtime that this wheel's CPU library links to is
# replaced by stubs (no GPU here).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$here/../../musicgen_edu/backends
python=${PYTHON:-python3}
version=$("$python" -c 'import torch; print(torch.__version__.split("+")[0])')
pyver=$("$python" -c 'import sys; print("%d%d" % sys.version_info[:2])')
cache=${MUSICGEN_ARM_CACHE:-${HOME:-/tmp}/.cache/musicgen_edu/arm}/torch-$version
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait || true; rm -rf "$work"' EXIT   # (compilers left running first)
unshare -m true 2>/dev/null || { echo "no private mount namespace here (unshare -m needs root with CAP_SYS_ADMIN)"; exit 77; }

if [ ! -f "$cache/complete" ]; then                    # PyTorch for ARM: headers + CPU libraries
  echo "fetching torch $version for aarch64"
  "$python" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version "$pyver" --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 \
    -d "$work/wheel" "torch==$version" || { echo "no aarch64 wheel of torch $version to be had"; exit 77; }
  mkdir -p "$(dirname "$cache")"
  "$python" - "$work"/wheel/torch-*.whl "$work/torch-$version" <<'PY'
import sys, zipfile
wheel, dest = sys.argv[1:]
skip = ("cuda", "python", "nvshmem", "nvrtc")              # GPU and Python parts: not needed
with zipfile.ZipFile(wheel) as z:
    z.extractall(dest, [n for n in z.namelist() if n.startswith(("torch/include/", "torch.libs/"))
                        or n.startswith("torch/lib/lib") and not any(s in n for s in skip)])
PY
  touch "$work/torch-$version/complete"
  rm -rf "$cache" && mv "$work/torch-$version" "$cache"   # whole or not at all
fi
lib=$cache/torch/lib
libs=$lib:$cache/torch.libs                            # (older wheels vendor libraries there)

# libraries libtorch_cpu needs that neither the wheel nor Debian's ARM libc has (the CUDA
# runtime and profiler of a CUDA build): stubs whose every function reports an error
mkdir -p "$work/stubs"
for dep in $(aarch64-linux-gnu-readelf -d "$lib/libtorch_cpu.so" | sed -n 's/.*NEEDED.*\[\(.*\)\]/\1/p'); do
  [ -e "$lib/$dep" ] || [ -e "$cache/torch.libs/$dep" ] || [ -e "/usr/aarch64-linux-gnu/lib/$dep" ] && continue
  aarch64-linux-gnu-nm -D --undefined-only "$lib/libtorch_cpu.so" "$lib/libc10.so" |
    sed -n "s/.* \(.*\)@$dep\$/\1/p" | sort -u > "$work/stubs/$dep.syms"
  { echo "$dep { global:"; sed 's/$/;/' "$work/stubs/$dep.syms"; echo "local: *; };"; } > "$work/stubs/$dep.map"
  sed 's/.*/extern "C" int &() { return 100; }/' "$work/stubs/$dep.syms" > "$work/stubs/$dep.cpp"
  aarch64-linux-gnu-g++ -shared -fPIC -o "$work/stubs/$dep" "$work/stubs/$dep.cpp" \
    -Wl,--version-script="$work/stubs/$dep.map" -Wl,-soname,"$dep"
done

# the kernels as thin.py builds them, with torch/extension.h replaced by tests/arm/torch/
# extension.h (no Python), for two CPUs (-march=native there): the AArch64 baseline (NEON:
# a Raspberry Pi 4, Graviton 1) and an Armv8.6 CPU with SVE, on which GCC vectorises some of
# decode_step.cpp's loops with SVE (Graviton 3 and 4, Neoverse V1/V2)
marches=(armv8-a armv8.6-a+sve)
flags=(-std=c++17 -O3 -ffp-contract=off -fopenmp -w -I"$here" -I"$cache/torch/include")
pids=()
for march in "${marches[@]}"; do
  mkdir -p "$work/$march"
  for file in "$src/thin_linear.cpp" "$src/decode_step.cpp"; do
    aarch64-linux-gnu-g++ "${flags[@]}" -march="$march" -c "$file" \
      -o "$work/$march/$(basename "$file" .cpp).o" &
    pids+=($!)
  done
done
aarch64-linux-gnu-g++ "${flags[@]}" -march=armv8-a -c "$here/check_kernels.cpp" -o "$work/check.o" &
pids+=($!)
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done   # every compiler ends first
[ "$failed" = 0 ]
for march in "${marches[@]}"; do
  aarch64-linux-gnu-g++ -fopenmp "$work/check.o" "$work/$march"/*.o -o "$work/$march/check_kernels" \
    -L"$lib" -L"$work/stubs" -Wl,--no-as-needed -ltorch_cpu -lc10 -Wl,-rpath-link,"$libs:$work/stubs"
done

# what an ARM Neoverse-N1 with 2 cores shows in /proc/cpuinfo and sysfs
for n in 0 1; do
  printf 'processor\t: %d\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x3\nCPU part\t: 0xd0c\nCPU revision\t: 1\n\n' $n
done > "$work/cpuinfo"
mkdir -p "$work/cpu0/regs/identification"
echo 0x00000000413fd0c1 > "$work/cpu0/regs/identification/midr_el1"
echo "running the ARM builds under $(qemu-aarch64 --version | head -1)"
# the baseline build; the SVE one with 128-bit (Graviton 4) and 256-bit (Graviton 3) vectors
unshare -m bash -c 'mount --bind "$1/cpuinfo" /proc/cpuinfo &&
  mount --bind "$1/cpu0" /sys/devices/system/cpu/cpu0 || exit 1
  status=0
  for run in "armv8-a max" "armv8.6-a+sve max,sve-default-vector-length=16" \
             "armv8.6-a+sve max,sve-default-vector-length=32"; do
    set -- "$1" "$2" $run
    echo "build -march=$3, qemu -cpu $4:"
    LD_LIBRARY_PATH="$2:$1/stubs" OMP_NUM_THREADS=${MUSICGEN_ARM_THREADS:-2} \
      qemu-aarch64 -cpu "$4" -L /usr/aarch64-linux-gnu "$1/$3/check_kernels" || status=1
  done
  exit $status' _ "$work" "$libs"
