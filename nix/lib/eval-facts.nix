# What `cargo xtask deploy-checklist` needs to print commands that work on
# the installed server, read from the host's own files without nixpkgs: who
# logs in, whether root may, the SSH port, sudo, and the timers to expect.
#
#   nix-instantiate --eval --strict --json nix/lib/eval-facts.nix \
#     --argstr hostDir hosts/servers/hetzner-cloud
#
# The admin's name is plain data in machine.nix (`adminUser`). The options
# below are looked up in every module of the host directory: a plain
# attribute set, or a function whose value for these options does not need
# the module arguments (they throw when used, naming the file). An option
# set in two files is an error unless both agree; lists are concatenated, as
# the module system does for them. Where no file sets an option, nixpkgs'
# default applies (the file that declares it is named beside it).
{ hostDir }:
let
  dir = /. + hostDir;
  machine = import (dir + "/machine.nix");
  admin = machine.adminUser or (throw "${hostDir}/machine.nix has no adminUser: add `adminUser = \"<name>\";`, the one login of the server");

  # Modules of the host: every .nix file but machine.nix (data, not a module).
  moduleFiles = builtins.filter (name: builtins.match ".*\\.nix" name != null && name != "machine.nix") (
    builtins.attrNames (builtins.readDir dir)
  );

  load =
    name:
    let
      file = dir + "/${name}";
      value = import file;
      arguments = builtins.functionArgs value;
      absent =
        argument:
        throw "${hostDir}/${name}: an option deploy-checklist reads depends on `${argument}`, which only the NixOS module system supplies; set it to a plain value";
    in
    if builtins.isFunction value then value (builtins.mapAttrs (argument: _: absent argument) arguments) else value;

  # The definitions of a module: its `config` when it declares options.
  definitionsOf = module: if module ? options || module ? config then module.config or { } else module;

  modules = map (name: {
    inherit name;
    definitions = definitionsOf (load name);
  }) moduleFiles;

  lookup =
    path: set:
    if path == [ ] then
      {
        found = true;
        value = set;
      }
    else if builtins.isAttrs set && set ? ${builtins.head path} then
      lookup (builtins.tail path) set.${builtins.head path}
    else
      { found = false; };

  definitions =
    path:
    builtins.concatMap (
      module:
      let
        found = lookup path module.definitions;
      in
      if found.found then
        [
          {
            inherit (module) name;
            inherit (found) value;
          }
        ]
      else
        [ ]
    ) modules;

  show = path: builtins.concatStringsSep "." path;

  # One value: the only definition, or several that agree, or the default.
  scalar =
    path: default:
    let
      defs = definitions path;
      first = builtins.head defs;
    in
    if defs == [ ] then
      default
    else if builtins.all (d: d.value == first.value) defs then
      first.value
    else
      throw "${show path} is set differently in ${builtins.concatStringsSep " and " (map (d: "${hostDir}/${d.name}") defs)}; deploy-checklist cannot tell which applies";

  list = path: builtins.concatMap (d: d.value) (definitions path);

  user = [
    "users"
    "users"
    admin
  ];
in
{
  adminUser = admin;
  # nixos/modules/config/users-groups.nix: a normal user's home is /home/<name>.
  adminHome = scalar (user ++ [ "home" ]) "/home/${admin}";
  # null: NixOS allocates one (nixos/modules/config/update-users-groups.pl, from 1000).
  adminUid = scalar (user ++ [ "uid" ]) null;
  adminGroups = list (user ++ [ "extraGroups" ]);
  adminKeys = builtins.length (list (user ++ [ "openssh" "authorizedKeys" "keys" ]));
  rootKeys = builtins.length (list [ "users" "users" "root" "openssh" "authorizedKeys" "keys" ]);
  # nixos/modules/services/networking/ssh/sshd.nix: ports [ 22 ],
  # settings.PermitRootLogin "prohibit-password".
  sshEnabled = scalar [ "services" "openssh" "enable" ] false;
  sshPorts = scalar [ "services" "openssh" "ports" ] [ 22 ];
  permitRootLogin = scalar [ "services" "openssh" "settings" "PermitRootLogin" ] "prohibit-password";
  # nixos/modules/security/sudo.nix: enable true, wheelNeedsPassword true.
  sudoEnabled = scalar [ "security" "sudo" "enable" ] true;
  wheelNeedsPassword = scalar [ "security" "sudo" "wheelNeedsPassword" ] true;
  # nixos/modules/services/backup/btrbk.nix: one btrbk-<name>.timer per instance.
  btrbkInstances = builtins.attrNames (scalar [ "services" "btrbk" "instances" ] { });
  # nixos/modules/services/misc/fstrim.nix (NixOS/nixpkgs e54ebecf8752):
  # enable false, interval "weekly" (the timer's OnCalendar); the unit is
  # util-linux's fstrim.service. OnBootSec and Persistent as the host adds
  # them to the timer (null and false where it does not: vm-test then
  # assumes no run after boot and no catch-up).
  fstrim = {
    enable = scalar [ "services" "fstrim" "enable" ] false;
    interval = scalar [ "services" "fstrim" "interval" ] "weekly";
    onBootSec = scalar [ "systemd" "timers" "fstrim" "timerConfig" "OnBootSec" ] null;
    persistent = scalar [ "systemd" "timers" "fstrim" "timerConfig" "Persistent" ] false;
  };
  # nixos/modules/tasks/filesystems/btrfs.nix: one btrfs-scrub-<escaped path>.timer per file system.
  scrubFileSystems =
    if scalar [ "services" "btrfs" "autoScrub" "enable" ] false then
      scalar [ "services" "btrfs" "autoScrub" "fileSystems" ] [ ]
    else
      [ ];
}
