# One login, machine.nix's adminUser, by SSH key only. No account has a password.
{ config, ... }:
let
  machine = import ./machine.nix;
  admin = config.users.users.${machine.adminUser};
in
{
  # Users and groups come from this configuration alone. The root is wiped
  # at every boot, so /etc/passwd and /etc/shadow are rebuilt anyway, and an
  # imperative `useradd` or `passwd` would silently vanish at the next reboot;
  # with mutableUsers off, NixOS does not pretend otherwise. (/var/lib/nixos,
  # persisted, keeps uid and gid allocations stable.)
  users.mutableUsers = false;

  # Locked: no password login as root, on the console or anywhere.
  users.users.root.hashedPassword = "!";

  users.users.${machine.adminUser} = {
    isNormalUser = true;
    # Fixed, so that files in /persist keep their owner even if the uid map
    # in /var/lib/nixos is ever lost.
    uid = 1000;
    extraGroups = [ "wheel" ];
    openssh.authorizedKeys.keys = machine.adminSshKeys;
  };

  # There are no passwords to type, so sudo for wheel asks for none. The
  # protection is the SSH key.
  security.sudo.wheelNeedsPassword = false;

  assertions = [
    {
      # A password counts only so that the VM variants (vm.nix), which set
      # one for the console, build; the server itself never has one.
      assertion =
        admin.openssh.authorizedKeys.keys != [ ]
        || admin.password != null
        || admin.hashedPassword != null
        || admin.hashedPasswordFile != null;
      message = ''
        ${machine.adminUser} has no SSH key, and no account on this server has a
        password: nobody could log in after installation. Add a public key
        to adminSshKeys in hosts/servers/hetzner-cloud/machine.nix.
      '';
    }
  ];
}
