# The NixOS backend of the VM test (`cargo xtask vm-test --backend nixos`
# runs it as `nix build -L .#checks.x86_64-linux.vm-test`): the real host
# configuration, installed by disko onto an empty virtual disk and booted
# three times from it, through GRUB, with SeaBIOS or OVMF.
#
# disko's makeDiskoTest does the install: an installer VM runs the host's
# disko format and mount scripts on a second disk, installs the system and
# its boot loader there, and a new VM boots that disk. Its disks are 4 GiB,
# too small for 32 GiB of swap, so the disk here is a 64 GiB sparse qcow2:
# the same partition table with a smaller Btrfs.
#
# The expected mounts come from xtask/tests/fixtures/disko-reference.json,
# the data `cargo xtask check`'s model is tested against. At the end it runs
# the deploy checklist's procedures that need systemd (no failed unit, the
# timers, the root wiped and the machine's identity kept across a reboot,
# the rollback's line in the journal) from ./procedures.json, which is
# generated from the checklist's one source (xtask/src/deploy_checklist/
# procedures.rs): each server command as the admin, its output held against
# the checklist's expectations. The lab vm-test runs the others.
#
# Two variants exercise what the default run never reaches (nix/checks.nix):
# - `deletion` (./deletion.json): test-only retention settings
#   (retentionDays 0, keepAtLeast 2) under which the initrd's rollback
#   deletes old roots from the third boot on, under NixOS's real systemd
#   initrd; four boots, each held against the counts in the file (which
#   xtask/tests/host_modules.rs holds against the lab's retention model) and
#   the status file's deleted=; the old roots kept must be the newest.
# - `scriptedInitrd`: the same with boot.initrd.systemd.enable = false, so
#   the rollback runs from postResumeCommands in stage-1-init.sh.
# The variants run the boots only; the checklist's procedures are the
# deployed host's and run in the default variant.
#
# Needs nixpkgs and, to finish in minutes, KVM.
{
  pkgs,
  disko,
  # The host, as flake.nix exports it (nixosModules.hetzner-cloud).
  hostModule,
  # "bios" (Hetzner Cloud's default) or "uefi".
  firmware,
  # null, or ./deletion.json read: test-only retention and what each boot finds.
  deletion ? null,
  # Boot with the scripted initrd (postResumeCommands) instead of systemd's.
  scriptedInitrd ? false,
}:
let
  inherit (pkgs) lib;

  reference = lib.importJSON ../../xtask/tests/fixtures/disko-reference.json;

  # A well-formed public key nobody holds the secret of: the host refuses to
  # build without a key, and the test logs in through the test backdoor.
  testKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKx8bGy3Vv5u5ZCp1PjY0CXkPQ2n8hZKZ2tLw9VqQe1T vm-test";

  btrfs = lib.getExe' pkgs.btrfs-progs "btrfs";
  cryptsetup = lib.getExe' pkgs.cryptsetup "cryptsetup";
  dmsetup = lib.getExe' pkgs.lvm2 "dmsetup";
  lsattr = lib.getExe' pkgs.e2fsprogs "lsattr";

  # What each mount must show in /proc/self/mountinfo for the options the
  # layout asks for: the kernel spells some of them differently.
  expectedMounts = lib.mapAttrs (
    _: fs:
    lib.concatMap (
      option:
      if option == "defaults" then
        [ ]
      # x-* options (x-initrd.mount, which NixOS adds to every stage-1 mount)
      # are for userspace only: mount(8) passes them neither to the kernel nor
      # to utab, so mountinfo never shows them.
      else if lib.hasPrefix "x-" option then
        [ ]
      else if lib.hasPrefix "subvol=" option then
        [ "subvol=/${lib.removePrefix "subvol=" option}" ]
      else if lib.hasPrefix "umask=" option then
        [
          "fmask=${lib.removePrefix "umask=" option}"
          "dmask=${lib.removePrefix "umask=" option}"
        ]
      else
        [ option ]
    ) fs.options
  ) reference.fileSystems;

  subvolumes = lib.concatMap (
    disk:
    lib.concatMap (
      partition:
      lib.optionals (partition.content != null && partition.content.type == "btrfs") (
        map (subvolume: subvolume.name) partition.content.subvolumes
      )
    ) disk.partitions
  ) reference.disks;

  expectations = pkgs.writeText "vm-test-expectations.json" (
    builtins.toJSON {
      mounts = expectedMounts;
      inherit subvolumes;
      # [] in the default variant: the boots count old roots 1, 2, 3.
      deletionBoots = if deletion == null then [ ] else deletion.boots;
    }
  );

  variant =
    lib.optionalString (deletion != null) "-deletion" + lib.optionalString scriptedInitrd "-scripted-initrd";
in
disko.lib.testLib.makeDiskoTest {
  inherit pkgs;
  name = "hetzner-cloud-${firmware}${variant}";
  efi = firmware == "uefi";
  testMode = "module";
  disko-config = ../../hosts/servers/hetzner-cloud/disko.nix;

  # One 64 GiB sparse disk instead of disko's 4 GiB one.
  extraInstallerConfig = {
    virtualisation.emptyDiskImages = lib.mkForce [ 65536 ];
  };

  # The real host; only what a VM lacks or must not do is changed.
  extraSystemConfig = {
    imports = [
      hostModule
    ]
    # Test-only retention: old roots are past it as soon as they are moved.
    ++ lib.optional (deletion != null) {
      boot.btrfsRollback = {
        retentionDays = lib.mkForce deletion.retentionDays;
        keepAtLeast = lib.mkForce deletion.keepAtLeast;
      };
    }
    ++ lib.optional scriptedInitrd {
      boot.initrd.systemd.enable = lib.mkForce false;
    };
    # No Hetzner network and no tailnet in the test VM.
    services.tailscale.enable = lib.mkForce false;
    hetzner.network.ipv6Address = null;
    # eth0 is QEMU's user network; eth1, the test VLAN, keeps the addresses
    # the test framework gives it (its own networkd file, which the
    # uplink's default `en* eth*` would otherwise take over).
    hetzner.network.interface = "eth0";
    systemd.network.wait-online.enable = false;
    users.users.hbohlen.openssh.authorizedKeys.keys = [ testKey ];
    # makeDiskoTest sets these to its UEFI flag; the host wants both boot
    # paths installed whatever the firmware, as on the real server.
    boot.loader.grub.efiSupport = lib.mkForce true;
    boot.loader.grub.efiInstallAsRemovable = lib.mkForce true;
  };

  extraTestScript = ''
    import json
    import re
    import shlex

    with open("${expectations}") as file:
        expected = json.load(file)
    with open("${./procedures.json}") as file:
        checklist = json.load(file)
    expected_mounts: dict[str, list[str]] = expected["mounts"]
    expected_subvolumes: list[str] = expected["subvolumes"]
    # The deletion variants: per boot, the old roots and the deletions.
    deletion_boots: dict[int, dict] = {b["boot"]: b for b in expected["deletionBoots"]}
    previous_roots: list[str] = []


    def old_roots() -> list[str]:
        return sorted(machine.succeed("ls -1 /btrfs_tmp/@old_roots").split())


    def swap_key() -> str:
        return machine.succeed("${dmsetup} table --target crypt --showkeys | sha256sum")


    def check_boot(boot: int) -> None:
        machine.wait_for_unit("multi-user.target")
        # sshd creates the host keys (in /persist, through impermanence) before it starts.
        machine.wait_for_unit("sshd.service")

        with subtest(f"boot {boot}: the rollback ran in the initrd"):
            # The rollback module's stage-2 unit fails when the rotation in
            # the initrd failed or did not run, and so does this wait.
            machine.wait_for_unit("btrfs-rollback-status.service")
            machine.succeed("grep -qx result=ok /run/btrfs-rollback/status")
            # The first boot after the install moves the installer's root.
            names = old_roots()
            if not deletion_boots:
                assert len(names) == boot, f"expected {boot} old roots, found {names}"
            else:
                wanted = deletion_boots[boot]
                assert len(names) == wanted["oldRoots"], f"boot {boot}: expected {wanted}, found {names}"
                machine.succeed(f"grep -qx deleted={wanted['deleted']} /run/btrfs-rollback/status")
                # What survives of the old roots is the newest of them.
                survivors = names[:-1]
                assert survivors == previous_roots[len(previous_roots) - len(survivors):], (
                    f"boot {boot}: kept {survivors} of {previous_roots}"
                )
                previous_roots[:] = names

        with subtest(f"boot {boot}: mounts and their options"):
            for mountpoint, options in expected_mounts.items():
                shown = machine.succeed(f"findmnt -n -o OPTIONS --mountpoint {mountpoint}").strip().split(",")
                missing = [o for o in options if o not in shown]
                assert not missing, f"{mountpoint}: {missing} not in {shown}"
            machine.succeed("findmnt -n -o SOURCE /var/lib/nixos | grep -F '[/@persist/var/lib/nixos]'")

        with subtest(f"boot {boot}: subvolumes"):
            listed = machine.succeed("${btrfs} subvolume list /btrfs_tmp")
            top = [line.split(" path ")[1] for line in listed.splitlines() if " top level 5 " in line]
            missing = [s for s in expected_subvolumes if s not in top]
            assert not missing, f"subvolumes {missing} missing from {top}"

        with subtest(f"boot {boot}: swap is dm-crypt plain with a random key"):
            device = machine.succeed("swapon --show=NAME --noheadings --raw").split()[0]
            machine.succeed(f"test \"$(lsblk -ndo TYPE {device})\" = crypt")
            name = machine.succeed(f"lsblk -ndo NAME {device}").strip()
            machine.succeed(f"${cryptsetup} status {name} | grep -E 'type: +PLAIN'")

        with subtest(f"boot {boot}: ESP, GRUB and No_COW"):
            machine.succeed("test \"$(stat -c %a /boot)\" = 700")
            machine.succeed("test \"$(stat -c %a /boot/grub/grub.cfg)\" = 600")
            machine.succeed("test -e /boot/grub/i386-pc/core.img")
            machine.succeed("test -e /boot/EFI/BOOT/BOOTX64.EFI")
            machine.succeed("${lsattr} -d /var/lib/containers | cut -d' ' -f1 | grep -q C")


    def reboot() -> None:
        machine.shutdown()
        machine.start()


    # Boot 1: the installed system's first boot.
    check_boot(1)
    machine_id = machine.succeed("cat /etc/machine-id")
    host_key = machine.succeed("cat /etc/ssh/ssh_host_ed25519_key.pub")
    keys = [swap_key()]
    machine.succeed("echo 1 > /wiped-marker")
    machine.succeed("head -c 64 /dev/urandom | base64 > /persist/persist-marker")
    machine.succeed("echo 1 > /var/log/log-marker")
    persist_marker = machine.succeed("cat /persist/persist-marker")

    for boot in range(2, 5 if deletion_boots else 4):
        reboot()
        check_boot(boot)
        with subtest(f"boot {boot}: / is new, the rest survived"):
            machine.fail("test -e /wiped-marker")
            # The root just left is the newest old root, whole.
            newest = old_roots()[-1]
            machine.succeed(f"test -e /btrfs_tmp/@old_roots/{newest}/wiped-marker")
            assert machine.succeed("cat /persist/persist-marker") == persist_marker
            machine.succeed("test -e /var/log/log-marker")
            assert machine.succeed("cat /etc/machine-id") == machine_id
            assert machine.succeed("cat /etc/ssh/ssh_host_ed25519_key.pub") == host_key
            keys.append(swap_key())
            assert len(set(keys)) == len(keys), "the swap key was reused across boots"
        machine.succeed("echo 1 > /wiped-marker")


    # The checklist's procedures that need systemd, as printed (see the top).
    def holds(expect: dict, status: int, stdout: str) -> bool:
        lines = [line.strip() for line in stdout.splitlines() if line.strip()]
        kind = expect["kind"]
        if kind == "exit":
            return status == expect["status"]
        if kind == "empty":
            return not lines
        if kind in ("line", "no_line"):
            found = any(re.fullmatch(expect["regex"], line) for line in lines)
            return found if kind == "line" else not found
        if kind == "fields":
            def fields(line: str) -> list[str]:
                return [f for f in re.split(r"[\s,]+", line) if f]
            line = next((l for l in lines if fields(l)[:1] == [expect["first"]]), None)
            return line is not None and all(i in fields(line) for i in expect["include"])
        if kind == "at_most":
            line = next((l for l in lines if re.fullmatch(expect["regex"], l)), None)
            return line is not None and float(line.split()[expect["field"] - 1].rstrip("%")) <= expect["max"]
        raise Exception(f"unknown expectation {kind}")


    # The variants run the boots only (see the top).
    for procedure in checklist["procedures"] if not deletion_boots else []:
        with subtest(f"checklist {procedure['step']} {procedure['id']}: {procedure['title']}"):
            for command in procedure["commands"]:
                line = command["line"]
                if command["reboots"]:
                    reboot()
                    machine.wait_for_unit("multi-user.target")
                    continue
                if command["where"] != "server":
                    machine.log(f"NOT RUN (runs on the workstation): {line}")
                    continue
                status, stdout = machine.execute(f"su - {checklist['admin']} -c {shlex.quote(line)}")
                wanted = command["expect"]
                if not any(e["kind"] == "exit" for e in wanted):
                    wanted = [{"kind": "exit", "status": 0}] + wanted
                for expect in wanted:
                    assert holds(expect, status, stdout), (
                        f"checklist {procedure['step']}: `{line}` exited {status} and printed {stdout!r}; expected {expect}"
                    )
  '';
}
