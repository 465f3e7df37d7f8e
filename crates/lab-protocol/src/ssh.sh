#!/bin/sh
# ssh in the vm-test lab VM, which has no network: the admin's workstation
# and the server are this one VM. `ssh [-p PORT] [-t|-T] USER@HOST COMMAND...`
# runs COMMAND as ssh has the server run it: its words joined by spaces and
# read by the user's login shell (bash on NixOS), with ssh's standard input
# and output. Only the user running it may be named (and root@ in the lab's
# rescue boot, where the rescue system's root runs it); an interactive login
# (no COMMAND) and other options are refused, so that a procedure never
# relies on something the lab cannot show.
while [ $# -gt 0 ]; do
	case $1 in
	-p)
		shift 2
		;;
	-t | -T | -q)
		shift
		;;
	--)
		shift
		break
		;;
	-*)
		echo "ssh (vm-test lab): option $1 is not supported" >&2
		exit 255
		;;
	*) break ;;
	esac
done
if [ $# -eq 0 ]; then
	echo "usage: ssh [-p PORT] USER@HOST COMMAND..." >&2
	exit 255
fi
destination=$1
shift
case $destination in
*@*) user=${destination%%@*} ;;
*) user=$USER ;;
esac
if [ $# -gt 0 ] && [ "$user" = root ] && [ -e /run/xtask-rescue ] && [ -d /run/xtask-path/rescue ]; then
	# The rescue system (§4.6): root logs in there, with its commands.
	PATH=/run/xtask-path/rescue exec /usr/local/bin/sudo -n bash -c "$*"
fi
if [ "$user" != "$USER" ]; then
	echo "ssh (vm-test lab): $user@ is not $USER, the user running it; the lab logs in as the admin only" >&2
	exit 255
fi
if [ $# -eq 0 ]; then
	echo "ssh (vm-test lab): an interactive login is not possible in the lab" >&2
	exit 255
fi
# The remote command runs with the server's commands (crates/guest/src/
# admin/shell.rs, path_for), whatever the workstation has.
if [ -d /run/xtask-path/server ]; then
	PATH=/run/xtask-path/server
fi
exec bash -c "$*"
