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

  compare =
    what: actual: expected:
    lib.optional (actual != expected) "${what}: the host has ${builtins.toJSON actual}, the reference ${builtins.toJSON expected}";

  partitionMismatches = lib.concatMap (
    disk:
    let
      partitions = config.disko.devices.disk.${disk.key}.content.partitions;
    in
    lib.concatMap (
      expected:
      let
        actual = partitions.${expected.key};
        at = "disko.devices.disk.${disk.key}.content.partitions.${expected.key}";
      in
      compare "${at}._index" actual._index expected.index
      ++ compare "${at}.label" actual.label expected.label
      ++ compare "${at}.device" actual.device expected.device
      ++ compare "${at}.type" actual.type expected.type
    ) disk.partitions
    ++ compare "disko.devices.disk.${disk.key}.content.partitions (names)" (lib.attrNames partitions) (
      lib.sort (a: b: a < b) (map (p: p.key) disk.partitions)
    )
  ) reference.disks;

  fileSystemMismatches =
    lib.concatLists (
      lib.mapAttrsToList (
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
          ++ compare "${at}.neededForBoot" actual.neededForBoot expected.neededForBoot
      ) reference.fileSystems
    )
    # Every disk-backed mount of the host is one disko generated.
    ++ compare "fileSystems (mountpoints on disko's devices)" (lib.attrNames (
      lib.filterAttrs (
        _: fs: lib.any (expected: expected.device == fs.device) (lib.attrValues reference.fileSystems)
      ) config.fileSystems
    )) (lib.attrNames reference.fileSystems);

  swapMismatches = compare "swapDevices (device, randomEncryption.enable)" (map (swap: {
    inherit (swap) device;
    randomEncryption = swap.randomEncryption.enable;
  }) config.swapDevices) (map (swap: {
    inherit (swap) device;
    randomEncryption = swap.randomEncryption.enable;
  }) reference.swapDevices);

  mismatches =
    partitionMismatches
    ++ fileSystemMismatches
    ++ swapMismatches
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
      echo "Regenerate the fixture (xtask/tests/disko_reference.rs says how) and fix the Rust model if its test fails." >&2
      exit 1
    fi
    touch $out
  ''
