# checks.x86_64-linux of the flake. `nix flake check` runs them all; one runs
# with `nix build -L .#checks.x86_64-linux.<name>`.
{
  self,
  pkgs,
  disko,
  machine,
}:
let
  inherit (pkgs) lib;
  host = self.nixosConfigurations.${machine.flakeAttribute};

  vmTest =
    firmware: variant:
    import ./tests/vm-test.nix (
      {
        inherit pkgs disko firmware;
        hostModule = self.nixosModules.hetzner-cloud;
      }
      // variant
    );
  deletion = lib.importJSON ./tests/deletion.json;
in
{
  # The real host installed with disko onto a virtual disk and booted three
  # times: with SeaBIOS (how Hetzner Cloud boots by default) …
  vm-test = vmTest "bios" { };
  # … and with OVMF (a Hetzner Cloud server switched to UEFI).
  vm-test-uefi = vmTest "uefi" { };
  # Four boots under test-only retention (tests/deletion.json), so that the
  # initrd's rollback deletes old roots under NixOS's systemd initrd …
  vm-test-deletion = vmTest "bios" { inherit deletion; };
  # … and the same with the scripted initrd (postResumeCommands).
  vm-test-scripted-initrd = vmTest "bios" {
    inherit deletion;
    scriptedInitrd = true;
  };

  # The system the server runs: it builds, and its assertions hold (one of
  # them refuses to build without an SSH key for hbohlen in machine.nix).
  toplevel = host.config.system.build.toplevel;

  # The interactive VMs of hosts/servers/hetzner-cloud/vm.nix evaluate and
  # their assertions hold (build-vm, and vmWithDisko, whose mounts
  # qemu-vm.nix replaces): only their derivation paths are computed here,
  # without the string context that would make them inputs to build.
  vm-variants-evaluate = pkgs.runCommand "vm-variants-evaluate" {
    variants = map builtins.unsafeDiscardStringContext [
      host.config.virtualisation.vmVariant.system.build.vm.drvPath
      host.config.virtualisation.vmVariantWithDisko.system.build.vmWithDisko.drvPath
    ];
  } "touch $out";

  # What disko and NixOS make of our layout, compared with the reference data
  # the Rust model is tested against (xtask/tests/disko_reference.rs). If
  # this fails after an update of disko or nixpkgs, the model, or the
  # fixture, no longer describes the real system.
  disko-reference = import ./tests/disko-reference.nix {
    inherit pkgs;
    inherit (host) config;
    reference = lib.importJSON ../xtask/tests/fixtures/disko-reference.json;
  };
}
