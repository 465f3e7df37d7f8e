# Interactive VMs of this host, for trying things by hand. They are separate
# systems built from this configuration and are never deployed.
#
# - `nixos-rebuild build-vm --flake .#hetzner-vps` (the roadmap's VM), then
#   ./result/bin/run-hetzner-vps-vm: the same services, users and
#   persistence, on QEMU's standard VM disk (ext4 root, host /nix/store).
#   It does not have the disko layout: the root is not Btrfs and is not
#   rolled back, and /persist is a plain directory.
#
# - The layout itself, rolled back at every boot:
#   nix run .#nixosConfigurations.hetzner-vps.config.system.build.vmWithDisko
#   disko formats disk images with the real layout first, then boots them.
#
# The automated proof of the layout and the rollback is the flake check
# vm-test (nix/tests/vm-test.nix). Both VMs log in on the console as
# hbohlen with the password "hbohlen".
#
# Both variants go through nixpkgs' nixos/modules/virtualisation/qemu-vm.nix
# (read at NixOS/nixpkgs 00008e8eb762), which sets
#   fileSystems = lib.mkIf (cfg.fileSystems != { }) (mkVMOverride cfg.fileSystems);
# so the VM mounts exactly virtualisation.fileSystems (declared as
# `options.fileSystems`, the same type), and every fileSystems definition of
# the host, disko.nix's neededForBoot flags included, is dropped.
{ lib, ... }:
let
  # fileSystems.<p>.neededForBoot of disko.nix (/nix, /persist, /var/log):
  # one source for the host and the disko VM.
  neededForBoot = lib.mapAttrs (_: fs: { inherit (fs) neededForBoot; }) (
    lib.filterAttrs (_: fs: fs.neededForBoot or false) (import ./disko.nix).fileSystems
  );

  common = {
    # VM only: the console needs a password; the server has none.
    users.users.hbohlen.password = "hbohlen";
    # QEMU's user network: DHCP on eth0 (qemu-vm.nix turns predictable
    # interface names off, which network.nix's default match covers), and
    # no IPv6 of Hetzner's.
    hetzner.network.ipv6Address = null;
    # No tailnet login from a throwaway VM.
    services.tailscale.enable = lib.mkForce false;
    virtualisation = {
      memorySize = 4096;
      cores = 2;
    };
  };
in
{
  virtualisation.vmVariant = {
    imports = [ common ];
    # The VM's disk has no Btrfs and no disko partitions: its root is the
    # ext4 image qemu-vm.nix makes (virtualisation.fileSystems."/"), and
    # swapDevices is mkVMOverride [ ] there.
    boot.btrfsRollback.enable = lib.mkForce false;
    services.btrfs.autoScrub.enable = lib.mkForce false;
    # btrbk's instance snapshots @persist through /btrfs_tmp, which this VM
    # does not have: btrbk-persist.service would fail at every timer run.
    # No instances means no unit at all (nixos/modules/services/backup/btrbk.nix
    # enables itself only when instances or sshAccess are set).
    services.btrbk.instances = lib.mkForce { };
    # `h /var/lib/containers - - - - +C` asks for No_COW, which ext4 does not
    # have: systemd-tmpfiles (src/tmpfiles/tmpfiles.c, fd_set_attribute) then
    # warns "Cannot set file attributes for '/var/lib/containers', maybe due
    # to incompatibility in specified attributes" at every boot. The flag only
    # means something on Btrfs.
    systemd.tmpfiles.settings."10-btrfs-nocow" = lib.mkForce { };
    virtualisation.diskSize = 8192;
  };

  virtualisation.vmVariantWithDisko = {
    imports = [ common ];
    # disko's interactive VM (lib/interactive-vm.nix) puts the mounts it
    # generates into virtualisation.fileSystems, without the neededForBoot
    # flags that disko.nix sets beside disko.devices; qemu-vm.nix then
    # replaces fileSystems with them. Without the flags here, /persist and
    # /var/log would be mounted after the rollback and impermanence's binds,
    # and both modules' assertions refuse to build.
    virtualisation.fileSystems = neededForBoot;
    # disko's images default to 2 GiB: too small for 32 GiB of swap.
    # The qcow2 images are sparse; 48 GiB leaves 15 GiB of Btrfs.
    disko.devices.disk.main.imageSize = "48G";
  };
}
