//! Layouts nobody wrote by hand: a seeded generator over disko's option space
//! (partition counts, order, sizes, alignment, start/end, labels, UUIDs,
//! types; filesystem formats and extraArgs; mount options in any order, with
//! duplicates and conflicts; subvolumes; swap partitions and swap files;
//! several disks; nodev).
//!
//! Each layout starts from this host's template (so that most of what the
//! host requires holds and a mutation's effect is visible) and takes a few
//! random mutations; one in eight is built from scratch. The same seed gives
//! the same layouts on every machine: the generator is its own small
//! SplitMix64, not a crate whose stream may change between versions.
//!
//! Layouts are plain JSON (the config a disko.nix returns), read by Nix with
//! `builtins.fromJSON`. The recorded corpus is
//! tests/fixtures/disko-corpus/generated.json (record-generated.sh), held by
//! tests/generated_corpus.rs.

use serde_json::{json, Map, Value};

/// SplitMix64 (Steele, Lea, Flood 2014): small, fast, and fixed forever.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next_u64() % u64::try_from(n.max(1)).unwrap_or(1)).unwrap_or(0)
    }

    /// True with probability 1/n.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// 0..=max items drawn from `pool`, with repeats, in random order.
    pub fn some<T: Clone>(&mut self, pool: &[T], max: usize) -> Vec<T> {
        let n = self.below(max + 1);
        (0..n).map(|_| self.pick(pool).clone()).collect()
    }
}

/// The disk size every generated layout is judged on (the host's 480 GB).
pub const DISK_BYTES: u64 = 480_000_000_000;

const HOST_BTRFS_OPTIONS: &[&str] = &[
    "compress=zstd:1",
    "noatime",
    "ssd",
    "space_cache=v2",
    "discard=async",
];

/// Btrfs mount options: the kernel's, some it refuses, some with bad values, and conflicts.
const BTRFS_OPTIONS: &[&str] = &[
    "compress=zstd:1",
    "compress=zstd:3",
    "compress=zstd:15",
    "compress=zstd:99",
    "compress=lzo",
    "compress=zlib:9",
    "compress=zlib",
    "compress=brotli",
    "compress-force=zstd",
    "compress=no",
    "noatime",
    "relatime",
    "ssd",
    "nossd",
    "ssd_spread",
    "space_cache=v2",
    "space_cache=v1",
    "space_cache",
    "nospace_cache",
    "discard=async",
    "discard",
    "nodiscard",
    "discard=sync",
    "nodatacow",
    "nodatasum",
    "datacow",
    "datasum",
    "autodefrag",
    "noautodefrag",
    "commit=120",
    "commit=abc",
    "subvolid=5",
    "subvolid=256",
    "subvol=/",
    "subvol=@nix",
    "subvol=@missing",
    "ro",
    "rw",
    "defaults",
    "nofail",
    "noexec",
    "nosuid",
    "nodev",
    "user_subvol_rm_allowed",
    "thread_pool=4",
    "thread_pool=0",
    "max_inline=2048",
    "flushoncommit",
    "skip_balance",
    "norecovery",
    "rescue=usebackuproot",
    "inode_cache",
    "degraded",
    "fatal_errors=panic",
    "barrier",
    "nobarrier",
    "acl",
    "noacl",
    "clear_cache",
    "check_int",
    "x-systemd.device-timeout=10s",
    "noatimex",
];

const EXT4_OPTIONS: &[&str] = &[
    "noatime",
    "relatime",
    "defaults",
    "errors=remount-ro",
    "errors=bogus",
    "data=ordered",
    "data=writeback",
    "data=journal",
    "barrier=0",
    "nobarrier",
    "nodelalloc",
    "journal_checksum",
    "discard",
    "commit=60",
    "dioread_nolock",
    "noacl",
    "user_xattr",
    "nouser_xattr",
    "compress=zstd",
    "subvol=@x",
    "nosuid",
    "nodev",
    "noexec",
    "ro",
    "resuid=0",
    "stripe=8",
    "inode_readahead_blks=3",
];

const VFAT_OPTIONS: &[&str] = &[
    "fmask=0177",
    "dmask=0077",
    "umask=0077",
    "fmask=0022",
    "dmask=0022",
    "umask=0022",
    "fmask=0999",
    "codepage=437",
    "iocharset=iso8859-1",
    "shortname=mixed",
    "utf8",
    "noatime",
    "errors=remount-ro",
    "nosuchopt",
];

const TMPFS_OPTIONS: &[&str] = &[
    "size=2G",
    "size=50%",
    "size=lots",
    "mode=1777",
    "mode=755",
    "nr_inodes=1m",
    "nosuid",
    "nodev",
    "noexec",
    "huge=within_size",
    "huge=sometimes",
    "compress=zstd",
];

const BTRFS_EXTRA_ARGS: &[&[&str]] = &[
    &["-f"],
    &[],
    &["-f", "--csum", "xxhash"],
    &["-f", "--csum", "blake3"],
    &["-f", "-m", "dup"],
    &["-f", "-d", "raid1"],
    &["-f", "-L", "root"],
    &["-f", "--nodesize", "65536"],
    &["-f", "--nodesize", "3000"],
    &["-f", "-O", "^free-space-tree"],
    &["-f", "-O", "block-group-tree"],
    &["-f", "--mixed"],
];

const EXT4_EXTRA_ARGS: &[&[&str]] = &[
    &[],
    &["-L", "data"],
    &["-b", "4096"],
    &["-b", "1024"],
    &["-b", "65536"],
    &["-O", "^has_journal"],
    &["-T", "huge"],
    &["-T", "nosuchtype"],
    &["-i", "1024"],
    &["-L", "a-label-longer-than-sixteen"],
    &["-E", "lazy_itable_init=1"],
];

const VFAT_EXTRA_ARGS: &[&[&str]] = &[
    &[],
    &[],
    &["-F", "32"],
    &["-F", "16"],
    &["-F", "12"],
    &["-n", "ESP"],
    &["-F", "32", "-S", "4096"],
    &["-s", "1"],
    &["-F", "64"],
];

const SIZES: &[&str] = &[
    "1M", "2M", "8M", "32M", "33M", "100M", "256M", "260M", "512M", "1G", "2G", "4G", "8G", "10G",
    "32G", "64G", "100G", "300G", "500G", "1T", "1.5G", "0", "100%", "50%",
];

const TYPES: &[&str] = &[
    "8300",
    "8300",
    "8300",
    "8309",
    "8200",
    "0700",
    "EF00",
    "ef00",
    "EF02",
    "8e00",
    "FD00",
    "ZZZZ",
    "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
];

const LABELS: &[&str] = &[
    "data",
    "DATA",
    "my data",
    "root",
    "a-name-of-exactly-thirty-six-chars-x",
    "a-name-of-more-than-thirty-six-characters-long",
    "Äpfel",
    "label:colon",
    "label,comma",
];

const UUIDS: &[&str] = &[
    "3b5a3f5c-9d3e-4c63-8f3e-2a1f7c0b9d11",
    "3B5A3F5C-9D3E-4C63-8F3E-2A1F7C0B9D12",
    "not-a-uuid",
];

const MOUNTPOINTS: &[&str] = &[
    "/srv",
    "/home",
    "/data",
    "/var/lib/postgres",
    "/opt",
    "/srv/",
    "/nix",
    "srv",
    "/var/lib/containers",
];

fn strings(items: &[&str]) -> Value {
    Value::Array(items.iter().map(|s| json!(s)).collect())
}

/// One of `pool`'s argument lists, as JSON.
fn args(rng: &mut Rng, pool: &[&[&str]]) -> Value {
    let picked: &&[&str] = rng.pick(pool);
    strings(picked)
}

fn owned(items: &[String]) -> Value {
    Value::Array(items.iter().map(|s| json!(s)).collect())
}

/// The host's layout (hosts/servers/hetzner-cloud/disko.nix, frozen as the
/// corpus's host.nix) as JSON.
pub fn template() -> Value {
    let subvolume = |mountpoint: &str| json!({ "mountpoint": mountpoint, "mountOptions": strings(HOST_BTRFS_OPTIONS) });
    let mut top = HOST_BTRFS_OPTIONS.to_vec();
    top.push("subvolid=5");
    json!({
        "disko": { "devices": { "disk": { "main": {
            "type": "disk",
            "device": "/dev/sda",
            "content": { "type": "gpt", "partitions": {
                "boot": { "size": "1M", "type": "EF02" },
                "ESP": { "size": "1G", "type": "EF00", "content": {
                    "type": "filesystem", "format": "vfat", "mountpoint": "/boot",
                    "mountOptions": ["fmask=0177", "dmask=0077"] } },
                "swap": { "size": "32G", "content": { "type": "swap", "randomEncryption": true } },
                "root": { "size": "100%", "content": {
                    "type": "btrfs", "extraArgs": ["-f"], "mountpoint": "/btrfs_tmp",
                    "mountOptions": strings(&top),
                    "subvolumes": {
                        "@root": subvolume("/"),
                        "@nix": subvolume("/nix"),
                        "@persist": subvolume("/persist"),
                        "@log": subvolume("/var/log"),
                        "@containers": subvolume("/var/lib/containers"),
                        "@caddy": subvolume("/var/lib/caddy"),
                        "@snapshots": subvolume("/.snapshots"),
                        "@old_roots": {}
                    } } }
            } }
        } } } },
        "fileSystems": {
            "/persist": { "neededForBoot": true },
            "/var/log": { "neededForBoot": true },
            "/nix": { "neededForBoot": true }
        }
    })
}

fn object(value: &mut Value) -> &mut Map<String, Value> {
    if !value.is_object() {
        *value = json!({});
    }
    match value {
        Value::Object(map) => map,
        _ => unreachable!("made an object above"),
    }
}

fn at<'a>(value: &'a mut Value, path: &[&str]) -> &'a mut Value {
    path.iter().fold(value, |v, key| {
        object(v).entry((*key).to_owned()).or_insert(json!({}))
    })
}

fn main_partitions(layout: &mut Value) -> &mut Map<String, Value> {
    object(at(
        layout,
        &["disko", "devices", "disk", "main", "content", "partitions"],
    ))
}

fn root_btrfs(layout: &mut Value) -> &mut Map<String, Value> {
    object(at(
        layout,
        &[
            "disko",
            "devices",
            "disk",
            "main",
            "content",
            "partitions",
            "root",
            "content",
        ],
    ))
}

/// Mount options: the host's, some replaced, some added, shuffled, some duplicated.
fn options(rng: &mut Rng, base: &[&str], pool: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = base.iter().map(|s| (*s).to_owned()).collect();
    if rng.one_in(3) {
        let drop = rng.below(out.len().max(1));
        if drop < out.len() {
            out.remove(drop);
        }
    }
    for extra in rng.some(pool, 3) {
        let at = rng.below(out.len() + 1);
        out.insert(at, extra.to_owned());
    }
    if rng.one_in(4) && !out.is_empty() {
        let dup = out[rng.below(out.len())].clone();
        out.push(dup);
    }
    if rng.one_in(4) {
        // Any order.
        for i in (1..out.len()).rev() {
            let j = rng.below(i + 1);
            out.swap(i, j);
        }
    }
    out
}

/// A filesystem (or swap) content for an extra partition or disk.
fn content(rng: &mut Rng, mountpoint: &str) -> Value {
    match rng.below(6) {
        0 | 1 => json!({
            "type": "filesystem", "format": "ext4", "mountpoint": mountpoint,
            "extraArgs": args(rng, EXT4_EXTRA_ARGS),
            "mountOptions": owned(&options(rng, &["noatime"], EXT4_OPTIONS)),
        }),
        2 => json!({
            "type": "btrfs", "mountpoint": mountpoint,
            "extraArgs": args(rng, BTRFS_EXTRA_ARGS),
            "mountOptions": owned(&options(rng, &["noatime"], BTRFS_OPTIONS)),
        }),
        3 => json!({
            "type": "filesystem", "format": "vfat", "mountpoint": mountpoint,
            "extraArgs": args(rng, VFAT_EXTRA_ARGS),
            "mountOptions": owned(&options(rng, &["umask=0077"], VFAT_OPTIONS)),
        }),
        4 => json!({ "type": "swap", "randomEncryption": !rng.one_in(4) }),
        _ => json!({
            "type": "btrfs", "extraArgs": ["-f"],
            "subvolumes": { "@data": { "mountpoint": mountpoint, "mountOptions": owned(&options(rng, &[], BTRFS_OPTIONS)) } },
        }),
    }
}

fn extra_partition(rng: &mut Rng) -> Value {
    let mut partition = json!({ "size": rng.pick(SIZES) });
    let map = object(&mut partition);
    if rng.one_in(6) {
        map.remove("size");
        map.insert(
            "start".into(),
            json!(rng.pick(&["0", "1M", "2048", "34s", "10G", "1G"])),
        );
        map.insert(
            "end".into(),
            json!(rng.pick(&["+10G", "-1G", "20G", "-0", "+1M", "100%"])),
        );
    }
    if rng.one_in(3) {
        map.insert("type".into(), json!(rng.pick(TYPES)));
    }
    if rng.one_in(4) {
        map.insert("label".into(), json!(rng.pick(LABELS)));
    }
    if rng.one_in(6) {
        map.insert("uuid".into(), json!(rng.pick(UUIDS)));
    }
    if rng.one_in(6) {
        map.insert("alignment".into(), json!(rng.pick(&[1, 8, 2048, 4096, 3])));
    }
    if rng.one_in(4) {
        map.insert(
            "priority".into(),
            json!(rng.pick(&[50, 150, 1000, 2000, 9001])),
        );
    }
    if !rng.one_in(6) {
        let mountpoint = rng.pick(MOUNTPOINTS).to_string();
        map.insert("content".into(), content(rng, &mountpoint));
    }
    partition
}

const PARTITION_NAMES: &[&str] = &["data", "srv", "home", "extra", "aaa", "zzz", "swap2"];

/// The template's partition `name` on the main disk (made if missing).
fn main_partition<'a>(layout: &'a mut Value, name: &str) -> &'a mut Value {
    at(
        layout,
        &[
            "disko",
            "devices",
            "disk",
            "main",
            "content",
            "partitions",
            name,
        ],
    )
}

/// The names of the root Btrfs's subvolumes.
fn subvolume_names(layout: &mut Value) -> Vec<String> {
    root_btrfs(layout)
        .get("subvolumes")
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// One random change to a layout.
fn mutate(rng: &mut Rng, layout: &mut Value) {
    match rng.below(16) {
        0 => esp_options(rng, layout),
        1 => esp_size(rng, layout),
        2 | 3 => {
            let opts = options(
                rng,
                &[HOST_BTRFS_OPTIONS, &["subvolid=5"]].concat(),
                BTRFS_OPTIONS,
            );
            root_btrfs(layout).insert("mountOptions".into(), owned(&opts));
        }
        4 | 5 => subvolume_options(rng, layout),
        6 => {
            root_btrfs(layout).insert("extraArgs".into(), args(rng, BTRFS_EXTRA_ARGS));
        }
        7 => subvolume_added_or_removed(rng, layout),
        8 => swap_partition(rng, layout),
        9 | 10 => {
            let name = rng.pick(PARTITION_NAMES).to_string();
            let partition = extra_partition(rng);
            main_partitions(layout).insert(name, partition);
        }
        11 => partition_attribute(rng, layout),
        12 => another_disk(rng, layout),
        13 => nodev_mount(rng, layout),
        14 => file_systems_options(rng, layout),
        _ => mountpoint_moved(rng, layout),
    }
}

fn esp_options(rng: &mut Rng, layout: &mut Value) {
    let esp = main_partition(layout, "ESP");
    let mut base = vec!["fmask=0177", "dmask=0077"];
    if rng.one_in(2) {
        base = vec!["umask=0077"];
    }
    let opts = options(rng, &base, VFAT_OPTIONS);
    object(at(esp, &["content"])).insert("mountOptions".into(), owned(&opts));
}

fn esp_size(rng: &mut Rng, layout: &mut Value) {
    let esp = main_partition(layout, "ESP");
    object(esp).insert(
        "size".into(),
        json!(rng.pick(&["1G", "512M", "260M", "100M", "64M", "33M", "32M", "8M", "2G"])),
    );
    object(at(esp, &["content"])).insert("extraArgs".into(), args(rng, VFAT_EXTRA_ARGS));
}

fn subvolume_options(rng: &mut Rng, layout: &mut Value) {
    let names = subvolume_names(layout);
    if names.is_empty() {
        return;
    }
    let name = rng.pick(&names).clone();
    let opts = options(rng, HOST_BTRFS_OPTIONS, BTRFS_OPTIONS);
    let subvolumes = at(
        root_btrfs(layout).entry("subvolumes").or_insert(json!({})),
        &[&name],
    );
    object(subvolumes).insert("mountOptions".into(), owned(&opts));
}

/// A subvolume more or less, or one with a swap file.
fn subvolume_added_or_removed(rng: &mut Rng, layout: &mut Value) {
    let subvolumes = object(root_btrfs(layout).entry("subvolumes").or_insert(json!({})));
    match rng.below(4) {
        0 => {
            let name = rng
                .pick(&["@home", "@srv", "@data", "home", "@a/b", "@nix"])
                .to_string();
            let mut sub = json!({ "mountpoint": rng.pick(MOUNTPOINTS) });
            if rng.one_in(2) {
                object(&mut sub).insert(
                    "mountOptions".into(),
                    owned(&options(rng, HOST_BTRFS_OPTIONS, BTRFS_OPTIONS)),
                );
            }
            subvolumes.insert(name, sub);
        }
        1 => {
            let names: Vec<String> = subvolumes.keys().cloned().collect();
            if !names.is_empty() {
                let name = rng.pick(&names).clone();
                subvolumes.remove(&name);
            }
        }
        _ => {
            let path = rng
                .pick(&["swapfile", "swap/swapfile", "/swapfile", "a b"])
                .to_string();
            let size = rng.pick(&["1G", "8M", "64M", "512M", "1M"]).to_string();
            let mut sub = json!({ "swap": { "swapfile": { "size": size, "path": path } } });
            if !rng.one_in(4) {
                object(&mut sub).insert("mountpoint".into(), json!("/.swapvol"));
            }
            subvolumes.insert("@swap".into(), sub);
        }
    }
}

fn swap_partition(rng: &mut Rng, layout: &mut Value) {
    let swap = main_partition(layout, "swap");
    match rng.below(4) {
        0 => {
            object(swap).insert("size".into(), json!(rng.pick(SIZES)));
        }
        1 => {
            object(at(swap, &["content"])).insert("randomEncryption".into(), json!(false));
        }
        2 => {
            object(at(swap, &["content"])).insert(
                "extraArgs".into(),
                args(
                    rng,
                    &[
                        &["-L", "swap"][..],
                        &["-p", "4096"],
                        &["--pagesize", "3"],
                        &[],
                    ],
                ),
            );
        }
        _ => {
            object(at(swap, &["content"]))
                .insert("priority".into(), json!(rng.pick(&[10, -1, 100])));
        }
    }
}

/// Labels, types, UUIDs, alignment and order of the template's partitions.
fn partition_attribute(rng: &mut Rng, layout: &mut Value) {
    let name = rng.pick(&["boot", "ESP", "swap", "root"]).to_string();
    let partition = object(main_partition(layout, &name));
    match rng.below(5) {
        0 => partition.insert("label".into(), json!(rng.pick(LABELS))),
        1 => partition.insert("type".into(), json!(rng.pick(TYPES))),
        2 => partition.insert("uuid".into(), json!(rng.pick(UUIDS))),
        3 => partition.insert("alignment".into(), json!(rng.pick(&[1, 8, 2048, 4096]))),
        _ => partition.insert("priority".into(), json!(rng.pick(&[50, 500, 1500, 9001]))),
    };
}

fn another_disk(rng: &mut Rng, layout: &mut Value) {
    let name = rng.pick(&["data", "second", "nvme"]).to_string();
    let device = rng
        .pick(&[
            "/dev/sdb",
            "/dev/vdb",
            "/dev/nvme0n1",
            "/dev/sda1",
            "/dev/mapper/x",
        ])
        .to_string();
    let content = match rng.below(4) {
        0 => json!({ "type": "gpt" }),
        1 => {
            let mountpoint = rng.pick(MOUNTPOINTS).to_string();
            content(rng, &mountpoint)
        }
        _ => {
            let mut partitions = Map::new();
            for _ in 0..=rng.below(3) {
                partitions.insert(rng.pick(PARTITION_NAMES).to_string(), extra_partition(rng));
            }
            json!({ "type": "gpt", "partitions": partitions })
        }
    };
    object(at(layout, &["disko", "devices", "disk"])).insert(
        name,
        json!({ "type": "disk", "device": device, "content": content }),
    );
}

fn nodev_mount(rng: &mut Rng, layout: &mut Value) {
    let mountpoint = rng
        .pick(&["/tmp", "/run/scratch", "/var/tmp", "/nix"])
        .to_string();
    let fs_type = rng.pick(&["tmpfs", "tmpfs", "ramfs"]).to_string();
    let opts = options(rng, &["mode=1777"], TMPFS_OPTIONS);
    object(at(layout, &["disko", "devices", "nodev"])).insert(
        mountpoint,
        json!({ "fsType": fs_type, "mountOptions": owned(&opts) }),
    );
}

/// fileSystems options NixOS appends to disko's.
fn file_systems_options(rng: &mut Rng, layout: &mut Value) {
    let mountpoint = rng
        .pick(&["/nix", "/persist", "/", "/btrfs_tmp", "/var/log"])
        .to_string();
    let mut opts = rng.some(BTRFS_OPTIONS, 2);
    if opts.is_empty() {
        opts.push(*rng.pick(BTRFS_OPTIONS));
    }
    let fs = object(at(layout, &["fileSystems", &mountpoint]));
    fs.insert("options".into(), strings(&opts));
}

fn mountpoint_moved(rng: &mut Rng, layout: &mut Value) {
    let names = subvolume_names(layout);
    if names.is_empty() {
        return;
    }
    let name = rng.pick(&names).clone();
    let mountpoint = rng.pick(MOUNTPOINTS).to_string();
    let subvolumes = root_btrfs(layout).entry("subvolumes").or_insert(json!({}));
    object(at(subvolumes, &[&name])).insert("mountpoint".into(), json!(mountpoint));
}

/// A layout built from scratch: one to three disks of random partitions.
fn from_scratch(rng: &mut Rng) -> Value {
    let mut layout = json!({});
    let disks = 1 + rng.below(2);
    for (index, device) in ["/dev/sda", "/dev/sdb", "/dev/sdc"]
        .iter()
        .take(disks)
        .enumerate()
    {
        let mut partitions = Map::new();
        for _ in 0..=rng.below(4) {
            partitions.insert(rng.pick(PARTITION_NAMES).to_string(), extra_partition(rng));
        }
        if rng.one_in(2) {
            let mountpoint = if index == 0 { "/" } else { "/srv" };
            partitions.insert(
                "root".into(),
                json!({ "size": "100%", "content": content(rng, mountpoint) }),
            );
        }
        let name = if index == 0 {
            "main".to_owned()
        } else {
            format!("disk{index}")
        };
        object(at(&mut layout, &["disko", "devices", "disk"])).insert(
            name,
            json!({ "type": "disk", "device": device, "content": { "type": "gpt", "partitions": partitions } }),
        );
    }
    layout
}

/// The `index`th layout of `seed`.
pub fn layout(seed: u64, index: u64) -> Value {
    let mut rng = Rng::new(seed ^ index.wrapping_mul(0xA24B_AED4_963E_E407));
    if rng.one_in(8) {
        return from_scratch(&mut rng);
    }
    let mut layout = template();
    for _ in 0..=rng.below(3) {
        mutate(&mut rng, &mut layout);
    }
    layout
}

/// The Nix file check reads for a generated layout.
pub fn nix_file(json_path: &camino::Utf8Path) -> String {
    format!("builtins.fromJSON (builtins.readFile \"{json_path}\")\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_layouts() {
        for index in 0..50 {
            assert_eq!(layout(7, index), layout(7, index));
        }
        let distinct: std::collections::BTreeSet<String> =
            (0..200).map(|i| layout(7, i).to_string()).collect();
        assert!(
            distinct.len() > 150,
            "only {} distinct layouts",
            distinct.len()
        );
    }

    #[test]
    fn the_template_is_the_corpus_host() {
        let template = template();
        let partitions = &template["disko"]["devices"]["disk"]["main"]["content"]["partitions"];
        assert_eq!(
            partitions["root"]["content"]["subvolumes"]
                .as_object()
                .map(Map::len),
            Some(8)
        );
        assert_eq!(partitions["swap"]["size"], "32G");
    }
}
