//! Which kernel the lab VM boots, and where its modules are. In order:
//! 1. `--kernel`/`--modules` (or XTASK_VM_KERNEL / XTASK_VM_MODULES);
//! 2. the running NixOS system's kernel;
//! 3. `/boot/vmlinuz-<version>` with a matching `/lib/modules/<version>`,
//!    the running kernel's version first, then the newest.

use std::cmp::Ordering;
use std::fmt;

use anyhow::{bail, Context as _, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde::Serialize;

pub const KERNEL_ENV: &str = "XTASK_VM_KERNEL";
pub const MODULES_ENV: &str = "XTASK_VM_MODULES";

/// How to get a kernel when none is found.
pub const HOW_TO_GET_ONE: &str = concat!(
    "on Debian: sudo apt-get install linux-image-cloud-amd64 (Ubuntu: linux-image-virtual); ",
    "on NixOS the running system's kernel is used; ",
    "or pass --kernel PATH --modules DIR (XTASK_VM_KERNEL / XTASK_VM_MODULES)"
);

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Kernel {
    /// The bzImage.
    pub image: Utf8PathBuf,
    /// `6.1.0-56-cloud-amd64`: the directory name under lib/modules.
    pub version: String,
    /// `<...>/lib/modules/<version>`.
    pub modules: Utf8PathBuf,
    pub origin: Origin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    Given,
    NixosSystem,
    Boot,
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let origin = match self.origin {
            Origin::Given => "given",
            Origin::NixosSystem => "the running NixOS system's",
            Origin::Boot => "from /boot",
        };
        write!(f, "{} ({origin}, {})", self.version, self.image)
    }
}

/// Where to look; the real system in `Places::system()`, fake trees in tests.
#[derive(Debug, Clone)]
pub struct Places {
    pub boot: Utf8PathBuf,
    pub lib_modules: Utf8PathBuf,
    /// /run/booted-system on NixOS.
    pub nixos_system: Option<Utf8PathBuf>,
    /// `uname -r`.
    pub running_release: Option<String>,
}

impl Places {
    pub fn system() -> Places {
        let nixos = Utf8Path::new("/etc/NIXOS").exists();
        Places {
            boot: "/boot".into(),
            lib_modules: "/lib/modules".into(),
            nixos_system: nixos.then(|| "/run/booted-system".into()),
            running_release: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|r| r.trim().to_owned()),
        }
    }
}

/// Finds the kernel: the arguments first, then the environment, then the system.
pub fn discover(kernel: Option<&Utf8Path>, modules: Option<&Utf8Path>) -> Result<Kernel> {
    let from_env = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .map(Utf8PathBuf::from)
    };
    let kernel = kernel
        .map(Utf8Path::to_owned)
        .or_else(|| from_env(KERNEL_ENV));
    let modules = modules
        .map(Utf8Path::to_owned)
        .or_else(|| from_env(MODULES_ENV));
    discover_in(&Places::system(), kernel.as_deref(), modules.as_deref())
}

pub fn discover_in(
    places: &Places,
    kernel: Option<&Utf8Path>,
    modules: Option<&Utf8Path>,
) -> Result<Kernel> {
    match (kernel, modules) {
        (Some(image), modules) => given(places, image, modules),
        (None, Some(_)) => bail!("--modules needs --kernel (or {KERNEL_ENV}) too"),
        (None, None) => {
            let mut reasons = Vec::new();
            if let Some(system) = &places.nixos_system {
                match nixos(system) {
                    Ok(kernel) => return Ok(kernel),
                    Err(error) => reasons.push(format!("{error:#}")),
                }
            }
            match from_boot(places) {
                Ok(kernel) => Ok(kernel),
                Err(error) => {
                    reasons.push(format!("{error:#}"));
                    bail!(
                        "no kernel for the VM ({}).\n  {HOW_TO_GET_ONE}",
                        reasons.join("; ")
                    )
                }
            }
        }
    }
}

fn given(places: &Places, image: &Utf8Path, modules: Option<&Utf8Path>) -> Result<Kernel> {
    readable(image).with_context(|| format!("kernel {image}"))?;
    let header_version = bzimage_version(image).ok();
    let (modules, version) = match modules {
        Some(dir) => {
            let version = dir
                .file_name()
                .with_context(|| {
                    format!("--modules {dir}: expected a lib/modules/<version> directory")
                })?
                .to_owned();
            (dir.to_owned(), version)
        }
        None => {
            let version = header_version.clone().with_context(|| {
                format!("cannot read the version of {image}; pass --modules lib/modules/<version>")
            })?;
            (places.lib_modules.join(&version), version)
        }
    };
    anyhow::ensure!(
        modules.join("kernel").is_dir(),
        "{modules} is not a kernel's module directory (no kernel/ inside)"
    );
    if let Some(header) = header_version {
        anyhow::ensure!(
            header == version,
            "{image} is version {header} but the modules are for {version}: the guest could not load them"
        );
    }
    Ok(Kernel {
        image: image.to_owned(),
        version,
        modules,
        origin: Origin::Given,
    })
}

fn nixos(system: &Utf8Path) -> Result<Kernel> {
    let image = system.join("kernel");
    readable(&image).with_context(|| format!("NixOS kernel {image}"))?;
    let version = bzimage_version(&image)?;
    let modules = system
        .join("kernel-modules")
        .join("lib")
        .join("modules")
        .join(&version);
    anyhow::ensure!(modules.is_dir(), "{modules} does not exist");
    Ok(Kernel {
        image,
        version,
        modules,
        origin: Origin::NixosSystem,
    })
}

fn from_boot(places: &Places) -> Result<Kernel> {
    let entries = match places.boot.read_dir_utf8() {
        Ok(entries) => entries,
        Err(error) => bail!("cannot list {}: {error}", places.boot),
    };
    let mut candidates: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().strip_prefix("vmlinuz-").map(str::to_owned))
        .collect();
    candidates.sort_by(|a, b| compare_versions(b, a));
    if let Some(running) = &places.running_release {
        if let Some(index) = candidates.iter().position(|v| v == running) {
            let version = candidates.remove(index);
            candidates.insert(0, version);
        }
    }
    let mut skipped = Vec::new();
    for version in &candidates {
        let image = places.boot.join(format!("vmlinuz-{version}"));
        let modules = places.lib_modules.join(version);
        if !modules.join("kernel").is_dir() {
            skipped.push(format!("{image} has no {modules}"));
            continue;
        }
        if let Err(error) = readable(&image) {
            skipped.push(format!(
                "{image} is not readable ({error}; Ubuntu keeps it root-only: sudo chmod 0644 {image})"
            ));
            continue;
        }
        return Ok(Kernel {
            image,
            version: version.clone(),
            modules,
            origin: Origin::Boot,
        });
    }
    if skipped.is_empty() {
        bail!("no {}/vmlinuz-*", places.boot)
    }
    bail!("{}", skipped.join("; "))
}

fn readable(path: &Utf8Path) -> Result<()> {
    std::fs::File::open(path)?;
    Ok(())
}

/// The version a bzImage announces in its setup header (`kernel_version`,
/// boot protocol 2.00+): `6.1.0-56-cloud-amd64` from "6.1.0-56-cloud-amd64 (debian-kernel@…) #1 SMP …".
pub fn bzimage_version(image: &Utf8Path) -> Result<String> {
    let mut file = std::fs::File::open(image).with_context(|| format!("opening {image}"))?;
    let mut head = vec![0u8; 64 * 1024];
    let read = read_up_to(&mut file, &mut head)?;
    head.truncate(read);
    version_from_header(&head).with_context(|| format!("{image} is not a bzImage with a version"))
}

fn read_up_to(file: &mut std::fs::File, buffer: &mut [u8]) -> Result<usize> {
    use std::io::Read;
    let mut total = 0;
    while total < buffer.len() {
        let n = file.read(&mut buffer[total..])?;
        if n == 0 {
            break;
        }
        total += n;
    }
    Ok(total)
}

fn version_from_header(head: &[u8]) -> Option<String> {
    if head.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let pointer = u16::from_le_bytes([*head.get(0x20E)?, *head.get(0x20F)?]) as usize;
    let start = pointer + 0x200;
    let rest = head.get(start..)?;
    let end = rest.iter().position(|b| *b == 0 || *b == b' ')?;
    let version = std::str::from_utf8(&rest[..end]).ok()?;
    (!version.is_empty()).then(|| version.to_owned())
}

/// Orders `6.1.0-9` before `6.1.0-10`: digit runs compare as numbers.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    fn parts(s: &str) -> Vec<(bool, String)> {
        let mut parts: Vec<(bool, String)> = Vec::new();
        for c in s.chars() {
            let digit = c.is_ascii_digit();
            match parts.last_mut() {
                Some((d, text)) if *d == digit => text.push(c),
                _ => parts.push((digit, c.to_string())),
            }
        }
        parts
    }
    let (a, b) = (parts(a), parts(b));
    for (x, y) in a.iter().zip(&b) {
        let order = match (x, y) {
            ((true, x), (true, y)) => {
                let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
                x.len().cmp(&y.len()).then_with(|| x.cmp(y))
            }
            ((_, x), (_, y)) => x.cmp(y),
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    a.len().cmp(&b.len())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fake bzImage: the setup header's magic and a version string.
    pub(crate) fn fake_bzimage(version: &str) -> Vec<u8> {
        let mut image = vec![0u8; 0x1000];
        image[0x202..0x206].copy_from_slice(b"HdrS");
        let at = 0x300usize;
        image[0x20E..0x210].copy_from_slice(&((at - 0x200) as u16).to_le_bytes());
        let text = format!("{version} (builder@example) #1 SMP\0");
        image[at..at + text.len()].copy_from_slice(text.as_bytes());
        image
    }

    struct Tree {
        _dir: tempfile::TempDir,
        places: Places,
    }

    fn tree(kernels: &[&str], module_dirs: &[&str], running: Option<&str>) -> Tree {
        let dir = tempfile::tempdir().unwrap();
        let root = Utf8PathBuf::from_path_buf(dir.path().to_owned()).unwrap();
        let boot = root.join("boot");
        let lib_modules = root.join("lib/modules");
        std::fs::create_dir_all(&boot).unwrap();
        for version in kernels {
            std::fs::write(
                boot.join(format!("vmlinuz-{version}")),
                fake_bzimage(version),
            )
            .unwrap();
        }
        for version in module_dirs {
            std::fs::create_dir_all(lib_modules.join(version).join("kernel")).unwrap();
        }
        Tree {
            _dir: dir,
            places: Places {
                boot,
                lib_modules,
                nixos_system: None,
                running_release: running.map(str::to_owned),
            },
        }
    }

    #[test]
    fn prefers_the_running_kernel_then_the_newest_with_modules() {
        let t = tree(
            &["6.1.0-9-amd64", "6.1.0-10-amd64", "6.12.0-1-amd64"],
            &["6.1.0-9-amd64", "6.1.0-10-amd64"],
            Some("6.1.0-9-amd64"),
        );
        let kernel = discover_in(&t.places, None, None).unwrap();
        assert_eq!(kernel.version, "6.1.0-9-amd64");
        assert_eq!(kernel.origin, Origin::Boot);

        // Not running any of them: the newest that has modules (6.12 has none).
        let t = tree(
            &["6.1.0-9-amd64", "6.1.0-10-amd64", "6.12.0-1-amd64"],
            &["6.1.0-9-amd64", "6.1.0-10-amd64"],
            Some("5.10.0"),
        );
        let kernel = discover_in(&t.places, None, None).unwrap();
        assert_eq!(kernel.version, "6.1.0-10-amd64");
        assert!(kernel.modules.ends_with("lib/modules/6.1.0-10-amd64"));
    }

    #[test]
    fn none_found_says_how_to_get_one() {
        let t = tree(&["6.1.0-9-amd64"], &[], None);
        let error = format!("{:#}", discover_in(&t.places, None, None).unwrap_err());
        assert!(
            error.contains("apt-get install linux-image-cloud-amd64"),
            "{error}"
        );
        assert!(error.contains("has no"), "{error}");
        let t = tree(&[], &[], None);
        let error = format!("{:#}", discover_in(&t.places, None, None).unwrap_err());
        assert!(
            error.contains("no ") && error.contains("vmlinuz-*"),
            "{error}"
        );
    }

    #[test]
    fn given_kernels_find_or_check_their_modules() {
        let t = tree(&["6.1.0-9-amd64"], &["6.1.0-9-amd64", "6.2.0"], None);
        let image = t.places.boot.join("vmlinuz-6.1.0-9-amd64");
        let kernel = discover_in(&t.places, Some(&image), None).unwrap();
        assert_eq!(kernel.origin, Origin::Given);
        assert_eq!(kernel.modules, t.places.lib_modules.join("6.1.0-9-amd64"));
        // Modules of another version would not load: refuse.
        let wrong = t.places.lib_modules.join("6.2.0");
        let error = discover_in(&t.places, Some(&image), Some(&wrong)).unwrap_err();
        assert!(error.to_string().contains("could not load them"), "{error}");
        assert!(discover_in(&t.places, None, Some(&wrong)).is_err());
        let missing = t.places.boot.join("nope");
        assert!(discover_in(&t.places, Some(&missing), None).is_err());
    }

    #[test]
    fn reads_the_setup_header_version() {
        assert_eq!(
            version_from_header(&fake_bzimage("6.1.0-56-cloud-amd64")).as_deref(),
            Some("6.1.0-56-cloud-amd64")
        );
        assert_eq!(version_from_header(&[0u8; 0x300]), None);
        assert_eq!(version_from_header(b"short"), None);
    }

    #[test]
    fn the_real_kernel() {
        // On this project's machines /boot holds the cloud kernel.
        let kernel = discover_in(&Places::system(), None, None)
            .expect("a VM kernel is needed: apt-get install linux-image-cloud-amd64");
        assert_eq!(bzimage_version(&kernel.image).unwrap(), kernel.version);
    }

    #[test]
    fn the_hint_names_setups_kernel_package() {
        assert!(HOW_TO_GET_ONE.contains(toolbox::setup::KERNEL_PACKAGE));
    }

    #[test]
    fn versions_sort_naturally() {
        assert_eq!(compare_versions("6.1.0-9", "6.1.0-10"), Ordering::Less);
        assert_eq!(compare_versions("6.12.0", "6.2.0"), Ordering::Greater);
        assert_eq!(compare_versions("6.1.0", "6.1.0"), Ordering::Equal);
        assert_eq!(compare_versions("6.1", "6.1.0"), Ordering::Less);
    }
}
