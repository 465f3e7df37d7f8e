# The services of the base server: SSH, Tailscale, and care of the disk.
{
  services.openssh = {
    enable = true;
    # Port 22 on the public interface: the way in before Tailscale is up.
    openFirewall = true;
    settings = {
      PasswordAuthentication = false;
      KbdInteractiveAuthentication = false;
      PermitRootLogin = "no";
    };
    # The default host keys (ed25519 and rsa under /etc/ssh) are the ones
    # persistence.nix keeps in /persist: clients keep trusting the server.
  };

  services.tailscale = {
    enable = true;
    # Lets peers reach this node directly (UDP 41641) instead of via relays.
    openFirewall = true;
  };

  # One scrub covers the whole filesystem, so it runs once, on the top level
  # (the default would list every Btrfs mount of the same filesystem).
  services.btrfs.autoScrub = {
    enable = true;
    interval = "monthly";
    fileSystems = [ "/btrfs_tmp" ];
  };

  # TRIM. Every Btrfs mount has discard=async (disko.nix), which trims what
  # is freed while the filesystem is mounted, about 10 to 120 s later
  # (fs/btrfs/discard.c). It does not trim what the root rollback frees in
  # the initrd: the initrd's mount lasts a moment, pending discards are
  # dropped at unmount, and the free space the next mount loads counts as
  # already trimmed, which async discard skips (free-space-cache.c). Only a
  # real FITRIM (fstrim) returns those blocks to the disk. So util-linux's
  # fstrim.service (`fstrim --listed-in /etc/fstab:/proc/self/mountinfo
  # --verbose --quiet-unsupported`, sys-utils/fstrim.service.in; nixpkgs'
  # nixos/modules/services/misc/fstrim.nix installs it and sets its timer's
  # OnCalendar to `interval`) runs weekly, and once after every boot, when
  # the old roots the rollback deleted have been cleaned up. Persistent: a
  # week missed while the server was off is caught up at boot (the timer's
  # stamp is in /var/lib/systemd, which persistence.nix keeps).
  # `cargo xtask vm-test` runs this command in the month's boot, after the
  # rollback's deletions, and measures the bytes reaching the disk image.
  services.fstrim = {
    enable = true;
    interval = "weekly";
  };
  systemd.timers.fstrim.timerConfig = {
    OnBootSec = "15min";
    Persistent = true;
  };
  # Bounded, like every unit here (a oneshot has no start timeout by
  # default): a full trim of the 414 GiB filesystem takes seconds.
  systemd.services.fstrim.serviceConfig.TimeoutStartSec = "30min";

  # No zram: the 32 GiB encrypted swap partition is the swap, and 24 GiB of
  # RAM leaves no reason to compress memory in front of it.
  zramSwap.enable = false;

  time.timeZone = "UTC";

  nix.settings = {
    experimental-features = [
      "nix-command"
      "flakes"
    ];
    # Deploying as machine.nix's adminUser, a member of wheel
    # (nixos-rebuild --target-host <adminUser>@<IP> --sudo).
    trusted-users = [ "@wheel" ];
  };

  # Old generations stay in /nix (its own subvolume) until collected.
  nix.gc = {
    automatic = true;
    dates = "weekly";
    options = "--delete-older-than 30d";
  };
}
