# Snapshots of /persist with btrbk, into @snapshots (mounted at /.snapshots).
# docs/snapshots.md explains the retention and how to restore.
{
  services.btrbk.instances.persist = {
    onCalendar = "hourly";
    settings = {
      # Every snapshot younger than 2 days is kept; older ones thin out to
      # hourly for 48 hours, daily for 14 days and weekly for 8 weeks.
      # Both are needed: btrbk's defaults keep every snapshot forever.
      snapshot_preserve_min = "2d";
      snapshot_preserve = "48h 14d 8w";
      # The top level (subvolid=5, disko.nix); both paths below are relative to it.
      volume."/btrfs_tmp" = {
        snapshot_dir = "@snapshots";
        subvolume."@persist" = { };
      };
    };
  };
}
