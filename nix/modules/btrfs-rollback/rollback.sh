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
#
# Old roots are named by the UTC time of the move, ISO 8601 basic without
# colons: YYYYMMDDTHHMMSSZ, and YYYYMMDDTHHMMSSZ-NN (NN = 01..99) for further
# moves in the same second, so that names sort in time order. Entries of any
# other form, and entries that are not subvolumes, are never deleted.
#
# The clock is implausible before 2026-01-01T00:00:00Z, from
# 2100-01-01T00:00:00Z on, or when it is earlier than the newest old root's
# name. Then nothing is deleted, and the root moves to the name right after
# the newest old root (or to 20260101T000000Z when there is none), so that a
# wrong clock never names a root that later looks older or newer than it is.
#
# Output: warnings on stderr ("btrfs-rollback: warning: ..."), then exactly
# one summary line on stdout:
#   btrfs-rollback: result=ok rotated_to=NAME deleted=N kept=N skipped=N clock=ok ms=N message=TEXT
# The same keys, one per line, go to $BTRFS_ROLLBACK_STATUS_DIR/status
# (result=running while the script runs). On failure the script also writes
# $BTRFS_ROLLBACK_STATUS_DIR/failed and exits non-zero.
#
# Plain POSIX sh (busybox ash, dash, bash). Tools: btrfs, mount, umount,
# mkdir, mv, sort, stat, date, sync. Process calls do not grow with the
# number of old roots.

# $NAME_GLOB is a pattern on purpose wherever it is unquoted in a case.
# shellcheck disable=SC2254

# Byte order for globs and sort: names must sort the same everywhere.
LC_ALL=C
export LC_ALL
set -u
set -f

# 2026-01-01T00:00:00Z and 2100-01-01T00:00:00Z: the plausible clock range.
CLOCK_FLOOR=1767225600
CLOCK_CEILING=4102444800
NL='
'
# The shape of an old root's name (without the -NN suffix).
NAME_GLOB='[0-9][0-9][0-9][0-9][0-1][0-9][0-3][0-9]T[0-2][0-9][0-5][0-9][0-5][0-9]Z'

result=running
rotated_to=
deleted=0
kept=0
skipped=0
clock=ok
message=
mounted=
finished=
_ino='' _sel='' _key=''

start_ms=0
status_dir=

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
# else `date +%s` (whole seconds). Other shells leave EPOCHREALTIME unset.
# shellcheck disable=SC3028
read_ms() {
	case ${EPOCHREALTIME-} in
	[0-9]*.[0-9][0-9][0-9][0-9][0-9][0-9])
		now_ms=$((${EPOCHREALTIME%.*} * 1000 + (1${EPOCHREALTIME#*.} - 1000000) / 1000))
		return
		;;
	esac
	if [ -r /proc/uptime ] && read -r _up _rest </proc/uptime; then
		case $_up in
		[0-9]*.[0-9][0-9])
			now_ms=$((${_up%.*} * 1000 + (1${_up#*.} - 100) * 10))
			return
			;;
		esac
	fi
	_t=$(date +%s 2>/dev/null) || _t=
	case $_t in '' | *[!0-9]*) _t=0 ;; esac
	now_ms=$((_t * 1000))
}

# Parses an old root's name. Sets name_key (epoch * 100 + suffix, which
# orders names exactly as they sort) and returns 0, or returns 1 when the
# name is not one this script gives (bad shape, no such date, year < 1970,
# suffix -00). It runs once per entry, so it is a few commands with many
# expansions: command dispatch is what costs in a shell.
parse_name() {
	case $1 in
	$NAME_GLOB) _b=$1 _n2=00 _min=0 ;;
	$NAME_GLOB-[0-9][0-9]) _b=${1%-*} _n2=${1##*-} _min=1 ;;
	*) return 1 ;;
	esac
	# Fixed-width fields cut with patterns (dash has no ${v:o:l}):
	# _r=MMDDTHHMMSSZ, _dd=DDTHHMMSSZ, _t=HHMMSSZ, _mm=MMSSZ, _ss=SSZ.
	_r=${_b#????} _t=${_b#????????T}
	_dd=${_r#??} _mm=${_t#??} _ss=${_t#????}
	# A leading 1 keeps zero-padded fields decimal (08 is bad octal).
	: $((_Y = 1${_b%????????????} - 10000)) $((_M = 1${_r%??????????} - 100)) \
		$((_D = 1${_dd%????????} - 100)) $((_h = 1${_t%?????} - 100)) \
		$((_mi = 1${_mm%???} - 100)) $((_s = 1${_ss%?} - 100)) $((_sfx = 1$_n2 - 100))
	# Days in the month: February by the leap rule, else 30 + (M + M/8) % 2.
	[ $((_Y >= 1970 && _M >= 1 && _M <= 12 && _D >= 1 && _h <= 23 && _sfx >= _min &&
		_D <= (_M == 2 ? 28 + (_Y % 4 == 0 && (_Y % 100 != 0 || _Y % 400 == 0)) : 30 + (_M + _M / 8) % 2))) -eq 1 ] ||
		return 1
	# Days since 1970-01-01 (days_from_civil, proleptic Gregorian).
	: $((_y = _Y - (_M <= 2))) $((_era = _y / 400)) $((_yoe = _y - _era * 400)) \
		$((_doy = (153 * ((_M + 9) % 12) + 2) / 5 + _D - 1)) \
		$((_days = _era * 146097 + _yoe * 365 + _yoe / 4 - _yoe / 100 + _doy - 719468))
	# shellcheck disable=SC2034 # read through eval
	name_key=$(((_days * 86400 + _h * 3600 + _mi * 60 + _s) * 100 + _sfx))
}

# The name for key $1 (epoch * 100 + suffix), in $key_name.
name_of_key() {
	_e=$(($1 / 100))
	_sfx=$(($1 % 100))
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
	# after a leading 1 of 10000 + Y, 100 + M, ...
	_f=$((10000 + _Y)) _f2=$((100 + _M)) _f3=$((100 + _D)) _f4=$((100 + _sod / 3600))
	_f5=$((100 + _sod % 3600 / 60)) _f6=$((100 + _sod % 60)) _f7=$((100 + _sfx))
	key_name=${_f#1}${_f2#1}${_f3#1}T${_f4#1}${_f5#1}${_f6#1}Z
	if [ "$_sfx" -gt 0 ]; then key_name=$key_name-${_f7#1}; fi
}

# Per-name facts live in variables key_<v>, ino_<v>, sel_<v>, listed_<v>,
# where <v> is ${name%-*}_${name#*-} (20260101T000000Z-01 gives
# 20260101T000000Z_01, and a name without suffix gives NAME_NAME). It is
# written out inline in the loops because function calls are slow in bash,
# and only ever applied to names of the old-root shape, so eval sees
# nothing but [0-9TZ_].

write_status() {
	[ -n "$status_dir" ] || return 0
	printf 'result=%s\nrotated_to=%s\ndeleted=%s\nkept=%s\nskipped=%s\nclock=%s\nms=%s\nmessage=%s\n' \
		"$result" "$rotated_to" "$deleted" "$kept" "$skipped" "$clock" "$1" "$message" \
		>"$status_dir/status"
}

# Called by the EXIT trap.
# shellcheck disable=SC2317
on_exit() {
	_rc=$?
	trap - EXIT
	[ -n "$finished" ] && return
	finished=1
	if [ "$result" = running ]; then
		if [ "$_rc" -eq 0 ]; then
			result=ok
		else
			result=failed
			[ -n "$message" ] || message="stopped with status $_rc"
		fi
	fi
	if [ -n "$mounted" ]; then
		if ! umount "$mountpoint"; then
			warn "could not unmount $mountpoint"
			result=failed
			[ -n "$message" ] || message="could not unmount $mountpoint"
		fi
	fi
	read_ms
	_ms=$((now_ms - start_ms))
	[ "$_ms" -ge 0 ] || _ms=0
	if [ -n "$status_dir" ]; then
		if ! write_status "$_ms" 2>/dev/null; then
			warn "could not write $status_dir/status"
			result=failed
		elif [ "$result" = failed ]; then
			printf '%s\n' "$message" >"$status_dir/failed" ||
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
mountpoint=${BTRFS_ROLLBACK_MOUNTPOINT:-/btrfs_tmp}
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

case $status_dir_wanted in
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

# 64-bit arithmetic: epoch milliseconds and 2100 do not fit in 32 bits.
[ $((2147483647 + 1)) -gt 0 ] || fail "this shell's arithmetic is not 64-bit"

case $device in
/*) ;;
*) fail "DEVICE must be an absolute path, got '$device'" ;;
esac
case $mountpoint in
/ | *"$NL"*) fail "BTRFS_ROLLBACK_MOUNTPOINT must not be / or contain a newline" ;;
/*) ;;
*) fail "BTRFS_ROLLBACK_MOUNTPOINT must be an absolute path" ;;
esac
for _sv in "$root_sv" "$old_sv"; do
	case $_sv in
	'' | . | .. | */* | *"$NL"*) fail "invalid subvolume name '$_sv'" ;;
	esac
done
[ "$root_sv" != "$old_sv" ] || fail "the root and old-roots subvolumes must differ"
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

root_path=$mountpoint/$root_sv
old_path=$mountpoint/$old_sv

# --- Mount the top level ---------------------------------------------------

[ -d "$mountpoint" ] || mkdir -p "$mountpoint" || fail "cannot create $mountpoint"
mount -t btrfs -o subvolid=5,noatime "$device" "$mountpoint" ||
	fail "cannot mount the top level of $device at $mountpoint"
mounted=1

# --- Look at what is there (no changes yet) --------------------------------

# Entries of @old_roots: names of our form are collected in $names; anything
# else is counted as skipped and never touched.
names=
if [ -L "$old_path" ] || { [ -e "$old_path" ] && [ ! -d "$old_path" ]; }; then
	fail "$old_path exists but is not a directory"
fi
skipped_names=
in_order=1 _last_key=-1
if [ -d "$old_path" ]; then
	set +f
	for _e in "$old_path"/* "$old_path"/.[!.]* "$old_path"/..?*; do
		[ -e "$_e" ] || [ -L "$_e" ] || continue
		_n=${_e##*/}
		if parse_name "$_n"; then
			# Globs sort in byte order (LC_ALL=C), which for our names is
			# time order; sort(1) is the fallback if that ever fails.
			[ "$name_key" -gt "$_last_key" ] || in_order=
			_last_key=$name_key
			names="$names $_n"
			eval "key_${_n%-*}_${_n#*-}=\$name_key"
		else
			skipped=$((skipped + 1))
			skipped_names="$skipped_names '$_n'"
		fi
	done
	set -f
fi

# One stat for the top level, the root and every candidate: a subvolume's
# top directory is inode 256, any other file or directory has a higher one.
# Arguments are joined with newlines and split once ("set -- "$@" x" in a
# loop is quadratic); no path here holds a newline.
_args=$mountpoint
if [ -e "$root_path" ] || [ -L "$root_path" ]; then _args=$_args$NL$root_path; fi
for _n in $names; do _args=$_args$NL$old_path/$_n; done
IFS=$NL
# shellcheck disable=SC2086 # split on newlines only
set -- $_args
stat_out=$(stat -c '%i %n' "$@") || fail "stat failed on the top level of $device"
top_ino='' root_ino=''
for _l in $stat_out; do
	_ino=${_l%% *}
	_p=${_l#* }
	case $_p in
	"$mountpoint") top_ino=$_ino ;;
	"$root_path") root_ino=$_ino ;;
	"$old_path"/*)
		_n=${_p#"$old_path"/}
		case $_n in $NAME_GLOB | $NAME_GLOB-[0-9][0-9]) ;; *) continue ;; esac
		eval "ino_${_n%-*}_${_n#*-}=\$_ino"
		;;
	esac
done
unset IFS
[ "$top_ino" = 256 ] || fail "$mountpoint is not the top level of a Btrfs filesystem"

# Old roots (subvolumes with our names) in time order, and the newest name of
# our form, whatever it is, since a new name must sort after it.
roots=
count=0
newest_key=
if [ -n "$names" ]; then
	sorted=$names
	if [ -z "$in_order" ]; then
		# shellcheck disable=SC2086 # one word per name
		sorted=$(printf '%s\n' $names | sort) || fail "sort failed"
	fi
	for _n in $sorted; do
		eval "newest_key=\$key_${_n%-*}_${_n#*-} _ino=\${ino_${_n%-*}_${_n#*-}-}"
		if [ "$_ino" = 256 ]; then
			roots="$roots $_n"
			count=$((count + 1))
		else
			skipped=$((skipped + 1))
			skipped_names="$skipped_names '$_n' (not a subvolume)"
		fi
	done
fi
if [ "$skipped" -gt 0 ]; then
	warn "left $skipped entries in $old_sv that are not old roots:$skipped_names"
fi

# --- The clock ---------------------------------------------------------------

newest_epoch=
[ -z "$newest_key" ] || newest_epoch=$((newest_key / 100))
if [ "$now" -lt "$CLOCK_FLOOR" ]; then
	clock=implausible
	warn "the clock ($now) is before 2026-01-01; deleting nothing"
elif [ "$now" -ge "$CLOCK_CEILING" ]; then
	clock=implausible
	warn "the clock ($now) is after 2100-01-01; deleting nothing"
elif [ -n "$newest_epoch" ] && [ "$now" -lt "$newest_epoch" ]; then
	clock=implausible
	name_of_key "$newest_key"
	warn "the clock ($now) is earlier than the newest old root $key_name; deleting nothing"
fi

# The new old root's name: the time of the move when the clock is right and
# it sorts after every existing name; otherwise the next name after the
# newest (or the floor on an empty @old_roots).
if [ "$clock" = ok ] && { [ -z "$newest_key" ] || [ "$((now * 100))" -gt "$newest_key" ]; }; then
	target_key=$((now * 100))
elif [ -n "$newest_key" ]; then
	if [ $((newest_key % 100)) -lt 99 ]; then
		target_key=$((newest_key + 1))
	else
		target_key=$((newest_key / 100 * 100 + 100))
	fi
else
	target_key=$((CLOCK_FLOOR * 100))
fi
name_of_key "$target_key"
target=$key_name

# --- Rotate ------------------------------------------------------------------

if [ ! -d "$old_path" ]; then
	btrfs subvolume create "$old_path" >/dev/null || fail "cannot create $old_sv"
fi
if [ -n "$root_ino" ]; then
	if [ "$root_ino" != 256 ] || [ -L "$root_path" ]; then
		fail "$root_sv exists but is not a subvolume; left it as it is"
	fi
	if [ -e "$old_path/$target" ] || [ -L "$old_path/$target" ]; then
		fail "$old_sv/$target already exists"
	fi
	mv "$root_path" "$old_path/$target" || fail "cannot move $root_sv to $old_sv/$target"
	rotated_to=$target
	eval "key_${target%-*}_${target#*-}=\$target_key"
	roots="$roots $target"
	count=$((count + 1))
fi
# No root here means a first boot, or a boot after a stop between the move
# and this line: either way a new root is all that is missing.
if ! btrfs subvolume create "$root_path" >/dev/null; then
	if [ -n "$rotated_to" ] && mv "$old_path/$rotated_to" "$root_path"; then
		fail "cannot create a new $root_sv; moved the old one back (this boot keeps its old root)"
	fi
	fail "cannot create $root_sv"
fi

# --- Delete old roots past retention ------------------------------------------

selected=0
if [ "$clock" = ok ]; then
	oldest_kept_index=$((count - keep_at_least))
	cutoff=$((now - retention_days * 86400))
	_i=0
	for _n in $roots; do
		[ "$_i" -lt "$oldest_kept_index" ] || break
		_i=$((_i + 1))
		eval "_key=\$key_${_n%-*}_${_n#*-}"
		[ $((_key / 100)) -lt "$cutoff" ] || continue
		eval "sel_${_n%-*}_${_n#*-}=1"
		selected=$((selected + 1))
	done
fi

failed_deletes=0
listed=0
if [ "$selected" -gt 0 ]; then
	# One listing of the whole filesystem finds the subvolumes nested in the
	# selected roots (systemd and container tools create them).
	list=$(btrfs subvolume list "$mountpoint") || fail "cannot list the subvolumes of $device"
	paths=
	IFS=$NL
	for _l in $list; do
		_p=${_l#* path }
		case $_p in "$old_sv"/*) ;; *) continue ;; esac
		_rest=${_p#"$old_sv"/}
		_n=${_rest%%/*}
		case $_n in $NAME_GLOB | $NAME_GLOB-[0-9][0-9]) ;; *) continue ;; esac
		eval "_sel=\${sel_${_n%-*}_${_n#*-}-}"
		[ "$_sel" = 1 ] || continue
		case /$_rest/ in
		*/./* | */../* | *//*) fail "odd path in the subvolume list: $_p" ;;
		esac
		if [ "$_rest" = "$_n" ]; then
			eval "listed_${_n%-*}_${_n#*-}=1"
			listed=$((listed + 1))
		fi
		paths=$paths$NL$mountpoint/$_p
	done
	# stat and the listing must agree that every selected root is a
	# subvolume; otherwise something is off and nothing is deleted.
	[ "$listed" -eq "$selected" ] ||
		fail "$selected old roots selected but $listed of them listed as subvolumes; deleted nothing"
	# Every path is @old_roots/<selected name>[/...], deepest first: a
	# parent sorts before its children, so reverse order deletes children
	# first.
	# shellcheck disable=SC2086 # one word per line (IFS is a newline)
	sorted=$(printf '%s\n' $paths | sort -r) || fail "sort failed"
	# shellcheck disable=SC2086 # split on newlines only
	set -- $sorted
	unset IFS
	if [ $# -gt 0 ] && ! btrfs subvolume delete "$@" >/dev/null; then
		warn "btrfs subvolume delete reported errors"
	fi
	# A root is deleted when its name is gone; what is left is finished at a
	# later boot, since it stays selected.
	for _n in $roots; do
		eval "_sel=\${sel_${_n%-*}_${_n#*-}-}"
		[ "$_sel" = 1 ] || continue
		if [ -e "$old_path/$_n" ]; then
			failed_deletes=$((failed_deletes + 1))
		else
			deleted=$((deleted + 1))
		fi
	done
fi
kept=$((count - deleted))

# --- Make it durable -----------------------------------------------------------

btrfs filesystem sync "$mountpoint" >/dev/null || fail "btrfs filesystem sync failed"

if [ "$failed_deletes" -gt 0 ]; then
	fail "could not delete $failed_deletes old roots past retention; they are retried at the next boot"
fi
if [ -n "$rotated_to" ]; then
	message="moved $root_sv to $old_sv/$rotated_to"
else
	message="no $root_sv to move (first boot, or the last run stopped right after the move); created a new one"
fi
[ "$clock" = ok ] || message="$message; clock implausible, deleted nothing"
exit 0
