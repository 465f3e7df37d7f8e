#!/bin/sh
# btrfs-rollback: give the machine a fresh, empty root at every boot.
#
# Runs in the initrd, before the root is mounted. It mounts the top level of
# the Btrfs filesystem, moves the root subvolume into the old-roots subvolume
# under a name that records the time of the move, creates a new empty root
# subvolume, and deletes old roots past their retention. docs/rollback.md
# explains the design; this file is the one copy that tests, benchmarks and
# the NixOS module (nix/modules/btrfs-rollback/default.nix) all use.
#
# Usage: sh rollback.sh DEVICE
#   DEVICE is the Btrfs block device, e.g. /dev/disk/by-partlabel/disk-main-root.
#
# Environment (all optional):
#   BTRFS_ROLLBACK_MOUNTPOINT           where the top level (subvolid=5) is
#                                       mounted while the script runs; it is
#                                       unmounted on exit. Default /btrfs_tmp.
#   BTRFS_ROLLBACK_ROOT_SUBVOLUME       the root subvolume. Default @root.
#   BTRFS_ROLLBACK_OLD_ROOTS_SUBVOLUME  where old roots go. Default @old_roots.
#   BTRFS_ROLLBACK_RETENTION_DAYS       delete old roots older than this many
#                                       days (age from the name). Default 30.
#   BTRFS_ROLLBACK_KEEP_AT_LEAST        never delete the newest N old roots,
#                                       whatever their age. Default 5.
#   BTRFS_ROLLBACK_NOW                  the current time in epoch seconds
#                                       (tests fake clocks). Default `date +%s`.
#   BTRFS_ROLLBACK_STATUS_DIR           where the status file goes. Default
#                                       /run/btrfs-rollback.
#   BTRFS_ROLLBACK_MOUNTED_SUBVOLUMES   subvolumes the system mounts (the
#                                       NixOS module lists every subvol= of
#                                       fileSystems but /), separated by
#                                       spaces: neither the root nor the
#                                       old-roots subvolume may be one of them.
#   BTRFS_ROLLBACK_WAIT_SECONDS         the longest a step that waits on the
#                                       filesystem may take (filesystem and
#                                       subvolume sync). Default 60.
#
# Old roots are subvolumes in the old-roots subvolume named by the UTC time
# of the move, ISO 8601 basic without colons: YYYYMMDDTHHMMSSZ, and
# YYYYMMDDTHHMMSSZ-NN (NN = 01..99) for further moves in the same second, so
# that names sort in time order; years 1970 to 2099. Entries of any other
# name, and entries that are not subvolumes, are not old roots: they are
# never deleted and never steer naming or the clock check.
#
# The clock is implausible before 2026-01-01T00:00:00Z, from
# 2100-01-01T00:00:00Z on, or when it is earlier than the newest old root's
# name. Then nothing is deleted, and the root moves to the name right after
# the newest old root (or to 20260101T000000Z when there is none), so that a
# wrong clock never names a root that later looks older or newer than it is.
#
# When the move fails, the cause decides (never a guess): no space left
# (ENOSPC) deletes the old roots past retention first and tries again once
# their space is free, and once the chunks they emptied are returned (so that
# a metadata that is full because of the current root can grow); a
# read-only root subvolume (btrfs receive makes them) has the flag
# cleared and is moved; a read-only device, a read-only, append-only or
# immutable old-roots subvolume, root or top level and a qgroup limit change
# nothing and say so. The same holds for creating the new root.
# Several runs at once cannot nest or lose a root: every rename refuses an
# existing target (mv -T), so a run that finds a name taken takes the next.
#
# Output: warnings on stderr ("btrfs-rollback: warning: ..."), then exactly
# one summary line on stdout:
#   btrfs-rollback: result=ok rotated_to=NAME deleted=N kept=N skipped=N clock=ok ms=N message=TEXT
# The same keys, one per line, go to $BTRFS_ROLLBACK_STATUS_DIR/status
# (result=running while the script runs). On failure the script also writes
# $BTRFS_ROLLBACK_STATUS_DIR/failed and exits non-zero.
#
# Plain POSIX sh (busybox ash, dash, bash). Tools: btrfs, mount, umount,
# mkdir, mv, sort, stat, date, sleep, timeout (coreutils in the systemd initrd,
# busybox in the scripted one). Process calls do not grow with the number of
# old roots, and neither does the work per old root: no list is built by
# appending to a string, and nothing is kept in a variable per name (both
# are quadratic in dash and busybox).

# $NAME_GLOB is a pattern on purpose wherever it is unquoted in a case.
# shellcheck disable=SC2254

# Byte order for globs and sort: names must sort the same everywhere.
LC_ALL=C
export LC_ALL
set -u
set -f

# 2026-01-01T00:00:00Z and 2100-01-01T00:00:00Z: the plausible clock range,
# in epoch seconds and as name numbers (see root_name).
CLOCK_FLOOR=1767225600
CLOCK_CEILING=4102444800
FLOOR_NUM=12026010100000000
CEILING_NUM=12100010100000000
NL='
'
# The shape of an old root's name (without the -NN suffix).
NAME_GLOB='[0-9][0-9][0-9][0-9][0-1][0-9][0-3][0-9]T[0-2][0-9][0-5][0-9][0-5][0-9]Z'
# Argument bytes per `btrfs subvolume delete`, counting 9 per argument for
# its pointer and NUL: half the smallest limit Linux allows (128 KiB, with a
# stack limit of 512 KiB or less), whatever the environment.
BATCH_BYTES=65536

result=running
rotated_to=
deleted=0
kept=0
skipped=0
clock=ok
message=
mounted=
finished=
start_ms=0
now_ms=0
status_dir=
mountpoint=

warn() {
	printf 'btrfs-rollback: warning: %s\n' "$*" >&2
}

fail() {
	result=failed
	message=$*
	exit 1
}

# Whether $1 is a decimal number of at most 12 digits (no overflow below).
is_count() {
	case $1 in '' | *[!0-9]*) return 1 ;; esac
	[ ${#1} -le 12 ]
}

# $1 without leading zeros (shell arithmetic reads 08 as bad octal), in
# $_dec. A variable, not output: command substitution forks.
decimal() {
	_dec=$1
	while :; do
		case $_dec in 0?*) _dec=${_dec#0} ;; *) break ;; esac
	done
}

# Milliseconds on a clock that only moves forward during the run, in
# $now_ms, without a process where possible: bash's $EPOCHREALTIME (the
# systemd initrd), else /proc/uptime (centiseconds; the scripted initrd),
# else `date +%s` (whole seconds). Every value is checked before arithmetic
# touches it: this also runs in the exit handler, which must not fail.
# shellcheck disable=SC3028
read_ms() {
	now_ms=0
	case ${EPOCHREALTIME-} in
	*[!0-9.]* | *.*.*) ;;
	[0-9]*.[0-9][0-9][0-9][0-9][0-9][0-9])
		now_ms=$((${EPOCHREALTIME%.*} * 1000 + (1${EPOCHREALTIME#*.} - 1000000) / 1000))
		return
		;;
	esac
	_up=
	if [ -r /proc/uptime ]; then
		IFS=' ' read -r _up _rest </proc/uptime || _up=
	fi
	case $_up in
	*[!0-9.]* | *.*.*) ;;
	[0-9]*.[0-9][0-9])
		now_ms=$((${_up%.*} * 1000 + (1${_up#*.} - 100) * 10))
		return
		;;
	esac
	_t=$(date +%s 2>/dev/null) || _t=
	case $_t in '' | *[!0-9]*) _t=0 ;; esac
	now_ms=$((_t * 1000))
}

# Whether $1 is an old root's name; if so, $name_num is the name as a number
# that orders names as they sort: 1YYYYMMDDhhmmssNN (NN = 00 without a
# suffix). A name is an old root's when its time exists (no 30 February, no
# hour 24) in the years 1970 to 2099, and its suffix is not -00. It runs for
# every entry, so it is a few pattern matches and no arithmetic in the
# common case: command dispatch and arithmetic are what cost in a shell.
root_name() {
	case $1 in
	$NAME_GLOB) _nn=00 ;;
	$NAME_GLOB-0[1-9] | $NAME_GLOB-[1-9][0-9]) _nn=${1#*-} ;;
	*) return 1 ;;
	esac
	_ymd=${1%%T*}
	case $_ymd in 19[7-9]????? | 20??????) ;; *) return 1 ;; esac
	# Month and day; 29 February only in a leap year (2000 is one, and
	# 1900 and 2100 are out of range, so every fourth year is).
	case ${_ymd#????} in
	0[1-9]0[1-9] | 0[1-9]1[0-9] | 0[1-9]2[0-8] | 1[0-2]0[1-9] | 1[0-2]1[0-9] | 1[0-2]2[0-8]) ;;
	0[13-9]29 | 1[0-2]29 | 0[13-9]30 | 1[0-2]30 | 0[13578]31 | 1[02]31) ;;
	0229) [ $((${_ymd%????} % 4)) -eq 0 ] || return 1 ;;
	*) return 1 ;;
	esac
	_hms=${1#*T}
	_hms=${_hms%%Z*}
	case $_hms in [01]????? | 2[0-3]????) ;; *) return 1 ;; esac
	name_num=1$_ymd$_hms$_nn
}

# The name for $1 = 1YYYYMMDDhhmmssNN, in $num_name.
name_of_num() {
	_x=${1#1}
	_r=${_x#????????}
	num_name=${_x%????????}T${_r%??}Z
	case $_r in *00) ;; *) num_name=$num_name-${_r#??????} ;; esac
}

# Epoch seconds of the name number $1 (days_from_civil, proleptic
# Gregorian), in $num_epoch.
epoch_of_num() {
	_x=${1#1}
	_r=${_x#????????}
	_Y=${_x%????????????} _M=${_x#????} _D=${_x#??????} _h=${_r%??????}
	_M=${_M%??????????} _D=${_D%????????} _mi=${_r#??} _s=${_r#????}
	_mi=${_mi%????} _s=${_s%??}
	# A leading 1 keeps zero-padded fields decimal (08 is bad octal).
	: $((_M = 1$_M - 100)) $((_D = 1$_D - 100)) $((_h = 1$_h - 100)) \
		$((_mi = 1$_mi - 100)) $((_s = 1$_s - 100))
	: $((_y = _Y - (_M <= 2))) $((_era = _y / 400)) $((_yoe = _y - _era * 400)) \
		$((_doy = (153 * ((_M + 9) % 12) + 2) / 5 + _D - 1)) \
		$((_days = _era * 146097 + _yoe * 365 + _yoe / 4 - _yoe / 100 + _doy - 719468))
	num_epoch=$((_days * 86400 + _h * 3600 + _mi * 60 + _s))
}

# The name number of epoch second $1 (suffix 00), in $epoch_num.
num_of_epoch() {
	_e=$1
	_z=$((_e / 86400 + 719468))
	_sod=$((_e % 86400))
	_era=$((_z / 146097))
	_doe=$((_z - _era * 146097))
	_yoe=$(((_doe - _doe / 1460 + _doe / 36524 - _doe / 146096) / 365))
	_doy=$((_doe - (365 * _yoe + _yoe / 4 - _yoe / 100)))
	_mp=$(((5 * _doy + 2) / 153))
	_D=$((_doy - (153 * _mp + 2) / 5 + 1))
	if [ "$_mp" -lt 10 ]; then _M=$((_mp + 3)); else _M=$((_mp - 9)); fi
	_Y=$((_yoe + _era * 400))
	if [ "$_M" -le 2 ]; then _Y=$((_Y + 1)); fi
	# Zero-padding without printf (command substitution forks): the digits
	# after a leading 1 of 100 + M, ...
	_f2=$((100 + _M)) _f3=$((100 + _D)) _f4=$((100 + _sod / 3600))
	_f5=$((100 + _sod % 3600 / 60)) _f6=$((100 + _sod % 60))
	epoch_num=1$_Y${_f2#1}${_f3#1}${_f4#1}${_f5#1}${_f6#1}00
}

# The name number right after $1: the next suffix, or the next second.
next_num() {
	case $1 in
	*99)
		epoch_of_num "$1"
		num_of_epoch $((num_epoch + 1))
		next=$epoch_num
		;;
	*) next=$(($1 + 1)) ;;
	esac
}

# Adds $1 to the warning about entries that are not old roots; the first
# ten are named, the rest counted.
note_skipped() {
	skipped=$((skipped + 1))
	if [ "$skipped" -le 10 ]; then
		skipped_names="$skipped_names $1"
	fi
}

# The mount on top at the directory $1 (a canonical path), from
# /proc/self/mountinfo: $mnt_found is 1 when there is one, $mnt_fstype,
# $mnt_source, and $mnt_ro is 1 when the mount or its filesystem is
# read-only. Returns 1 when mountinfo cannot be read. The mountpoint holds
# no space, tab, backslash or newline (refused above), so it appears in
# mountinfo as it is.
mount_at() {
	mnt_found='' mnt_fstype='' mnt_source='' mnt_ro='' mnt_super=''
	[ -r /proc/self/mountinfo ] || return 1
	while read -r _id _parent _devno _mroot _mp _mopts _rest; do
		[ "$_mp" = "$1" ] || continue
		# Optional fields, then "- FSTYPE SOURCE SUPER-OPTIONS".
		_x=" $_rest"
		_x=${_x#* - }
		mnt_found=1
		mnt_fstype=${_x%% *}
		_x=${_x#* }
		mnt_source=${_x%% *}
		mnt_ro=''
		mnt_super=${_x#* }
		case ,$_mopts,$mnt_super, in *,ro,*) mnt_ro=1 ;; esac
	done </proc/self/mountinfo
}

write_status() {
	[ -n "$status_dir" ] || return 0
	printf 'result=%s\nrotated_to=%s\ndeleted=%s\nkept=%s\nskipped=%s\nclock=%s\nms=%s\nmessage=%s\n' \
		"$result" "$rotated_to" "$deleted" "$kept" "$skipped" "$clock" "$1" "$message" \
		>"$status_dir/status"
}

# Called by the EXIT trap, after a failure anywhere (also while IFS is a
# newline or a glob is on): it resets what it relies on first, and checks
# every value before arithmetic touches it.
# shellcheck disable=SC2317
on_exit() {
	_rc=$?
	trap - EXIT
	unset IFS
	set +u
	set -f
	[ -n "$finished" ] && return
	finished=1
	case $_rc in '' | *[!0-9]*) _rc=1 ;; esac
	if [ "$result" = running ]; then
		if [ "$_rc" -eq 0 ]; then
			result=ok
		else
			result=failed
			[ -n "$message" ] || message="stopped with status $_rc"
		fi
	fi
	if [ -n "$mounted" ]; then
		cd / || :
		# Busy (a process still inside): detach it, which is as good for
		# the boot; the work is done either way, so it never decides the
		# result. A later run in this boot clears what is left (see below).
		if ! umount "$mountpoint"; then
			if umount -l "$mountpoint"; then
				warn "could not unmount $mountpoint (busy); detached it"
			else
				warn "could not unmount $mountpoint; left it mounted"
				[ "$result" != ok ] || message="$message; left $mountpoint mounted"
			fi
		fi
	fi
	# One line: no newline may reach the summary or the status file.
	while :; do
		case $message in
		*"$NL"*) message="${message%%"$NL"*} ${message#*"$NL"}" ;;
		*) break ;;
		esac
	done
	read_ms
	case $start_ms in '' | *[!0-9]*) start_ms=$now_ms ;; esac
	_ms=$((now_ms - start_ms))
	[ "$_ms" -ge 0 ] || _ms=0
	# Trouble writing the status is reported, and never changes the
	# result: the summary line below and the exit code are the record.
	if [ -n "$status_dir" ]; then
		write_status "$_ms" 2>/dev/null ||
			warn "could not write $status_dir/status (result=$result)"
		if [ "$result" = failed ]; then
			printf '%s\n' "$message" 2>/dev/null >"$status_dir/failed" ||
				warn "could not write $status_dir/failed"
		fi
	fi
	printf 'btrfs-rollback: result=%s rotated_to=%s deleted=%s kept=%s skipped=%s clock=%s ms=%s message=%s\n' \
		"$result" "$rotated_to" "$deleted" "$kept" "$skipped" "$clock" "$_ms" "$message"
	if [ "$result" = ok ]; then exit 0; fi
	if [ "$_rc" -eq 0 ]; then exit 1; fi
	exit "$_rc"
}

trap on_exit EXIT
trap 'message="interrupted"; exit 130' INT
trap 'message="terminated"; exit 143' TERM HUP

read_ms
start_ms=$now_ms

# --- Configuration ---------------------------------------------------------

[ $# -eq 1 ] || fail "usage: rollback.sh DEVICE"
device=$1
mountpoint_wanted=${BTRFS_ROLLBACK_MOUNTPOINT:-/btrfs_tmp}
root_sv=${BTRFS_ROLLBACK_ROOT_SUBVOLUME:-@root}
old_sv=${BTRFS_ROLLBACK_OLD_ROOTS_SUBVOLUME:-@old_roots}
retention_days=${BTRFS_ROLLBACK_RETENTION_DAYS:-30}
keep_at_least=${BTRFS_ROLLBACK_KEEP_AT_LEAST:-5}
now=${BTRFS_ROLLBACK_NOW:-}
if [ -z "$now" ]; then
	now=$(date +%s) || now=
	# A clock before 1970, or none, is merely implausible: rotate anyway.
	is_count "$now" || now=0
fi
status_dir_wanted=${BTRFS_ROLLBACK_STATUS_DIR:-/run/btrfs-rollback}
mounted_subvolumes=${BTRFS_ROLLBACK_MOUNTED_SUBVOLUMES:-}
wait_seconds=${BTRFS_ROLLBACK_WAIT_SECONDS:-60}

case $status_dir_wanted in
*"$NL"*) fail "BTRFS_ROLLBACK_STATUS_DIR must not contain a newline" ;;
/*) ;;
*) fail "BTRFS_ROLLBACK_STATUS_DIR must be an absolute path" ;;
esac
if [ -d "$status_dir_wanted" ] || mkdir -p "$status_dir_wanted"; then
	status_dir=$status_dir_wanted
	# A failed marker from an earlier run in this boot is history now.
	if [ -e "$status_dir/failed" ]; then
		mv -f "$status_dir/failed" "$status_dir/failed.previous" ||
			warn "could not move aside $status_dir/failed"
	fi
	write_status 0 || warn "could not write $status_dir/status"
else
	warn "could not create $status_dir_wanted; no status file this boot"
fi

# 64-bit arithmetic: epoch milliseconds and name numbers do not fit in 32 bits.
[ $((2147483647 + 1)) -gt 0 ] || fail "this shell's arithmetic is not 64-bit"

case $device in
*"$NL"*) fail "DEVICE must not contain a newline" ;;
/*) ;;
*) fail "DEVICE must be an absolute path, got '$device'" ;;
esac
case $mountpoint_wanted in
/ | *"$NL"* | *[\\\ \	]*) fail "BTRFS_ROLLBACK_MOUNTPOINT must not be / or contain a newline, a space, a tab or a backslash" ;;
/*) ;;
*) fail "BTRFS_ROLLBACK_MOUNTPOINT must be an absolute path" ;;
esac
mountpoint=$mountpoint_wanted
for _sv in "$root_sv" "$old_sv"; do
	case $_sv in
	'' | . | .. | */* | *"$NL"*) fail "invalid subvolume name '$_sv'" ;;
	esac
done
[ "$root_sv" != "$old_sv" ] || fail "the root and old-roots subvolumes must differ"
# A subvolume the system mounts (/persist, /nix, ...) is never the root to
# wipe nor the place whose old roots are deleted.
for _m in $mounted_subvolumes; do
	_m=${_m#/}
	[ "$_m" != "$root_sv" ] ||
		fail "the root subvolume $root_sv is mounted by the system at another path than /; refusing to wipe it (check boot.btrfsRollback.rootSubvolume)"
	[ "$_m" != "$old_sv" ] ||
		fail "the old-roots subvolume $old_sv is mounted by the system; refusing to delete in it (check boot.btrfsRollback.oldRootsSubvolume)"
done
is_count "$wait_seconds" && [ "$wait_seconds" -ge 1 ] && [ "$wait_seconds" -le 86400 ] ||
	fail "BTRFS_ROLLBACK_WAIT_SECONDS is not a number of seconds from 1 to 86400: '$wait_seconds'"
decimal "$wait_seconds"
wait_seconds=$_dec
is_count "$retention_days" || fail "BTRFS_ROLLBACK_RETENTION_DAYS is not a number: '$retention_days'"
is_count "$keep_at_least" || fail "BTRFS_ROLLBACK_KEEP_AT_LEAST is not a number: '$keep_at_least'"
is_count "$now" || fail "the current time is not a number of epoch seconds: '$now'"
decimal "$retention_days"
retention_days=$_dec
decimal "$keep_at_least"
keep_at_least=$_dec
decimal "$now"
now=$_dec
[ "$retention_days" -le 1000000 ] || fail "BTRFS_ROLLBACK_RETENTION_DAYS is too large"

# Paths relative to the mountpoint (the working directory from the mount on),
# with ./ so that no name can pass for an option.
rp=./$root_sv
op=./$old_sv

# The clock and the retention cutoff as name numbers.
num_of_epoch "$now"
now_num=$epoch_num
cutoff=$((now - retention_days * 86400))
cutoff_num=0
if [ "$cutoff" -gt 0 ]; then
	num_of_epoch "$cutoff"
	cutoff_num=$epoch_num
fi

# --- Mount the top level ---------------------------------------------------

[ -d "$mountpoint" ] || mkdir -p "$mountpoint" || fail "cannot create $mountpoint"
mountpoint_real=$(cd "$mountpoint" && pwd -P) || fail "cannot enter $mountpoint"
# A mount left on the mountpoint (a run stopped before its unmount, a
# detached busy one): mount(8) refuses to mount the same filesystem there
# again. A Btrfs mount there is one of ours, and goes; anything else is not
# ours to touch.
_stale=0
while mount_at "$mountpoint_real" && [ -n "$mnt_found" ]; do
	[ "$mnt_fstype" = btrfs ] ||
		fail "$mountpoint is already a mount point of a $mnt_fstype filesystem ($mnt_source); refusing to use it"
	_stale=$((_stale + 1))
	[ "$_stale" -le 8 ] || fail "cannot clear the stale mounts at $mountpoint"
	warn "$mountpoint already has $mnt_source mounted (left by an earlier run); unmounting it"
	umount "$mountpoint" || umount -l "$mountpoint" ||
		fail "cannot unmount the stale mount of $mnt_source at $mountpoint"
done
mount -t btrfs -o subvolid=5,noatime "$device" "$mountpoint" ||
	fail "cannot mount the top level of $device at $mountpoint"
mounted=1
cd "$mountpoint" || fail "cannot enter $mountpoint"
# mount(8) falls back to read-only on a write-protected device; so does
# Btrfs after errors. Nothing can change: say so before trying anything.
mount_options=
if mount_at "$mountpoint_real"; then mount_options=$mnt_super; fi
if [ -n "$mnt_ro" ]; then
	fail "$device is read-only (a write-protected device, or Btrfs forced read-only after errors: see the kernel log); changed nothing, this boot keeps its old root"
fi

# --- Look at what is there (no changes yet) --------------------------------

if [ -L "$op" ] || { [ -e "$op" ] && [ ! -d "$op" ]; }; then
	fail "$mountpoint/$old_sv exists but is not a directory"
fi
skipped_names=
if [ -d "$op" ]; then
	# Entries whose name is not of our shape: counted and named in the
	# warning, never touched.
	set +f
	set -- "$op"/* "$op"/.[!.]* "$op"/..?*
	set -f
	for _e; do
		_n=${_e#"$op"/}
		case $_n in $NAME_GLOB | $NAME_GLOB-[0-9][0-9]) continue ;; esac
		[ -e "$_e" ] || [ -L "$_e" ] || continue
		note_skipped "'$_n'"
	done
	# The entries of our shape, each glob in byte order (time order). A
	# pattern that matches nothing is left as it is; it is dropped.
	set +f
	# shellcheck disable=SC2086 # a pattern on purpose
	set -- "$op"/$NAME_GLOB-[0-9][0-9]
	set -f
	if [ $# -eq 1 ] && [ ! -e "$1" ] && [ ! -L "$1" ]; then set --; fi
	_suffixed=$#
	set +f
	# shellcheck disable=SC2086 # a pattern on purpose
	set -- "$op"/$NAME_GLOB "$@"
	set -f
	if [ $# -eq $((_suffixed + 1)) ] && [ ! -e "$1" ] && [ ! -L "$1" ]; then shift; fi
else
	set --
fi
if [ -e "$rp" ] || [ -L "$rp" ]; then set -- "$rp" "$@"; fi

# One stat for the top level, the root and every candidate: a subvolume's
# top directory is inode 256, any other file or directory has a higher one
# (stat does not follow symlinks). No path here holds a newline.
stat_failed=
stat_out=$(stat -c '%i %n' -- . "$@") || stat_failed=1

# Reads $stat_out: the top level's and the root's inode, and the old roots
# (subvolumes with an old root's name): how many, how many are past
# retention, the newest, and whether they came in time order. Entries of our
# shape that are not old roots join the skipped ones.
skipped_by_shape=$skipped
skipped_names_by_shape=$skipped_names
scan() {
	top_ino='' root_ino='' count=0 past=0 newest_num=0 in_order=1 _last=0
	skipped=$skipped_by_shape skipped_names=$skipped_names_by_shape
	IFS=$NL
	# shellcheck disable=SC2086 # one line per path
	set -- $stat_out
	unset IFS
	for _l; do
		_ino=${_l%% *}
		_p=${_l#* }
		case $_p in
		.) top_ino=$_ino ;;
		"$rp") root_ino=$_ino ;;
		"$op"/*)
			_n=${_p#"$op"/}
			if [ "$_ino" != 256 ]; then
				note_skipped "'$_n' (not a subvolume)"
			elif root_name "$_n"; then
				count=$((count + 1))
				[ "$name_num" -gt "$_last" ] || in_order=
				_last=$name_num
				[ "$name_num" -ge "$cutoff_num" ] || past=$((past + 1))
				[ "$name_num" -le "$newest_num" ] || newest_num=$name_num
			else
				note_skipped "'$_n' (not a name this script gives)"
			fi
			;;
		esac
	done
}
scan
if [ -z "$in_order" ]; then
	# Two globs (names with and without a suffix) are two runs in time
	# order; sort(1) merges them. Lines are "INODE ./PATH".
	stat_out=$(printf '%s\n' "$stat_out" | sort -t ' ' -k 2) || fail "sort failed"
	scan
	[ -n "$in_order" ] || fail "old roots are not in time order after sorting"
fi
if [ "$top_ino" != 256 ]; then
	[ -z "$stat_failed" ] || fail "stat failed on the top level of $device"
	fail "$mountpoint is not the top level of a Btrfs filesystem"
fi
[ -z "$stat_failed" ] || warn "stat reported errors; what it could not see is left alone"
if [ "$skipped" -gt 0 ]; then
	_more=
	[ "$skipped" -le 10 ] || _more=" and $((skipped - 10)) more"
	warn "left $skipped entries in $old_sv that are not old roots:$skipped_names$_more"
fi

# --- The clock ---------------------------------------------------------------

if [ "$now" -lt "$CLOCK_FLOOR" ]; then
	clock=implausible
	warn "the clock ($now) is before 2026-01-01; deleting nothing"
elif [ "$now" -ge "$CLOCK_CEILING" ]; then
	clock=implausible
	warn "the clock ($now) is after 2100-01-01; deleting nothing"
elif [ "$count" -gt 0 ] && [ "$now_num" -lt $((newest_num / 100 * 100)) ]; then
	clock=implausible
	name_of_num "$newest_num"
	warn "the clock ($now) is earlier than the newest old root $num_name; deleting nothing"
fi

# The new old root's name: the time of the move when the clock is right and
# it sorts after every old root; otherwise the next name after the newest
# (or the floor when there is none).
if [ "$clock" = ok ] && [ "$now_num" -gt "$newest_num" ]; then
	target_num=$now_num
elif [ "$count" -gt 0 ]; then
	next_num "$newest_num"
	target_num=$next
else
	target_num=$FLOOR_NUM
fi

# --- What retention deletes ----------------------------------------------------

# The oldest old roots past retention, but never the newest keepAtLeast,
# counting the root moved at this boot (also when its move fails: see
# below). Old roots past retention are the oldest ones, so the selection is
# every old root up to a name number: $boundary.
selected=0
boundary=0
if [ "$clock" = ok ]; then
	_total=$count
	[ "$root_ino" != 256 ] || _total=$((_total + 1))
	selected=$((_total - keep_at_least))
	[ "$selected" -le "$past" ] || selected=$past
	[ "$selected" -ge 0 ] || selected=0
	if [ "$selected" -eq "$past" ]; then
		boundary=$((cutoff_num - 1))
	elif [ "$selected" -gt 0 ]; then
		# The selected-th old root in time order.
		IFS=$NL
		# shellcheck disable=SC2086 # one line per path
		set -- $stat_out
		unset IFS
		_i=0
		for _l; do
			case $_l in "256 $op"/*) ;; *) continue ;; esac
			_n=${_l#"256 $op"/}
			root_name "$_n" || continue
			_i=$((_i + 1))
			if [ "$_i" -eq "$selected" ]; then
				boundary=$name_num
				break
			fi
		done
	fi
fi

# --- Deleting ------------------------------------------------------------------

# Prints the paths of the subvolumes at and below the selected old roots
# from the listing in the positional parameters, one per line, and returns
# 1 when some could not be used. A listing line is "ID n gen n top level n
# path PATH"; a name with a newline continues on the next lines, so a record
# followed by a line of another form is not used, and a line of the right
# form may be part of a name: every path is checked to lead through no
# symlink (which could point out of the old root), and to stay below a
# selected old root.
paths_to_delete() {
	_odd=0 _pending='' _cn='' _cs=''
	for _l; do
		case $_l in
		"ID "*" gen "*" top level "*" path "*) ;;
		*)
			# The rest of the last record's name.
			[ -z "$_pending" ] || _odd=1
			_pending=''
			continue
			;;
		esac
		[ -z "$_pending" ] || printf '%s\n' "$_pending"
		_pending=''
		_p=${_l#* path }
		case $_p in "$old_sv"/*) ;; *) continue ;; esac
		_rest=${_p#"$old_sv"/}
		_n=${_rest%%/*}
		if [ "$_n" != "$_cn" ]; then
			_cn=$_n _cs=''
			if root_name "$_n" && [ "$name_num" -le "$boundary" ]; then _cs=1; fi
		fi
		[ -n "$_cs" ] || continue
		case /$_rest/ in
		*/./* | */../* | *//*)
			_odd=1
			continue
			;;
		esac
		if [ "$_rest" != "$_n" ]; then
			# Split at slashes (no component is empty: checked above).
			_at=$op/$_n
			IFS=/
			for _c in ${_rest#*/}; do
				_at=$_at/$_c
				if [ -L "$_at" ]; then
					unset IFS
					_odd=1
					continue 2
				fi
			done
			unset IFS
		fi
		_pending=./$_p
	done
	[ -z "$_pending" ] || printf '%s\n' "$_pending"
	[ "$_odd" -eq 0 ]
}

# Counts the selected old roots still there, in $left, and names the first
# ten in $left_names.
count_left() {
	left=0 left_names=''
	IFS=$NL
	# shellcheck disable=SC2086 # one line per path
	set -- $stat_out
	unset IFS
	for _l; do
		case $_l in "256 $op"/*) ;; *) continue ;; esac
		_n=${_l#"256 $op"/}
		root_name "$_n" || continue
		[ "$name_num" -le "$boundary" ] || break
		if [ -e "$op/$_n" ] || [ -L "$op/$_n" ]; then
			left=$((left + 1))
			[ "$left" -gt 10 ] || left_names="$left_names $_n"
		fi
	done
}

# What the batch delete left: every subvolume the listing (in the positional
# parameters) names below a selected old root still there is found by its
# id, its real path is asked of the kernel, read-only is cleared (a
# read-only subvolume cannot lose its nested ones), and it is deleted by id,
# deepest first. One process per subvolume, so only for what is left.
delete_the_rest() {
	_ids=$(
		_cn='' _cs=''
		for _l; do
			case $_l in "ID "*" gen "*" top level "*" path $old_sv/"*) ;; *) continue ;; esac
			_id=${_l#ID }
			_id=${_id%% *}
			case $_id in '' | *[!0-9]*) continue ;; esac
			_rest=${_l#* path "$old_sv"/}
			_n=${_rest%%/*}
			if [ "$_n" != "$_cn" ]; then
				_cn=$_n _cs=''
				if root_name "$_n" && [ "$name_num" -le "$boundary" ] &&
					{ [ -e "$op/$_n" ] || [ -L "$op/$_n" ]; }; then _cs=1; fi
			fi
			[ -z "$_cs" ] || printf '%s\n' "$_id"
		done
	)
	_jobs=''
	for _id in $_ids; do
		# The kernel's path for the id, exactly (a name may end in a newline).
		# An id the batch already deleted does not resolve: not an error.
		_real=$(btrfs inspect-internal subvolid-resolve "$_id" . 2>/dev/null && echo .) || continue
		_real=${_real%.}
		_real=${_real%"$NL"}
		case $_real in "$old_sv"/*) ;; *) continue ;; esac
		_n=${_real#"$old_sv"/}
		_n=${_n%%/*}
		if ! root_name "$_n" || [ "$name_num" -gt "$boundary" ]; then continue; fi
		btrfs property set -f -ts "./$_real" ro false >/dev/null 2>&1 || :
		# Depth: the number of slashes.
		_d=0 _s=$_real
		while :; do
			case $_s in */*) _s=${_s#*/} _d=$((_d + 1)) ;; *) break ;; esac
		done
		_jobs="$_jobs$_d $_id$NL"
	done
	[ -n "$_jobs" ] || return 0
	_jobs=$(printf '%s' "$_jobs" | sort -rn) || return 0
	IFS=$NL
	# shellcheck disable=SC2086 # one job per line
	set -- $_jobs
	unset IFS
	for _j; do
		btrfs subvolume delete -i "${_j#* }" . >/dev/null || :
	done
}

# Deletes the paths in $1 (one a line, in that order) with `btrfs subvolume
# delete`, as few processes as the argument limit allows: $BATCH_BYTES of
# arguments each. Returns 1 when some call reported errors; their text is
# dropped, as the one-by-one pass after it retries (and reports) whatever is
# left. The batch string is bounded, so appending stays cheap in every shell.
delete_in_batches() {
	_bad=0 _batch='' _bytes=0
	IFS=$NL
	for _p in $1; do
		_batch=$_batch$_p$NL
		_bytes=$((_bytes + ${#_p} + 9))
		if [ "$_bytes" -ge "$BATCH_BYTES" ]; then
			# shellcheck disable=SC2086 # one path per line
			set -- $_batch
			btrfs subvolume delete "$@" >/dev/null 2>&1 || _bad=1
			_batch='' _bytes=0
		fi
	done
	if [ -n "$_batch" ]; then
		# shellcheck disable=SC2086 # one path per line
		set -- $_batch
		btrfs subvolume delete "$@" >/dev/null 2>&1 || _bad=1
	fi
	unset IFS
	return "$_bad"
}

# Deletes the selected old roots with their nested subvolumes: one listing,
# a delete of every path deepest first (in batches); what is left (read-only parents,
# names with a newline) one by one. An old root that still cannot be deleted
# is skipped with a warning and tried again at the next boot; the boot goes on.
deleted_done=''
undeletable=0
delete_selected() {
	deleted_done=1
	[ "$selected" -gt 0 ] || return 0
	# One listing of the whole filesystem finds the subvolumes nested in the
	# selected roots (systemd and container tools create them).
	list=$(btrfs subvolume list .) || fail "cannot list the subvolumes of $device"
	IFS=$NL
	# shellcheck disable=SC2086 # one line per record
	set -- $list
	unset IFS
	_paths=$(paths_to_delete "$@") ||
		warn "some subvolumes below old roots past retention have odd names; deleting those one by one"
	if [ -n "$_paths" ]; then
		# A parent sorts before its children: reverse order deletes
		# children first.
		_paths=$(printf '%s\n' "$_paths" | sort -r -u) || fail "sort failed"
		delete_in_batches "$_paths" ||
			warn "btrfs subvolume delete reported errors; retrying what is left one by one"
		IFS=$NL
		# shellcheck disable=SC2086 # one line per record
		set -- $list
		unset IFS
	fi
	count_left
	if [ "$left" -gt 0 ]; then
		delete_the_rest "$@"
		count_left
	fi
	deleted=$((selected - left))
	if [ "$left" -gt 0 ]; then
		undeletable=$left
		_more=
		[ "$left" -le 10 ] || _more=" and $((left - 10)) more"
		warn "could not delete $left old roots past retention:$left_names$_more; left them for the next boot"
	fi
}

# Waits until the deleted subvolumes' space is free (the kernel frees it in
# the background), so that a retry can use it.
# A commit wakes the cleaner (otherwise it waits for the next periodic
# one, up to 30 s), which drops the deleted subvolumes (subvolume sync waits
# for it); their extents are free once another transaction commits. Each
# step is bounded: on a timeout the move is simply tried again.
wait_for_space() {
	timeout -s KILL "$wait_seconds" btrfs filesystem sync . >/dev/null ||
		warn "btrfs filesystem sync failed or took over $wait_seconds s; going on"
	timeout -s KILL "$wait_seconds" btrfs subvolume sync . >/dev/null ||
		warn "btrfs subvolume sync failed or took over $wait_seconds s; trying the move anyway"
	timeout -s KILL "$wait_seconds" btrfs filesystem sync . >/dev/null ||
		warn "btrfs filesystem sync failed or took over $wait_seconds s; trying the move anyway"
}

# Chunks that deleting emptied go back to the unallocated space, where
# metadata can grow, when the cleaner deletes them; with discard=async (the
# default on SSDs) it waits until they are trimmed, minutes at the default
# rate, so a full metadata stays full. Remounting without discard lets the
# cleaner return them at once; each commit wakes it. The option is the
# filesystem's while it is mounted (only this mount, in the initrd), and it
# is put back right after. Tries the move up to 10 times, a second apart;
# sets $_moved.
move_after_returning_chunks() {
	mount -o remount,nodiscard "$mountpoint" ||
		warn "cannot remount $mountpoint without discard"
	_try=0
	while [ "$_try" -lt 10 ]; do
		_try=$((_try + 1))
		timeout -s KILL "$wait_seconds" btrfs filesystem sync . >/dev/null || :
		move_root
		_moved=$?
		[ "$_moved" -eq 1 ] && [ "$move_cause" = nospace ] || break
		sleep 1
	done
	case ,$mount_options, in
	*,discard=async,*)
		mount -o remount,discard=async "$mountpoint" ||
			warn "cannot remount $mountpoint with discard=async again"
		;;
	*,discard,* | *,discard=sync,*)
		mount -o remount,discard=sync "$mountpoint" ||
			warn "cannot remount $mountpoint with discard again"
		;;
	esac
}

# --- Rotate ------------------------------------------------------------------

# The cause of a failed move or create from its error text (LC_ALL=C:
# strerror's words in glibc and musl), in $cause: nospace (ENOSPC), quota
# (EDQUOT: a qgroup limit), readonly (EROFS), notpermitted (EPERM: an
# append-only or immutable attribute), or other.
cause_of() {
	case $1 in
	*"No space left on device"*) cause=nospace ;;
	*"uota exceeded"*) cause=quota ;;
	*"Read-only file system"*) cause=readonly ;;
	*"Operation not permitted"*) cause=notpermitted ;;
	*) cause=other ;;
	esac
}

# Moves the root to the first free name from $target_num on. mv -T renames
# and never moves into an existing directory, and the kernel refuses to
# rename onto a subvolume or a non-empty directory, so a run that loses a
# race for a name sees the move fail, and takes the next name. Returns 0
# when moved, 2 when the root is gone (another run moved it), 3 when no name
# is left, 1 when the move itself fails: then $move_cause says why (see
# cause_of).
move_root() {
	move_cause=other
	_tries=0
	while [ "$_tries" -lt 200 ]; do
		_tries=$((_tries + 1))
		if [ "$target_num" -ge "$CEILING_NUM" ]; then
			move_error="no name is left before 2100-01-01 after the newest old root"
			return 3
		fi
		name_of_num "$target_num"
		if [ -e "$op/$num_name" ] || [ -L "$op/$num_name" ]; then
			next_num "$target_num"
			target_num=$next
			continue
		fi
		if _err=$(mv -T "$rp" "$op/$num_name" 2>&1); then
			rotated_to=$num_name
			return 0
		fi
		[ -e "$rp" ] || [ -L "$rp" ] || return 2
		if [ -e "$op/$num_name" ] || [ -L "$op/$num_name" ]; then
			next_num "$target_num"
			target_num=$next
			continue
		fi
		cause_of "$_err"
		move_cause=$cause
		move_error="cannot move $root_sv to $old_sv/$num_name: ${_err##*: }"
		return 1
	done
	move_error="cannot move $root_sv: 200 names taken"
	return 1
}

# After a move refused with EROFS or EPERM: a read-only root subvolume
# (what `btrfs receive` makes, e.g. a root restored from a backup) has the
# flag cleared, as deletion does, and is moved (sets $_moved); anything else
# fails, naming the cause, before anything is deleted.
explain_refused_move() {
	_ro=$(btrfs property get -ts "$rp" ro 2>/dev/null) || _ro=
	if [ "$_ro" = ro=true ]; then
		warn "$root_sv is a read-only subvolume (btrfs receive makes them); clearing the flag to move it"
		btrfs property set -f -ts "$rp" ro false >/dev/null ||
			fail "$move_error: $root_sv is read-only and the flag cannot be cleared; this boot keeps its old root"
		move_root
		_moved=$?
		[ "$_moved" -ne 3 ] || fail "$move_error; this boot keeps its old root"
		[ "$_moved" -ne 1 ] || [ "$move_cause" = nospace ] ||
			fail "$move_error (after clearing the read-only flag of $root_sv); this boot keeps its old root"
		return 0
	fi
	_ro=$(btrfs property get -ts "$op" ro 2>/dev/null) || _ro=
	[ "$_ro" != ro=true ] ||
		fail "$move_error: $old_sv is a read-only subvolume (btrfs property set -ts $mountpoint/$old_sv ro false makes it writable); changed nothing, this boot keeps its old root"
	[ "$move_cause" != notpermitted ] ||
		fail "$move_error: the top level, $root_sv or $old_sv has the append-only or immutable attribute (lsattr -d on each shows which, chattr -ai clears it); changed nothing, this boot keeps its old root"
	fail "$move_error: the filesystem refuses writes; changed nothing, this boot keeps its old root"
}

# Creates the new root; an empty subvolume that another run created at the
# same moment does as well. On failure $create_cause says why (see
# cause_of) and $create_error what failed. A failure of no known cause is a
# race with other runs (a root created, then moved away, between two of our
# calls): tried again, up to 10 times.
create_root() {
	_ct=0
	while ! create_root_once; do
		_ct=$((_ct + 1))
		[ "$create_cause" = other ] && [ "$_ct" -lt 10 ] || return 1
	done
}

create_root_once() {
	_err=$(btrfs subvolume create "$rp" 2>&1 >/dev/null) && return 0
	cause_of "$_err"
	create_cause=$cause
	create_error="cannot create $root_sv: ${_err##*: }"
	[ -d "$rp" ] && [ ! -L "$rp" ] || return 1
	_i=$(stat -c %i "$rp") && [ "$_i" = 256 ] || return 1
	set +f
	for _e in "$rp"/* "$rp"/.[!.]* "$rp"/..?*; do
		if [ -e "$_e" ] || [ -L "$_e" ]; then
			set -f
			return 1
		fi
	done
	set -f
	warn "another run created $root_sv at the same time; using it"
}

if [ ! -d "$op" ]; then
	btrfs subvolume create "$op" >/dev/null || [ -d "$op" ] || fail "cannot create $old_sv"
fi
move_error=''
moved_after_deleting=''
if [ -n "$root_ino" ]; then
	if [ "$root_ino" != 256 ] || [ -L "$rp" ]; then
		fail "$root_sv exists but is not a subvolume; left it as it is"
	fi
	move_root
	_moved=$?
	[ "$_moved" -ne 3 ] || fail "$move_error; this boot keeps its old root"
	if [ "$_moved" -eq 1 ] && { [ "$move_cause" = readonly ] || [ "$move_cause" = notpermitted ]; }; then
		explain_refused_move
	fi
	if [ "$_moved" -eq 1 ] && [ "$move_cause" = nospace ]; then
		# A full filesystem: free what retention frees, then try again.
		warn "$move_error; deleting old roots past retention first, then trying again"
		delete_selected
		[ "$deleted" -eq 0 ] || wait_for_space
		move_root
		_moved=$?
		if [ "$_moved" -eq 1 ] && [ "$move_cause" = nospace ] && [ "$deleted" -gt 0 ]; then
			warn "$move_error; returning the chunks the deletion emptied so that metadata can grow, then trying again"
			move_after_returning_chunks
		fi
		[ "$_moved" -eq 0 ] || [ "$_moved" -eq 2 ] ||
			fail "$move_error (deleted $deleted old roots past retention first); this boot keeps its old root"
		moved_after_deleting=1
	fi
	if [ "$_moved" -eq 1 ]; then
		case $move_cause in
		quota) fail "$move_error: a qgroup limit is exceeded (btrfs qgroup show -re shows which); changed nothing, this boot keeps its old root" ;;
		*) fail "$move_error; changed nothing, this boot keeps its old root" ;;
		esac
	fi
	[ "$_moved" -ne 2 ] || warn "$root_sv was moved by another run at the same time"
fi
# No root here means a first boot, or a boot after a stop between the move
# and this line: either way a new root is all that is missing. As with the
# move, only a full filesystem deletes old roots first.
create_cause=''
create_error=''
if ! create_root; then
	_created=''
	if [ "$create_cause" = nospace ]; then
		if [ -z "$deleted_done" ]; then
			warn "$create_error; deleting old roots past retention first, then trying again"
			delete_selected
			[ "$deleted" -eq 0 ] || wait_for_space
		fi
		! create_root || _created=1
	fi
	if [ -z "$_created" ]; then
		case $create_cause in
		quota) create_error="$create_error: a qgroup limit is exceeded (btrfs qgroup show -re shows which)" ;;
		notpermitted) create_error="$create_error: the top level of $device has the immutable attribute (lsattr -d shows it, chattr -i clears it)" ;;
		readonly) create_error="$create_error: the filesystem refuses writes" ;;
		esac
		if [ -n "$rotated_to" ] && mv -T "$op/$rotated_to" "$rp"; then
			rotated_to=
			fail "$create_error; moved the old one back (this boot keeps its old root)"
		fi
		[ -n "$rotated_to" ] ||
			fail "$create_error; there is no $root_sv (a first boot, or the last run stopped right after its move): this boot has no root to mount"
		fail "$create_error; $root_sv is $old_sv/$rotated_to now, and could not be moved back"
	fi
fi

# --- Delete old roots past retention ------------------------------------------

[ -n "$deleted_done" ] || delete_selected
kept=$((count - deleted))
[ -z "$rotated_to" ] || kept=$((kept + 1))

# --- Make it durable -----------------------------------------------------------

btrfs filesystem sync . >/dev/null || fail "btrfs filesystem sync failed"

if [ -n "$rotated_to" ]; then
	message="moved $root_sv to $old_sv/$rotated_to"
	[ -z "$moved_after_deleting" ] || message="$message after deleting old roots past retention to make room"
else
	message="no $root_sv to move (first boot, or the last run stopped right after the move); created a new one"
fi
[ "$clock" = ok ] || message="$message; clock implausible, deleted nothing"
[ "$undeletable" -eq 0 ] || message="$message; could not delete $undeletable old roots past retention (see the warnings)"
exit 0
