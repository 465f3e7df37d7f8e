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

  # networking.hostName of the server.
  hostName = "hetzner-vps";
  # The public network interface as NixOS names Hetzner Cloud's virtio NIC.
  # A private network, if attached, appears as a second interface.
  publicInterface = "enp1s0";
  # Hetzner Cloud routes a /64 to every server but leaves configuring an
  # address of it to the server: one address with its prefix length, from
  # the Cloud Console (Networking), e.g. "2a01:4f8:c012:3456::1/64". The
  # gateway is fe80::1. null: IPv4 only.
  ipv6Address = null;
  # The one login of the server: users.nix creates it (wheel, sudo without
  # a password), persistence.nix keeps its authorized_keys, and the deploy
  # checklist prints `ssh <adminUser>@<IP>` and `sudo` for every server command.
  adminUser = "hbohlen";
  # SSH public keys of the admin. The server has no passwords, so without a
  # key nobody can log in: the build refuses an empty list.
  adminSshKeys = [
    # "ssh-ed25519 AAAA... hbohlen@laptop"
  ];
}
