{
  description = "NixOS on a Hetzner Cloud CPX52: disko Btrfs layout, root rollback at boot, impermanence";

  # There is no flake.lock in the repository: the first `nix flake lock` (or
  # any `nix build`) pins these, and that lock file should be committed.
  inputs = {
    # The current stable release; systemd in stage 1 is its initrd default.
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

    disko = {
      url = "github:nix-community/disko";
      inputs.nixpkgs.follows = "nixpkgs";
    };

    impermanence = {
      url = "github:nix-community/impermanence";
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
