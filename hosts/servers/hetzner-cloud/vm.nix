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
{ lib, ... }:
let
  common = {
    # VM only: the console needs a password; the server has none.
    users.users.hbohlen.password = "hbohlen";
    # QEMU's user network: DHCP on eth0 (qemu-vm.nix turns predictable
    # interface names off), and no IPv6 of Hetzner's.
    hetzner.network = {
      interface = "eth0";
      ipv6Address = null;
    };
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
    # The VM's disk has no Btrfs and no disko partitions (qemu-vm.nix
    # replaces fileSystems and swapDevices with its own).
    boot.btrfsRollback.enable = lib.mkForce false;
    services.btrfs.autoScrub.enable = lib.mkForce false;
    virtualisation.diskSize = 8192;
  };

  virtualisation.vmVariantWithDisko = {
    imports = [ common ];
    # disko's images default to 2 GiB: too small for 32 GiB of swap.
    # The qcow2 images are sparse; 48 GiB leaves 15 GiB of Btrfs.
    disko.devices.disk.main.imageSize = "48G";
  };
}
