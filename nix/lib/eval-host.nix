# Evaluates a host's standalone files for `cargo xtask`, without nixpkgs:
# the layout module (disko.devices with the NixOS flags beside it), the
# persistence module, the machine facts, and where each attribute of the
# layout is written, so that findings can name a file and a line.
{
  layoutFile,
  persistenceFile ? null,
  machineFile ? null,
}:
let
  # A module may be a function of the module arguments; standalone mode can
  # only call those that need none of them.
  load =
    file:
    let
      value = import file;
    in
    if builtins.isFunction value then value { } else value;

  positionsOf =
    set:
    builtins.mapAttrs (name: value: {
      at = builtins.unsafeGetAttrPos name set;
      below = if builtins.isAttrs value then positionsOf value else null;
    }) set;

  layout = load layoutFile;
  persistence = if persistenceFile == null then { } else load persistenceFile;
in
{
  inherit layout;
  positions = map positionsOf (builtins.filter builtins.isAttrs [
    layout
    persistence
  ]);
  persistence = persistence.environment.persistence or { };
  machine = if machineFile == null then null else import machineFile;
}
