# Root rollback at boot: in the initrd, before / is mounted, move the root
# subvolume to the old-roots subvolume under the time of the move, create an
# empty root, and delete old roots past their retention. The work is done by
# ./rollback.sh, the very file the loop-device tests run; docs/rollback.md
# explains it.
#
# With boot.initrd.systemd.enable (the default since NixOS 26.05) it is an
# initrd service ordered before sysroot.mount; otherwise it runs from
# boot.initrd.postResumeCommands under busybox. Either way it fails open:
# a failed rotation is loud (console, journal, /run/btrfs-rollback/failed,
# and btrfs-rollback-status.service failing in the running system) but the
# machine still boots, on the old root.
{
  config,
  lib,
  pkgs,
  utils,
  ...
}:
let
  cfg = config.boot.btrfsRollback;

  # The deployed file is the tested file: copied to the store as it is.
  rollbackScript = builtins.path {
    path = ./rollback.sh;
    name = "btrfs-rollback.sh";
  };

  # Survives switch-root: the systemd initrd and the scripted initrd both
  # hand /run over to the running system.
  statusDir = "/run/btrfs-rollback";

  # The subvolume a fileSystems entry mounts (its subvol= option, without a
  # leading /), or null.
  subvolumeOf =
    fs:
    let
      found = lib.filter (lib.hasPrefix "subvol=") (fs.options or [ ]);
    in
    if found == [ ] then null else lib.removePrefix "/" (lib.removePrefix "subvol=" (lib.head found));

  # Every subvolume the system mounts at another path than /: never the
  # root to wipe, never the place whose old roots are deleted.
  mountedElsewhere = lib.filter (sv: sv != null) (
    lib.mapAttrsToList (path: fs: if path == "/" then null else subvolumeOf fs) config.fileSystems
  );
  rootMounted = subvolumeOf (config.fileSystems."/" or { });

  environment = {
    BTRFS_ROLLBACK_MOUNTPOINT = cfg.mountPoint;
    BTRFS_ROLLBACK_MOUNTED_SUBVOLUMES = lib.concatStringsSep " " mountedElsewhere;
    BTRFS_ROLLBACK_ROOT_SUBVOLUME = cfg.rootSubvolume;
    BTRFS_ROLLBACK_OLD_ROOTS_SUBVOLUME = cfg.oldRootsSubvolume;
    BTRFS_ROLLBACK_RETENTION_DAYS = toString cfg.retentionDays;
    BTRFS_ROLLBACK_KEEP_AT_LEAST = toString cfg.keepAtLeast;
    BTRFS_ROLLBACK_STATUS_DIR = statusDir;
    BTRFS_ROLLBACK_WAIT_SECONDS = toString waitSeconds;
  };

  device = if cfg.device == null then "" else cfg.device;

  systemdInitrd = config.boot.initrd.systemd.enable;

  # Where the scripted initrd finds the script (boot.initrd.extraFiles).
  scriptedInitrdPath = "/etc/btrfs-rollback.sh";

  subvolumeName = lib.types.strMatching "[^/[:space:]]+";

  bash = "${pkgs.bashInteractive}/bin/bash";

  # Every step of the rollback is bounded, in both initrds (a oneshot
  # service has no start timeout unless it is given one). A rotation takes
  # well under a second, and deleting 10 000 old roots about 4 s
  # (docs/benchmarks.md); the limit is for a hang (a `btrfs` command stuck
  # on a failing disk, `btrfs subvolume sync` in the full-filesystem path).
  # At the limit the script gets SIGTERM: it traps it, records
  # result=failed message=terminated in the status file and unmounts;
  # whatever still runs gets SIGKILL `killSeconds` later. The script
  # survives a stop at any line (docs/rollback.md), and what the boot does
  # next is in docs/troubleshooting.md ("The rollback hangs or times out").
  timeoutSeconds = 180;
  killSeconds = 15;
  # The longest one wait of the script's full-filesystem path may take (a
  # commit or `btrfs subvolume sync`; on a timeout it tries the move anyway).
  # That path waits at most 13 times, with 10 s of pauses (rollback.sh:
  # wait_for_space, move_after_returning_chunks): 13 * 10 + 10 = 140 s, so
  # a slow commit never uses up timeoutSeconds before the move is retried.
  waitSeconds = 10;
  # How long the scripted initrd waits for the device node to appear.
  deviceWaitSeconds = 10;
in
{
  options.boot.btrfsRollback = {
    enable = lib.mkEnableOption ''
      wiping the root at every boot: in the initrd, the Btrfs root subvolume
      is moved to the old-roots subvolume, named by the UTC time of the move,
      an empty root subvolume takes its place, and old roots past the
      retention are deleted (see docs/rollback.md)
    '';

    device = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = config.fileSystems."/".device or null;
      defaultText = lib.literalExpression ''config.fileSystems."/".device or null'';
      example = "/dev/disk/by-partlabel/disk-main-root";
      description = ''
        The Btrfs block device that holds the root subvolume. The default
        is the device of the root file system, which disko sets to the
        root partition's /dev/disk/by-partlabel path.
      '';
    };

    rootSubvolume = lib.mkOption {
      type = subvolumeName;
      default = "@root";
      description = "The subvolume mounted at /, directly below the top level.";
    };

    oldRootsSubvolume = lib.mkOption {
      type = subvolumeName;
      default = "@old_roots";
      description = ''
        The subvolume below the top level that old roots are moved into. It
        is created on the first boot if it is missing.
      '';
    };

    retentionDays = lib.mkOption {
      type = lib.types.ints.unsigned;
      default = 30;
      description = ''
        Old roots older than this many days are deleted. The age comes from
        an old root's name (the time it was moved), never from a
        modification time.
      '';
    };

    keepAtLeast = lib.mkOption {
      type = lib.types.ints.unsigned;
      default = 5;
      description = ''
        The newest this many old roots (counting the one moved at this
        boot) are never deleted, whatever their age, so that a server that
        was off for longer than the retention keeps its recent history.
      '';
    };

    mountPoint = lib.mkOption {
      type = lib.types.strMatching "/.+";
      default = "/btrfs_tmp";
      description = ''
        Where the initrd mounts the top level (subvolid=5) while it rotates
        the root; it is unmounted again before the root is mounted.
      '';
    };

    mountsNeededForBoot = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [
        "/persist"
        "/var/log"
      ];
      description = ''
        Mount points that must be mounted in the initrd
        (`fileSystems.<path>.neededForBoot`): what survives the wipe must be
        there before impermanence binds from it and the journal writes.
      '';
    };
  };

  config = lib.mkIf cfg.enable (
    lib.mkMerge [
      {
        assertions = [
          {
            assertion = cfg.device != null && lib.hasPrefix "/" device;
            message = ''
              boot.btrfsRollback.device is not set to an absolute device path (got ${
                if cfg.device == null then "null" else cfg.device
              }); set it, or define fileSystems."/".device (disko does).
            '';
          }
          {
            assertion = cfg.rootSubvolume != cfg.oldRootsSubvolume;
            message = "boot.btrfsRollback.rootSubvolume and oldRootsSubvolume must differ.";
          }
          {
            assertion = rootMounted == cfg.rootSubvolume;
            message = ''
              boot.btrfsRollback.rootSubvolume is ${cfg.rootSubvolume}, but / is mounted
              from ${if rootMounted == null then "no subvol= option" else "subvol=${rootMounted}"}:
              the subvolume wiped at every boot must be the one mounted at /.
              Set rootSubvolume to it, or fileSystems."/".options to subvol=${cfg.rootSubvolume}.
            '';
          }
          {
            assertion = !lib.elem cfg.oldRootsSubvolume (mountedElsewhere ++ [ rootMounted ]);
            message = ''
              boot.btrfsRollback.oldRootsSubvolume is ${cfg.oldRootsSubvolume}, which
              fileSystems mounts: old roots past retention are deleted from it, so it
              must be a subvolume mounted nowhere (the default @old_roots).
            '';
          }
        ]
        ++ map (path: {
          assertion = (config.fileSystems.${path} or { neededForBoot = false; }).neededForBoot;
          message = ''
            boot.btrfsRollback wipes / at every boot, so ${path} must be a
            mount of its own with fileSystems."${path}".neededForBoot = true.
          '';
        }) cfg.mountsNeededForBoot;

        # btrfs-progs in the initrd: nixos/modules/tasks/filesystems/btrfs.nix
        # (nixpkgs master, 2026) adds it to boot.initrd.systemd.initrdBin, or
        # copies `btrfs` into the scripted initrd's extra-utils, for every
        # filesystem type listed here.
        boot.initrd.supportedFilesystems.btrfs = true;

        # Makes a failure in the initrd visible in the running system:
        # `systemctl --failed` lists this unit and the journal has why.
        systemd.services.btrfs-rollback-status = {
          description = "Report the root rollback done in the initrd";
          wantedBy = [ "multi-user.target" ];
          serviceConfig = {
            Type = "oneshot";
            RemainAfterExit = true;
            # It reads two files in /run.
            TimeoutStartSec = "30s";
          };
          script = ''
            status=${lib.escapeShellArg "${statusDir}/status"}
            failed=${lib.escapeShellArg "${statusDir}/failed"}
            if [ ! -e "$status" ]; then
              echo "btrfs-rollback: no $status: the root rollback did not run in the initrd" >&2
              exit 1
            fi
            if [ ! -s "$status" ]; then
              echo "btrfs-rollback: $status is empty: the rollback could not write it (a full /run?); its summary line is in the journal of this boot" >&2
              exit 1
            fi
            cat "$status"
            if [ -e "$failed" ]; then
              echo "btrfs-rollback: the root rollback FAILED: $(cat "$failed")" >&2
              exit 1
            fi
            if ! grep -qx 'result=ok' "$status"; then
              echo "btrfs-rollback: the root rollback did not finish (stopped in the initrd)" >&2
              exit 1
            fi
          '';
        };
      }

      (lib.mkIf systemdInitrd {
        boot.initrd.systemd.storePaths = [
          rollbackScript
          # The bash of the initrd's /bin (nixos/modules/system/boot/systemd/
          # initrd.nix puts pkgs.bashInteractive into initrdBin), so nothing
          # is copied twice; listed so that the unit does not rely on it.
          bash
        ];
        boot.initrd.systemd.services.btrfs-rollback = {
          description = "Move the old root aside and create an empty one";
          wantedBy = [ "initrd.target" ];
          requires = [ "${utils.escapeSystemdPath device}.device" ];
          after = [
            "${utils.escapeSystemdPath device}.device"
            # Never rotate a root that a hibernated system still has mounted.
            "systemd-hibernate-resume.service"
          ];
          before = [
            "sysroot.mount"
            "shutdown.target"
          ];
          conflicts = [ "shutdown.target" ];
          unitConfig.DefaultDependencies = false;
          inherit environment;
          serviceConfig = {
            Type = "oneshot";
            # Tools come from the initrd's /bin (PATH=/bin:/sbin): coreutils
            # (timeout and sleep among them) and util-linux's mount and
            # umount from initrd.nix (boot.initrd.systemd.initrdBin, nixpkgs
            # 00e6b22b), btrfs-progs from btrfs.nix (supportedFilesystems
            # above).
            ExecStart = utils.escapeSystemdExecArgs [
              bash
              rollbackScript
              device
            ];
            StandardOutput = "journal+console";
            StandardError = "journal+console";
            # Fails open: only wanted by initrd.target, so a failure is
            # reported and the boot goes on.
            #
            # Bounded: at the limit systemd stops the unit (SIGTERM, then
            # SIGKILL after TimeoutStopSec) and it fails with
            # Result=timeout. sysroot.mount is only ordered after it, so
            # the boot goes on: on the old root when the script stopped
            # before the move or put the root back, on the new root when
            # it stopped after creating it. Stopped between the move and
            # the new root, @root is missing: sysroot.mount fails,
            # initrd-root-fs.target fails and systemd's OnFailure= starts
            # emergency.target, whose shell stays locked (boot.initrd.
            # systemd.emergencyAccess is false: nixpkgs' nixos/modules/
            # system/boot/systemd/initrd.nix, NixOS/nixpkgs 00e6b22b508f,
            # writes root:* into the initrd's /etc/shadow). A reset then
            # boots again, and the next rollback creates the missing root;
            # if it hangs again, the Hetzner rescue system is the way in.
            # The device the unit requires is bounded by systemd's
            # DefaultDeviceTimeoutSec (90 s): without it, the unit and
            # sysroot.mount fail and the boot ends in the same emergency
            # mode.
            TimeoutStartSec = "${toString timeoutSeconds}s";
            TimeoutStopSec = "${toString killSeconds}s";
          };
        };
      })

      (lib.mkIf (!systemdInitrd) {
        boot.initrd.extraFiles.${scriptedInitrdPath}.source = rollbackScript;
        # stage-1-init.sh runs postDeviceCommands (where btrfs.nix puts
        # `btrfs device scan`), then tries to resume from hibernation, then
        # postResumeCommands, then mounts the file systems. The rotation
        # belongs after the resume: a hibernated system still has its root
        # mounted (nixpkgs commit 2a4b82c46141, "nixos/boot: add
        # postResumeCommands option", in NixOS since 24.05, added the hook
        # for exactly this). The text is pasted into stage-1-init.sh by
        # substitutions of @name@ placeholders: never write one here.
        # busybox provides every tool but btrfs (stage-1.nix copies every
        # applet of pkgs.busybox into extra-utils: timeout and sleep too): at the
        # limit the script gets SIGTERM (and SIGKILL after killSeconds),
        # the module prints FAILED and stage 1 goes on to mount the
        # root; a missing @root then fails that mount, and stage-1-init.sh
        # stops in its fail() prompt, which without boot.shell_on_fail
        # offers no shell, only `r` (reboot: the next rollback creates the
        # missing root) or going on; else the Hetzner rescue system.
        boot.initrd.postResumeCommands = lib.mkAfter ''
          btrfs_rollback_device=${lib.escapeShellArg device}
          btrfs_rollback_wait=0
          while [ ! -e "$btrfs_rollback_device" ] && [ "$btrfs_rollback_wait" -lt ${toString deviceWaitSeconds} ]; do
            sleep 1
            btrfs_rollback_wait=$((btrfs_rollback_wait + 1))
          done
          if ! ${
            lib.concatStringsSep " " (
              lib.mapAttrsToList (name: value: "${name}=${lib.escapeShellArg value}") environment
            )
          } timeout -s TERM -k ${toString killSeconds} ${toString timeoutSeconds} ash ${scriptedInitrdPath} "$btrfs_rollback_device"; then
            echo "btrfs-rollback: FAILED; booting on (see ${statusDir}/status)"
          fi
        '';
      })
    ]
  );
}
