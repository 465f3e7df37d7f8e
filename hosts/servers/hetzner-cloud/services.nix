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

  # No periodic fstrim: every Btrfs mount has discard=async, which trims
  # freed extents in the background (and is the kernel's default since 6.2),
  # so a weekly fstrim of the same filesystem would only repeat it. The ESP
  # is rewritten only when kernels change, and the swap gets a new random
  # key at every boot. Remove discard=async from disko.nix and enable this.
  services.fstrim.enable = false;

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
