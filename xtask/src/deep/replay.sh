# What real disko and the real tools do with a layout: the shared part of
# `cargo xtask check --deep` (xtask/src/deep, which embeds this file) and of
# the corpus recorders (xtask/tests/fixtures/disko-corpus/record.sh and
# record-generated.sh, which source it). Sourced by bash with DISKO and
# NIXPKGS_LIB set to work trees of nix-community/disko and
# nix-community/nixpkgs.lib; run as root in a private mount namespace
# (unshare --mount --propagation private).
#
# evaluate FILE  disko's module evaluates the layout module FILE: its disks'
#                `_create` scripts, the fileSystems and swapDevices NixOS gets.
# replay NAME EVALUATION_JSON
#                prints {NAME: record}: each disk's `_create` run under bash
#                `set -efu` against a sparse image file, sgdisk for real;
#                udev's by-partlabel/by-partuuid links (from the real blkid on
#                the image, attached read-only) point at scratch files of the
#                partitions' sizes, on which every mkfs/mkswap/btrfs runs for
#                real; then every fileSystems entry is mounted with its
#                options, parents first, and /proc/self/mountinfo and the
#                mountpoint's mode are read back. A mount the kernel has no
#                driver for (vfat here) is "notRun" with mount's message;
#                tools that would need a kernel feature or a device outside
#                the sandbox (cryptsetup, mdadm, LVM, ZFS) are not run: the
#                create script stops with "NOT RUN: <command>".
# Nothing outside the scratch directory is written: no block device but the
# loop devices this file attaches (and detaches) to its own image files.

DISK_BYTES=${DISK_BYTES:-480000000000}
# Where the images and scratch files live: a tmpfs (RECORD_SCRATCH=/dev/shm)
# spares the disk; the files are sparse.

# disko's module evaluates a layout with a stand-in of the NixOS options it
# writes into (the one of xtask/tests/disko_reference.rs).
EVALUATION='
let
  lib = import <nixpkgs-lib/lib>;
  opt = type: default: lib.mkOption { inherit type default; };
  pathsNeededForBoot = [ "/" "/nix" "/nix/store" "/var" "/var/log" "/var/lib" "/var/lib/nixos" "/etc" "/usr" ];
  fileSystem = { name, config, ... }: {
    options = {
      mountPoint = opt lib.types.str name;
      device = opt (lib.types.nullOr lib.types.nonEmptyStr) null;
      fsType = opt lib.types.nonEmptyStr "auto";
      options = opt (lib.types.nonEmptyListOf lib.types.nonEmptyStr) [ "defaults" ];
      neededForBoot = opt lib.types.bool false;
    };
    config.options = lib.mkMerge [ (lib.mkIf (config.neededForBoot || lib.elem config.mountPoint pathsNeededForBoot) [ "x-initrd.mount" ]) ];
  };
  nixos = {
    options = {
      fileSystems = opt (lib.types.attrsOf (lib.types.submodule fileSystem)) { };
      swapDevices = opt (lib.types.listOf (lib.types.attrsOf lib.types.anything)) [ ];
      boot.loader.grub.devices = opt (lib.types.listOf lib.types.str) [ ];
      boot.resumeDevice = opt lib.types.str "";
      # luks writes boot.initrd.luks.devices.<name>; NixOS declares it.
      boot.initrd = opt (lib.types.lazyAttrsOf lib.types.anything) { };
      system.build = opt (lib.types.lazyAttrsOf lib.types.raw) { };
      assertions = opt (lib.types.listOf lib.types.unspecified) [ ];
      systemd = opt (lib.types.lazyAttrsOf lib.types.anything) { };
    };
    config._module.args = { pkgs = throw "no pkgs"; modulesPath = throw "no modulesPath"; };
  };
  judge = layout:
    let
      config = (lib.evalModules { modules = [ <disko/module.nix> nixos layout ]; }).config;
    in {
      disks = lib.mapAttrsToList (name: d: { inherit name; inherit (d) device; create = d._create; }) config.disko.devices.disk;
      fileSystems = lib.mapAttrsToList (mountPoint: fs: { inherit mountPoint; inherit (fs) device fsType options; }) config.fileSystems;
      swapDevices = map (s: s.device) config.swapDevices;
    };
in'

evaluate() {
  nix-instantiate --eval --strict --json \
    -I disko="$DISKO" -I nixpkgs-lib="$NIXPKGS_LIB" \
    --arg layout "$1" --expr "{ layout }: $EVALUATION judge layout"
}

# Many layouts (a JSON object, name -> config) in one evaluation; a layout
# that does not evaluate is null here (evaluate it alone for the message).
evaluate_batch() {
  nix-instantiate --eval --strict --json \
    -I disko="$DISKO" -I nixpkgs-lib="$NIXPKGS_LIB" \
    --argstr file "$1" --expr "{ file }: $EVALUATION builtins.mapAttrs (name: layout:
      let result = builtins.tryEval (let value = judge layout; in builtins.deepSeq value value);
      in if result.success then result.value else null) (builtins.fromJSON (builtins.readFile file))"
}

# sgdisk sleeps a second after each write so that a kernel re-reads the
# table of a block device; on an image file that is only time. Where a C
# compiler exists, sgdisk runs with sleep(3) returning at once (sgdisk itself
# is unchanged: it writes the same table).
no_sleep_library() {
  local dir
  command -v cc >/dev/null || return 0
  dir=$(mktemp -d /tmp/disko-record-nosleep.XXXXXX)
  printf 'unsigned int sleep(unsigned int seconds) { (void)seconds; return 0; }\n' >"$dir/nosleep.c"
  cc -shared -fPIC -o "$dir/nosleep.so" "$dir/nosleep.c" && printf '%s\n' "$dir/nosleep.so"
}
NO_SLEEP_LIBRARY=$(no_sleep_library)
export NO_SLEEP_LIBRARY

# The commands disko's scripts call, with /dev paths moved into the sandbox.
sandbox_functions='
sandboxed() { case "$1" in /dev/*) printf "%s\n" "$SANDBOX$1" ;; *) printf "%s\n" "$1" ;; esac; }
run_sandboxed() { local tool=$1 a; shift; local args=(); for a in "$@"; do case "$a" in /dev/*) args+=("$SANDBOX$a") ;; *) args+=("$a") ;; esac; done; command "$tool" "${args[@]}"; }
sgdisk() { LD_PRELOAD=${NO_SLEEP_LIBRARY:-} run_sandboxed sgdisk "$@"; }
sfdisk() { run_sandboxed sfdisk "$@"; }
blkid() { run_sandboxed blkid "$@"; }
mkfs.vfat() { run_sandboxed mkfs.vfat "$@"; }
mkfs.fat() { run_sandboxed mkfs.fat "$@"; }
mkfs.ext4() { run_sandboxed mkfs.ext4 "$@"; }
mkfs.btrfs() { run_sandboxed mkfs.btrfs "$@"; }
mkfs.xfs() { run_sandboxed mkfs.xfs "$@"; }
mkswap() { run_sandboxed mkswap "$@"; }
mkfs.ext2() { run_sandboxed mkfs.ext2 "$@"; }
mkfs.ext3() { run_sandboxed mkfs.ext3 "$@"; }
mkfs.f2fs() { run_sandboxed mkfs.f2fs "$@"; }
wipefs() { run_sandboxed wipefs "$@"; }
# Kernel features (dm-crypt, md, device-mapper, ZFS) and raw writes that the
# sandbox cannot redirect: never run, so they can never reach a real device.
not_run() { printf "NOT RUN: %s (needs a kernel feature or a device outside the sandbox)\n" "$*" >&2; return 97; }
cryptsetup() { not_run cryptsetup "$@"; }
mdadm() { not_run mdadm "$@"; }
pvcreate() { not_run pvcreate "$@"; }
vgcreate() { not_run vgcreate "$@"; }
lvcreate() { not_run lvcreate "$@"; }
lvm() { not_run lvm "$@"; }
zpool() { not_run zpool "$@"; }
zfs() { not_run zfs "$@"; }
bcachefs() { not_run bcachefs "$@"; }
mkfs.bcachefs() { not_run mkfs.bcachefs "$@"; }
dd() { not_run dd "$@"; }
mount() { run_sandboxed mount "$@"; }
btrfs() { run_sandboxed btrfs "$@"; }
partprobe() { make_links; }
udevadm() { case "$1" in trigger) make_links ;; esac; }
# udev: the links 60-persistent-storage.rules makes from what blkid reads.
make_links() {
  local - loop part
  set +f # disko runs its scripts with set -f
  loop=$(losetup --find --show --read-only "$IMAGE")
  partx --add "$loop" 2>/dev/null || true
  mkdir -p "$SANDBOX/dev/disk/by-partlabel" "$SANDBOX/dev/disk/by-partuuid"
  for part in "$loop"p*; do
    [ -e "$part" ] || continue
    # Values as udev writes them into link names (\x20 for a space, …): read, not evaluated.
    local info
    info=$(command blkid -p -o udev "$part")
    ID_PART_ENTRY_NAME=$(sed -n 's/^ID_PART_ENTRY_NAME=//p' <<<"$info")
    ID_PART_ENTRY_UUID=$(sed -n 's/^ID_PART_ENTRY_UUID=//p' <<<"$info")
    ID_PART_ENTRY_SIZE=$(sed -n 's/^ID_PART_ENTRY_SIZE=//p' <<<"$info")
    local file="$SANDBOX/parts/$ID_PART_ENTRY_UUID"
    if [ ! -e "$file" ]; then
      mkdir -p "$SANDBOX/parts"
      truncate -s $((ID_PART_ENTRY_SIZE * 512)) "$file"
    fi
    [ -z "${ID_PART_ENTRY_NAME:-}" ] || ln -sfn "$file" "$SANDBOX/dev/disk/by-partlabel/$ID_PART_ENTRY_NAME"
    ln -sfn "$file" "$SANDBOX/dev/disk/by-partuuid/$ID_PART_ENTRY_UUID"
    unset ID_PART_ENTRY_NAME ID_PART_ENTRY_UUID
  done
  partx --delete "$loop" 2>/dev/null || true
  losetup --detach "$loop"
}
'

# Runs disko's create scripts and the mounts of one evaluated layout.
replay() {
  local case=$1 eval_json=$2 work
  work=$(mktemp -d "${RECORD_SCRATCH:-/tmp}/disko-record.XXXXXX")
  export SANDBOX="$work/root"
  mkdir -p "$SANDBOX/dev" "$SANDBOX/mnt"
  local create_status=0 disk
  : >"$work/create.log"
  for disk in $(jq -r '.disks[] | @base64' <<<"$eval_json"); do
    local device script
    device=$(base64 -d <<<"$disk" | jq -r .device)
    script=$(base64 -d <<<"$disk" | jq -r .create)
    export IMAGE="$SANDBOX$device"
    mkdir -p "$(dirname "$IMAGE")"
    truncate -s "$DISK_BYTES" "$IMAGE"
    # sgdisk's own steps write the table; then udev's links appear.
    if ! (cd "$work" && bash -c "set -efu; $sandbox_functions
$script
make_links" >>"$work/create.log" 2>&1); then
      create_status=1
      # not_run's status: a step this sandbox does not run.
      ! grep -q '^NOT RUN: ' "$work/create.log" || create_status=97
      break
    fi
  done
  # The mounts NixOS makes, parents first.
  local mounts='[]' mp type dev opts before
  if [ "$create_status" = 0 ]; then
    # The filesystem's own reason for a refusal is in the kernel log.
    before=$(dmesg 2>/dev/null | wc -l || echo 0)
    while IFS=$'\t' read -r mp type dev opts; do
      local target out status info=''
      case "$dev" in /dev/*) dev="$SANDBOX$dev" ;; esac
      target="$SANDBOX/mnt${mp%/}"
      mkdir -p "$target"
      status=ok
      out=$(command mount -t "$type" -o "$opts" "$dev" "$target" 2>&1) || status=failed
      if [ "$status" = failed ]; then
        out="$out$(dmesg 2>/dev/null | tail -n +"$((before + 1))" | grep -o '\(BTRFS\|EXT4-fs\|FAT-fs\|tmpfs\).*\(error\|Unknown\|Bad\).*' | sed 's/^/ kernel: /' | tail -n 3 || true)"
        before=$(dmesg 2>/dev/null | wc -l || echo 0)
        if grep -q "unknown filesystem type" <<<"$out"; then status=notRun; fi
      else
        info=$(awk -v t="$target" '$5 == t { root=$4; opts=$6; for (i = 7; $i != "-"; i++); print root "\t" opts "\t" $(i+3) }' /proc/self/mountinfo | tail -n1)
        # The mounted root's mode and attributes (lsattr: +C is No_COW).
        info="$info"$'\t'"$(stat -c %a "$target" 2>/dev/null || true)"$'\t'"$(lsattr -d "$target" 2>/dev/null | cut -d' ' -f1 || true)"
      fi
      mounts=$(jq -c --arg mp "$mp" --arg status "$status" --arg out "$out" --arg info "$info" \
        '. + [{mountpoint: $mp, status: $status, message: $out,
               mountinfo: (if $status != "ok" then null elif ($info | startswith("\t")) then "not in /proc/self/mountinfo"
                 else ($info | split("\t") | {root: .[0], mountOptions: .[1], superOptions: .[2], mode: .[3], attributes: .[4]}) end)}]' <<<"$mounts")
    done < <(jq -r '.fileSystems | sort_by(.mountPoint | length) | .[] | "\(.mountPoint)\t\(.fsType)\t\(.device // "null")\t\(.options | join(","))"' <<<"$eval_json")
  fi
  jq -n --arg case "$case" --argjson status "$create_status" --arg log "$(tail -n 3 "$work/create.log")" \
    --argjson mounts "$mounts" --argjson eval "$eval_json" \
    '{($case): {evaluates: true, createExit: $status, createTail: (if $status == 0 then "" else $log end),
       mounts: $mounts, swapDevices: $eval.swapDevices}}'
  # Every mount below the sandbox, deepest first ("/" may not be among them).
  awk -v p="$SANDBOX/" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
    while read -r target; do umount -l "$target" 2>/dev/null || true; done
  rm -rf "$work" || echo "replay.sh: could not remove $work" >&2
}
