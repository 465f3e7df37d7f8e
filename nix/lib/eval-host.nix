# Evaluates a host's standalone files for `cargo xtask`, without nixpkgs:
# the layout module (disko.devices with the NixOS flags beside it), the
# persistence module, the machine facts, the root rollback's settings, and
# where each attribute is written, so that findings can name a file and a
# line. Every file is evaluated whole (--strict): an error anywhere in one
# fails the evaluation with Nix's position, and `check` reports it (NIX002).
{
  layoutFile,
  persistenceFile ? null,
  machineFile ? null,
  rollbackFile ? null,
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
      whole file value
    else if required == [ ] then
      whole file (value { })
    else
      throw "standalone mode cannot call ${toString file}: it is a function of the module arguments ${
        builtins.concatStringsSep ", " required
      }, which only the NixOS module system (flake mode) supplies";

  # The file's value, forced completely where the error trace can still say
  # which file it is: a `throw` has no position of its own, and `check`
  # reads the file from this context (`… while evaluating the file '…'`).
  whole =
    file: value:
    builtins.addErrorContext "while evaluating the file '${toString file}'" (
      builtins.deepSeq value value
    );

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
  machine = if machineFile == null then null else whole machineFile (import machineFile);
  rollback = if rollbackFile == null then null else load rollbackFile;
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
  machine = if machine == null then null else plain machine;
  # rollback.nix whole (a NixOS module, like disko.nix); vm-test reads its
  # boot.btrfsRollback.
  rollback = if rollback == null then null else plain rollback;
  # Kept apart from `positions`: the files may set the same top-level names.
  machinePositions = map (positionsOf 0) (builtins.filter builtins.isAttrs [ machine ]);
  rollbackPositions = map (positionsOf 0) (builtins.filter builtins.isAttrs [ rollback ]);
}
