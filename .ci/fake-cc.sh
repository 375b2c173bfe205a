#!/usr/bin/env bash
# Stand-in C compiler for type-checking Apple targets on Linux: `cargo check`/`clippy` link
# nothing, but ring's build script still compiles its C/assembly. This writes an empty object
# for every `-o FILE` and succeeds, so the Rust code can be type-checked. Asked to preprocess
# cc-rs's compiler-family probe (`-E`), it answers like clang.
set -euo pipefail
out=""
preprocess=0
while [ $# -gt 0 ]; do
  case "$1" in
    -E) preprocess=1; shift ;;
    -o) out="$2"; shift 2 ;;
    -o*) out="${1#-o}"; shift ;;
    -Fo*) out="${1#-Fo}"; shift ;;
    *) shift ;;
  esac
done
if [ "$preprocess" = 1 ]; then echo "clang"; fi
if [ -n "$out" ]; then : > "$out"; fi
