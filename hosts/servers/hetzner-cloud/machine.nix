# Facts about the machine this host runs on. Plain data: default.nix reads
# it, and so do `cargo xtask check`, `vm-test` and `docs`.
{
  # The nixosConfigurations attribute that builds this host.
  flakeAttribute = "hetzner-vps";
  provider = "Hetzner Cloud";
  model = "CPX52";
  cpus = 12;
  memory = "24GiB";
  # As sold: 480 GB = 480 * 10^9 bytes, about 447 GiB.
  diskSize = "480GB";
  # Hetzner Cloud servers boot with BIOS by default; UEFI is possible.
  firmware = [
    "bios"
    "uefi"
  ];
}
