# Compares the evaluated host with xtask/tests/fixtures/disko-reference.json:
# partition numbers, labels, devices and type codes from disko's real types,
# and the fileSystems, swapDevices and GRUB devices of the real NixOS
# configuration. The Rust model is tested against the same file, so a pass
# here and there means `cargo xtask check` describes the system that boots.
{
  pkgs,
  config,
  reference,
}:
let
  inherit (pkgs) lib;

  # One line per difference; none when equal.
  compare =
    what: actual: expected:
    let
      shown = builtins.toJSON;
    in
    lib.optional (actual != expected)
      "${what}: the host has ${shown actual}, the reference ${shown expected}";

  diskMismatches =
    disk:
    let
      partitions = config.disko.devices.disk.${disk.key}.content.partitions;
      at = "disko.devices.disk.${disk.key}.content.partitions";
      partitionMismatches =
        expected:
        let
          actual = partitions.${expected.key};
          here = "${at}.${expected.key}";
        in
        compare "${here}._index" actual._index expected.index
        ++ compare "${here}.label" actual.label expected.label
        ++ compare "${here}.device" actual.device expected.device
        ++ compare "${here}.type" actual.type expected.type;
      expectedNames = lib.sort (a: b: a < b) (map (p: p.key) disk.partitions);
    in
    compare "${at} (names)" (lib.attrNames partitions) expectedNames
    ++ lib.concatMap partitionMismatches disk.partitions;

  fileSystemMismatches =
    mountpoint: expected:
    let
      actual = config.fileSystems.${mountpoint} or null;
      at = "fileSystems.\"${mountpoint}\"";
    in
    if actual == null then
      [ "${at}: missing from the host" ]
    else
      compare "${at}.device" actual.device expected.device
      ++ compare "${at}.fsType" actual.fsType expected.fsType
      ++ compare "${at}.options" actual.options expected.options
      ++ compare "${at}.neededForBoot" actual.neededForBoot expected.neededForBoot;

  # Every mount of the host on one of disko's devices is one disko generated.
  diskoDevices = map (fs: fs.device) (lib.attrValues reference.fileSystems);
  mountsOnDiskoDevices = lib.attrNames (
    lib.filterAttrs (_: fs: lib.elem fs.device diskoDevices) config.fileSystems
  );

  swaps = map (swap: {
    inherit (swap) device;
    randomEncryption = swap.randomEncryption.enable;
  });

  mismatches =
    lib.concatMap diskMismatches reference.disks
    ++ lib.concatLists (lib.mapAttrsToList fileSystemMismatches reference.fileSystems)
    ++ compare "fileSystems on disko's devices" mountsOnDiskoDevices (
      lib.attrNames reference.fileSystems
    )
    ++ compare "swapDevices" (swaps config.swapDevices) (swaps reference.swapDevices)
    ++ compare "boot.loader.grub.devices" config.boot.loader.grub.devices reference.grubDevices
    ++ compare "boot.resumeDevice" config.boot.resumeDevice reference.resumeDevice;
in
pkgs.runCommand "disko-reference"
  {
    report = lib.concatLines mismatches;
    passAsFile = [ "report" ];
  }
  ''
    if [ -s "$reportPath" ]; then
      echo "The host no longer matches xtask/tests/fixtures/disko-reference.json:" >&2
      cat "$reportPath" >&2
      echo "Regenerate the fixture (see xtask/tests/disko_reference.rs)," >&2
      echo "then make the Rust model pass its test against it." >&2
      exit 1
    fi
    touch $out
  ''
