# What `cargo xtask check` reads in flake mode: the merged NixOS configuration
# of one nixosConfigurations entry, in the shape nix/lib/eval-host.nix gives
# for the standalone files.
#
# This file is a function, and `nix eval --file` does not call a function at
# the top (it applies --arg/--argstr only while walking an attribute path), so
# call it through an expression:
#   nix eval --impure --json --expr \
#     'import ./nix/lib/eval-flake.nix { flake = ./.; host = "hetzner-vps"; }'
{ flake, host }:
let
  self = builtins.getFlake (toString flake);
  inherit (self.nixosConfigurations.${host}) config;

  # disko's devices carry internal options (_create, _parent, …), some of
  # them functions or cycles; drop them before turning the rest into JSON.
  clean =
    value:
    if builtins.isAttrs value then
      builtins.mapAttrs (_: clean) (
        removeAttrs value (
          builtins.filter (name: builtins.substring 0 1 name == "_") (builtins.attrNames value)
        )
      )
    else if builtins.isList value then
      map clean value
    else if builtins.isFunction value then
      null
    else
      value;

  # The fileSystems entries disko generates from disko.devices. disko's
  # module assigns them to fileSystems as one mkMerge of single-mountpoint
  # sets, so the merged config.fileSystems already contains their options.
  diskoFileSystems = builtins.foldl' (merged: entry: merged // entry) { } (
    config.disko.devices._config.fileSystems.contents or [ ]
  );

  # What nixos/modules/tasks/filesystems.nix (fileSystemOpts) adds to a
  # file system's options itself (nixpkgs master 0148e16d1446): x-initrd.mount
  # for the mounts of stage 1 (nixos/lib/utils.nix fsNeededForBoot),
  # x-systemd.growfs for autoResize, x-systemd.makefs for autoFormat.
  pathsNeededForBoot = [
    "/"
    "/nix"
    "/nix/store"
    "/var"
    "/var/log"
    "/var/lib"
    "/var/lib/nixos"
    "/etc"
    "/usr"
  ];
  addedByNixos =
    mountpoint: fs:
    (
      if fs.neededForBoot || builtins.elem (fs.mountPoint or mountpoint) pathsNeededForBoot then
        [ "x-initrd.mount" ]
      else
        [ ]
    )
    ++ (if fs.autoResize or false then [ "x-systemd.growfs" ] else [ ])
    ++ (if fs.autoFormat or false then [ "x-systemd.makefs" ] else [ ]);

  # The layout model appends fileSystems.<p>.options to what disko generates,
  # as in the standalone files where they are only what the host adds. Hand
  # it the same here: the merged options minus disko's own and minus what
  # NixOS adds by itself.
  addedOptions =
    mountpoint: fs:
    let
      fromDisko = diskoFileSystems.${mountpoint}.options or [ ];
      notWritten = fromDisko ++ addedByNixos mountpoint fs;
    in
    builtins.filter (option: !(builtins.elem option notWritten)) fs.options;

  # impermanence's submodules declare removed options (allowOther, home, …)
  # that throw when read, so take only what the model reads, never the
  # whole submodule.
  directoryEntry = entry: {
    inherit (entry)
      directory
      dirPath
      user
      group
      mode
      ;
  };
  fileEntry = entry: {
    inherit (entry) file filePath;
  };
  persistenceRoot = root: {
    inherit (root) persistentStoragePath hideMounts;
    directories = map directoryEntry root.directories;
    files = map fileEntry root.files;
    users = builtins.mapAttrs (user: entries: {
      inherit (config.users.users.${user}) home;
      directories = map directoryEntry entries.directories;
      files = map fileEntry entries.files;
    }) root.users;
  };
  persistence = config.environment.persistence or { };
  enabledRoots = builtins.filter (name: persistence.${name}.enable) (
    builtins.attrNames persistence
  );
in
{
  layout = {
    disko.devices = clean config.disko.devices;
    fileSystems = builtins.mapAttrs (mountpoint: fs: {
      inherit (fs) neededForBoot device fsType;
      options = addedOptions mountpoint fs;
    }) config.fileSystems;
    systemd.tmpfiles = {
      inherit (config.systemd.tmpfiles) settings rules;
    };
    boot.resumeDevice = config.boot.resumeDevice;
  };
  persistence = builtins.listToAttrs (
    map (name: {
      inherit name;
      value = persistenceRoot persistence.${name};
    }) enabledRoots
  );
  positions = [ ];
  machine = null;
}
