//! The kernel modules the guest needs, in load order, resolved through the
//! kernel's modules.dep (and modules.softdep / modules.alias for the crypto
//! drivers Btrfs asks for). A packaged kernel may ship without modules.dep
//! until depmod runs: then depmod runs on a temporary copy, never on the
//! system's tree.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context as _, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

use toolbox::process::Supervised;
use toolbox::setup;

/// What the guest loads, and whether the boot can do without it.
pub const WANTED: &[(&str, Need)] = &[
    ("virtio_pci", Need::Required),
    ("virtio_blk", Need::Required),
    // Entropy: without it sgdisk, mkfs and cryptsetup wait for seconds.
    ("virtio_rng", Need::Required),
    // The plan arrives through fw_cfg.
    ("qemu_fw_cfg", Need::Required),
    ("btrfs", Need::Required),
    ("vfat", Need::Required),
    ("nls_cp437", Need::Required),
    ("nls_iso8859_1", Need::Required),
    ("nls_ascii", Need::Optional),
    ("dm_crypt", Need::Required),
    // aes-xts-plain64, NixOS's default swap cipher.
    ("xts", Need::Required),
    ("aesni_intel", Need::Optional),
    ("crc32c_intel", Need::Optional),
    // `vm-test --serve-ssh`: the network card qemu's user networking uses.
    ("virtio_net", Need::Optional),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Required,
    Optional,
}

/// A module file to put in the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleFile {
    pub name: String,
    /// Where it is on the host (perhaps compressed).
    pub source: Utf8PathBuf,
    /// Where it goes in the image, always an uncompressed `.ko`.
    pub guest_path: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolved {
    /// In load order: every module after the modules it needs.
    pub modules: Vec<ModuleFile>,
    /// Wanted or needed but built into the kernel.
    pub builtin: Vec<String>,
    /// Optional modules this kernel does not have.
    pub absent: Vec<String>,
}

/// The parsed modules.dep, modules.builtin, modules.softdep and modules.alias.
#[derive(Debug, Default)]
pub struct Index {
    /// The directory the relative paths of modules.dep start from.
    pub root: Utf8PathBuf,
    pub version: String,
    /// Module name → (relative path, relative paths of its dependencies).
    dependencies: BTreeMap<String, (String, Vec<String>)>,
    builtin: BTreeSet<String>,
    /// Module name → modules or aliases to load first.
    soft_pre: BTreeMap<String, Vec<String>>,
    aliases: BTreeMap<String, Vec<String>>,
    /// Where depmod wrote modules.dep when the kernel had none.
    _depmod_copy: Option<tempfile::TempDir>,
}

/// `dm-crypt.ko.xz` → `dm_crypt`.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = [".ko.xz", ".ko.zst", ".ko.gz", ".ko"]
        .iter()
        .find_map(|suffix| file.strip_suffix(suffix))
        .unwrap_or(file);
    stem.replace('-', "_")
}

impl Index {
    /// Reads the index of `modules` (`…/lib/modules/<version>`), running
    /// depmod on a temporary copy when modules.dep is missing.
    pub fn load(modules: &Utf8Path) -> Result<Index> {
        let version = modules
            .file_name()
            .with_context(|| format!("{modules} has no version in its name"))?
            .to_owned();
        let mut copy = None;
        let index_dir = if modules.join("modules.dep").is_file() {
            modules.to_owned()
        } else {
            let (dir, temp) = depmod_copy(modules, &version)?;
            copy = Some(temp);
            dir
        };
        let read = |name: &str| -> Result<String> {
            let path = index_dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(text) => Ok(text),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
                Err(error) => Err(error).with_context(|| format!("reading {path}")),
            }
        };
        let mut index = Index::parse(
            &read("modules.dep")?,
            &read("modules.builtin")?,
            &read("modules.softdep")?,
            &read("modules.alias")?,
        );
        index.root = modules.to_owned();
        index.version = version;
        index._depmod_copy = copy;
        Ok(index)
    }

    pub fn parse(dep: &str, builtin: &str, softdep: &str, alias: &str) -> Index {
        let mut index = Index::default();
        for line in dep.lines() {
            let Some((module, deps)) = line.split_once(':') else {
                continue;
            };
            let module = module.trim();
            index.dependencies.insert(
                module_name(module),
                (
                    module.to_owned(),
                    deps.split_whitespace().map(str::to_owned).collect(),
                ),
            );
        }
        index.builtin = builtin
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(module_name)
            .collect();
        for line in softdep.lines() {
            // softdep <module> pre: a b post: c
            let mut words = line.split_whitespace();
            if words.next() != Some("softdep") {
                continue;
            }
            let Some(module) = words.next() else { continue };
            let mut pre = Vec::new();
            let mut in_pre = false;
            for word in words {
                match word {
                    "pre:" => in_pre = true,
                    "post:" => in_pre = false,
                    _ if in_pre => pre.push(word.to_owned()),
                    _ => {}
                }
            }
            index
                .soft_pre
                .entry(module.replace('-', "_"))
                .or_default()
                .extend(pre);
        }
        for line in alias.lines() {
            let mut words = line.split_whitespace();
            if let (Some("alias"), Some(name), Some(module)) =
                (words.next(), words.next(), words.next())
            {
                index
                    .aliases
                    .entry(name.to_owned())
                    .or_default()
                    .push(module.replace('-', "_"));
            }
        }
        index
    }

    /// The wanted modules and everything they need, in load order.
    pub fn resolve(&self, wanted: &[(&str, Need)]) -> Result<Resolved> {
        let mut resolved = Resolved::default();
        let mut seen = BTreeSet::new();
        for (name, need) in wanted {
            let name = name.replace('-', "_");
            if self.builtin.contains(&name) {
                resolved.builtin.push(name);
                continue;
            }
            if !self.dependencies.contains_key(&name) {
                match need {
                    Need::Required => bail!(
                        "kernel {} has no module {name} (neither in modules.dep nor built in); the VM needs it",
                        self.version
                    ),
                    Need::Optional => {
                        resolved.absent.push(name);
                        continue;
                    }
                }
            }
            self.visit(&name, &mut seen, &mut resolved, 0)?;
        }
        Ok(resolved)
    }

    fn visit(
        &self,
        name: &str,
        seen: &mut BTreeSet<String>,
        resolved: &mut Resolved,
        depth: usize,
    ) -> Result<()> {
        if depth > 64 {
            bail!("modules.dep has a dependency cycle through {name}");
        }
        if !seen.insert(name.to_owned()) {
            return Ok(());
        }
        if self.builtin.contains(name) {
            resolved.builtin.push(name.to_owned());
            return Ok(());
        }
        let Some((path, deps)) = self.dependencies.get(name) else {
            bail!("modules.dep names no module {name}");
        };
        // Soft dependencies (Btrfs's checksum drivers) are loaded when there
        // is a module for them; a built-in implementation serves otherwise.
        for soft in self.soft_pre.get(name).into_iter().flatten() {
            for provider in self.providers(soft) {
                if !seen.contains(&provider) && self.dependencies.contains_key(&provider) {
                    self.visit(&provider, seen, resolved, depth + 1)?;
                }
            }
        }
        for dep in deps {
            self.visit(&module_name(dep), seen, resolved, depth + 1)?;
        }
        resolved.modules.push(ModuleFile {
            name: name.to_owned(),
            source: self.root.join(path),
            guest_path: format!(
                "/lib/modules/{}/{}.ko",
                self.version,
                path.split_once(".ko")
                    .map_or(path.as_str(), |(stem, _)| stem)
            ),
        });
        Ok(())
    }

    /// Modules that provide a name used in a softdep: a module of that name, or an alias.
    fn providers(&self, name: &str) -> Vec<String> {
        let direct = name.replace('-', "_");
        if self.dependencies.contains_key(&direct) || self.builtin.contains(&direct) {
            return vec![direct];
        }
        let mut found: Vec<String> = Vec::new();
        for alias in [name.to_owned(), format!("crypto-{name}")] {
            for module in self.aliases.get(&alias).into_iter().flatten() {
                if !found.contains(module) {
                    found.push(module.clone());
                }
            }
        }
        found
    }
}

/// Runs depmod on a tree that links to the kernel's modules, and returns
/// the directory holding the new modules.dep.
fn depmod_copy(modules: &Utf8Path, version: &str) -> Result<(Utf8PathBuf, tempfile::TempDir)> {
    let found = setup::require(&[setup::DEPMOD])?;
    let depmod = found.path(setup::DEPMOD)?;
    let temp = tempfile::Builder::new()
        .prefix("xtask-depmod-")
        .tempdir()
        .context("creating a directory for depmod")?;
    let base = Utf8PathBuf::from_path_buf(temp.path().to_owned())
        .map_err(|p| anyhow::anyhow!("temporary directory {p:?} is not UTF-8"))?;
    let copy = base.join("lib/modules").join(version);
    std::fs::create_dir_all(&copy).with_context(|| format!("creating {copy}"))?;
    for entry in modules
        .read_dir_utf8()
        .with_context(|| format!("listing {modules}"))?
    {
        let entry = entry?;
        let name = entry.file_name();
        if entry.file_type()?.is_dir() {
            // depmod follows directory links, so the modules are not copied.
            std::os::unix::fs::symlink(entry.path(), copy.join(name))
                .with_context(|| format!("linking {}", entry.path()))?;
        } else if name.starts_with("modules.builtin") || name == "modules.order" {
            std::fs::copy(entry.path(), copy.join(name))
                .with_context(|| format!("copying {}", entry.path()))?;
        }
    }
    let sh = toolbox::project::shell()?;
    Supervised::from_command(xshell::cmd!(sh, "{depmod} -b {base} {version}"))
        .checked()
        .with_context(|| format!("depmod for {modules} (it has no modules.dep)"))?;
    Ok((copy, temp))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/fs/btrfs/btrfs.ko: kernel/crypto/xor.ko kernel/lib/raid6/raid6_pq.ko kernel/lib/zstd/zstd_compress.ko kernel/lib/libcrc32c.ko
kernel/crypto/xor.ko:
kernel/lib/raid6/raid6_pq.ko:
kernel/lib/zstd/zstd_compress.ko:
kernel/lib/libcrc32c.ko:
kernel/crypto/blake2b_generic.ko:
kernel/crypto/xxhash_generic.ko:
kernel/arch/x86/crypto/crc32c-intel.ko:
kernel/drivers/md/dm-crypt.ko: kernel/drivers/md/dm-mod.ko
kernel/drivers/md/dm-mod.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/fs/nls/nls_iso8859-1.ko.xz:
";
    const BUILTIN: &str = "kernel/crypto/sha256_generic.ko\nkernel/crypto/aes_generic.ko\n";
    const SOFTDEP: &str = "# comment\nsoftdep btrfs pre: blake2b-256 sha256 xxhash64 crypto-crc32c\nsoftdep libcrc32c pre: crc32c\n";
    const ALIAS: &str = "alias crypto-blake2b-256 blake2b_generic\nalias blake2b-256 blake2b_generic\nalias xxhash64 xxhash_generic\nalias crypto-crc32c crc32c_intel\nalias crc32c crc32c_intel\n";

    fn index() -> Index {
        let mut index = Index::parse(DEP, BUILTIN, SOFTDEP, ALIAS);
        index.root = "/lib/modules/6.1.0-test".into();
        index.version = "6.1.0-test".into();
        index
    }

    fn names(resolved: &Resolved) -> Vec<&str> {
        resolved.modules.iter().map(|m| m.name.as_str()).collect()
    }

    #[test]
    fn dependencies_come_first() {
        let resolved = index()
            .resolve(&[
                ("virtio_pci", Need::Required),
                ("btrfs", Need::Required),
                ("dm-crypt", Need::Required),
            ])
            .unwrap();
        let order = names(&resolved);
        let position = |n: &str| order.iter().position(|m| *m == n).unwrap();
        assert!(position("virtio_ring") < position("virtio"));
        assert!(position("virtio") < position("virtio_pci"));
        for dep in [
            "xor",
            "raid6_pq",
            "zstd_compress",
            "libcrc32c",
            "blake2b_generic",
            "xxhash_generic",
            "crc32c_intel",
        ] {
            assert!(
                position(dep) < position("btrfs"),
                "{dep} after btrfs: {order:?}"
            );
        }
        // crc32c (libcrc32c's softdep) comes before libcrc32c itself.
        assert!(position("crc32c_intel") < position("libcrc32c"));
        assert!(position("dm_mod") < position("dm_crypt"));
        // Each module once; sha256 is built in.
        let unique: BTreeSet<&str> = order.iter().copied().collect();
        assert_eq!(unique.len(), order.len());
        assert!(!order.contains(&"sha256_generic"));
        let dm = &resolved.modules[position("dm_crypt")];
        assert_eq!(
            dm.source,
            "/lib/modules/6.1.0-test/kernel/drivers/md/dm-crypt.ko"
        );
        assert_eq!(
            dm.guest_path,
            "/lib/modules/6.1.0-test/kernel/drivers/md/dm-crypt.ko"
        );
    }

    #[test]
    fn builtin_optional_and_missing() {
        let resolved = index()
            .resolve(&[
                ("aes_generic", Need::Required),
                ("aesni_intel", Need::Optional),
                ("nls_iso8859-1", Need::Required),
            ])
            .unwrap();
        assert_eq!(resolved.builtin, ["aes_generic"]);
        assert_eq!(resolved.absent, ["aesni_intel"]);
        // Compressed on the host, a plain .ko in the image.
        assert_eq!(
            resolved.modules[0].guest_path,
            "/lib/modules/6.1.0-test/kernel/fs/nls/nls_iso8859-1.ko"
        );
        let error = index()
            .resolve(&[("virtio_blk", Need::Required)])
            .unwrap_err();
        assert!(
            error.to_string().contains("no module virtio_blk"),
            "{error}"
        );
    }

    #[test]
    fn names_of_module_files() {
        assert_eq!(module_name("kernel/drivers/md/dm-crypt.ko"), "dm_crypt");
        assert_eq!(module_name("nls_iso8859-1.ko.xz"), "nls_iso8859_1");
        assert_eq!(module_name("x.ko.zst"), "x");
    }

    #[test]
    fn the_real_kernel_resolves_everything_needed() {
        let kernel = crate::vm::kernel::discover(None, None)
            .expect("a VM kernel is needed: apt-get install linux-image-cloud-amd64");
        let index = Index::load(&kernel.modules).unwrap();
        let resolved = index.resolve(WANTED).unwrap();
        for module in &resolved.modules {
            assert!(module.source.is_file(), "{}", module.source);
        }
        assert!(
            names(&resolved).contains(&"btrfs") || resolved.builtin.contains(&"btrfs".to_owned())
        );
    }

    #[test]
    fn depmod_on_a_copy_gives_the_same_dependencies() {
        let kernel = crate::vm::kernel::discover(None, None)
            .expect("a VM kernel is needed: apt-get install linux-image-cloud-amd64");
        setup::require(&[setup::DEPMOD]).expect("depmod is needed: apt-get install kmod");
        let (dir, _temp) = depmod_copy(&kernel.modules, &kernel.version).unwrap();
        let copied = std::fs::read_to_string(dir.join("modules.dep")).unwrap();
        assert!(copied.contains("btrfs.ko:"), "depmod wrote no btrfs entry");
        // The system's tree was not touched.
        assert!(!dir.starts_with(&kernel.modules));
    }
}
