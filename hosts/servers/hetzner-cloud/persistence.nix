# What survives the root wipe: impermanence bind-mounts these from /persist
# into the fresh root at every boot. A plain attribute set like disko.nix (it
# reads only machine.nix, which is plain data), so it is a NixOS module and
# `cargo xtask docs` and `check` read it without nixpkgs.
#
# Data that lives on its own subvolume is already persistent and is not listed:
# /nix, /var/log, /var/lib/containers, /var/lib/caddy (caddy's certificates and
# state) and /.snapshots. docs/persistence.md says how to add a path.
let
  machine = import ./machine.nix;
in
{
  environment.persistence."/persist" = {
    # Keep the bind mounts out of `mount`, `df` and file managers.
    hideMounts = true;
    directories = [
      # uid/gid allocations: files keep their owners across boots.
      "/var/lib/nixos"
      # Timers' last runs, the random seed, coredumps, backlight and rfkill state.
      "/var/lib/systemd"
      # Tailscale's node key and state: without it the server joins as a new node.
      {
        directory = "/var/lib/tailscale";
        mode = "0700";
      }
    ];
    files = [
      # The journal, systemd and DHCP identify the machine by it.
      "/etc/machine-id"
      # Stable host keys: clients keep trusting the server after a reboot.
      "/etc/ssh/ssh_host_ed25519_key"
      "/etc/ssh/ssh_host_ed25519_key.pub"
      "/etc/ssh/ssh_host_rsa_key"
      "/etc/ssh/ssh_host_rsa_key.pub"
    ];
    # Keys added on the server survive; the declared ones come from default.nix.
    users.${machine.adminUser}.files = [ ".ssh/authorized_keys" ];
  };
}
