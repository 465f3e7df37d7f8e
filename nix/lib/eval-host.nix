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
  # only call those that need none of them. Others fail here with a message
  # that `check` recognises (NIX004), not deep inside the file.
  load =
    file:
    let
      value = import file;
      arguments = builtins.functionArgs value;
      required = builtins.filter (name: !arguments.${name}) (builtins.attrNames arguments);
    in
    if !builtins.isFunction value then
      value
    else if required == [ ] then
      value { }
    else
      throw "standalone mode cannot call ${toString file}: it is a function of the module arguments ${
        builtins.concatStringsSep ", " required
      }, which only the NixOS module system (flake mode) supplies";

  # Values JSON cannot carry faithfully become a marker that `check` reports
  # where it is written: a path literal (Nix would copy the file into the
  # store and print the store path) and a float that is not finite (Nix
  # prints `inf`, which is not JSON).
  plain =
    value:
    if builtins.isPath value then
      {
        __xtaskInvalid = "the path literal ${toString value}, not a string (disko's options take strings: write it in quotes)";
      }
    else if builtins.isFloat value && value - value != 0.0 then
      {
        __xtaskInvalid = "the float ${toString value}, which is not a finite number";
      }
    else if builtins.isAttrs value then
      builtins.mapAttrs (_: plain) value
    else if builtins.isList value then
      map plain value
    else
      value;

  # Positions go no deeper than any disko option (about 12 levels), so that
  # only the config itself can nest too deep for `check` to read.
  positionsOf =
    depth: set:
    builtins.mapAttrs (name: value: {
      at = builtins.unsafeGetAttrPos name set;
      below = if depth < 24 && builtins.isAttrs value then positionsOf (depth + 1) value else null;
    }) set;

  layout = load layoutFile;
  persistence = if persistenceFile == null then { } else load persistenceFile;
in
{
  layout = plain layout;
  positions = map (positionsOf 0) (
    builtins.filter builtins.isAttrs [
      layout
      persistence
    ]
  );
  persistence = plain (persistence.environment.persistence or { });
  machine = if machineFile == null then null else plain (import machineFile);
}
