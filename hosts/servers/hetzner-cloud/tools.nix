# Programs the deploy checklist's verification (§3) and docs/ run on the
# server that NixOS does not install by itself: compsize (§3.7, compression
# per subvolume), cryptsetup (§3.4, the swap's encryption; nixpkgs' swap.nix
# puts it only on the path of the mkswap unit) and e2fsprogs for lsattr
# (§3.7, No_COW; nixpkgs' ext.nix adds e2fsprogs with the systemd initrd
# only when ext is an initrd filesystem). xtask/src/deploy_checklist/places.rs reads
# this list: a procedure that calls a program the server lacks fails there.
{ pkgs, ... }:
{
  environment.systemPackages = [
    pkgs.compsize
    pkgs.cryptsetup
    pkgs.e2fsprogs
  ];
}
