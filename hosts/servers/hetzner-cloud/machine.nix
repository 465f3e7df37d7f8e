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
  # The partitions the roadmap requires of this host (Task 1: BIOS boot
  # 1MB EF02, ESP 1GB, swap 32GB with random encryption, Btrfs on the
  # remainder), as disko sizes. `cargo xtask check` reports a disko.nix
  # that differs (HOST002, an error; vm-test refuses such a layout too).
  partitionSizes = {
    biosBoot = "1M";
    esp = "1G";
    swap = "32G";
    btrfs = "100%";
  };
  # Deliberate departures from partitionSizes: the size disko.nix has and
  # why, e.g. swap = { size = "16G"; reason = "..."; }. check then warns
  # (HOST003) and shows the reason instead of failing.
  partitionSizeDeviations = { };
  # Hetzner Cloud servers boot with BIOS by default; UEFI is possible.
  firmware = [
    "bios"
    "uefi"
  ];

  # networking.hostName of the server.
  hostName = "hetzner-vps";
  # The MAC address of the public network interface, e.g.
  # "96:00:01:23:45:67" (`ip link` on the server or in the rescue system).
  # null: the uplink is whichever Ethernet interface is named en* or eth*
  # (enp1s0 on today's Hetzner Cloud), so a renamed interface cannot cut
  # the server off. Set it when a Hetzner private network is attached (a
  # second en* interface), so that the public address stays on one link.
  publicMacAddress = null;
  # Which kind of server this is. Hetzner Cloud servers come with a public
  # IPv4 address unless they were created IPv6-only (cheaper; Cloud
  # Console, Networking: "Public IPv4" off). true: IPv4 by DHCP. false:
  # IPv6 only, and ipv6Address below must be set, or the server comes up
  # with no address at all (`cargo xtask check` refuses it: HOST005).
  publicIpv4 = true;
  # Hetzner Cloud routes a /64 to every server but leaves configuring an
  # address of it to the server: one address with its prefix length, from
  # the Cloud Console (Networking), e.g. "2a01:4f8:c012:3456::1/64". The
  # gateway is fe80::1. null: IPv4 only (only with publicIpv4 = true).
  ipv6Address = null;
  # Where the admin reaches the server with ssh once it is installed:
  # ADDRESS or ADDRESS:PORT (IPv6 in brackets), e.g. "203.0.113.7".
  # `cargo xtask verify --all` checks every host that has one; null: skipped.
  sshAddress = null;
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
