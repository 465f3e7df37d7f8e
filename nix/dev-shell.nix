# `nix develop`: everything `cargo xtask check`, `cargo xtask test` and the
# lab `cargo xtask vm-test` call, so that on a Nix machine nothing needs apt.
{ pkgs }:
let
  # The lab VM's initramfs embeds busybox (with its shared libraries). Only
  # its one binary goes on PATH: the whole package would put busybox's
  # mount, ls, find … ahead of util-linux and coreutils in the shell.
  busyboxOnly = pkgs.runCommand "busybox-binary-only" { } ''
    mkdir -p $out/bin
    ln -s ${pkgs.busybox}/bin/busybox $out/bin/busybox
  '';
in
pkgs.mkShell {
  packages = [
    # Rust
    pkgs.cargo
    pkgs.rustc
    pkgs.rustfmt
    pkgs.clippy

    # Nix
    pkgs.nix
    pkgs.nixfmt

    # Disks and filesystems: what disko runs and the lab VM checks
    pkgs.btrfs-progs
    pkgs.compsize
    pkgs.gptfdisk
    pkgs.dosfstools
    pkgs.cryptsetup
    pkgs.util-linux
    pkgs.e2fsprogs

    # The lab VM: qemu, the initramfs and its modules
    pkgs.qemu_kvm
    pkgs.cpio
    pkgs.zstd
    pkgs.kmod
    busyboxOnly
    # The rollback script's tests run it under dash as well as busybox and bash.
    pkgs.dash
  ];

  # The xtask installs nothing with apt-get inside this shell.
  XTASK_NO_INSTALL = "1";
}
