# What `cargo xtask check` reads in flake mode: the merged NixOS configuration
# of one nixosConfigurations entry, in the shape nix/lib/eval-host.nix gives
# for the standalone files. Run with `nix eval --impure --json --file`.
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
in
{
  layout = {
    disko.devices = clean config.disko.devices;
    fileSystems = builtins.mapAttrs (_: fs: {
      inherit (fs)
        neededForBoot
        options
        device
        fsType
        ;
    }) config.fileSystems;
    systemd.tmpfiles = {
      inherit (config.systemd.tmpfiles) settings rules;
    };
    boot.resumeDevice = config.boot.resumeDevice;
  };
  persistence = clean (config.environment.persistence or { });
  positions = [ ];
  machine = null;
}
