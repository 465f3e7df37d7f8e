# Hetzner Cloud networking with systemd-networkd: IPv4 by DHCP, IPv6 static
# (Hetzner routes a /64 to the server and expects it to configure an
# address itself, with fe80::1 as the gateway).
{ config, lib, ... }:
let
  machine = import ./machine.nix;
  cfg = config.hetzner.network;
in
{
  options.hetzner.network = {
    interface = lib.mkOption {
      type = lib.types.str;
      default = machine.publicInterface;
      defaultText = lib.literalExpression "(import ./machine.nix).publicInterface";
      example = "enp1s0";
      description = ''
        The public interface, as systemd-networkd matches it (a name or a
        glob). It gets DHCPv4 and the static IPv6 address.
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

    ipv6Gateway = lib.mkOption {
      type = lib.types.str;
      default = "fe80::1";
      description = "The IPv6 default gateway; fe80::1 on Hetzner Cloud.";
    };
  };

  config = {
    networking.hostName = machine.hostName;

    networking.useNetworkd = true;
    # Only the interface below is configured. Without this, networkd would
    # also run DHCP on every other Ethernet interface. A Hetzner private
    # network (a second interface, DHCP) needs its own entry here.
    networking.useDHCP = false;

    systemd.network = {
      enable = true;
      networks."10-uplink" = {
        matchConfig.Name = cfg.interface;
        networkConfig = {
          DHCP = "ipv4";
          # The IPv6 address and route are static; no autoconfiguration
          # competes with them.
          IPv6AcceptRA = false;
        };
        address = lib.optional (cfg.ipv6Address != null) cfg.ipv6Address;
        routes = lib.optional (cfg.ipv6Address != null) { Gateway = cfg.ipv6Gateway; };
        # network-online.target waits for a usable address on this link.
        linkConfig.RequiredForOnline = "routable";
      };
    };

    warnings = lib.optional (cfg.ipv6Address == null) ''
      hetzner.network.ipv6Address is null: the server gets no IPv6. Set
      ipv6Address in hosts/servers/hetzner-cloud/machine.nix to an address of
      the server's /64 from the Hetzner Cloud Console.
    '';
  };
}
