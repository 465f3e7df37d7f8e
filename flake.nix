{
  description = "NixOS on a Hetzner Cloud CPX52: disko Btrfs layout, root rollback at boot, impermanence";

  # There is no flake.lock in the repository: it cannot be made without
  # network access to GitHub, which the machines this was written on lack.
  # The first `nix flake lock` (or any `nix build`) writes it; commit it.
  #
  # disko and impermanence are pinned here to the revisions that
  # xtask/tests/fixtures/disko-reference.json was made from and that the
  # modules were read at, so that a lock made later cannot drift from them.
  # To update one: change its revision here, regenerate the fixture (the
  # command is in xtask/tests/disko_reference.rs), and run `nix flake check`.
  # nixpkgs follows its release branch; the lock pins it.
  inputs = {
    # The current stable release; systemd in stage 1 is its initrd default.
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

    disko = {
      # "Escape ZFS args (#1222)", 2026-03-14.
      url = "github:nix-community/disko/878ec37d6a8f52c6c801d0e2a2ad554c75b9353c";
      inputs.nixpkgs.follows = "nixpkgs";
    };

    impermanence = {
      # "nixos: Add neededForBoot assertion for ephemeral storage", 2026-01-27.
      url = "github:nix-community/impermanence/7b1d382faf603b6d264f58627330f9faa5cba149";
      inputs.nixpkgs.follows = "nixpkgs";
      # impermanence's flake uses home-manager only for its own checks; its
      # NixOS module does not. Following the root flake ("") leaves a second
      # nixpkgs and home-manager out of our lock file and downloads.
      inputs.home-manager.follows = "";
    };
  };

  outputs =
    {
      self,
      nixpkgs,
      disko,
      impermanence,
    }:
    let
      system = "x86_64-linux";
      pkgs = nixpkgs.legacyPackages.${system};
      machine = import ./hosts/servers/hetzner-cloud/machine.nix;
    in
    {
      nixosModules = {
        btrfs-rollback = ./nix/modules/btrfs-rollback;
        # The whole host, with disko, impermanence and the rollback module.
        hetzner-cloud = import ./hosts/servers/hetzner-cloud { inherit disko impermanence; };
      };

      nixosConfigurations.${machine.flakeAttribute} = nixpkgs.lib.nixosSystem {
        modules = [ self.nixosModules.hetzner-cloud ];
      };

      checks.${system} = import ./nix/checks.nix {
        inherit
          self
          pkgs
          disko
          machine
          ;
      };

      devShells.${system}.default = import ./nix/dev-shell.nix { inherit pkgs; };

      formatter.${system} = pkgs.nixfmt;
    };
}
