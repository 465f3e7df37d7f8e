#!/bin/sh
# sudo for the vm-test lab VM, where every command already runs as root: it
# runs COMMAND as root, which is what `sudo COMMAND` does for the server's
# admin (a wheel member). The lab leaves out only the authentication.
# Options that change only how sudo asks or which environment it keeps are
# accepted; any other (another user, a login shell) is refused, so that a
# procedure never relies on something the lab cannot show.
while [ $# -gt 0 ]; do
	case $1 in
	-E | -H | -n | --preserve-env | --non-interactive) shift ;;
	--)
		shift
		break
		;;
	-*)
		echo "sudo (vm-test lab): option $1 is not supported" >&2
		exit 1
		;;
	*) break ;;
	esac
done
if [ $# -eq 0 ]; then
	echo "usage: sudo COMMAND [ARG...]" >&2
	exit 1
fi
exec "$@"
