# The root rollback (nix/modules/btrfs-rollback): in stage 1, before / is
# mounted, @root moves into @old_roots under its rotation time and an empty
# @root takes its place. What must survive is on its own subvolume or in
# /persist (persistence.nix).
{
  boot.btrfsRollback = {
    enable = true;
    # The device defaults to the Btrfs partition disko declares
    # (/dev/disk/by-partlabel/disk-main-root); the names below are the
    # subvolumes of disko.nix.
    rootSubvolume = "@root";
    oldRootsSubvolume = "@old_roots";
    # The top level is mounted here in the initrd; the running system
    # mounts it at the same path (disko.nix) to reach @old_roots.
    mountPoint = "/btrfs_tmp";
    # Old roots are kept a month for recovering files from a past boot; the
    # newest few survive even a long shutdown.
    retentionDays = 30;
    keepAtLeast = 5;
  };
}
