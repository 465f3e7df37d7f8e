# Booting a Hetzner Cloud VM: GRUB for BIOS (Hetzner's default) and UEFI,
# systemd in stage 1, Btrfs in the initrd.
{ modulesPath, ... }:
{
  imports = [
    # virtio drivers in the initrd: Hetzner Cloud servers are QEMU/KVM guests.
    (modulesPath + "/profiles/qemu-guest.nix")
  ];

  nixpkgs.hostPlatform = "x86_64-linux";

  boot.loader = {
    grub = {
      enable = true;
      # BIOS: disko puts the disk holding the EF02 partition (/dev/sda) into
      # boot.loader.grub.devices, and GRUB embeds its core image there. Not
      # set here, so that the layout stays the one source of the disk name.
      #
      # UEFI: GRUB also installs an EFI image, to the removable-media path
      # (\EFI\BOOT\BOOTX64.EFI on the ESP). Firmware finds it without an NVRAM
      # boot entry, so the same disk boots whichever firmware the server is
      # switched to, and nothing depends on NVRAM the provider may reset.
      efiSupport = true;
      efiInstallAsRemovable = true;
      # Kernels and initrds are copied to the 1 GiB ESP; keep it from filling.
      configurationLimit = 10;
    };
    # Required by efiInstallAsRemovable, and right for a VM whose NVRAM we
    # do not own.
    efi.canTouchEfiVariables = false;
    # The ESP is mounted here (disko.nix); GRUB's files and the kernels live on it.
    efi.efiSysMountPoint = "/boot";
    # One boot loader. (Test harnesses may enable systemd-boot by default.)
    systemd-boot.enable = false;
  };

  boot.initrd = {
    # The default since 26.05; explicit because the root rollback is a
    # systemd unit in stage 1 and the scripted initrd is a different path.
    systemd.enable = true;
    # The rollback and the neededForBoot mounts (/, /nix, /persist, /var/log)
    # need Btrfs before the root is mounted.
    supportedFilesystems.btrfs = true;
    # Hetzner's disk is a virtio-scsi disk (/dev/sda): sd_mod is in the
    # default initrd modules and virtio_scsi in the qemu-guest profile;
    # listed here so that the disk never depends on those defaults.
    availableKernelModules = [
      "virtio_pci"
      "virtio_scsi"
      "sd_mod"
    ];
  };
  boot.supportedFilesystems.btrfs = true;
}
