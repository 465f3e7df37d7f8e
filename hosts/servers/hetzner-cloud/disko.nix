# Disk layout of the Hetzner Cloud CPX52 (480 GB on /dev/sda, BIOS or UEFI).
#
# A plain attribute set, so it is both a NixOS module (imported by default.nix
# next to disko's module) and a file that `nix-instantiate --eval --strict --json`
# reads without nixpkgs. `cargo xtask check` judges exactly this file.
#
# Btrfs applies compress, ssd, discard, space_cache and nodatacow to the whole
# filesystem: the first mount decides them and later mounts cannot change them
# (btrfs(5), MOUNT OPTIONS). Every mount therefore carries the same options,
# one filesystem-wide zstd:1 serves every subvolume, and @containers gets
# No_COW through a file attribute (+C) instead of a mount option that would
# do nothing. docs/subvolumes.md explains the choice.
let
  # Identical on every mount of the filesystem; only noatime is per mount.
  btrfsMountOptions = [
    "compress=zstd:1"
    "noatime"
    "ssd"
    "space_cache=v2"
    "discard=async"
  ];

  subvolumeAt = mountpoint: {
    inherit mountpoint;
    mountOptions = btrfsMountOptions;
  };
in
{
  disko.devices.disk.main = {
    type = "disk";
    device = "/dev/sda";
    content = {
      type = "gpt";
      partitions = {
        # GRUB's core image on BIOS machines; disko creates EF02 first.
        boot = {
          size = "1M";
          type = "EF02";
        };
        ESP = {
          size = "1G";
          type = "EF00";
          content = {
            type = "filesystem";
            format = "vfat";
            mountpoint = "/boot";
            # Kernels, initrds and the GRUB config are for root only:
            # directories 0700 and files 0600 (vfat has no execute bit,
            # so umask=0077 alone would leave files 0700).
            mountOptions = [
              "fmask=0177"
              "dmask=0077"
            ];
          };
        };
        swap = {
          size = "32G";
          content = {
            type = "swap";
            # A fresh random key at every boot: nothing in swap outlives a reboot.
            randomEncryption = true;
          };
        };
        root = {
          size = "100%";
          content = {
            type = "btrfs";
            extraArgs = [ "-f" ];
            # The top level (subvolid=5) for management and the root rollback.
            mountpoint = "/btrfs_tmp";
            mountOptions = btrfsMountOptions ++ [ "subvolid=5" ];
            subvolumes = {
              "@root" = subvolumeAt "/";
              "@nix" = subvolumeAt "/nix";
              "@persist" = subvolumeAt "/persist";
              "@log" = subvolumeAt "/var/log";
              "@containers" = subvolumeAt "/var/lib/containers";
              "@caddy" = subvolumeAt "/var/lib/caddy";
              "@snapshots" = subvolumeAt "/.snapshots";
              # Where the rollback moves each boot's old root; reached through /btrfs_tmp.
              "@old_roots" = { };
            };
          };
        };
      };
    };
  };

  # Mounted in the initrd, before impermanence's bind mounts and the journal need them.
  fileSystems."/persist".neededForBoot = true;
  fileSystems."/var/log".neededForBoot = true;
  fileSystems."/nix".neededForBoot = true;

  # Container images and databases rewrite in place: No_COW on new files
  # (chattr +C), since a nodatacow mount option would be ignored.
  systemd.tmpfiles.settings."10-btrfs-nocow"."/var/lib/containers".h.argument = "+C";
}
