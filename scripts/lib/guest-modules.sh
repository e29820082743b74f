# shellcheck shell=bash
# shellcheck disable=SC2034 # GUEST_MODULE_* are read by the scripts sourcing this
# Shared by the initramfs builders (scripts/build-initramfs.sh,
# scripts/build-test-initramfs.sh): resolve which guest kernel modules to put
# in an initramfs and in which order to load them, from the kernel's own
# modules.dep (nothing here is tied to one kernel version), and copy them in.
#
# Source it, then:
#   guest_modules_resolve MODDIR WANTED...
#     MODDIR is <kernel>/lib/modules/<version> (with modules.dep, which
#     scripts/fetch-kernel.sh generates with depmod). WANTED are module names
#     (`-` and `_` are the same); a name ending in `?` is optional: skipped
#     when the kernel has no such module. Built-in modules are skipped.
#     Sets GUEST_MODULE_ORDER (names, dependencies first, each once) and
#     GUEST_MODULE_PATH[name] (path relative to MODDIR, e.g.
#     kernel/fs/fuse/fuse.ko). Returns 1 with a message on stderr when a
#     required module is neither a module nor built in.
#   guest_modules_install MODDIR SRC_RELPATH DEST
#     Copies one module to DEST, decompressing .ko.{xz,zst,gz}.
#
# Bash 4+ (associative arrays). Defines only guest_modules_* names and the
# two GUEST_MODULE_* variables.

GUEST_MODULE_ORDER=()
declare -gA GUEST_MODULE_PATH=()

# Canonical module name of a modules.dep path: basename without .ko*, `-`→`_`.
guest_modules__name() {
  local n=${1##*/}
  n=${n%%.ko*}
  printf '%s' "${n//-/_}"
}

# True when NAME is built into the kernel (listed in modules.builtin).
guest_modules__builtin() {
  local moddir=$1 name=$2
  [ -f "$moddir/modules.builtin" ] || return 1
  local line
  while IFS= read -r line; do
    [ "$(guest_modules__name "$line")" = "$name" ] && return 0
  done <"$moddir/modules.builtin"
  return 1
}

guest_modules_resolve() {
  local moddir=$1
  shift
  if [ ! -f "$moddir/modules.dep" ]; then
    printf 'guest-modules: no %s/modules.dep (run scripts/fetch-kernel.sh)\n' "$moddir" >&2
    return 1
  fi
  GUEST_MODULE_ORDER=()
  GUEST_MODULE_PATH=()
  local -A deps_of=() path_of=() seen=()
  local line mod_path name
  while IFS= read -r line; do
    mod_path=${line%%:*}
    name=$(guest_modules__name "$mod_path")
    path_of[$name]=$mod_path
    deps_of[$name]=${line#*:}
  done <"$moddir/modules.dep"

  # Depth first: a module's dependencies (listed after it in modules.dep,
  # deepest last) are resolved before it, each module once.
  local -a order=()
  local failed=0
  guest_modules__visit() {
    local name=$1 optional=$2 i dep
    [ -n "${seen[$name]:-}" ] && return 0
    seen[$name]=1
    if [ -z "${path_of[$name]:-}" ]; then
      guest_modules__builtin "$moddir" "$name" && return 0
      [ "$optional" = 1 ] && return 0
      printf 'guest-modules: module %s is neither in %s/modules.dep nor built in\n' \
        "$name" "$moddir" >&2
      failed=1
      return 0
    fi
    local -a deps=()
    read -r -a deps <<<"${deps_of[$name]}"
    for ((i = ${#deps[@]} - 1; i >= 0; i--)); do
      dep=$(guest_modules__name "${deps[$i]}")
      guest_modules__visit "$dep" 0
    done
    order+=("$name")
  }
  local want optional
  for want in "$@"; do
    optional=0
    case "$want" in *\?) optional=1 want=${want%\?} ;; esac
    want=${want//-/_}
    guest_modules__visit "$want" "$optional"
  done
  unset -f guest_modules__visit
  [ "$failed" = 0 ] || return 1
  GUEST_MODULE_ORDER=("${order[@]}")
  for name in "${order[@]}"; do
    GUEST_MODULE_PATH[$name]=${path_of[$name]}
  done
}

guest_modules_install() {
  local moddir=$1 rel=$2 dest=$3
  local src="$moddir/$rel"
  mkdir -p "$(dirname "$dest")"
  case "$src" in
    *.ko) cp "$src" "$dest" ;;
    *.ko.xz) xz -dc "$src" >"$dest" ;;
    *.ko.zst) zstd -qdc "$src" >"$dest" ;;
    *.ko.gz) gzip -dc "$src" >"$dest" ;;
    *)
      printf 'guest-modules: unknown module format: %s\n' "$src" >&2
      return 1
      ;;
  esac
}
