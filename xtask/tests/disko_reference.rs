/*!
Our model of disko (layout) against disko itself.

tests/fixtures/disko-reference.json is what disko's own NixOS module
(module.nix and the types in lib/types, evaluated with nixpkgs' lib) makes of
hosts/servers/hetzner-cloud/disko.nix: partition numbers, labels, devices,
the sgdisk arguments of its create script, subvolume creation order, and the
fileSystems, swapDevices and boot.loader.grub.devices it hands to NixOS. The
flake check `disko-reference` (nix/tests/disko-reference.nix) compares the
same file against the real NixOS configuration, so the fixture must say what
NixOS, not only disko, makes of the layout.

No nixpkgs can be evaluated where the fixture is made, so the NixOS options
disko writes into are a stand-in (the `nixos` module below). It follows these
upstream files, read at the revisions named; the fixture records them in
`nixosStandIn`:
- nixos/modules/tasks/filesystems.nix (NixOS/nixpkgs 0148e16d1446): the
  fileSystems.<p> submodule; its fileSystemOpts add "x-initrd.mount" to the
  options of every file system that utils.fsNeededForBoot selects.
- nixos/lib/utils.nix (NixOS/nixpkgs 0229f9ed9a89): fsNeededForBoot is
  `fs.neededForBoot || elem fs.mountPoint pathsNeededForBoot`, with
  pathsNeededForBoot = / /nix /nix/store /var /var/log /var/lib
  /var/lib/nixos /etc /usr.
- nixos/modules/system/boot/stage-1.nix: fileSystems.<p>.neededForBoot, a
  bool defaulting to false.

The real module also handles autoResize, autoFormat, depends and label; disko
and this host set none of them, and nix/tests/disko-reference.nix would catch
a difference.

Regenerate it whenever disko.nix changes, disko or nixpkgs is updated, or the
stand-in no longer matches the files above. From the repository root, with
DISKO and NIXPKGS_LIB set to checkouts (work trees) of disko and of nixpkgs
or nixpkgs.lib, at the revisions flake.nix pins (disko) and follows
(nixpkgs), run everything between the lines:

----------------------------------------------------------------------------
nix-instantiate --eval --strict --json \
  -I disko="$DISKO" -I nixpkgs-lib="$NIXPKGS_LIB" \
  --argstr diskoRev "$(git -C "$DISKO" rev-parse HEAD)" \
  --argstr libRev "$(git -C "$NIXPKGS_LIB" rev-parse HEAD)" \
  --expr '
{ diskoRev, libRev }:
let
  lib = import <nixpkgs-lib/lib>;
  inherit (lib) mkOption types;
  opt = type: default: mkOption { inherit type default; };
  # nixos/lib/utils.nix: pathsNeededForBoot and fsNeededForBoot.
  pathsNeededForBoot = [ "/" "/nix" "/nix/store" "/var" "/var/log" "/var/lib" "/var/lib/nixos" "/etc" "/usr" ];
  fsNeededForBoot = fs: fs.neededForBoot || lib.elem fs.mountPoint pathsNeededForBoot;
  # nixos/modules/tasks/filesystems.nix (coreFileSystemOpts, fileSystemOpts)
  # and stage-1.nix (neededForBoot), reduced to what disko sets.
  fileSystem = { name, config, ... }: {
    options = {
      mountPoint = opt types.str name;
      device = opt (types.nullOr types.nonEmptyStr) null;
      fsType = opt types.nonEmptyStr "auto";
      options = opt (types.nonEmptyListOf types.nonEmptyStr) [ "defaults" ];
      neededForBoot = opt types.bool false;
    };
    config.options = lib.mkMerge [ (lib.mkIf (fsNeededForBoot config) [ "x-initrd.mount" ]) ];
  };
  nixos = {
    options = {
      fileSystems = opt (types.attrsOf (types.submodule fileSystem)) { };
      swapDevices = opt (types.listOf (types.attrsOf types.anything)) [ ];
      boot.loader.grub.devices = opt (types.listOf types.str) [ ];
      boot.resumeDevice = opt types.str "";
      system.build = opt (types.lazyAttrsOf types.raw) { };
      assertions = opt (types.listOf types.unspecified) [ ];
      systemd = opt (types.lazyAttrsOf types.anything) { };
    };
    config._module.args = {
      pkgs = throw "no pkgs";
      modulesPath = throw "no modulesPath";
    };
  };
  config = (lib.evalModules {
    modules = [ <disko/module.nix> nixos ./hosts/servers/hetzner-cloud/disko.nix ];
  }).config;
  matches = re: s: lib.unique (map lib.head (lib.filter lib.isList (builtins.split re s)));
  content = c:
    if c == null then null
    else { inherit (c) type device; }
      // lib.optionalAttrs (c.type == "filesystem") { inherit (c) format mountpoint mountOptions extraArgs; }
      // lib.optionalAttrs (c.type == "swap") { inherit (c) randomEncryption resumeDevice discardPolicy priority mountOptions; }
      // lib.optionalAttrs (c.type == "btrfs") {
        inherit (c) mountpoint mountOptions extraArgs;
        subvolumes = lib.mapAttrsToList (key: s: { inherit key; inherit (s) name mountpoint mountOptions; }) c.subvolumes;
        createOrder = matches "SUBVOL_ABS_PATH=\"[$]MNTPOINT/([^\"]+)\"" c._create;
      };
  disk = key: d: {
    inherit key;
    inherit (d) name device;
    partitions = lib.sort (a: b: a.index < b.index) (lib.mapAttrsToList (pkey: p: {
      key = pkey;
      index = p._index;
      inherit (p) name label device type priority size start end alignment;
      content = content p.content;
    }) d.content.partitions);
    sgdisk = {
      new = matches "--new=([^ ]+)" d._create;
      changeName = matches "--change-name=\"([^\"]+)\"" d._create;
      typecode = matches "--typecode=([^ ]+)" d._create;
    };
  };
in
{
  about = "disko evaluation of hosts/servers/hetzner-cloud/disko.nix: see xtask/tests/disko_reference.rs";
  inherit diskoRev libRev;
  nixosStandIn = "fileSystems.<p> as nixos/modules/tasks/filesystems.nix (NixOS/nixpkgs 0148e16d1446) and nixos/lib/utils.nix (NixOS/nixpkgs 0229f9ed9a89) define it: see xtask/tests/disko_reference.rs";
  input = import ./hosts/servers/hetzner-cloud/disko.nix;
  disks = lib.mapAttrsToList disk config.disko.devices.disk;
  fileSystems = lib.mapAttrs (_: fs: { inherit (fs) device fsType options neededForBoot; }) config.fileSystems;
  inherit (config) swapDevices;
  grubDevices = config.boot.loader.grub.devices;
  inherit (config.boot) resumeDevice;
}' | python3 -m json.tool --indent 2 > xtask/tests/fixtures/disko-reference.json
----------------------------------------------------------------------------
*/

use std::collections::BTreeMap;
use std::process::Command;

use camino::Utf8Path;
use layout::build::{build, Evaluated};
use layout::{Content, DiskContent, Layout, Partition};
use serde::Deserialize;
use serde_json::Value;

const FIXTURE: &str = include_str!("fixtures/disko-reference.json");
const REGENERATE: &str =
    "regenerate tests/fixtures/disko-reference.json with the command at the top of tests/disko_reference.rs";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Reference {
    input: Value,
    disks: Vec<RefDisk>,
    file_systems: BTreeMap<String, RefFileSystem>,
    swap_devices: Vec<RefSwapDevice>,
    grub_devices: Vec<String>,
    resume_device: String,
}

#[derive(Debug, Deserialize)]
struct RefDisk {
    key: String,
    name: String,
    device: String,
    partitions: Vec<RefPartition>,
    sgdisk: RefSgdisk,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RefSgdisk {
    new: Vec<String>,
    change_name: Vec<String>,
    typecode: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct RefPartition {
    key: String,
    index: u32,
    name: String,
    label: String,
    device: String,
    #[serde(rename = "type")]
    type_code: String,
    priority: i64,
    size: String,
    start: String,
    end: String,
    alignment: u64,
    content: Option<RefContent>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum RefContent {
    #[serde(rename_all = "camelCase")]
    Filesystem {
        device: String,
        format: String,
        mountpoint: Option<String>,
        mount_options: Vec<String>,
        extra_args: Vec<String>,
    },
    #[serde(rename_all = "camelCase")]
    Swap {
        device: String,
        random_encryption: bool,
        resume_device: bool,
        discard_policy: Option<String>,
        priority: Option<i64>,
        mount_options: Vec<String>,
    },
    #[serde(rename_all = "camelCase")]
    Btrfs {
        device: String,
        mountpoint: Option<String>,
        mount_options: Vec<String>,
        extra_args: Vec<String>,
        subvolumes: Vec<RefSubvolume>,
        create_order: Vec<String>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RefSubvolume {
    key: String,
    name: String,
    mountpoint: Option<String>,
    mount_options: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RefFileSystem {
    device: String,
    fs_type: String,
    options: Vec<String>,
    needed_for_boot: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RefSwapDevice {
    device: String,
    random_encryption: RefRandomEncryption,
}

#[derive(Debug, Deserialize)]
struct RefRandomEncryption {
    enable: bool,
}

fn reference() -> Reference {
    serde_json::from_str(FIXTURE).expect("the disko reference fixture parses")
}

/// Our model, built from the same disko.nix disko evaluated.
fn model(reference: &Reference) -> Layout {
    let (layout, findings) = build(&Evaluated {
        host: "hetzner-cloud",
        source: Utf8Path::new("hosts/servers/hetzner-cloud/disko.nix"),
        layout: &reference.input,
        persistence: &Value::Null,
    });
    assert!(findings.is_empty(), "building the model: {findings:#?}");
    layout.expect("the model builds")
}

fn partitions(disk: &layout::Disk) -> &[Partition] {
    match &disk.content {
        Some(DiskContent::Gpt(gpt)) => &gpt.partitions,
        other => panic!("disk {} is not GPT in the model: {other:?}", disk.key),
    }
}

#[test]
fn partitions_match_disko() {
    let reference = reference();
    let layout = model(&reference);
    assert_eq!(
        layout.disks.iter().map(|d| &d.key).collect::<Vec<_>>(),
        reference.disks.iter().map(|d| &d.key).collect::<Vec<_>>(),
        "disks"
    );
    for (disk, expected) in layout.disks.iter().zip(&reference.disks) {
        assert_eq!(disk.name, expected.name, "disk {} name", disk.key);
        assert_eq!(disk.device, expected.device, "disk {} device", disk.key);
        let ours = partitions(disk);
        assert_eq!(
            ours.iter()
                .map(|p| (p.number, p.key.as_str()))
                .collect::<Vec<_>>(),
            expected
                .partitions
                .iter()
                .map(|p| (p.index, p.key.as_str()))
                .collect::<Vec<_>>(),
            "partition numbers (disko's _index) in creation order"
        );
        for (partition, want) in ours.iter().zip(&expected.partitions) {
            let at = format!("partition {}", want.key);
            assert_eq!(partition.name, want.name, "{at}: name");
            assert_eq!(partition.label, want.label, "{at}: label");
            assert_eq!(partition.device, want.device, "{at}: device");
            assert_eq!(partition.type_code, want.type_code, "{at}: type");
            assert_eq!(partition.priority, want.priority, "{at}: priority");
            assert_eq!(partition.size_text, want.size, "{at}: size");
            assert_eq!(partition.start, want.start, "{at}: start");
            assert_eq!(partition.end, want.end, "{at}: end");
            assert_eq!(partition.alignment, want.alignment, "{at}: alignment");
        }
        // What disko's create script really passes to sgdisk, one entry per
        // partition in creation order.
        let new: Vec<String> = ours
            .iter()
            .map(|p| format!("{}:{}:{}", p.number, p.start, p.end))
            .collect();
        let names: Vec<String> = ours
            .iter()
            .map(|p| format!("{}:{}", p.number, p.label))
            .collect();
        let types: Vec<String> = ours
            .iter()
            .map(|p| format!("{}:{}", p.number, p.type_code))
            .collect();
        assert_eq!(new, expected.sgdisk.new, "sgdisk --new");
        assert_eq!(names, expected.sgdisk.change_name, "sgdisk --change-name");
        assert_eq!(types, expected.sgdisk.typecode, "sgdisk --typecode");
    }
}

#[test]
fn contents_match_disko() {
    let reference = reference();
    let layout = model(&reference);
    for (disk, expected) in layout.disks.iter().zip(&reference.disks) {
        for (partition, want) in partitions(disk).iter().zip(&expected.partitions) {
            let at = format!("partition {}", want.key);
            match (&partition.content, &want.content) {
                (None, None) => {}
                (
                    Some(Content::Filesystem(fs)),
                    Some(RefContent::Filesystem {
                        device,
                        format,
                        mountpoint,
                        mount_options,
                        extra_args,
                    }),
                ) => {
                    assert_eq!(&fs.device, device, "{at}: device");
                    assert_eq!(&fs.format, format, "{at}: format");
                    assert_eq!(&fs.mountpoint, mountpoint, "{at}: mountpoint");
                    assert_eq!(&fs.mount_options, mount_options, "{at}: mountOptions");
                    assert_eq!(&fs.extra_args, extra_args, "{at}: extraArgs");
                }
                (
                    Some(Content::Swap(swap)),
                    Some(RefContent::Swap {
                        device,
                        random_encryption,
                        resume_device,
                        discard_policy,
                        priority,
                        mount_options,
                    }),
                ) => {
                    assert_eq!(&swap.device, device, "{at}: device");
                    assert_eq!(
                        &swap.random_encryption, random_encryption,
                        "{at}: randomEncryption"
                    );
                    assert_eq!(&swap.resume_device, resume_device, "{at}: resumeDevice");
                    assert_eq!(&swap.discard_policy, discard_policy, "{at}: discardPolicy");
                    assert_eq!(&swap.priority, priority, "{at}: priority");
                    assert_eq!(&swap.mount_options, mount_options, "{at}: mountOptions");
                }
                (
                    Some(Content::Btrfs(btrfs)),
                    Some(RefContent::Btrfs {
                        device,
                        mountpoint,
                        mount_options,
                        extra_args,
                        subvolumes,
                        create_order,
                    }),
                ) => {
                    assert_eq!(&btrfs.device, device, "{at}: device");
                    assert_eq!(&btrfs.mountpoint, mountpoint, "{at}: mountpoint");
                    assert_eq!(&btrfs.mount_options, mount_options, "{at}: mountOptions");
                    assert_eq!(&btrfs.extra_args, extra_args, "{at}: extraArgs");
                    // The model keeps subvolumes in the order disko creates them.
                    let ours: Vec<&str> =
                        btrfs.subvolumes.iter().map(|s| s.name.as_str()).collect();
                    assert_eq!(&ours, create_order, "{at}: subvolume creation order");
                    let by_key: BTreeMap<&str, &RefSubvolume> =
                        subvolumes.iter().map(|s| (s.key.as_str(), s)).collect();
                    assert_eq!(btrfs.subvolumes.len(), by_key.len(), "{at}: subvolumes");
                    for subvolume in &btrfs.subvolumes {
                        let want = by_key
                            .get(subvolume.key.as_str())
                            .unwrap_or_else(|| panic!("{at}: disko has no {}", subvolume.key));
                        assert_eq!(subvolume.name, want.name, "{at}: {} name", want.key);
                        assert_eq!(
                            subvolume.mountpoint, want.mountpoint,
                            "{at}: {} mountpoint",
                            want.key
                        );
                        assert_eq!(
                            subvolume.mount_options, want.mount_options,
                            "{at}: {} mountOptions",
                            want.key
                        );
                    }
                }
                (ours, theirs) => panic!("{at}: the model has {ours:?}, disko has {theirs:?}"),
            }
        }
    }
}

/// The options NixOS mounts with: the model's (disko's, then the host's)
/// behind what nixos/modules/tasks/filesystems.nix adds itself, which is
/// "x-initrd.mount" for every file system stage 1 mounts (the submodule's
/// own definition comes before those of disko's module).
fn nixos_options(mount: &layout::Mount) -> Vec<String> {
    let added = mount.needed_for_boot.then(|| "x-initrd.mount".to_owned());
    added
        .into_iter()
        .chain(mount.options.iter().cloned())
        .collect()
}

/// The fixture is of the NixOS the flake builds: x-initrd.mount on exactly
/// the mounts stage 1 makes (the cause of a failing `nix flake check` when
/// the stand-in lacked it).
#[test]
fn the_reference_has_the_options_nixos_adds() {
    let reference = reference();
    let in_initrd: Vec<&str> = reference
        .file_systems
        .iter()
        .filter(|(_, fs)| fs.options.iter().any(|o| o == "x-initrd.mount"))
        .map(|(mountpoint, _)| mountpoint.as_str())
        .collect();
    assert_eq!(in_initrd, ["/", "/nix", "/persist", "/var/log"]);
}

#[test]
fn mounts_match_the_file_systems_disko_generates() {
    let reference = reference();
    let layout = model(&reference);
    let mounts = layout.mounts();
    assert_eq!(
        mounts
            .iter()
            .map(|m| m.mountpoint.as_str())
            .collect::<std::collections::BTreeSet<_>>(),
        reference
            .file_systems
            .keys()
            .map(String::as_str)
            .collect::<std::collections::BTreeSet<_>>(),
        "mountpoints"
    );
    for mount in &mounts {
        let want = &reference.file_systems[&mount.mountpoint];
        let at = &mount.mountpoint;
        assert_eq!(mount.device, want.device, "{at}: device");
        assert_eq!(mount.fs_type, want.fs_type, "{at}: fsType");
        assert_eq!(nixos_options(mount), want.options, "{at}: options");
        assert_eq!(
            mount.needed_for_boot_explicit, want.needed_for_boot,
            "{at}: neededForBoot"
        );
    }
}

#[test]
fn swap_grub_and_resume_match_disko() {
    let reference = reference();
    let layout = model(&reference);
    let swaps: Vec<(String, bool)> = layout
        .contents()
        .filter_map(|(_, _, content)| match content {
            Content::Swap(swap) => Some((swap.device.clone(), swap.random_encryption)),
            _ => None,
        })
        .collect();
    let expected: Vec<(String, bool)> = reference
        .swap_devices
        .iter()
        .map(|s| (s.device.clone(), s.random_encryption.enable))
        .collect();
    assert_eq!(
        swaps, expected,
        "swapDevices (device, randomEncryption.enable)"
    );

    // disko adds every disk that holds an EF02 partition to GRUB's devices.
    let grub: Vec<&str> = layout
        .disks
        .iter()
        .filter(|disk| partitions(disk).iter().any(|p| p.type_code == "EF02"))
        .map(|disk| disk.device.as_str())
        .collect();
    assert_eq!(grub, reference.grub_devices, "boot.loader.grub.devices");

    assert_eq!(
        layout.resume_device.as_deref().unwrap_or(""),
        reference.resume_device,
        "boot.resumeDevice"
    );
}

/// The fixture describes the disko.nix in the tree, not an older one.
#[test]
fn fixture_is_of_the_current_disko_nix() {
    let nix = xtask::nix_eval::Nix::locate(&toolbox::context::Context::default())
        .expect("nix-instantiate is needed for this test");
    let root = toolbox::project::project_root();
    let output = Command::new(nix.instantiate.as_str())
        .args(["--eval", "--strict", "--json"])
        .arg(root.join("hosts/servers/hetzner-cloud/disko.nix").as_str())
        .output()
        .expect("running nix-instantiate");
    assert!(
        output.status.success(),
        "nix-instantiate failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let current: Value =
        serde_json::from_slice(&output.stdout).expect("nix-instantiate prints JSON");
    assert!(
        current == reference().input,
        "hosts/servers/hetzner-cloud/disko.nix changed since the disko reference was made: {REGENERATE}"
    );
}
