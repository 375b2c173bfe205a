#!/bin/bash
# Build the static Linux fleet-agent that the .deb and the tarball ship: a release build for a
# musl target (statically linked: runs on any distribution, no libc dependency). Prints the
# binary's path on its last line.
#
# Usage: packaging/linux/build-binary.sh [--target TRIPLE] [--bins]
#   --target TRIPLE  x86_64-unknown-linux-musl (default on x86_64) or aarch64-unknown-linux-musl
#                    (default on aarch64; from x86_64 it is cross-built with aarch64-linux-gnu-gcc)
#   --bins           also build fleet-bench for the target (the benches measure what ships)
# Needs: rustup (the target is added when missing); musl-gcc (apt-get install musl-tools) for
# x86_64, aarch64-linux-gnu-gcc (apt-get install gcc-aarch64-linux-gnu) to cross-build aarch64.
# ring's C and assembly are compiled with that compiler; the link uses Rust's self-contained
# musl (its own crt objects and libc.a), so only the compiler driver of the cross gcc is used.
set -euo pipefail
# shellcheck source=SCRIPTDIR/../paths.env
. "$(dirname "$0")/../paths.env"
# shellcheck source=SCRIPTDIR/../lib.sh
. "$(dirname "$0")/../lib.sh"

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
target="$(uname -m)-unknown-linux-musl"
bins=(--bin "$FLEET_NAME")
while [ $# -gt 0 ]; do
  case "$1" in
    --target)
      [ $# -ge 2 ] || { echo "error: $1 needs a value" >&2; exit 2; }
      target=$2
      shift
      ;;
    --bins) bins=(--bins) ;;
    -h | --help)
      print_header_help "$0"
      exit 0
      ;;
    *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

# The C compiler for ring, per target, and whether it is a cross compiler.
case "$target" in
  x86_64-unknown-linux-musl) cc=musl-gcc; cc_package=musl-tools ;;
  aarch64-unknown-linux-musl)
    if [ "$(uname -m)" = aarch64 ]; then cc=musl-gcc; cc_package=musl-tools
    else cc=aarch64-linux-gnu-gcc; cc_package=gcc-aarch64-linux-gnu; fi
    ;;
  *) echo "error: unsupported target $target (x86_64-unknown-linux-musl or aarch64-unknown-linux-musl)" >&2; exit 2 ;;
esac
command -v "$cc" >/dev/null || { echo "error: $cc is needed to build for $target (apt-get install $cc_package)" >&2; exit 1; }
if ! rustup target list --installed | grep -qx "$target"; then
  rustup target add "$target" >&2
fi

export "CC_${target//-/_}=$cc"
# Rust links musl targets self-contained (its own crt1.o and libc.a): the host's cc links
# x86_64; a cross build needs the cross gcc as the linker driver.
if [ "$cc" != musl-gcc ]; then
  export "CARGO_TARGET_$(echo "$target" | tr 'a-z-' 'A-Z_')_LINKER=$cc"
fi
cd "$repo"
# Link arguments (BENCHMARKS.md, Size), with lld, the linker that ships in the Rust toolchain
# (rust-lld behind its gcc-ld/ld.lld shim), for both targets:
# - drop the unwind tables (discard-unwind-tables.ld says why): 0.38 MB of the binary that
#   nothing reads with panic = "abort";
# - pack the relative relocations (DT_RELR): a static PIE (ASLR) carries one R_*_RELATIVE
#   entry of 24 bytes per pointer in its data (109 KB on x86_64); packed, they are a bitmap of
#   a few KB, which the start-up code of Rust's self-contained musl (rcrt1.o, musl >= 1.2.4)
#   applies before main. Debian's aarch64 GNU ld 2.40 ignores -z pack-relative-relocs; lld
#   packs them on both;
# - fold identical functions (--icf=all: -34 KB): Rust promises no distinct addresses for
#   distinct functions, and lld folds code only, never data (vtables, statics);
# - x86_64: keep the headers and read-only data out of the executable segment
#   (-z separate-code, what GNU ld does there by default; +4 KB). aarch64 pages are up to
#   64 KB, so there it would pad the file by up to 128 KB; lld still gives read-only data a
#   segment of its own, not executable (GNU ld put it in the code's).
sysroot=$(rustc --print sysroot)
gcc_ld="$sysroot/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/gcc-ld"
[ -x "$gcc_ld/ld.lld" ] || { echo "error: $gcc_ld/ld.lld not found (the Rust toolchain's lld)" >&2; exit 1; }
link_args=("-fuse-ld=lld" "-B$gcc_ld" "-Wl,-T,$here/discard-unwind-tables.ld" "-Wl,-z,pack-relative-relocs"
  "-Wl,--icf=all")
flags=()
if [ "$target" = x86_64-unknown-linux-musl ]; then
  link_args+=("-Wl,-z,separate-code")
else
  # Rust links aarch64 musl as a position-dependent static executable (its target has no
  # static-PIE support), which loses ASLR of the image; link it as a static PIE the way it does
  # x86_64: musl's self-relocating rcrt1.o and the S crt objects from the same self-contained
  # musl, -pie without a dynamic linker, no text relocations.
  musl_lib="$sysroot/lib/rustlib/$target/lib/self-contained"
  [ -f "$musl_lib/rcrt1.o" ] || { echo "error: $musl_lib/rcrt1.o not found (rustup target add $target)" >&2; exit 1; }
  flags+=("-Clink-self-contained=no")
  link_args+=("-nostartfiles" "-L$musl_lib" "$musl_lib/rcrt1.o" "$musl_lib/crti.o" "$musl_lib/crtbeginS.o"
    "$musl_lib/crtendS.o" "$musl_lib/crtn.o" "-lc" "-Wl,-pie" "-Wl,--no-dynamic-linker" "-Wl,-z,text")
fi
for arg in "${link_args[@]}"; do flags+=("-Clink-arg=$arg"); done
# Panic locations name their source file: the dependencies' paths start with this machine's
# cargo home (`/root/.cargo/registry/src/index.crates.io-…/`, 59 bytes, 184 files). Cut it
# (`rustls-0.23.46/src/…`): 11 KB less, and the binary no longer depends on where it was built.
# `cargo metadata` first unpacks every dependency, so the directories to remap exist.
cargo metadata --locked --format-version 1 >/dev/null
registry="${CARGO_HOME:-$HOME/.cargo}/registry/src"
flags+=("--remap-path-prefix=$registry/=")
for index in "$registry"/*/; do
  [ -d "$index" ] && flags+=("--remap-path-prefix=$index=")
done
rustflags=""
for flag in "${flags[@]}"; do rustflags+="${rustflags:+, }\"$flag\""; done
cargo build --release --locked --quiet --target "$target" "${bins[@]}" \
  --config "target.$target.rustflags = [$rustflags]" >&2
binary="$repo/target/$target/release/$FLEET_NAME"
if ! is_static "$binary"; then
  echo "error: $binary is dynamically linked (has a program interpreter)" >&2
  exit 1
fi
# A static PIE (ASLR) whose relative relocations are packed: fail rather than ship a binary
# a linker silently built otherwise.
if ! readelf -h "$binary" | grep -q 'DYN (Position-Independent Executable'; then
  echo "error: $binary is not a position-independent executable" >&2
  exit 1
fi
if ! readelf -d "$binary" | grep -q '(RELR)'; then
  echo "error: $binary has no packed relative relocations (DT_RELR): the linker ignored -z pack-relative-relocs" >&2
  exit 1
fi
echo "$binary"
