# Hetzner Cloud networking with systemd-networkd: IPv4 by DHCP (unless the
# server was created without a public IPv4), IPv6 static (Hetzner routes a
# /64 to the server and expects it to configure an address itself, with
# fe80::1 as the gateway).
#
# The server has no passwords: a boot without network leaves only the
# rescue system (docs/troubleshooting.md). So the uplink is matched by a
# glob of names, as established Hetzner configurations do (srvos'
# nixos/hardware/hetzner-online module matches Name = "en* eth0"), not by
# one exact name that a change of naming scheme or of the virtual hardware
# could break, or by its MAC address when machine.nix knows it; and any
# other physical Ethernet interface still gets DHCPv4.
{ config, lib, ... }:
let
  machine = import ./machine.nix;
  cfg = config.hetzner.network;
in
{
  options.hetzner.network = {
    interface = lib.mkOption {
      type = lib.types.str;
      default = "en* eth*";
      example = "enp1s0";
      description = ''
        The public interface when {option}`hetzner.network.macAddress` is
        null: names or shell-style globs, separated by spaces, as the Name=
        of a systemd.network(5) [Match] section. The default covers the
        predictable names (enp1s0 on Hetzner Cloud) and the kernel's (eth0).
        It gets DHCPv4 and the static IPv6 address.
      '';
    };

    macAddress = lib.mkOption {
      type = lib.types.nullOr (lib.types.strMatching "([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}");
      default = machine.publicMacAddress or null;
      defaultText = lib.literalExpression "(import ./machine.nix).publicMacAddress";
      example = "96:00:01:23:45:67";
      description = ''
        The MAC address of the public interface. When set, the uplink is
        matched by it (MACAddress= in [Match]) instead of by name, so that a
        second interface (a Hetzner private network) never gets the public
        IPv6 address.
      '';
    };

    ipv6Address = lib.mkOption {
      type = lib.types.nullOr (lib.types.strMatching "[0-9A-Fa-f:]+/[0-9]{1,3}");
      default = machine.ipv6Address;
      defaultText = lib.literalExpression "(import ./machine.nix).ipv6Address";
      example = "2a01:4f8:c012:3456::1/64";
      description = ''
        The server's IPv6 address with its prefix length, from the /64 that
        Hetzner Cloud routes to it. `null` configures no IPv6.
      '';
    };

    ipv4 = lib.mkOption {
      type = lib.types.bool;
      default = machine.publicIpv4 or true;
      defaultText = lib.literalExpression "(import ./machine.nix).publicIpv4 or true";
      description = ''
        Whether the server has a public IPv4 address, which Hetzner Cloud
        hands out by DHCP. false for a server created IPv6-only: then
        {option}`hetzner.network.ipv6Address` is its only address and must
        be set.
      '';
    };

    ipv6Gateway = lib.mkOption {
      type = lib.types.str;
      default = "fe80::1";
      description = "The IPv6 default gateway; fe80::1 on Hetzner Cloud.";
    };
  };

  config = {
    networking.hostName = machine.hostName;

    networking.useNetworkd = true;
    # The networks below are all there is: without this, NixOS would add
    # its own DHCP network for every interface besides them.
    networking.useDHCP = false;

    systemd.network = {
      enable = true;
      # networkd applies the first .network file (in lexical order) whose
      # [Match] fits a link, so 10-uplink wins over 90-ethernet.
      networks."10-uplink" = {
        # Physical links only (no kind, as 90-ethernet below): a VLAN on
        # the uplink has its MAC address, and one named eth0.<id> fits the
        # name glob; neither may take the public IPv6 address.
        matchConfig =
          (if cfg.macAddress != null then { MACAddress = cfg.macAddress; } else { Name = cfg.interface; })
          // {
            Kind = "!*";
          };
        networkConfig = {
          DHCP = if cfg.ipv4 then "ipv4" else "no";
          # The IPv6 address and route are static; no autoconfiguration
          # competes with them.
          IPv6AcceptRA = false;
        };
        address = lib.optional (cfg.ipv6Address != null) cfg.ipv6Address;
        routes = lib.optional (cfg.ipv6Address != null) { Gateway = cfg.ipv6Gateway; };
        # network-online.target waits for a usable address on this link.
        linkConfig.RequiredForOnline = "routable";
      };
      # Every other physical Ethernet interface: DHCPv4 only. A Hetzner
      # private network is configured this way, and if the uplink's match
      # ever misses (a wrong MAC address), the public interface still gets
      # its IPv4 address and SSH stays reachable. Its routes rank below the
      # uplink's (networkd's default metric is 1024). Kind = "!*" keeps
      # virtual Ethernet links (veth pairs of containers, bridges, bonds,
      # VLANs: they all have a kind) out, as NixOS's own catch-all does
      # (99-ethernet-default-dhcp in nixos/modules/tasks/
      # network-interfaces-systemd.nix, NixOS/nixpkgs 003a3fd2f05c:
      # "physical interfaces have no kind").
      networks."90-ethernet" = {
        matchConfig = {
          Type = "ether";
          Kind = "!*";
        };
        networkConfig = {
          DHCP = "ipv4";
          IPv6AcceptRA = false;
        };
        dhcpV4Config.RouteMetric = 2048;
        linkConfig.RequiredForOnline = "no";
      };
    };

    # An IPv6-only server without its IPv6 address would boot with no
    # address at all: nobody could reach it, and it has no passwords.
    # (`cargo xtask check` says the same as HOST005 before any build.)
    assertions = [
      {
        assertion = cfg.ipv4 || cfg.ipv6Address != null;
        message = ''
          hetzner.network: the server has no public IPv4 (publicIpv4 = false in
          hosts/servers/hetzner-cloud/machine.nix) and no ipv6Address, so it would
          come up with no address and nobody could log in. Set ipv6Address in
          machine.nix to an address of the server's /64 from the Hetzner Cloud
          Console (e.g. "2a01:4f8:c012:3456::1/64"), or give the server an IPv4.
        '';
      }
    ];

    warnings = lib.optional (cfg.ipv4 && cfg.ipv6Address == null) ''
      hetzner.network.ipv6Address is null: the server gets no IPv6. Set
      ipv6Address in hosts/servers/hetzner-cloud/machine.nix to an address of
      the server's /64 from the Hetzner Cloud Console.
    '';
  };
}
