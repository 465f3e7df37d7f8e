# The Hetzner Cloud CPX52 host ("nixos-base-hetzner-vps" of the roadmap):
# the disko layout, a root that is rolled back at every boot, and what
# survives it. A function of the flake inputs it needs, returning the NixOS
# module; flake.nix exports it as nixosModules.hetzner-cloud and builds
# nixosConfigurations.hetzner-vps from it.
{
  disko,
  impermanence,
}:
{
  _file = ./default.nix;

  imports = [
    disko.nixosModules.disko
    impermanence.nixosModules.impermanence
    ../../../nix/modules/btrfs-rollback

    # disko.devices with fileSystems.<p>.neededForBoot beside it; cargo xtask
    # check reads this very file.
    ./disko.nix
    # environment.persistence."/persist": what the root rollback must not take.
    ./persistence.nix

    ./boot.nix
    ./rollback.nix
    ./network.nix
    ./users.nix
    ./services.nix
    ./snapshots.nix
    # Programs the checklist's procedures run on the server.
    ./tools.nix
    ./vm.nix
  ];

  # The release whose defaults this configuration was written against
  # (state formats of services, not the package set). Never bump it on an
  # installed machine without reading the release notes' migration steps.
  system.stateVersion = "26.05";
}
