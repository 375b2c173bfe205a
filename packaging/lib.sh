# Helpers shared by the packaging build scripts (bash 3.2+, so macOS's /bin/bash works).
# Sourced, not run: `. "$(dirname "$0")/../lib.sh"`.
# shellcheck shell=bash

# The version in the root Cargo.toml ([package] version), e.g. 0.1.0.
cargo_version() {
  sed -n 's/^version = "\([^"]*\)".*/\1/p' "$1/Cargo.toml" | head -n 1
}

# inline_paths SRC DEST PATHS_ENV: copy the script SRC to DEST with its one line
#   . "$(dirname "$0")/…/paths.env"
# replaced by the NAME="value" lines of PATHS_ENV, so the shipped copy needs nothing beside it
# (a .deb postrm runs after the package's files are gone; a .pkg's uninstall.sh runs alone).
# Fails when SRC has no such line.
inline_paths() {
  local src=$1 dest=$2 env=$3
  awk -v env="$env" '
    /^\. "\$\(dirname "\$0"\)\/[.\/]*paths\.env"$/ {
      print "# packaging/paths.env, inlined at build time:"
      print "# shellcheck disable=SC2034 # not every script uses every path"
      print "{"
      while ((getline line < env) > 0) if (line ~ /^[A-Z_]+="[^"]*"$/) print "  " line
      close(env)
      print "}"
      found = 1
      next
    }
    { print }
    END { if (!found) exit 3 }
  ' "$src" >"$dest" || {
    echo "error: $src has no \`. \"\$(dirname \"\$0\")/…/paths.env\"\` line to inline" >&2
    return 1
  }
}

# print_header_help SCRIPT: print the script's leading comment block (after the #! line),
# without the `# ` prefixes: its --help text.
print_header_help() {
  awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$1"
}

# elf_arch BINARY: the machine an ELF binary runs on, as `uname -m` names it (x86_64,
# aarch64), read from its header (readelf reads every architecture), so a cross-built binary
# is packaged as what it is, not as the build machine.
elf_arch() {
  local machine
  machine=$(readelf -h "$1" | sed -n 's/^ *Machine: *//p')
  case "$machine" in
    *X86-64*) echo x86_64 ;;
    *AArch64*) echo aarch64 ;;
    *) echo "error: $1: unsupported machine '$machine'" >&2; return 1 ;;
  esac
}

# is_static BINARY: true when the ELF has no program interpreter (static or static-pie).
is_static() {
  ! readelf -l "$1" | grep -q 'INTERP'
}
